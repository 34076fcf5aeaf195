package ctaphid

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

// scriptDevice replays a fixed list of reports, then reports io.EOF. A
// report equal to PowerCycleDatagram stands for a power cycle.
type scriptDevice struct {
	reads [][]byte

	mu     sync.Mutex
	writes [][]byte
}

func (d *scriptDevice) ReadReport() ([]byte, error) {
	if len(d.reads) == 0 {
		return nil, io.EOF
	}
	r := d.reads[0]
	d.reads = d.reads[1:]
	if bytes.Equal(r, PowerCycleDatagram[:]) {
		return nil, ErrPowerCycle
	}
	return r, nil
}

func (d *scriptDevice) WriteReport(r []byte) error {
	d.mu.Lock()
	d.writes = append(d.writes, bytes.Clone(r))
	d.mu.Unlock()
	return nil
}

// fuzzHandler exercises every kind of handler behaviour, chosen by the
// request's first byte.
type fuzzHandler struct{}

func (fuzzHandler) CBOR(ctx context.Context, t Transaction, req []byte) []byte {
	switch req[0] % 5 {
	case 0:
		return append([]byte{0}, req...)
	case 1:
		t.SetStatus(StatusUPNeeded)
		t.SetStatus(req[len(req)-1])
		return []byte{0}
	case 2:
		return nil // unsendable
	case 3:
		select {
		case <-ctx.Done():
			return []byte{0x2d}
		case <-time.After(100 * time.Microsecond):
			return make([]byte, MaxMessageSize+int(req[len(req)-1])%2)
		}
	default:
		panic("fuzz handler panic")
	}
}

func (fuzzHandler) MSG(_ context.Context, _ Transaction, apdu []byte) []byte {
	return append(apdu, 0x90, 0x00)
}
func (fuzzHandler) Wink()       {}
func (fuzzHandler) PowerCycle() {}

// FuzzServer's input is a compact encoding of a stream of reports, of which
// only the first maxFuzzInput bytes count. Every input is a whole Serve run,
// and the fuzzer minimizes each input that finds new coverage by re-running
// it with bytes removed, up to about len(input)²/2 runs (the session's
// timers and goroutines make some coverage flaky, so often nothing can go).
// With one raw 64-byte report per 64 input bytes and no cap, that kept the
// worker minimizing for most of a one-minute run: first on the 1000-byte and
// MaxMessageSize PING seeds, and with small seeds still on inputs that the
// mutator had grown to a kilobyte. 128 bytes hold a dozen or more reports;
// long messages are for TestPing and FuzzReassembly.
//
// Each report is one length byte b followed by its bytes:
//   - b <= 64: b bytes, zero-padded to a 64-byte report (64 < b < 0x80
//     counts as 64);
//   - b == 0xff: PowerCycleDatagram;
//   - otherwise b&0x7f bytes as they are: a report of the wrong size (or
//     a 64-byte one).
//
// An input that ends early shortens the last report's bytes.
const (
	fuzzPowerCycle = 0xff
	maxFuzzInput   = 128
)

// fuzzReports decodes a FuzzServer input.
func fuzzReports(data []byte) [][]byte {
	var reports [][]byte
	for len(data) > 0 {
		b := data[0]
		data = data[1:]
		switch {
		case b == fuzzPowerCycle:
			reports = append(reports, PowerCycleDatagram[:])
		case b&0x80 != 0:
			n := min(int(b&0x7f), len(data))
			reports = append(reports, data[:n])
			data = data[n:]
		default:
			n := min(int(b), ReportSize, len(data))
			r := make([]byte, ReportSize)
			copy(r, data[:n])
			reports = append(reports, r)
			data = data[n:]
		}
	}
	return reports
}

// fuzzEncode is the inverse of fuzzReports: 64-byte reports lose their
// trailing zeros. Other reports must be shorter than 127 bytes.
func fuzzEncode(reports ...[]byte) []byte {
	var out []byte
	for _, r := range reports {
		switch {
		case bytes.Equal(r, PowerCycleDatagram[:]):
			out = append(out, fuzzPowerCycle)
		case len(r) != ReportSize:
			out = append(out, 0x80|byte(len(r)))
			out = append(out, r...)
		default:
			r = bytes.TrimRight(r, "\x00")
			out = append(out, byte(len(r)))
			out = append(out, r...)
		}
	}
	return out
}

// fuzzServerSeeds returns FuzzServer's seed inputs.
func fuzzServerSeeds() [][]byte {
	var seeds [][]byte
	add := func(reports ...[]byte) { seeds = append(seeds, fuzzEncode(reports...)) }
	const cid = firstCID
	initB := initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8)
	add(initB)
	add(initB, initFrame(cid, CmdPing, 1, 1))
	// A two-packet message, and one that stops after a few packets of a
	// MaxMessageSize BCNT (TestPing sends whole long messages).
	add(append([][]byte{initB}, hostFrames(cid, CmdPing, append(make([]byte, 59), 0x5a))...)...)
	add(initB, initFrame(cid, CmdPing, MaxMessageSize), contFrame(cid, 0), contFrame(cid, 1))
	add(initB, initFrame(cid, CmdCBOR, 3, 0, 1, 2))
	add(initB, initFrame(cid, CmdCBOR, 2, 1, 7), initFrame(cid, CmdCancel, 0))
	add(initB, initFrame(cid, CmdCBOR, 2, 3, 1), initFrame(cid, CmdCancel, 0), initFrame(cid+1, CmdPing, 0))
	add(initB, initFrame(cid, CmdCBOR, 1, 2), initFrame(cid, CmdCBOR, 1, 4))
	add(initB, initFrame(cid, CmdMsg, 4, 0, 1, 0, 0), initFrame(cid, CmdWink, 0))
	// INIT while busy: from a new application, from another channel, and
	// on the busy channel itself.
	add(initB, initB, initFrame(cid, CmdPing, 100), initB, initFrame(cid+1, CmdInit, 8), initFrame(cid, CmdInit, 8))
	add(initB, initFrame(cid, CmdCBOR, 2, 3, 0), initFrame(cid, CmdInit, 8), PowerCycleDatagram[:])
	// A power cycle in the middle of a message; the channel stays.
	add(initB, initFrame(cid, CmdPing, 100), PowerCycleDatagram[:], contFrame(cid, 0), initFrame(cid, CmdPing, 1, 1))
	add(initB, initFrame(cid, CmdPing, 0x490), contFrame(cid, 0), contFrame(cid, 2))
	add(initB, initFrame(cid, CmdPing, 0x490), initFrame(cid, CmdPing, 1))
	add(initB, initFrame(cid, CmdPing, 100), initFrame(cid+1, CmdPing, 1), contFrame(cid, 0))
	add(initFrame(0, CmdInit, 8), initFrame(BroadcastCID, CmdPing, 0), initFrame(7, CmdLock, 0xffff))
	// Reports of the wrong size.
	add(initFrame(0x11223344, CmdInit, 8), initFrame(0x11223344, CmdCBOR, 1, 4)[:63], []byte{1, 2, 3}, nil)
	add()
	return seeds
}

func FuzzServer(f *testing.F) {
	for _, seed := range fuzzServerSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// min rather than an if, so that a long input adds no coverage
		// of its own and is never minimized for it.
		dev := &scriptDevice{reads: fuzzReports(data[:min(len(data), maxFuzzInput)])}
		srv := NewServer(fuzzHandler{}, Config{
			Capabilities:      CapWink | CapCBOR,
			MsgTimeout:        time.Millisecond,
			KeepaliveInterval: time.Millisecond,
		})
		next := uint32(firstCID)
		srv.newCID = func() uint32 { next++; return next - 1 }
		if err := srv.Serve(context.Background(), dev); !errors.Is(err, io.EOF) {
			t.Fatalf("Serve = %v, want io.EOF", err)
		}
		dev.mu.Lock()
		defer dev.mu.Unlock()
		for _, w := range dev.writes {
			if len(w) != ReportSize {
				t.Fatalf("wrote a %d-byte report %x", len(w), w)
			}
			if w[4]&typeInit != 0 {
				if bcnt := int(binary.BigEndian.Uint16(w[5:7])); bcnt > MaxMessageSize {
					t.Fatalf("wrote BCNT %d", bcnt)
				}
				if !slices.Contains([]byte{CmdPing, CmdMsg, CmdInit, CmdWink, CmdCBOR, CmdKeepalive, CmdError}, w[4]) {
					t.Fatalf("wrote command 0x%02x", w[4])
				}
				if w[4] == CmdError && (binary.BigEndian.Uint16(w[5:7]) != 1 || !slices.Contains([]byte{ErrInvalidCmd, ErrInvalidLen,
					ErrInvalidSeq, ErrMsgTimeout, ErrChannelBusy, ErrInvalidChannel, ErrOther}, w[7])) {
					t.Fatalf("wrote error %x", w[:8])
				}
			}
		}
	})
}

// TestFuzzServerSeeds checks that FuzzServer's seeds stay small, so that
// the fuzzer spends its time fuzzing rather than minimizing, that together
// they still reach every path (INIT, PING, CBOR, MSG, WINK, CANCEL,
// continuation packets, a power cycle), and that the input encoding
// round-trips.
func TestFuzzServerSeeds(t *testing.T) {
	const maxSeed = 80 // bytes, well under maxFuzzInput
	cmds := map[byte]bool{}
	var cont, powerCycle bool
	for i, seed := range fuzzServerSeeds() {
		if len(seed) > maxSeed {
			t.Errorf("seed %d is %d bytes, want at most %d", i, len(seed), maxSeed)
		}
		reports := fuzzReports(seed)
		if re := fuzzEncode(reports...); !bytes.Equal(re, seed) {
			t.Errorf("seed %d: %x decodes and encodes to %x", i, seed, re)
		}
		for _, r := range reports {
			switch {
			case bytes.Equal(r, PowerCycleDatagram[:]):
				powerCycle = true
			case len(r) != ReportSize:
			case r[4]&typeInit != 0:
				cmds[r[4]] = true
			default:
				cont = true
			}
		}
	}
	for _, c := range []byte{CmdInit, CmdPing, CmdCBOR, CmdMsg, CmdWink, CmdCancel} {
		if !cmds[c] {
			t.Errorf("no seed sends command 0x%02x", c)
		}
	}
	if !cont || !powerCycle {
		t.Errorf("seeds with continuation packets: %v, with a power cycle: %v", cont, powerCycle)
	}
}

func FuzzReassembly(f *testing.F) {
	f.Add(uint32(firstCID), byte(CmdPing), pattern(0), []byte{})
	f.Add(uint32(firstCID), byte(CmdCBOR), pattern(57), []byte{0, 1})
	f.Add(uint32(BroadcastCID), byte(CmdMsg), pattern(58), []byte{0, 0, 0})
	f.Add(uint32(0), byte(0x7f), pattern(1000), []byte{1, 2, 3, 0x7f, 0x80})
	f.Add(uint32(1), byte(0xff), pattern(MaxMessageSize), bytes.Repeat([]byte{5}, 300))
	f.Add(uint32(1), byte(0xff), pattern(MaxMessageSize+1), []byte{})

	f.Fuzz(func(t *testing.T, cid uint32, cmd byte, payload, junk []byte) {
		cmd |= typeInit
		frames, err := fragment(cid, cmd, payload)
		if len(payload) > MaxMessageSize {
			if err == nil {
				t.Fatalf("fragment accepted %d bytes", len(payload))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}

		// Fragmenting and reassembling is the identity.
		var a *reassembly
		for i, fr := range frames {
			p, err := parsePacket(fr)
			if err != nil {
				t.Fatal(err)
			}
			if p.cid != cid || p.init != (i == 0) {
				t.Fatalf("frame %d: cid %08x init %v", i, p.cid, p.init)
			}
			if i == 0 {
				if p.cmd != cmd || p.bcnt != len(payload) {
					t.Fatalf("init frame cmd 0x%02x bcnt %d", p.cmd, p.bcnt)
				}
				a = newReassembly(p.cid, p.cmd, p.bcnt, p.data)
				continue
			}
			if a.complete() {
				t.Fatalf("complete before frame %d of %d", i, len(frames))
			}
			if err := a.add(p.seq, p.data); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
		if !a.complete() || !bytes.Equal(a.message(), payload) {
			t.Fatalf("reassembled %x, want %x", a.message(), payload)
		}

		// Arbitrary continuation sequences never overfill the buffer
		// and are accepted only in order.
		b := newReassembly(cid, cmd, len(payload), payload)
		want := 0
		for _, seq := range junk {
			before := len(b.message())
			err := b.add(seq, pattern(contDataSize))
			switch {
			case err == nil && (int(seq) != want || before >= len(payload)):
				t.Fatalf("accepted seq %d, want %d", seq, want)
			case err == nil:
				want++
			case !errors.Is(err, errSequence):
				t.Fatalf("add: %v", err)
			}
			if len(b.message()) > len(payload) {
				t.Fatalf("buffer holds %d bytes, BCNT %d", len(b.message()), len(payload))
			}
		}
	})
}
