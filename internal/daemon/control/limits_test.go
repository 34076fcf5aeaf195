package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
)

// TestRefusedPeerIsDisconnected: a peer refused an operation gets its
// answer and then the end of the connection, so that it cannot sit on a
// slot. The peer is this test process as the kernel reports it
// (SO_PEERCRED), refused by the operation's policy.
func TestRefusedPeerIsDisconnected(t *testing.T) {
	srv := echoServer()
	srv.HandleStream("closed", func(Peer) bool { return false }, func(context.Context, Peer, json.RawMessage, *Stream) error {
		return nil
	})
	path := start(t, srv)
	r := rawDial(t, path)
	if rep := ask(t, r, `{"op": "secret"}`); rep.Code != CodeNotAllowed {
		t.Fatalf("secret: %+v, want %s", rep, CodeNotAllowed)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := r.r.ReadByte(); err != io.EOF {
		t.Errorf("after a not-allowed answer: read %q, %v; want io.EOF", b, err)
	}
	// A refused stream operation too.
	r = rawDial(t, path)
	if rep := ask(t, r, `{"op": "closed"}`); rep.Code != CodeNotAllowed {
		t.Fatalf("closed: %+v, want %s", rep, CodeNotAllowed)
	}
	if b, err := r.r.ReadByte(); err != io.EOF {
		t.Errorf("after a refused stream: read %q, %v; want io.EOF", b, err)
	}
}

// fakePeers makes srv see each connection's peer as the uid that dialAs
// wrote into the connection's (abstract) local address: one test process
// plays many users.
func fakePeers(srv *Server) {
	srv.peerOf = func(c *net.UnixConn) (Peer, error) {
		name := c.RemoteAddr().String()
		i := strings.LastIndex(name, "-uid-")
		if i < 0 {
			return Peer{}, fmt.Errorf("connection from %q without a test uid", name)
		}
		uid, err := strconv.ParseUint(name[i+len("-uid-"):], 10, 32)
		if err != nil {
			return Peer{}, fmt.Errorf("connection from %q: %w", name, err)
		}
		return Peer{UID: uint32(uid), PID: int32(os.Getpid())}, nil
	}
}

var dialSeq atomic.Int64

// dialAs connects to path as uid, for a server under fakePeers.
func dialAs(t *testing.T, path string, uid uint32) *raw {
	t.Helper()
	local := &net.UnixAddr{Net: "unix", Name: fmt.Sprintf("@passkeyd-test-%d-%d-uid-%d", os.Getpid(), dialSeq.Add(1), uid)}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Net: "unix", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &raw{c: c, r: bufio.NewReader(c)}
}

// ask sends one request line and returns the answer. A write error is
// ignored: a refused connection may be closed before the request arrives,
// and its answer is still there to read.
func ask(t *testing.T, r *raw, line string) rawReply {
	t.Helper()
	_, _ = io.WriteString(r.c, line+"\n")
	return r.reply(t)
}

// served asserts that r's connection was admitted and is served.
func served(t *testing.T, r *raw, who string) {
	t.Helper()
	if rep := ask(t, r, `{"op": "echo", "args": 1}`); !rep.OK || string(rep.Result) != `{"args":1}` {
		t.Fatalf("%s: %+v, want to be served", who, rep)
	}
}

// turnedAway asserts that r's connection was answered busy and closed.
func turnedAway(t *testing.T, r *raw, who string) {
	t.Helper()
	if rep := ask(t, r, `{"op": "echo", "args": 1}`); rep.OK || rep.Code != CodeBusy {
		t.Fatalf("%s: %+v, want %s", who, rep, CodeBusy)
	}
	// Closed: EOF, or a reset because the request was never read.
	if _, err := r.r.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: after busy, read: %v; want the connection closed", who, err)
	}
}

// TestConnectionLimits: one uid cannot take more than maxConnsPerUID
// connections, unprivileged uids together cannot take the reserved slots,
// and root (here a played uid 0) is served while they hold all they may.
func TestConnectionLimits(t *testing.T) {
	srv := echoServer()
	fakePeers(srv)
	path := start(t, srv)
	const hog = 2001
	for i := range maxConnsPerUID {
		served(t, dialAs(t, path, hog), fmt.Sprintf("uid %d, connection %d", hog, i+1))
	}
	for i := range 3 {
		turnedAway(t, dialAs(t, path, hog), fmt.Sprintf("uid %d over its limit (%d)", hog, i+1))
	}
	// Other unprivileged uids fill the unreserved slots.
	uid := uint32(hog)
	for n := maxConnsPerUID; n < maxConns-reservedConns; n++ {
		if n%maxConnsPerUID == 0 {
			uid++
		}
		served(t, dialAs(t, path, uid), fmt.Sprintf("uid %d", uid))
	}
	turnedAway(t, dialAs(t, path, uid+1), "a fresh unprivileged uid with the unreserved slots full")
	// Root has the reserved slots, and no per-uid limit.
	for i := range reservedConns {
		served(t, dialAs(t, path, 0), fmt.Sprintf("root, reserved connection %d", i+1))
	}
	turnedAway(t, dialAs(t, path, 0), "root with every slot taken")
}

// TestReservedSlotsForOwner: the owner given to Reserve is privileged like
// root; without Reserve it is an ordinary uid.
func TestReservedSlotsForOwner(t *testing.T) {
	const owner = 1000
	srv := echoServer()
	srv.Reserve(OwnerOrRoot(owner))
	fakePeers(srv)
	path := start(t, srv)
	for uid := uint32(3000); uid < 3000+(maxConns-reservedConns)/maxConnsPerUID; uid++ {
		for range maxConnsPerUID {
			served(t, dialAs(t, path, uid), fmt.Sprintf("uid %d", uid))
		}
	}
	turnedAway(t, dialAs(t, path, 4000), "an unprivileged uid with the unreserved slots full")
	for i := range reservedConns / 2 {
		served(t, dialAs(t, path, owner), fmt.Sprintf("owner, connection %d", i+1))
		served(t, dialAs(t, path, 0), fmt.Sprintf("root, connection %d", i+1))
	}
	turnedAway(t, dialAs(t, path, owner), "the owner with every slot taken")
}

// TestRefusalLogIsBounded: a flood of refused requests is logged once
// when it starts and then as a count, not line by line; the counts add up
// to the refusals.
func TestRefusalLogIsBounded(t *testing.T) {
	var logs ctaptest.SyncBuffer
	srv := NewServer(slog.New(slog.NewJSONHandler(&logs, nil)))
	srv.Handle("secret", func(Peer) bool { return false }, func(context.Context, Peer, json.RawMessage) (any, error) {
		return "the secret", nil
	})
	path := filepath.Join(shortDir(t), "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	const flood = 500
	for i := range flood {
		r := rawDial(t, path)
		if rep := ask(t, r, `{"op": "secret"}`); rep.Code != CodeNotAllowed {
			t.Fatalf("request %d: %+v", i, rep)
		}
		r.c.Close()
	}
	cancel() // the last counts are written when the server stops
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines, refused := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct {
			Msg        string `json:"msg"`
			UID        *int   `json:"uid"`
			NotAllowed int    `json:"not_allowed"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if !strings.Contains(rec.Msg, "refused") {
			continue
		}
		lines++
		if rec.UID == nil || *rec.UID != os.Getuid() {
			t.Errorf("refusal line without this uid: %s", l)
		}
		if rec.NotAllowed == 0 {
			rec.NotAllowed = 1 // the line for the first refusal
		}
		refused += rec.NotAllowed
	}
	// One line when it starts, one count per interval (at most a couple
	// during this test) and the count at shutdown.
	if lines > 3 || refused != flood {
		t.Errorf("%d refusals logged in %d lines counting %d; want at most 3 lines counting %d:\n%s", flood, lines, refused, flood, logs.String())
	}
}

// TestSlotsAreReleased: a uid that closes its connections gets its slots
// back (the server notices the hang-up on its own time: polled).
func TestSlotsAreReleased(t *testing.T) {
	srv := echoServer()
	fakePeers(srv)
	path := start(t, srv)
	const uid = 2001
	// acquire polls for a served connection; the refused ones hold nothing.
	acquire := func(what string) *raw {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := dialAs(t, path, uid)
			rep := ask(t, r, `{"op": "echo", "args": 1}`)
			switch {
			case rep.OK:
				return r
			case rep.Code != CodeBusy || time.Now().After(deadline):
				t.Fatalf("%s: %+v", what, rep)
			}
			r.c.Close()
			time.Sleep(10 * time.Millisecond)
		}
	}
	for round := range 3 {
		var held []*raw
		for i := range maxConnsPerUID {
			held = append(held, acquire(fmt.Sprintf("round %d, connection %d", round+1, i+1)))
		}
		turnedAway(t, dialAs(t, path, uid), fmt.Sprintf("round %d, one more", round+1))
		for _, r := range held {
			r.c.Close()
		}
	}
}
