package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// shortDir returns a directory whose paths fit a unix socket address (108
// bytes), which t.TempDir's long names may not.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// start serves srv on a fresh socket until the test ends.
func start(t *testing.T, srv *Server) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "run", "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echoServer() *Server {
	srv := NewServer(nil)
	srv.Handle("echo", Anyone, func(_ context.Context, _ Peer, args json.RawMessage) (any, error) {
		var v any
		if len(args) > 0 {
			if err := json.Unmarshal(args, &v); err != nil {
				return nil, err
			}
		}
		return map[string]any{"args": v}, nil
	})
	srv.Handle("whoami", Anyone, func(_ context.Context, p Peer, _ json.RawMessage) (any, error) {
		return p, nil
	})
	srv.Handle("secret", func(Peer) bool { return false }, func(context.Context, Peer, json.RawMessage) (any, error) {
		return "the secret", nil
	})
	srv.Handle("fail", Anyone, func(_ context.Context, _ Peer, args json.RawMessage) (any, error) {
		if string(args) == `"coded"` {
			return nil, &Error{Code: "no-such-credential", Message: "no such credential"}
		}
		return nil, errors.New("it broke")
	})
	return srv
}

func TestCall(t *testing.T) {
	c := dial(t, start(t, echoServer()))
	for i := range 3 { // several calls on one connection
		var got struct {
			Args map[string]any `json:"args"`
		}
		if err := c.Call("echo", map[string]any{"n": i, "s": "x\ny"}, &got); err != nil {
			t.Fatal(err)
		}
		if got.Args["n"] != float64(i) || got.Args["s"] != "x\ny" {
			t.Errorf("echo = %+v", got)
		}
	}
	if err := c.Call("echo", nil, nil); err != nil {
		t.Errorf("no args, no result: %v", err)
	}
	var p Peer
	if err := c.Call("whoami", nil, &p); err != nil {
		t.Fatal(err)
	}
	if int(p.UID) != os.Getuid() || int(p.PID) != os.Getpid() {
		t.Errorf("the server saw %+v, want uid %d pid %d", p, os.Getuid(), os.Getpid())
	}
	if s := c.Server(); int(s.UID) != os.Getuid() || int(s.PID) != os.Getpid() {
		t.Errorf("the client saw the server as %+v", s)
	}
}

func TestRefusalsAndErrors(t *testing.T) {
	path := start(t, echoServer())
	err := dial(t, path).Call("secret", nil, nil)
	if !errors.Is(err, ErrNotAllowed) || !strings.HasPrefix(err.Error(), "not allowed: uid ") || !strings.Contains(err.Error(), `"secret"`) {
		t.Errorf("secret: %v", err)
	}
	// (A refusal ends the connection: TestRefusedPeerIsDisconnected.)
	c := dial(t, path)
	var ce *Error
	if err := c.Call("nope", nil, nil); !errors.As(err, &ce) || ce.Code != CodeUnknownOp || errors.Is(err, ErrNotAllowed) {
		t.Errorf("unknown op: %v", err)
	}
	if err := c.Call("fail", nil, nil); !errors.As(err, &ce) || ce.Code != CodeFailed || ce.Message != "it broke" {
		t.Errorf("fail: %v", err)
	}
	if err := c.Call("fail", "coded", nil); !errors.As(err, &ce) || ce.Code != "no-such-credential" {
		t.Errorf("coded fail: %v", err)
	}
	// The connection survives errors.
	if err := c.Call("echo", nil, nil); err != nil {
		t.Error(err)
	}
}

func TestPolicies(t *testing.T) {
	root, owner, other := Peer{UID: 0}, Peer{UID: 1000}, Peer{UID: 1001}
	for _, tc := range []struct {
		name   string
		policy func(Peer) bool
		want   [3]bool
	}{
		{"owner 1000", OwnerOrRoot(1000), [3]bool{true, true, false}},
		{"no owner", OwnerOrRoot(NoOwner), [3]bool{true, false, false}},
		{"root owner", OwnerOrRoot(0), [3]bool{true, false, false}},
		{"root only", RootOnly, [3]bool{true, false, false}},
		{"anyone", Anyone, [3]bool{true, true, true}},
	} {
		got := [3]bool{tc.policy(root), tc.policy(owner), tc.policy(other)}
		if got != tc.want {
			t.Errorf("%s: root, owner, other = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseOwner(t *testing.T) {
	for in, want := range map[string]int{"": NoOwner, "0": 0, "1000": 1000, "root": 0} {
		if got, err := ParseOwner(in); err != nil || got != want {
			t.Errorf("ParseOwner(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"no-such-user-xyz", "-1", "99999999999", "1000 "} {
		if _, err := ParseOwner(bad); err == nil {
			t.Errorf("ParseOwner(%q) accepted", bad)
		}
	}
}

// raw is a hand-driven connection for hostile input.
type raw struct {
	c net.Conn
	r *bufio.Reader
}

func rawDial(t *testing.T, path string) *raw {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &raw{c: c, r: bufio.NewReader(c)}
}

func (r *raw) reply(t *testing.T) rawReply {
	t.Helper()
	line, err := r.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	var rep rawReply
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return rep
}

func TestHostileInput(t *testing.T) {
	path := start(t, echoServer())
	r := rawDial(t, path)
	for _, tc := range []struct{ line, code string }{
		{"not json", CodeBadRequest},
		{"[]", CodeBadRequest},
		{"{}", CodeBadRequest},
		{"null", CodeBadRequest},
		{`{"op": 5}`, CodeBadRequest},
		{`{"op": ""}`, CodeBadRequest},
		{`{"op": "echo", "args": `, CodeBadRequest},
		{"\x00\xff\xfe", CodeBadRequest},
		{`{"op": "echo", "args": [1, {"deep": [[[[[]]]]]}]} trailing`, CodeBadRequest},
		{`{"op": "` + strings.Repeat("x", 1000) + `"}`, CodeUnknownOp},
		{`{"op": "echo", "args": "not an object"}`, ""},
		{`{"op": "echo", "extra": true}`, ""},
	} {
		if _, err := io.WriteString(r.c, tc.line+"\n"); err != nil {
			t.Fatal(err)
		}
		rep := r.reply(t)
		if rep.OK != (tc.code == "") || rep.Code != tc.code {
			t.Errorf("%.40q: reply %+v, want code %q", tc.line, rep, tc.code)
		}
		if !rep.OK && rep.Error == "" {
			t.Errorf("%.40q: refusal without a message", tc.line)
		}
	}
	// An overlong request is answered, then the connection is closed.
	big := `{"op": "echo", "args": "` + strings.Repeat("a", MaxRequest) + `"}` + "\n"
	go io.WriteString(r.c, big)
	if rep := r.reply(t); rep.OK || rep.Code != CodeBadRequest || !strings.Contains(rep.Error, "longer than") {
		t.Errorf("overlong: %+v", rep)
	}
	if _, err := r.r.ReadBytes('\n'); err == nil {
		t.Error("the connection stayed open after an overlong request")
	}
	// A client that sends a partial line and hangs up costs nothing.
	r2 := rawDial(t, path)
	io.WriteString(r2.c, `{"op": "ec`)
	r2.c.Close()
	// The server is still fine.
	if err := dial(t, path).Call("echo", nil, nil); err != nil {
		t.Error(err)
	}
}

func TestPipelinedRequests(t *testing.T) {
	srv := echoServer()
	srv.Handle("slow", Anyone, func(ctx context.Context, _ Peer, _ json.RawMessage) (any, error) {
		time.Sleep(50 * time.Millisecond)
		return "slow", nil
	})
	r := rawDial(t, start(t, srv))
	// The second request arrives while the first runs.
	io.WriteString(r.c, `{"op": "slow"}`+"\n")
	time.Sleep(10 * time.Millisecond)
	io.WriteString(r.c, `{"op": "echo", "args": 1}`+"\n"+`{"op": "echo", "args": 2}`+"\n")
	for _, want := range []string{`"slow"`, `{"args":1}`, `{"args":2}`} {
		if rep := r.reply(t); !rep.OK || string(rep.Result) != want {
			t.Errorf("reply %+v, want result %s", rep, want)
		}
	}
}

func TestHangupCancelsOperation(t *testing.T) {
	srv := NewServer(nil)
	started, cancelled := make(chan struct{}), make(chan error, 1)
	srv.Handle("wait", Anyone, func(ctx context.Context, _ Peer, _ json.RawMessage) (any, error) {
		close(started)
		select {
		case <-ctx.Done():
			cancelled <- ctx.Err()
		case <-time.After(10 * time.Second):
			cancelled <- nil
		}
		return nil, ctx.Err()
	})
	c := dial(t, start(t, srv))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel() // Ctrl-C on passkeyctl
	}()
	if err := c.CallContext(ctx, "wait", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("CallContext = %v", err)
	}
	select {
	case err := <-cancelled:
		if err == nil {
			t.Error("the operation was not cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the operation was not cancelled")
	}
}

func TestStream(t *testing.T) {
	srv := echoServer()
	var mu sync.Mutex
	var peers []Peer
	srv.HandleStream("chat", Anyone, func(ctx context.Context, p Peer, args json.RawMessage, s *Stream) error {
		mu.Lock()
		peers = append(peers, s.Peer())
		mu.Unlock()
		if string(args) != `{"hello":1}` {
			return errors.New("bad args")
		}
		for {
			var m map[string]int
			if err := s.Recv(&m); err != nil {
				return nil
			}
			m["n"]++
			if err := s.Send(m); err != nil {
				return err
			}
		}
	})
	srv.HandleStream("closed", func(Peer) bool { return false }, func(context.Context, Peer, json.RawMessage, *Stream) error {
		return nil
	})
	path := start(t, srv)
	st, err := dial(t, path).Stream("chat", map[string]int{"hello": 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := st.Send(map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
		var m map[string]int
		if err := st.Recv(&m); err != nil || m["n"] != i+1 {
			t.Fatalf("Recv = %v, %v", m, err)
		}
	}
	mu.Lock()
	if len(peers) != 1 || int(peers[0].PID) != os.Getpid() {
		t.Errorf("stream peer %+v", peers)
	}
	mu.Unlock()
	// Garbage in a stream is an error for the receiver, not a crash.
	if err := st.Send(json.RawMessage(`"not a map"`)); err != nil {
		t.Fatal(err)
	}
	var m map[string]int
	if err := st.Recv(&m); !errors.Is(err, io.EOF) {
		t.Errorf("after garbage: %v, want the server to hang up", err)
	}
	if _, err := dial(t, path).Stream("closed", nil); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("refused stream: %v", err)
	}
}

func TestShutdownClosesStreams(t *testing.T) {
	srv := NewServer(nil)
	srv.HandleStream("hold", Anyone, func(ctx context.Context, _ Peer, _ json.RawMessage, s *Stream) error {
		<-ctx.Done()
		return nil
	})
	path := filepath.Join(shortDir(t), "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	st, err := dial(t, path).Stream("hold", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
	var m any
	if err := st.Recv(&m); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after shutdown = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := Dial(path); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial after shutdown = %v", err)
	}
}

func TestTooManyConnections(t *testing.T) {
	srv := echoServer()
	srv.Reserve(Anyone) // the total limit alone, whoever runs the test
	path := start(t, srv)
	for range maxConns {
		if err := dial(t, path).Call("echo", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	err := dial(t, path).Call("echo", nil, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeBusy {
		t.Errorf("connection over the limit: %v", err)
	}
}

func TestListen(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "a", "b", "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o666 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, %v", di.Mode(), err)
	}
	// A live socket is not taken over.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen = %v", err)
	}
	// A stale one (its daemon was killed) is replaced.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(path); !errors.Is(err, ErrNotRunning) || err.Error() != "passkeyd is not running (no control socket at "+path+")" {
		t.Errorf("Dial stale = %v", err)
	}
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	// Anything else is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file = %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the file was touched")
	}
}

func TestDialMissing(t *testing.T) {
	path := filepath.Join(shortDir(t), "none", "control.sock")
	_, err := Dial(path)
	if !errors.Is(err, ErrNotRunning) || err.Error() != "passkeyd is not running (no control socket at "+path+")" {
		t.Errorf("Dial = %v", err)
	}
}

// TestRefusableStream: a refusable stream's function can refuse with a
// coded error the client receives; once it uses the stream, the client
// is accepted as with HandleStream.
func TestRefusableStream(t *testing.T) {
	srv := NewServer(nil)
	srv.HandleRefusableStream("maybe", Anyone, func(_ context.Context, _ Peer, args json.RawMessage, s *Stream) error {
		if string(args) == `"no"` {
			return &Error{Code: CodeAgentConnected, Message: "another agent of this user is connected"}
		}
		var m map[string]int
		if err := s.Recv(&m); err != nil {
			return err
		}
		return s.Send(m)
	})
	path := filepath.Join(shortDir(t), "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	_, err = dial(t, path).Stream("maybe", "no")
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeAgentConnected || !strings.Contains(ce.Message, "another agent") {
		t.Fatalf("refused stream: %v, want code %s with the reason", err, CodeAgentConnected)
	}
	st, err := dial(t, path).Stream("maybe", "yes")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	var m map[string]int
	if err := st.Recv(&m); err != nil || m["a"] != 1 {
		t.Fatalf("echo = %v, %v", m, err)
	}
}
