package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// HandlerFunc runs one operation for peer. args is the request's "args"
// (nil when absent); the result is encoded as the reply's "result" and an
// error's text becomes the reply's "error", so it must be fit for the
// person who asked (and never contain a secret). ctx is cancelled when
// the client hangs up or the server stops.
type HandlerFunc func(ctx context.Context, peer Peer, args json.RawMessage) (any, error)

// StreamFunc takes over a connection after the server has answered
// {"ok": true} (HandleStream), or, for HandleRefusableStream, once the
// function first sends or receives on s. It returns when it is done with
// s; the server then closes the connection. ctx is cancelled when the
// server stops.
type StreamFunc func(ctx context.Context, peer Peer, args json.RawMessage, s *Stream) error

type operation struct {
	allowed func(Peer) bool
	call    HandlerFunc
	stream  StreamFunc
	// refusable: the reply waits for the StreamFunc's first use of the
	// stream, so that it can still refuse with an error.
	refusable bool
}

// Limits of the server. Connections are cheap but not free: a local user
// opening thousands must not exhaust the daemon, nor keep root and the
// owner out by holding every slot.
const (
	maxConns       = 64
	maxConnsPerUID = 4               // for each unprivileged uid
	reservedConns  = 8               // of maxConns, for privileged peers only
	idleTimeout    = 2 * time.Minute // between requests on a plain connection
)

// Server dispatches requests on the control socket to the registered
// operations. Register every operation before Serve.
type Server struct {
	log      *slog.Logger
	refusals *refusalLog

	mu         sync.Mutex
	ops        map[string]operation
	conns      map[*net.UnixConn]bool // true: counted in openByUID
	privileged func(Peer) bool
	open       int            // connections being served
	openByUID  map[uint32]int // of them, per unprivileged uid

	// peerOf reads a connection's peer credentials (SO_PEERCRED); tests
	// replace it to play uids other than their own.
	peerOf func(*net.UnixConn) (Peer, error)
}

// NewServer returns a server without operations; log may be nil.
func NewServer(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:        log,
		refusals:   newRefusalLog(log),
		ops:        make(map[string]operation),
		conns:      make(map[*net.UnixConn]bool),
		privileged: RootOnly,
		openByUID:  make(map[uint32]int),
		peerOf:     peerOf,
	}
}

// Reserve makes the peers privileged admits (root and the owner: the
// users the socket exists for) privileged: they may use the last
// reservedConns connection slots and have no per-uid limit, so that other
// users cannot lock them out. Without it, root alone is privileged. Call
// it before Serve.
func (s *Server) Reserve(privileged func(Peer) bool) {
	if privileged == nil {
		panic("control: Reserve without a policy")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.privileged = privileged
}

// Handle registers a request/reply operation. allowed decides, from the
// peer's credentials, who may call it. Registering a name twice, or
// without a policy or function, is a programming error and panics.
func (s *Server) Handle(name string, allowed func(Peer) bool, fn HandlerFunc) {
	if fn == nil {
		panic("control: Handle " + name + " without a function")
	}
	s.register(name, operation{allowed: allowed, call: fn})
}

// HandleStream registers an operation that takes over the connection
// (the prompt agent).
func (s *Server) HandleStream(name string, allowed func(Peer) bool, fn StreamFunc) {
	if fn == nil {
		panic("control: HandleStream " + name + " without a function")
	}
	s.register(name, operation{allowed: allowed, stream: fn})
}

// HandleRefusableStream is HandleStream for an operation that decides
// after the policy whether to serve the peer (the prompt agent in seat
// mode: one per user): {"ok": true} goes out when fn first sends or
// receives, and an error fn returns before that is the reply instead (an
// *Error chooses the code), so the client learns why it was refused.
func (s *Server) HandleRefusableStream(name string, allowed func(Peer) bool, fn StreamFunc) {
	if fn == nil {
		panic("control: HandleRefusableStream " + name + " without a function")
	}
	s.register(name, operation{allowed: allowed, stream: fn, refusable: true})
}

func (s *Server) register(name string, op operation) {
	if name == "" || op.allowed == nil {
		panic("control: operation " + name + " needs a name and a policy")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.ops[name]; dup {
		panic("control: operation " + name + " registered twice")
	}
	s.ops[name] = op
}

// Listen creates the control socket at path: its directory (0755) when
// missing, a stale socket of a previous run removed, the socket itself
// mode 0666 (see the package comment). It refuses to replace anything that
// is not a socket, or a socket another process still listens on.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("control socket directory: %w", err)
		}
		// MkdirAll is subject to the umask; clients need to traverse it.
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, fmt.Errorf("control socket directory: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection and waits for their handlers to return.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	reporting := s.refusals.run(ctx)
	defer func() {
		// After the handlers: their last refusals are in the final count.
		cancel()
		<-reporting
		s.refusals.flush()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: wait for some to close rather
				// than spin or give up.
				s.log.Warn("control socket: accept", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("control socket: accept: %w", err)
		}
		peer, err := s.peerOf(c)
		if err != nil {
			s.log.Warn("control socket: connection without credentials", "err", err)
			c.Close()
			continue
		}
		admitted, stopping := s.admit(ctx, c, peer)
		if !admitted {
			if !stopping {
				s.refusals.note(peer, "")
				s.refuse(c)
			} else {
				c.Close()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release(c, peer.UID)
			s.serveConn(ctx, c, peer)
		}()
	}
}

// admit takes a connection slot for peer and registers c, or says why
// not: the limits, or the server stopping.
func (s *Server) admit(ctx context.Context, c *net.UnixConn, peer Peer) (admitted, stopping bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return false, true
	}
	if s.open >= maxConns {
		return false, false
	}
	counted := !s.privileged(peer)
	if counted {
		if s.open >= maxConns-reservedConns || s.openByUID[peer.UID] >= maxConnsPerUID {
			return false, false
		}
		s.openByUID[peer.UID]++
	}
	s.open++
	s.conns[c] = counted
	return true, false
}

// release closes c, admitted for uid, and gives its slot back.
func (s *Server) release(c *net.UnixConn, uid uint32) {
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c] {
		if s.openByUID[uid] <= 1 {
			delete(s.openByUID, uid) // the map holds only uids with connections
		} else {
			s.openByUID[uid]--
		}
	}
	delete(s.conns, c)
	s.open--
}

// refuse answers a connection over the limit and closes it.
func (s *Server) refuse(c *net.UnixConn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	writeReply(c, reply{Code: CodeBusy, Error: "passkeyd is busy: too many control connections"})
	c.Close()
}

func writeReply(c *net.UnixConn, r reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		// A result that does not encode is the handler's bug; the
		// client still gets an answer.
		b, _ = json.Marshal(reply{Code: CodeFailed, Error: "internal error: result not encodable"})
	}
	_ = c.SetWriteDeadline(time.Now().Add(sendTimeout))
	_, err = c.Write(append(b, '\n'))
	return err
}

func fail(code, format string, a ...any) reply {
	return reply{Code: code, Error: fmt.Sprintf(format, a...)}
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn, peer Peer) {
	r := &lineReader{c: c, max: MaxRequest}
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := r.next()
		if err != nil {
			if errors.Is(err, errTooLong) {
				writeReply(c, fail(CodeBadRequest, "bad request: longer than %d bytes", MaxRequest))
			}
			return
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil || req.Op == "" {
			if writeReply(c, fail(CodeBadRequest, `bad request: want {"op": NAME, "args": {...}}`)) != nil {
				return
			}
			continue
		}
		s.mu.Lock()
		op, ok := s.ops[req.Op]
		s.mu.Unlock()
		var rep reply
		switch {
		case !ok:
			rep = fail(CodeUnknownOp, "unknown operation %q", truncate(req.Op, 64))
		case !op.allowed(peer):
			s.refusals.note(peer, req.Op)
			// A refused peer has nothing more to do here: hang up, so
			// that it cannot keep a slot by asking again and again.
			writeReply(c, fail(CodeNotAllowed, "not allowed: uid %d may not use %q", peer.UID, req.Op))
			return
		case op.stream != nil:
			st := &Stream{c: c, r: r, peer: peer}
			if op.refusable {
				st.accept = func() error { return writeReply(c, reply{OK: true}) }
			} else if st.start(); writeReply(c, reply{OK: true}) != nil {
				return
			}
			_ = c.SetDeadline(time.Time{})
			err := op.stream(ctx, peer, req.Args, st)
			st.acceptOnce.Do(func() {}) // nothing is sent after this
			if !st.accepted {
				if err == nil {
					writeReply(c, reply{OK: true})
					return
				}
				var ce *Error
				if errors.As(err, &ce) {
					writeReply(c, reply{Code: ce.Code, Error: ce.Message})
				} else {
					writeReply(c, fail(CodeFailed, "%s", err.Error()))
				}
				return
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("control socket: stream ended", "op", req.Op, "uid", peer.UID, "err", err)
			}
			return
		default:
			rep = s.call(ctx, c, r, op.call, peer, req)
		}
		if writeReply(c, rep) != nil {
			return
		}
	}
}

// call runs a handler while watching the connection: a client that hangs
// up (Ctrl-C on passkeyctl) cancels the operation and any prompt it has
// opened. Bytes that arrive meanwhile (a pipelined request) are kept.
func (s *Server) call(ctx context.Context, c *net.UnixConn, r *lineReader, fn HandlerFunc, peer Peer, req request) reply {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type readResult struct {
		b   []byte
		err error
	}
	watch := make(chan readResult, 1)
	_ = c.SetReadDeadline(time.Time{})
	go func() {
		var tmp [4096]byte
		n, err := c.Read(tmp[:])
		watch <- readResult{tmp[:n], err}
	}()
	type callResult struct {
		v   any
		err error
	}
	done := make(chan callResult, 1)
	go func() {
		v, err := fn(hctx, peer, req.Args)
		done <- callResult{v, err}
	}()
	var res callResult
	watching := true
	for finished := false; !finished; {
		select {
		case res = <-done:
			finished = true
		case w := <-watch:
			watching, watch = false, nil
			r.buf = append(r.buf, w.b...)
			if w.err != nil {
				cancel() // hung up: nobody waits for the answer
			}
		}
	}
	if watching {
		// Stop the watcher and keep what it read.
		_ = c.SetReadDeadline(time.Now())
		w := <-watch
		r.buf = append(r.buf, w.b...)
	}
	if res.err != nil {
		var ce *Error
		if errors.As(res.err, &ce) {
			return reply{Code: ce.Code, Error: ce.Message}
		}
		return reply{Code: CodeFailed, Error: res.err.Error()}
	}
	return reply{OK: true, Result: res.v}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
