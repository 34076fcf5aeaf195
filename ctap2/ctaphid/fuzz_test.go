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

func (fuzzHandler) CBOR(ctx context.Context, req []byte) []byte {
	switch req[0] % 5 {
	case 0:
		return append([]byte{0}, req...)
	case 1:
		SetStatus(ctx, StatusUPNeeded)
		SetStatus(ctx, req[len(req)-1])
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

func (fuzzHandler) MSG(_ context.Context, apdu []byte) []byte { return append(apdu, 0x90, 0x00) }
func (fuzzHandler) Wink()                                     {}
func (fuzzHandler) PowerCycle()                               {}

func FuzzServer(f *testing.F) {
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	const cid = firstCID
	initB := initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8)
	f.Add(cat(initB))
	f.Add(cat(initB, initFrame(cid, CmdPing, 1, 1)))
	f.Add(cat(append([][]byte{initB}, hostFrames(cid, CmdPing, pattern(1000))...)...))
	f.Add(cat(append([][]byte{initB}, hostFrames(cid, CmdPing, pattern(MaxMessageSize))...)...))
	f.Add(cat(initB, hostFrames(cid, CmdCBOR, []byte{0, 1, 2})[0]))
	f.Add(cat(initB, initFrame(cid, CmdCBOR, 2, 1, 7), initFrame(cid, CmdCancel, 0)))
	f.Add(cat(initB, initFrame(cid, CmdCBOR, 2, 3, 1), initFrame(cid, CmdCancel, 0), initFrame(cid+1, CmdPing, 0)))
	f.Add(cat(initB, initFrame(cid, CmdCBOR, 1, 2), initFrame(cid, CmdCBOR, 1, 4)))
	f.Add(cat(initB, initFrame(cid, CmdMsg, 4, 0, 1, 0, 0), initFrame(cid, CmdWink, 0)))
	f.Add(cat(initB, initFrame(cid, CmdCBOR, 2, 3, 0), initFrame(cid, CmdInit, 8), PowerCycleDatagram[:]))
	f.Add(cat(initB, initFrame(cid, CmdPing, 0x490), contFrame(cid, 0), contFrame(cid, 2)))
	f.Add(cat(initB, initFrame(cid, CmdPing, 0x490), initFrame(cid, CmdPing, 1)))
	f.Add(cat(initB, initFrame(cid, CmdPing, 100), initFrame(cid+1, CmdPing, 1), contFrame(cid, 0)))
	f.Add(cat(initFrame(0, CmdInit, 8), initFrame(BroadcastCID, CmdPing, 0), initFrame(7, CmdLock, 0xffff)))
	f.Add(cat(initFrame(0x11223344, CmdInit, 8), initFrame(0x11223344, CmdCBOR, 1, 4), []byte{1, 2, 3}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		dev := &scriptDevice{}
		for len(data) > 0 {
			n := min(len(data), ReportSize)
			dev.reads = append(dev.reads, data[:n]) // a short tail tests size checks
			data = data[n:]
		}
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
			}
		}
	})
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
