package ctaphid

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Timing bounds. Only the ones CTAP and the conformance suites demand are
// tight; everything else is generous so a loaded 2-core machine running the
// race detector does not flake.
const (
	specBound   = 100 * time.Millisecond // busy reply, first keepalive
	recvTimeout = 5 * time.Second        // "it never came"
	quietPeriod = 150 * time.Millisecond // "nothing is sent"
)

// ---- in-memory device ------------------------------------------------------

type memRead struct {
	report []byte
	err    error
}

// memDevice is a Device made of two Go channels: in carries host-to-device
// reports, out device-to-host ones.
type memDevice struct {
	in        chan memRead
	out       chan []byte
	closed    chan struct{}
	closeOnce sync.Once
	badWrites atomic.Int32
}

func newMemDevice() *memDevice {
	return &memDevice{
		in:     make(chan memRead),
		out:    make(chan []byte, 8192),
		closed: make(chan struct{}),
	}
}

func (d *memDevice) ReadReport() ([]byte, error) {
	select {
	case r := <-d.in:
		return r.report, r.err
	case <-d.closed:
		return nil, io.EOF
	}
}

func (d *memDevice) WriteReport(r []byte) error {
	if len(r) != ReportSize {
		d.badWrites.Add(1)
	}
	select {
	case d.out <- bytes.Clone(r):
		return nil
	case <-d.closed:
		return io.ErrClosedPipe
	}
}

func (d *memDevice) close() { d.closeOnce.Do(func() { close(d.closed) }) }

// ---- fake handler ------------------------------------------------------------

// fakeHandler records calls in order. Its CBOR and MSG default to echoing
// the request after a success status.
type fakeHandler struct {
	cbor func(ctx context.Context, t Transaction, req []byte) []byte
	msg  func(ctx context.Context, t Transaction, apdu []byte) []byte

	mu     sync.Mutex
	events []string
	notify chan string
	txn    Transaction // of the last CBOR or MSG call
}

func newFakeHandler() *fakeHandler { return &fakeHandler{notify: make(chan string, 256)} }

func (h *fakeHandler) record(ev string) {
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	select {
	case h.notify <- ev:
	default:
	}
}

func (h *fakeHandler) Events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func (h *fakeHandler) CBOR(ctx context.Context, t Transaction, req []byte) []byte {
	h.setTxn(t)
	h.record("cbor")
	defer h.record("cbor-done")
	if h.cbor != nil {
		return h.cbor(ctx, t, req)
	}
	return append([]byte{0x00}, req...)
}

func (h *fakeHandler) MSG(ctx context.Context, t Transaction, apdu []byte) []byte {
	h.setTxn(t)
	h.record("msg")
	defer h.record("msg-done")
	if h.msg != nil {
		return h.msg(ctx, t, apdu)
	}
	return append(slices.Clone(apdu), 0x90, 0x00)
}

func (h *fakeHandler) setTxn(t Transaction) { h.mu.Lock(); h.txn = t; h.mu.Unlock() }

// transaction is the Transaction of the last CBOR or MSG call.
func (h *fakeHandler) transaction() Transaction { h.mu.Lock(); defer h.mu.Unlock(); return h.txn }

func (h *fakeHandler) Wink()       { h.record("wink") }
func (h *fakeHandler) PowerCycle() { h.record("powercycle") }

// waitEvent waits until the handler recorded ev.
func (h *fakeHandler) waitEvent(t *testing.T, ev string) {
	t.Helper()
	deadline := time.After(recvTimeout)
	for {
		select {
		case got := <-h.notify:
			if got == ev {
				return
			}
		case <-deadline:
			t.Fatalf("handler event %q never happened; events %v", ev, h.Events())
		}
	}
}

// ---- harness ---------------------------------------------------------------------

const (
	firstCID   = 0x01020304 // what the test allocator hands out first
	testCaps   = CapWink | CapCBOR
	testLogEnv = "CTAPHID_TEST_LOG"
)

var testVersion = [3]byte{5, 6, 7}

type harness struct {
	// skipKeepalives makes recv, expect and expectNone pass over KEEPALIVE
	// reports, for tests about something else: the first keepalive comes
	// within 50 ms whatever KeepaliveInterval says.
	skipKeepalives bool

	t    *testing.T
	dev  *memDevice
	h    *fakeHandler
	srv  *Server
	errc chan error
	stop context.CancelFunc
}

func testLogger() *slog.Logger {
	if os.Getenv(testLogEnv) == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newHarness(t *testing.T, h *fakeHandler, cfg Config) *harness {
	t.Helper()
	if h == nil {
		h = newFakeHandler()
	}
	if cfg.Capabilities == 0 {
		cfg.Capabilities = testCaps
	}
	if cfg.Version == ([3]byte{}) {
		cfg.Version = testVersion
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	srv := NewServer(h, cfg)
	var next atomic.Uint32
	next.Store(firstCID)
	srv.newCID = func() uint32 { return next.Add(1) - 1 }

	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, dev: newMemDevice(), h: h, srv: srv, errc: make(chan error, 1), stop: cancel}
	go func() { hs.errc <- srv.Serve(ctx, hs.dev) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-hs.errc:
		case <-time.After(recvTimeout):
			t.Errorf("Serve did not return after cancel")
		}
		hs.dev.close()
		if n := hs.dev.badWrites.Load(); n != 0 {
			t.Errorf("%d reports written with a size other than %d", n, ReportSize)
		}
	})
	return hs
}

// send feeds one raw report to the server.
func (hs *harness) send(report []byte) {
	hs.t.Helper()
	select {
	case hs.dev.in <- memRead{report: report}:
	case <-time.After(recvTimeout):
		hs.t.Fatalf("server did not read report %x", report)
	}
}

func (hs *harness) powerCycle() {
	hs.t.Helper()
	select {
	case hs.dev.in <- memRead{err: ErrPowerCycle}:
	case <-time.After(recvTimeout):
		hs.t.Fatal("server did not read the power cycle")
	}
}

// sendMsg fragments a message the way a host does, independently of the
// package's fragment function.
func (hs *harness) sendMsg(cid uint32, cmd byte, payload []byte) {
	hs.t.Helper()
	for _, r := range hostFrames(cid, cmd, payload) {
		hs.send(r)
	}
}

func (hs *harness) recv() []byte {
	hs.t.Helper()
	deadline := time.After(recvTimeout)
	for {
		select {
		case r := <-hs.dev.out:
			if hs.skipKeepalives && r[4] == CmdKeepalive {
				continue
			}
			return r
		case <-deadline:
			hs.t.Fatal("no report from the device")
			return nil
		}
	}
}

// expect receives reports and compares them byte for byte.
func (hs *harness) expect(want ...[]byte) {
	hs.t.Helper()
	for i, w := range want {
		got := hs.recv()
		if !bytes.Equal(got, w) {
			hs.t.Fatalf("report %d:\n got %x\nwant %x", i, got, w)
		}
	}
}

// expectNone checks that nothing is written for quietPeriod.
func (hs *harness) expectNone() {
	hs.t.Helper()
	deadline := time.After(quietPeriod)
	for {
		select {
		case r := <-hs.dev.out:
			if hs.skipKeepalives && r[4] == CmdKeepalive {
				continue
			}
			hs.t.Fatalf("unexpected report %x", r)
		case <-deadline:
			return
		}
	}
}

// recvSkippingKeepalives returns the next report that is not a KEEPALIVE.
func (hs *harness) recvSkippingKeepalives() []byte {
	hs.t.Helper()
	for {
		r := hs.recv()
		if r[4] != CmdKeepalive {
			return r
		}
	}
}

// openChannel allocates a channel with INIT on the broadcast CID.
func (hs *harness) openChannel() uint32 {
	hs.t.Helper()
	nonce := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	hs.sendMsg(BroadcastCID, CmdInit, nonce)
	r := hs.recv()
	if r[4] != CmdInit || !bytes.Equal(r[7:15], nonce) {
		hs.t.Fatalf("INIT reply %x", r)
	}
	return binary.BigEndian.Uint32(r[15:19])
}

// ---- frame builders ----------------------------------------------------------

// initFrame builds an initialisation packet with an explicit BCNT.
func initFrame(cid uint32, cmd byte, bcnt int, data ...byte) []byte {
	r := make([]byte, ReportSize)
	binary.BigEndian.PutUint32(r, cid)
	r[4] = cmd
	binary.BigEndian.PutUint16(r[5:], uint16(bcnt))
	copy(r[7:], data)
	return r
}

func contFrame(cid uint32, seq byte, data ...byte) []byte {
	r := make([]byte, ReportSize)
	binary.BigEndian.PutUint32(r, cid)
	r[4] = seq
	copy(r[5:], data)
	return r
}

func errFrame(cid uint32, code byte) []byte { return initFrame(cid, CmdError, 1, code) }

// hostFrames is a straightforward second implementation of §11.2.4
// fragmentation, so tests do not check fragment against itself.
func hostFrames(cid uint32, cmd byte, payload []byte) [][]byte {
	first := payload[:min(len(payload), 57)]
	frames := [][]byte{initFrame(cid, cmd, len(payload), first...)}
	rest := payload[len(first):]
	for seq := byte(0); len(rest) > 0; seq++ {
		n := min(len(rest), 59)
		frames = append(frames, contFrame(cid, seq, rest[:n]...))
		rest = rest[n:]
	}
	return frames
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/256)
	}
	return b
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- tests -------------------------------------------------------------------

func TestConstants(t *testing.T) {
	if MaxMessageSize != 7609 {
		t.Errorf("MaxMessageSize = %d, want 7609", MaxMessageSize)
	}
	want := "ac1052ca95e569de69e02ebff333485f13f9b2da34c5a8a340526697a9ab2e0b394d8d04973c134005be1a0140bff6045bb26eb77a73eaa47813f6b49a7250dc"
	if got := hex.EncodeToString(PowerCycleDatagram[:]); got != want {
		t.Errorf("PowerCycleDatagram = %s, want %s", got, want)
	}
}

func TestInit(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	nonce := []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}

	// Allocation on the broadcast CID: the reply travels on the broadcast
	// CID and carries nonce, new CID, protocol 2, version, capabilities.
	hs.send(initFrame(BroadcastCID, CmdInit, 8, nonce...))
	hs.expect(mustHex(t, "ffffffff 86 0011 1122334455667788 01020304 02 050607 05"+strings.Repeat("00", 40)))

	// A second allocation gets a different CID.
	hs.send(initFrame(BroadcastCID, CmdInit, 8, nonce...))
	hs.expect(mustHex(t, "ffffffff 86 0011 1122334455667788 01020305 02 050607 05"+strings.Repeat("00", 40)))

	// INIT on an allocated channel re-synchronises it and keeps the CID.
	hs.send(initFrame(firstCID, CmdInit, 8, 9, 9, 9, 9, 9, 9, 9, 9))
	hs.expect(mustHex(t, "01020304 86 0011 0909090909090909 01020304 02 050607 05"+strings.Repeat("00", 40)))

	// INIT on a CID the host chose adopts it (see package doc), after
	// which the channel works.
	hs.send(initFrame(0x11223344, CmdInit, 8, nonce...))
	hs.expect(mustHex(t, "11223344 86 0011 1122334455667788 11223344 02 050607 05"+strings.Repeat("00", 40)))
	hs.send(initFrame(0x11223344, CmdPing, 1, 0xab))
	hs.expect(initFrame(0x11223344, CmdPing, 1, 0xab))
}

func TestInitAllocatorSkipsReservedAndUsed(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	var seq []uint32
	var mu sync.Mutex
	hs.srv.newCID = func() uint32 {
		mu.Lock()
		defer mu.Unlock()
		seq = append(seq, 0)
		switch len(seq) {
		case 1:
			return 0
		case 2:
			return BroadcastCID
		default:
			return 7
		}
	}
	// 0 steps to 1; the broadcast CID wraps to 0 and then 1 (taken) so 2;
	// 7 is fresh, then taken so 8.
	for _, want := range []uint32{1, 2, 7, 8} {
		if got := hs.openChannel(); got != want {
			t.Fatalf("allocated %08x, want %08x", got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		caps byte
		in   [][]byte // reports sent after channel firstCID is open
		want [][]byte
	}{
		{
			name: "INIT with a 7-byte nonce",
			in:   [][]byte{initFrame(BroadcastCID, CmdInit, 7, 1, 2, 3, 4, 5, 6, 7)},
			want: [][]byte{errFrame(BroadcastCID, ErrInvalidLen)},
		},
		{
			name: "INIT with a 9-byte payload on a channel",
			in:   [][]byte{initFrame(firstCID, CmdInit, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9)},
			want: [][]byte{errFrame(firstCID, ErrInvalidLen)},
		},
		{
			name: "INIT on CID 0",
			in:   [][]byte{initFrame(0, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8)},
			want: [][]byte{errFrame(0, ErrInvalidChannel)},
		},
		{
			name: "PING on CID 0",
			in:   [][]byte{initFrame(0, CmdPing, 1, 1)},
			want: [][]byte{errFrame(0, ErrInvalidChannel)},
		},
		{
			name: "PING on the broadcast CID",
			in:   [][]byte{initFrame(BroadcastCID, CmdPing, 8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88)},
			want: [][]byte{errFrame(BroadcastCID, ErrInvalidChannel)},
		},
		{
			name: "CBOR on the broadcast CID",
			in:   [][]byte{initFrame(BroadcastCID, CmdCBOR, 1, 4)},
			want: [][]byte{errFrame(BroadcastCID, ErrInvalidChannel)},
		},
		{
			name: "PING on an unallocated CID",
			in:   [][]byte{initFrame(0xdeadbeef, CmdPing, 1, 1)},
			want: [][]byte{errFrame(0xdeadbeef, ErrInvalidChannel)},
		},
		{
			name: "unknown command",
			in:   [][]byte{initFrame(firstCID, 0xE6, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "LOCK is not supported",
			in:   [][]byte{initFrame(firstCID, CmdLock, 1, 10)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "KEEPALIVE from the host",
			in:   [][]byte{initFrame(firstCID, CmdKeepalive, 1, 1)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "ERROR from the host",
			in:   [][]byte{initFrame(firstCID, CmdError, 1, 1)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "CBOR without CAPABILITY_CBOR",
			caps: CapWink,
			in:   [][]byte{initFrame(firstCID, CmdCBOR, 1, 4)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "MSG with CAPABILITY_NMSG",
			caps: CapCBOR | CapNMSG,
			in:   [][]byte{initFrame(firstCID, CmdMsg, 4, 0, 3, 0, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "WINK without CAPABILITY_WINK",
			caps: CapCBOR,
			in:   [][]byte{initFrame(firstCID, CmdWink, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidCmd)},
		},
		{
			name: "BCNT one over the maximum",
			in:   [][]byte{initFrame(firstCID, CmdPing, MaxMessageSize+1)},
			want: [][]byte{errFrame(firstCID, ErrInvalidLen)},
		},
		{
			name: "BCNT 0xffff",
			in:   [][]byte{initFrame(firstCID, CmdCBOR, 0xffff)},
			want: [][]byte{errFrame(firstCID, ErrInvalidLen)},
		},
		{
			name: "empty CBOR",
			in:   [][]byte{initFrame(firstCID, CmdCBOR, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidLen)},
		},
		{
			name: "empty MSG",
			in:   [][]byte{initFrame(firstCID, CmdMsg, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidLen)},
		},
		{
			name: "skipped sequence number drops the message",
			in: [][]byte{
				initFrame(firstCID, CmdPing, 0x490),
				contFrame(firstCID, 0), contFrame(firstCID, 1),
				contFrame(firstCID, 3), // skip 2
				contFrame(firstCID, 4), // ignored: nothing is assembled any more
				initFrame(firstCID, CmdPing, 1, 0x5a),
			},
			want: [][]byte{errFrame(firstCID, ErrInvalidSeq), initFrame(firstCID, CmdPing, 1, 0x5a)},
		},
		{
			name: "repeated sequence number",
			in:   [][]byte{initFrame(firstCID, CmdPing, 200), contFrame(firstCID, 0), contFrame(firstCID, 0)},
			want: [][]byte{errFrame(firstCID, ErrInvalidSeq)},
		},
		{
			name: "first continuation not 0",
			in:   [][]byte{initFrame(firstCID, CmdPing, 100), contFrame(firstCID, 1)},
			want: [][]byte{errFrame(firstCID, ErrInvalidSeq)},
		},
		{
			name: "initialisation packet while reassembling on the same channel",
			in: [][]byte{
				initFrame(firstCID, CmdPing, 0x400), contFrame(firstCID, 0), contFrame(firstCID, 1),
				initFrame(firstCID, CmdPing, 0x1000), // not a continuation
				contFrame(firstCID, 2),               // ignored
				initFrame(firstCID, CmdPing, 1, 0x5a),
			},
			want: [][]byte{errFrame(firstCID, ErrInvalidSeq), initFrame(firstCID, CmdPing, 1, 0x5a)},
		},
		{
			name: "spurious continuation packets are ignored",
			in: [][]byte{
				contFrame(firstCID, 0, 1, 2, 3), contFrame(0, 0), contFrame(BroadcastCID, 5),
				contFrame(0xdeadbeef, 0),
				initFrame(firstCID, CmdPing, 1, 0x5a),
			},
			want: [][]byte{initFrame(firstCID, CmdPing, 1, 0x5a)},
		},
		{
			name: "stray CANCEL gets no reply",
			in: [][]byte{
				initFrame(firstCID, CmdCancel, 0), initFrame(0, CmdCancel, 0),
				initFrame(BroadcastCID, CmdCancel, 0), initFrame(0xdeadbeef, CmdCancel, 0),
				initFrame(firstCID, CmdPing, 1, 0x5a),
			},
			want: [][]byte{initFrame(firstCID, CmdPing, 1, 0x5a)},
		},
		{
			name: "CANCEL during reassembly is ignored",
			in: [][]byte{
				initFrame(firstCID, CmdPing, 60, pattern(57)...),
				initFrame(firstCID, CmdCancel, 0),
				contFrame(firstCID, 0, pattern(60)[57:]...),
			},
			want: [][]byte{
				initFrame(firstCID, CmdPing, 60, pattern(57)...),
				contFrame(firstCID, 0, pattern(60)[57:]...),
			},
		},
		{
			name: "reports of the wrong size are dropped",
			in: [][]byte{
				initFrame(firstCID, CmdPing, 1, 1)[:63],
				append(initFrame(firstCID, CmdPing, 1, 2), 0),
				nil,
				initFrame(firstCID, CmdPing, 1, 0x5a),
			},
			want: [][]byte{initFrame(firstCID, CmdPing, 1, 0x5a)},
		},
		{
			name: "continuation on another channel while reassembling is ignored",
			in: [][]byte{
				initFrame(firstCID, CmdPing, 60, pattern(57)...),
				contFrame(firstCID+1, 0, 0xff, 0xff, 0xff),
				contFrame(firstCID, 0, pattern(60)[57:]...),
			},
			want: [][]byte{
				initFrame(firstCID, CmdPing, 60, pattern(57)...),
				contFrame(firstCID, 0, pattern(60)[57:]...),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t, nil, Config{Capabilities: tc.caps})
			if cid := hs.openChannel(); cid != firstCID {
				t.Fatalf("first channel %08x", cid)
			}
			hs.openChannel() // firstCID+1
			for _, r := range tc.in {
				hs.send(r)
			}
			hs.expect(tc.want...)
			hs.expectNone()
		})
	}
}

func TestPing(t *testing.T) {
	for _, n := range []int{0, 1, 57, 58, 116, 117, 1000, MaxMessageSize} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			hs := newHarness(t, nil, Config{})
			cid := hs.openChannel()
			payload := pattern(n)
			hs.sendMsg(cid, CmdPing, payload)
			want := hostFrames(cid, CmdPing, payload)
			hs.expect(want...)
			hs.expectNone()

			wantFrames := 1
			if n > 57 {
				wantFrames += (n - 57 + 58) / 59
			}
			if len(want) != wantFrames {
				t.Errorf("%d frames, want %d", len(want), wantFrames)
			}
			if n == MaxMessageSize && want[len(want)-1][4] != 127 {
				t.Errorf("last sequence number %d, want 127", want[len(want)-1][4])
			}
		})
	}
}

// TestPingExactBytes spells out a fragmented reply for 58 bytes: 57 in the
// initialisation packet, the 58th alone in continuation 0, zero padding.
func TestPingExactBytes(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	cid := hs.openChannel()
	payload := bytes.Repeat([]byte{0xaa}, 58)
	payload[57] = 0xbb
	hs.send(mustHex(t, "01020304 81 003a"+strings.Repeat("aa", 57)))
	hs.send(mustHex(t, "01020304 00 bb"+strings.Repeat("00", 58)))
	hs.expect(
		mustHex(t, "01020304 81 003a"+strings.Repeat("aa", 57)),
		mustHex(t, "01020304 00 bb"+strings.Repeat("00", 58)),
	)
	_ = cid
}

func TestCBORAndMSG(t *testing.T) {
	h := newFakeHandler()
	var gotReq, gotAPDU []byte
	h.cbor = func(_ context.Context, _ Transaction, req []byte) []byte {
		gotReq = slices.Clone(req)
		return append([]byte{0x00}, pattern(1000)...)
	}
	h.msg = func(_ context.Context, _ Transaction, apdu []byte) []byte {
		gotAPDU = slices.Clone(apdu)
		return []byte{0x69, 0x85}
	}
	hs := newHarness(t, h, Config{})
	cid := hs.openChannel()

	req := append([]byte{0x01}, pattern(300)...)
	hs.sendMsg(cid, CmdCBOR, req)
	want := hostFrames(cid, CmdCBOR, append([]byte{0x00}, pattern(1000)...))
	for i, w := range want {
		if got := hs.recvSkippingKeepalives(); !bytes.Equal(got, w) {
			t.Fatalf("CBOR reply frame %d:\n got %x\nwant %x", i, got, w)
		}
	}
	h.waitEvent(t, "cbor-done")
	if !bytes.Equal(gotReq, req) {
		t.Errorf("handler got %x, want %x", gotReq, req)
	}

	hs.send(initFrame(cid, CmdMsg, 7, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00))
	if got, w := hs.recvSkippingKeepalives(), initFrame(cid, CmdMsg, 2, 0x69, 0x85); !bytes.Equal(got, w) {
		t.Fatalf("MSG reply:\n got %x\nwant %x", got, w)
	}
	h.waitEvent(t, "msg-done")
	if want := []byte{0, 3, 0, 0, 0, 0, 0}; !bytes.Equal(gotAPDU, want) {
		t.Errorf("handler got APDU %x, want %x", gotAPDU, want)
	}
}

func TestWink(t *testing.T) {
	h := newFakeHandler()
	hs := newHarness(t, h, Config{})
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdWink, 0))
	hs.expect(initFrame(cid, CmdWink, 0))
	if ev := h.Events(); !slices.Equal(ev, []string{"wink"}) {
		t.Errorf("handler events %v", ev)
	}
}

func TestBadHandlerResponses(t *testing.T) {
	tests := []struct {
		name string
		cbor func(context.Context, Transaction, []byte) []byte
	}{
		{"empty", func(context.Context, Transaction, []byte) []byte { return nil }},
		{"too long", func(context.Context, Transaction, []byte) []byte { return make([]byte, MaxMessageSize+1) }},
		{"panic", func(context.Context, Transaction, []byte) []byte { panic("boom") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHandler()
			h.cbor = tc.cbor
			hs := newHarness(t, h, Config{})
			hs.skipKeepalives = true
			cid := hs.openChannel()
			hs.send(initFrame(cid, CmdCBOR, 1, 4))
			if got, w := hs.recvSkippingKeepalives(), errFrame(cid, ErrOther); !bytes.Equal(got, w) {
				t.Fatalf("got %x, want %x", got, w)
			}
			// The server is still usable.
			hs.send(initFrame(cid, CmdPing, 1, 1))
			hs.expect(initFrame(cid, CmdPing, 1, 1))
		})
	}
}

// blockingHandler returns a handler whose CBOR waits for release or for its
// context; started is signalled when it begins.
func blockingHandler() (h *fakeHandler, started chan context.Context, release chan []byte) {
	h = newFakeHandler()
	started = make(chan context.Context, 4)
	release = make(chan []byte, 4)
	h.cbor = func(ctx context.Context, _ Transaction, req []byte) []byte {
		started <- ctx
		select {
		case r := <-release:
			return r
		case <-ctx.Done():
			return []byte{0x2d} // CTAP2_ERR_KEEPALIVE_CANCEL
		}
	}
	return h, started, release
}

func waitStarted(t *testing.T, started chan context.Context) context.Context {
	t.Helper()
	select {
	case ctx := <-started:
		return ctx
	case <-time.After(recvTimeout):
		t.Fatal("handler never started")
		return nil
	}
}

func TestBusy(t *testing.T) {
	t.Run("while reassembling", func(t *testing.T) {
		hs := newHarness(t, nil, Config{})
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdPing, 99, pattern(57)...))

		start := time.Now()
		hs.send(initFrame(b, CmdPing, 99))
		hs.expect(errFrame(b, ErrChannelBusy))
		if d := time.Since(start); d > specBound {
			t.Errorf("busy reply after %v, want < %v", d, specBound)
		}
		hs.send(contFrame(b, 0)) // not a request: ignored

		// §11.2.5.1: INIT from a new application is a request from
		// another channel too, so it waits like any other.
		hs.send(initFrame(BroadcastCID, CmdInit, 8, 8, 7, 6, 5, 4, 3, 2, 1))
		hs.expect(errFrame(BroadcastCID, ErrChannelBusy))

		// The first channel's message still completes.
		hs.send(contFrame(a, 0, pattern(99)[57:]...))
		hs.expect(hostFrames(a, CmdPing, pattern(99))...)
		hs.expectNone()
	})

	t.Run("while the handler runs", func(t *testing.T) {
		h, started, release := blockingHandler()
		hs := newHarness(t, h, Config{})
		hs.skipKeepalives = true
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdCBOR, 1, 4))
		waitStarted(t, started)

		for _, tc := range []struct {
			in, want []byte
		}{
			{initFrame(b, CmdPing, 1, 1), errFrame(b, ErrChannelBusy)},
			{initFrame(b, CmdCBOR, 1, 4), errFrame(b, ErrChannelBusy)},
			{initFrame(a, CmdPing, 1, 1), errFrame(a, ErrChannelBusy)},
			{initFrame(a, CmdCBOR, 1, 4), errFrame(a, ErrChannelBusy)},
			{initFrame(b, CmdWink, 0), errFrame(b, ErrChannelBusy)},
			{initFrame(BroadcastCID, CmdPing, 1, 1), errFrame(BroadcastCID, ErrInvalidChannel)},
			// §11.2.5.1: INIT from another channel is no exception.
			{initFrame(b, CmdInit, 8, 1, 1, 1, 1, 1, 1, 1, 1), errFrame(b, ErrChannelBusy)},
			{initFrame(BroadcastCID, CmdInit, 8, 1, 1, 1, 1, 1, 1, 1, 1), errFrame(BroadcastCID, ErrChannelBusy)},
		} {
			start := time.Now()
			hs.send(tc.in)
			hs.expect(tc.want)
			if d := time.Since(start); d > specBound {
				t.Errorf("reply to %x after %v, want < %v", tc.in[:8], d, specBound)
			}
		}
		// CANCEL from another channel is ignored: the handler still runs.
		hs.send(initFrame(b, CmdCancel, 0))
		hs.expectNone()

		release <- []byte{0x00, 0xa0}
		hs.expect(initFrame(a, CmdCBOR, 2, 0x00, 0xa0))
		h.waitEvent(t, "cbor-done")
		hs.send(initFrame(b, CmdPing, 1, 1))
		hs.expect(initFrame(b, CmdPing, 1, 1))
	})
}

// TestInitFromAnotherChannelWhileBusy checks §11.2.5.1: while a transaction
// is in progress every initialisation packet from another channel, INIT
// included, gets ERR_CHANNEL_BUSY on its own CID and changes nothing: no
// channel is allocated, the transaction goes on. Channel validity is checked
// first, CANCEL stays silent, and INIT on the busy channel itself still
// re-synchronises it (TestResyncAbortsTransaction, TestResyncAbortsReassembly).
func TestInitFromAnotherChannelWhileBusy(t *testing.T) {
	nonce := []byte{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}
	intruders := func(b uint32) [][2][]byte {
		return [][2][]byte{
			{initFrame(BroadcastCID, CmdInit, 8, nonce...), errFrame(BroadcastCID, ErrChannelBusy)},
			{initFrame(b, CmdInit, 8, nonce...), errFrame(b, ErrChannelBusy)},
			// A CID the host chose (INIT adopts it when idle).
			{initFrame(0x11223344, CmdInit, 8, nonce...), errFrame(0x11223344, ErrChannelBusy)},
			// Contention is reported before the INIT's own length.
			{initFrame(BroadcastCID, CmdInit, 7, nonce[:7]...), errFrame(BroadcastCID, ErrChannelBusy)},
			// Channel validity comes first.
			{initFrame(0, CmdInit, 8, nonce...), errFrame(0, ErrInvalidChannel)},
		}
	}
	// afterwards checks that no intruder got a channel: the next
	// allocation is the one after a and b, and the host-chosen CID is
	// still unallocated.
	afterwards := func(t *testing.T, hs *harness) {
		t.Helper()
		hs.send(initFrame(0x11223344, CmdPing, 1, 1))
		hs.expect(errFrame(0x11223344, ErrInvalidChannel))
		hs.send(initFrame(BroadcastCID, CmdInit, 8, nonce...))
		hs.expect(mustHex(t, "ffffffff 86 0011 a1a2a3a4a5a6a7a8 01020306 02 050607 05"+strings.Repeat("00", 40)))
	}

	t.Run("while reassembling", func(t *testing.T) {
		hs := newHarness(t, nil, Config{})
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdPing, 99, pattern(57)...))
		for _, tc := range intruders(b) {
			hs.send(tc[0])
			hs.expect(tc[1])
		}
		hs.send(initFrame(b, CmdCancel, 0))
		hs.expectNone()
		// The message on a was not disturbed.
		hs.send(contFrame(a, 0, pattern(99)[57:]...))
		hs.expect(hostFrames(a, CmdPing, pattern(99))...)
		afterwards(t, hs)
		hs.expectNone()
	})

	t.Run("while the handler runs", func(t *testing.T) {
		h, started, release := blockingHandler()
		hs := newHarness(t, h, Config{})
		hs.skipKeepalives = true
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdCBOR, 1, 4))
		ctx := waitStarted(t, started)
		for _, tc := range intruders(b) {
			hs.send(tc[0])
			hs.expect(tc[1])
		}
		hs.send(initFrame(b, CmdCancel, 0))
		hs.expectNone()
		if ctx.Err() != nil {
			t.Fatal("an intruder's INIT or CANCEL cancelled the transaction")
		}
		release <- []byte{0x00, 0xa0}
		hs.expect(initFrame(a, CmdCBOR, 2, 0x00, 0xa0))
		h.waitEvent(t, "cbor-done")
		afterwards(t, hs)
		hs.expectNone()
	})

	t.Run("while an aborted handler still runs", func(t *testing.T) {
		// After INIT on a aborted its transaction, the device stays busy
		// until the handler returns (package doc), for INIT too.
		h, started, release := blockingHandler()
		h.cbor = func(ctx context.Context, _ Transaction, req []byte) []byte {
			started <- ctx
			<-ctx.Done()
			<-release
			return []byte{0x00, 0xee}
		}
		defer close(release) // a failing test must not leave the handler blocked
		hs := newHarness(t, h, Config{})
		hs.skipKeepalives = true
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdCBOR, 1, 4))
		waitStarted(t, started)
		hs.send(initFrame(a, CmdInit, 8, nonce...))
		hs.expect(mustHex(t, "01020304 86 0011 a1a2a3a4a5a6a7a8 01020304 02 050607 05"+strings.Repeat("00", 40)))
		for _, tc := range intruders(b) {
			hs.send(tc[0])
			hs.expect(tc[1])
		}
		release <- nil
		h.waitEvent(t, "cbor-done")
		afterwards(t, hs)
		hs.expectNone()
	})
}

func TestKeepalive(t *testing.T) {
	h, started, release := blockingHandler()
	hs := newHarness(t, h, Config{})
	cid := hs.openChannel()

	start := time.Now()
	hs.send(initFrame(cid, CmdCBOR, 1, 4))
	waitStarted(t, started)

	// §11.2.9.1.7 via FIELD-NOTES §7: the first keepalive within 100 ms.
	hs.expect(initFrame(cid, CmdKeepalive, 1, StatusProcessing))
	if d := time.Since(start); d > specBound {
		t.Errorf("first keepalive after %v, want < %v", d, specBound)
	}
	// Then periodically; the bound has slack for scheduling only.
	last := time.Now()
	for range 3 {
		hs.expect(initFrame(cid, CmdKeepalive, 1, StatusProcessing))
		if d := time.Since(last); d > specBound+50*time.Millisecond {
			t.Errorf("keepalive gap %v, want about %v", d, defaultKeepaliveInterval)
		}
		last = time.Now()
	}

	// A status change is reported at once, then periodically.
	tx := h.transaction()
	tx.SetStatus(StatusUPNeeded)
	// A periodic PROCESSING keepalive may have raced ahead of it.
	if r := hs.recv(); !bytes.Equal(r, initFrame(cid, CmdKeepalive, 1, StatusUPNeeded)) {
		if !bytes.Equal(r, initFrame(cid, CmdKeepalive, 1, StatusProcessing)) {
			t.Fatalf("got %x, want an UPNEEDED keepalive", r)
		}
		hs.expect(initFrame(cid, CmdKeepalive, 1, StatusUPNeeded))
	}
	for range 2 {
		hs.expect(initFrame(cid, CmdKeepalive, 1, StatusUPNeeded))
	}
	tx.SetStatus(StatusUPNeeded) // unchanged: no extra report needed
	tx.SetStatus(0x55)           // undefined: ignored

	release <- []byte{0x00}
	for {
		r := hs.recv()
		if r[4] == CmdKeepalive {
			if r[7] != StatusUPNeeded {
				t.Fatalf("keepalive status %d after SetStatus(UPNEEDED)", r[7])
			}
			continue
		}
		if w := initFrame(cid, CmdCBOR, 1, 0x00); !bytes.Equal(r, w) {
			t.Fatalf("got %x, want %x", r, w)
		}
		break
	}
	// No keepalives once the transaction is over.
	hs.expectNone()
}

// TestInstantPresence checks FIELD-NOTES §7: a handler that asks for
// presence and gets it at once still shows one UPNEEDED keepalive, ahead of
// its response.
func TestInstantPresence(t *testing.T) {
	h := newFakeHandler()
	var channel uint32
	h.cbor = func(_ context.Context, t Transaction, req []byte) []byte {
		channel = t.Channel()
		t.SetStatus(StatusUPNeeded)
		return []byte{0x00}
	}
	hs := newHarness(t, h, Config{KeepaliveInterval: time.Hour})
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdCBOR, 1, 1))
	r := hs.recv()
	for bytes.Equal(r, initFrame(cid, CmdKeepalive, 1, StatusProcessing)) {
		r = hs.recv() // only if the handler goroutine was scheduled late
	}
	if w := initFrame(cid, CmdKeepalive, 1, StatusUPNeeded); !bytes.Equal(r, w) {
		t.Fatalf("got %x, want %x", r, w)
	}
	hs.expect(initFrame(cid, CmdCBOR, 1, 0x00))
	hs.expectNone()
	if channel != cid {
		t.Errorf("Transaction.Channel() = %08x, want %08x", channel, cid)
	}
}

func TestCancel(t *testing.T) {
	h, started, _ := blockingHandler()
	hs := newHarness(t, h, Config{})
	hs.skipKeepalives = true
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdCBOR, 1, 4))
	ctx := waitStarted(t, started)

	hs.send(initFrame(cid, CmdCancel, 0))
	select {
	case <-ctx.Done():
	case <-time.After(recvTimeout):
		t.Fatal("CANCEL did not cancel the handler's context")
	}
	// The handler's own CTAP2_ERR_KEEPALIVE_CANCEL is the only reply.
	hs.expect(initFrame(cid, CmdCBOR, 1, 0x2d))
	hs.expectNone()
}

func TestCancelIgnoredForMSG(t *testing.T) {
	h := newFakeHandler()
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	h.msg = func(ctx context.Context, _ Transaction, apdu []byte) []byte {
		started <- ctx
		<-release
		return []byte{0x90, 0x00}
	}
	hs := newHarness(t, h, Config{})
	hs.skipKeepalives = true
	defer close(release)
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdMsg, 7))
	ctx := waitStarted(t, started)
	hs.send(initFrame(cid, CmdCancel, 0))
	hs.expectNone()
	if ctx.Err() != nil {
		t.Error("CANCEL cancelled a MSG request")
	}
	release <- struct{}{}
	hs.expect(initFrame(cid, CmdMsg, 2, 0x90, 0x00))
}

func TestResyncAbortsTransaction(t *testing.T) {
	h, started, release := blockingHandler()
	h.cbor = func(ctx context.Context, _ Transaction, req []byte) []byte {
		started <- ctx
		<-ctx.Done()
		<-release // finish only when the test says so
		return []byte{0x00, 0xee}
	}
	hs := newHarness(t, h, Config{})
	hs.skipKeepalives = true
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdCBOR, 1, 4))
	ctx := waitStarted(t, started)

	hs.send(initFrame(cid, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8))
	hs.expect(mustHex(t, "01020304 86 0011 0102030405060708 01020304 02 050607 05"+strings.Repeat("00", 40)))
	select {
	case <-ctx.Done():
	case <-time.After(recvTimeout):
		t.Fatal("INIT did not cancel the transaction")
	}
	// Until the aborted handler returns, the device is still busy.
	hs.send(initFrame(cid, CmdPing, 1, 1))
	hs.expect(errFrame(cid, ErrChannelBusy))

	release <- nil
	h.waitEvent(t, "cbor-done")
	// The aborted transaction's response is dropped; the channel works.
	hs.send(initFrame(cid, CmdPing, 1, 2))
	hs.expect(initFrame(cid, CmdPing, 1, 2))
	hs.expectNone()
}

func TestResyncAbortsReassembly(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	cid := hs.openChannel()
	hs.send(initFrame(cid, CmdPing, 0x400))
	hs.send(contFrame(cid, 0))
	hs.send(initFrame(cid, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8))
	hs.expect(mustHex(t, "01020304 86 0011 0102030405060708 01020304 02 050607 05"+strings.Repeat("00", 40)))
	hs.send(contFrame(cid, 1)) // spurious now
	hs.send(initFrame(cid, CmdPing, 1, 3))
	hs.expect(initFrame(cid, CmdPing, 1, 3))
	// No ERR_MSG_TIMEOUT for the aborted message.
	time.Sleep(defaultMsgTimeout)
	hs.expectNone()
}

func TestMsgTimeout(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	cid := hs.openChannel()
	start := time.Now()
	hs.send(initFrame(cid, CmdPing, 0x400))
	hs.send(contFrame(cid, 0))
	hs.send(contFrame(cid, 1))
	hs.expect(errFrame(cid, ErrMsgTimeout))
	// Conformance suites accept 400-1000 ms; only the lower bound is a
	// property of this code, the upper one also of the machine's load.
	if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("ERR_MSG_TIMEOUT after %v, want about %v", d, defaultMsgTimeout)
	}
	// The message is gone.
	hs.send(contFrame(cid, 2))
	hs.expectNone()
	hs.send(initFrame(cid, CmdPing, 1, 3))
	hs.expect(initFrame(cid, CmdPing, 1, 3))
}

func TestMsgTimeoutRestartsPerPacket(t *testing.T) {
	hs := newHarness(t, nil, Config{MsgTimeout: 300 * time.Millisecond})
	cid := hs.openChannel()
	payload := pattern(57 + 3*59)
	frames := hostFrames(cid, CmdPing, payload)
	for _, f := range frames {
		hs.send(f)
		time.Sleep(150 * time.Millisecond) // 600 ms in all, each gap < 300 ms
	}
	hs.expect(hostFrames(cid, CmdPing, payload)...)
}

func TestBusyThenTimeout(t *testing.T) {
	// The fido2-tests "check busy" sequence: the busy reply goes to the
	// intruder at once, the timeout to the stalled channel later.
	hs := newHarness(t, nil, Config{})
	a, b := hs.openChannel(), hs.openChannel()
	hs.send(initFrame(a, CmdPing, 0x400))
	hs.send(initFrame(b, CmdPing, 0x400))
	hs.expect(errFrame(b, ErrChannelBusy), errFrame(a, ErrMsgTimeout))
}

// TestPowerCycle checks what a power cycle (ErrPowerCycle: the simulation
// transport's datagram) does: Handler.PowerCycle resets what CTAP ties to
// power-up, any partial message and any transaction are dropped, but the
// allocated channels stay, as in the simulators this convention comes from;
// conformance suites keep using their channel after it.
func TestPowerCycle(t *testing.T) {
	t.Run("during reassembly", func(t *testing.T) {
		h := newFakeHandler()
		// A short timeout: a reassembly that survived would time out
		// well within quietPeriod.
		hs := newHarness(t, h, Config{MsgTimeout: 20 * time.Millisecond})
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdPing, 100, pattern(57)...)) // half a message
		hs.powerCycle()
		h.waitEvent(t, "powercycle")
		hs.expectNone() // no ERR_MSG_TIMEOUT for the dropped message
		hs.send(contFrame(a, 0, pattern(100)[57:]...))
		hs.expectNone() // a spurious continuation now

		// Both channels still work; a's next initialisation packet
		// starts a new message (no ERR_INVALID_SEQ for the dropped one).
		hs.send(initFrame(a, CmdPing, 1, 1))
		hs.expect(initFrame(a, CmdPing, 1, 1))
		hs.send(initFrame(b, CmdPing, 1, 2))
		hs.expect(initFrame(b, CmdPing, 1, 2))
		// A new application gets a new channel, not a or b.
		hs.send(initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8))
		hs.expect(mustHex(t, "ffffffff 86 0011 0102030405060708 01020306 02 050607 05"+strings.Repeat("00", 40)))
		hs.expectNone()
		if ev := h.Events(); !slices.Equal(ev, []string{"powercycle"}) {
			t.Errorf("handler events %v", ev)
		}
	})

	t.Run("during a transaction", func(t *testing.T) {
		h, started, release := blockingHandler()
		h.cbor = func(ctx context.Context, _ Transaction, req []byte) []byte {
			started <- ctx
			<-ctx.Done()
			<-release
			return []byte{0x00, 0xee}
		}
		defer close(release) // a failing test must not leave the handler blocked
		hs := newHarness(t, h, Config{})
		a, b := hs.openChannel(), hs.openChannel()
		hs.send(initFrame(a, CmdCBOR, 1, 4))
		ctx := waitStarted(t, started)
		hs.powerCycle()
		select {
		case <-ctx.Done():
		case <-time.After(recvTimeout):
			t.Fatal("power cycle did not cancel the transaction")
		}
		// Drain keepalives written before the power cycle.
		for {
			select {
			case r := <-hs.dev.out:
				if r[4] != CmdKeepalive {
					t.Fatalf("unexpected %x", r)
				}
				continue
			case <-time.After(quietPeriod):
			}
			break
		}
		// Until the aborted handler returns the device is busy (calls
		// are serialised), on a's channel and for everyone else.
		hs.send(initFrame(a, CmdPing, 1, 1))
		hs.expect(errFrame(a, ErrChannelBusy))
		hs.send(initFrame(b, CmdPing, 1, 1))
		hs.expect(errFrame(b, ErrChannelBusy))
		// No keepalives for the aborted transaction, and PowerCycle waits.
		if slices.Contains(h.Events(), "powercycle") {
			t.Fatal("PowerCycle called while the handler ran")
		}
		release <- nil
		h.waitEvent(t, "powercycle")
		if ev := h.Events(); !slices.Equal(ev, []string{"cbor", "cbor-done", "powercycle"}) {
			t.Errorf("handler events %v", ev)
		}
		hs.expectNone() // the response was dropped
		// The channels survived the power cycle.
		hs.send(initFrame(a, CmdPing, 1, 3))
		hs.expect(initFrame(a, CmdPing, 1, 3))
		hs.send(initFrame(b, CmdPing, 1, 4))
		hs.expect(initFrame(b, CmdPing, 1, 4))
		hs.expectNone()
	})
}

// TestNewServeStartsWithoutChannels checks the other kind of unplug: a
// device that goes away for real (uhid destroy and create, a daemon
// restart) ends one Serve, and the next Serve, even on the same Server,
// knows no channels.
func TestNewServeStartsWithoutChannels(t *testing.T) {
	srv := NewServer(newFakeHandler(), Config{Capabilities: testCaps, Version: testVersion, Logger: testLogger()})
	srv.newCID = func() uint32 { return firstCID }
	dev := &scriptDevice{reads: [][]byte{
		initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8),
		initFrame(firstCID, CmdPing, 1, 1),
	}}
	if err := srv.Serve(context.Background(), dev); !errors.Is(err, io.EOF) {
		t.Fatalf("Serve = %v, want io.EOF", err)
	}
	want := [][]byte{
		mustHex(t, "ffffffff 86 0011 0102030405060708 01020304 02 050607 05"+strings.Repeat("00", 40)),
		initFrame(firstCID, CmdPing, 1, 1),
	}
	if !slices.EqualFunc(dev.writes, want, bytes.Equal) {
		t.Fatalf("first Serve wrote\n%x\nwant\n%x", dev.writes, want)
	}

	dev = &scriptDevice{reads: [][]byte{initFrame(firstCID, CmdPing, 1, 1)}}
	if err := srv.Serve(context.Background(), dev); !errors.Is(err, io.EOF) {
		t.Fatalf("Serve = %v, want io.EOF", err)
	}
	if want := [][]byte{errFrame(firstCID, ErrInvalidChannel)}; !slices.EqualFunc(dev.writes, want, bytes.Equal) {
		t.Fatalf("second Serve wrote\n%x\nwant\n%x", dev.writes, want)
	}
}

func TestChannelRecycling(t *testing.T) {
	hs := newHarness(t, nil, Config{})
	cids := make([]uint32, 0, maxChannels+1)
	for range maxChannels {
		cids = append(cids, hs.openChannel())
	}
	// Use the first channel so the second becomes the least recently used.
	hs.send(initFrame(cids[0], CmdPing, 1, 1))
	hs.expect(initFrame(cids[0], CmdPing, 1, 1))
	cids = append(cids, hs.openChannel())

	hs.send(initFrame(cids[1], CmdPing, 1, 1))
	hs.expect(errFrame(cids[1], ErrInvalidChannel))
	for _, c := range []uint32{cids[0], cids[2], cids[maxChannels]} {
		hs.send(initFrame(c, CmdPing, 1, 1))
		hs.expect(initFrame(c, CmdPing, 1, 1))
	}
}

func TestServeReturns(t *testing.T) {
	t.Run("read error", func(t *testing.T) {
		dev := newMemDevice()
		srv := NewServer(newFakeHandler(), Config{})
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(context.Background(), dev) }()
		boom := errors.New("boom")
		dev.in <- memRead{err: boom}
		select {
		case err := <-errc:
			if !errors.Is(err, boom) {
				t.Errorf("Serve = %v, want it to wrap %v", err, boom)
			}
		case <-time.After(recvTimeout):
			t.Fatal("Serve did not return")
		}
	})

	t.Run("context cancelled during a transaction", func(t *testing.T) {
		dev := newMemDevice()
		defer dev.close()
		h, started, _ := blockingHandler()
		srv := NewServer(h, Config{Capabilities: CapCBOR})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ctx, dev) }()
		dev.in <- memRead{report: initFrame(BroadcastCID, CmdInit, 8)}
		r := <-dev.out
		cid := binary.BigEndian.Uint32(r[15:])
		dev.in <- memRead{report: initFrame(cid, CmdCBOR, 1, 4)}
		waitStarted(t, started)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve = %v, want context.Canceled", err)
			}
		case <-time.After(recvTimeout):
			t.Fatal("Serve did not return")
		}
		// Serve waited for the handler.
		if ev := h.Events(); !slices.Equal(ev, []string{"cbor", "cbor-done"}) {
			t.Errorf("handler events %v", ev)
		}
	})

	t.Run("misuse", func(t *testing.T) {
		if err := NewServer(nil, Config{}).Serve(context.Background(), newMemDevice()); err == nil {
			t.Error("Serve without a handler succeeded")
		}
		if err := NewServer(newFakeHandler(), Config{}).Serve(context.Background(), nil); err == nil {
			t.Error("Serve without a device succeeded")
		}
		hs := newHarness(t, nil, Config{})
		hs.openChannel() // Serve is running
		if err := hs.srv.Serve(context.Background(), newMemDevice()); err == nil {
			t.Error("concurrent Serve succeeded")
		}
	})
}

// TestSetStatusOutsideTransaction: a handler that keeps its Transaction
// and reports a status after the transaction ended neither blocks nor
// makes the server send a keepalive.
func TestSetStatusOutsideTransaction(t *testing.T) {
	h := newFakeHandler()
	hs := newHarness(t, h, Config{KeepaliveInterval: time.Hour})
	cid := hs.openChannel()
	hs.skipKeepalives = true
	hs.send(initFrame(cid, CmdCBOR, 1, 1))
	hs.expect(initFrame(cid, CmdCBOR, 2, 0x00, 0x01))
	h.waitEvent(t, "cbor-done")
	hs.skipKeepalives = false
	done := make(chan struct{})
	go func() { h.transaction().SetStatus(StatusUPNeeded); close(done) }()
	select {
	case <-done:
	case <-time.After(recvTimeout):
		t.Fatal("SetStatus after the transaction blocked")
	}
	hs.expectNone()
}
