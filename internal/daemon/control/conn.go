package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// errTooLong reports a line over the reader's bound; the connection
// cannot be resynchronised after it and is closed.
var errTooLong = errors.New("message too long")

// lineReader reads newline-terminated lines of at most max bytes from a
// connection. Its buffer is its own (not a bufio.Reader) so that the
// server can watch for a hang-up during a long operation and keep any
// bytes that arrive meanwhile.
type lineReader struct {
	c   net.Conn
	buf []byte
	max int
}

func (r *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(r.buf, '\n'); i >= 0 {
			line := r.buf[:i]
			r.buf = r.buf[i+1:]
			if len(line) > r.max {
				return nil, errTooLong
			}
			return line, nil
		}
		if len(r.buf) > r.max {
			return nil, errTooLong
		}
		var tmp [4096]byte
		n, err := r.c.Read(tmp[:])
		r.buf = append(r.buf, tmp[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) && len(r.buf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Stream is a connection handed to a stream operation (the prompt agent)
// or returned by Client.Stream: one JSON message per line each way, each
// at most MaxRequest bytes. Recv is for one goroutine; Send is safe for
// concurrent use. It implements prompt.Stream.
type Stream struct {
	c      *net.UnixConn
	r      *lineReader
	peer   Peer
	sendMu sync.Mutex
	// accept, on the server side, sends {"ok": true} before the first
	// message either way, so that a StreamFunc can still refuse the
	// operation with a reply until it uses the stream. nil once sent, and
	// on the client side.
	acceptOnce sync.Once
	accept     func() error
	accepted   bool // under acceptOnce
}

// start sends the server's acceptance if it has not gone out yet.
func (s *Stream) start() error {
	var err error
	s.acceptOnce.Do(func() {
		if s.accept != nil {
			err = s.accept()
		}
		s.accepted = true
	})
	return err
}

// sendTimeout bounds one Send: a peer that stops reading must not stall
// the daemon.
const sendTimeout = 5 * time.Second

// Send writes msg as one line.
func (s *Stream) Send(msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("control: encode message: %w", err)
	}
	if len(b) > MaxRequest {
		return fmt.Errorf("control: message of %d bytes exceeds %d", len(b), MaxRequest)
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("control: send: %w", err)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(sendTimeout))
	if _, err := s.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control: send: %w", err)
	}
	return nil
}

// Recv reads the next message into msg; io.EOF when the peer has closed
// the connection cleanly.
func (s *Stream) Recv(msg any) error {
	if err := s.start(); err != nil {
		return fmt.Errorf("control: receive: %w", err)
	}
	line, err := s.r.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("control: receive: %w", err)
	}
	if err := json.Unmarshal(line, msg); err != nil {
		return fmt.Errorf("control: malformed message: %w", err)
	}
	return nil
}

// Close closes the connection, unblocking Recv.
func (s *Stream) Close() error { return s.c.Close() }

// Peer is the process at the other end.
func (s *Stream) Peer() Peer { return s.peer }

// peerOf reads the kernel's record of the process at the other end.
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", serr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
