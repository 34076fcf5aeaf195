package uhid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

var _ ctaphid.Device = (*Device)(nil)

// fakeKernel stands in for /dev/uhid: each Read returns one queued event,
// each Write is recorded as one event.
type fakeKernel struct {
	events chan []byte

	mu       sync.Mutex
	written  [][]byte
	writeErr error

	closeOnce sync.Once
	closed    chan struct{}
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{events: make(chan []byte, 16), closed: make(chan struct{})}
}

func (k *fakeKernel) Read(p []byte) (int, error) {
	select {
	case ev, ok := <-k.events:
		if !ok {
			return 0, io.EOF
		}
		return copy(p, ev), nil
	case <-k.closed:
		return 0, os.ErrClosed
	}
}

func (k *fakeKernel) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.writeErr != nil {
		return 0, k.writeErr
	}
	k.written = append(k.written, bytes.Clone(p))
	return len(p), nil
}

func (k *fakeKernel) Close() error {
	k.closeOnce.Do(func() { close(k.closed) })
	return nil
}

func (k *fakeKernel) writes() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]byte(nil), k.written...)
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

// outputEvent builds a UHID_OUTPUT event as the kernel sends it: the whole
// struct, data = report number + report.
func outputEvent(data []byte, rtype reportType) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint32(b, uint32(uhidOutput))
	copy(b[4:], data)
	binary.LittleEndian.PutUint16(b[4100:], uint16(len(data)))
	b[4102] = byte(rtype)
	return b
}

func hidrawWrite(report []byte) []byte {
	return outputEvent(append([]byte{0}, report...), uhidOutputReport)
}

func simpleEvent(t eventType) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint32(b, uint32(t))
	return b
}

func testReport(seed byte) []byte {
	r := make([]byte, ReportSize)
	for i := range r {
		r[i] = seed + byte(i)
	}
	return r
}

func newTestDevice(t *testing.T) (*Device, *fakeKernel) {
	t.Helper()
	k := newFakeKernel()
	d, err := newDevice(k, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, k
}

func TestCreate2Layout(t *testing.T) {
	d, k := newTestDevice(t)
	_ = d
	w := k.writes()
	if len(w) != 1 {
		t.Fatalf("%d events written at creation, want 1 (UHID_CREATE2)", len(w))
	}
	b := w[0]
	if offCreate2RDData+hidMaxDescriptorSize > eventSize {
		t.Fatalf("rd_data (%d bytes @%d) does not fit in the %d-byte event", hidMaxDescriptorSize, offCreate2RDData, eventSize)
	}
	if len(b) != 4380 {
		t.Fatalf("UHID_CREATE2 is %d bytes, want sizeof(struct uhid_event) = 4380", len(b))
	}
	if got := le32(b, 0); got != 11 {
		t.Errorf("type = %d, want UHID_CREATE2 (11)", got)
	}
	field := func(off, size int) []byte { return b[off : off+size] }
	wantString := func(name string, off, size int, want string) {
		t.Helper()
		f := field(off, size)
		exp := make([]byte, size)
		copy(exp, want)
		if !bytes.Equal(f, exp) {
			t.Errorf("%s @%d = %q, want %q NUL-padded", name, off, f, want)
		}
	}
	wantString("name", 4, 128, "passkeyd virtual FIDO2 key")
	wantString("phys", 132, 64, "")
	wantString("uniq", 196, 64, "passkeyd")
	desc := []byte{0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91, 0x02, 0xC0}
	for _, c := range []struct {
		name string
		got  uint32
		want uint32
	}{
		{"rd_size @260", uint32(le16(b, 260)), uint32(len(desc))},
		{"bus @262", uint32(le16(b, 262)), 3},
		{"vendor @264", le32(b, 264), 0x1209},
		{"product @268", le32(b, 268), 0x7A55},
		{"version @272", le32(b, 272), 0},
		{"country @276", le32(b, 276), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if !bytes.Equal(b[280:280+len(desc)], desc) {
		t.Errorf("rd_data @280 = % x, want the FIDO descriptor % x", b[280:280+len(desc)], desc)
	}
	if !bytes.Equal(b[280+len(desc):], make([]byte, 4380-280-len(desc))) {
		t.Error("bytes after rd_data are not zero")
	}
}

func TestCreate2Config(t *testing.T) {
	k := newFakeKernel()
	d, err := newDevice(k, Config{Name: "n", Phys: "usb-1/2", Uniq: "u1", Vendor: 0x1234, Product: 0x5678, Version: 0x0102})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := k.writes()[0]
	if string(b[4:6]) != "n\x00" || string(b[132:140]) != "usb-1/2\x00" || string(b[196:199]) != "u1\x00" {
		t.Errorf("strings: name %q phys %q uniq %q", b[4:8], b[132:140], b[196:200])
	}
	if le32(b, 264) != 0x1234 || le32(b, 268) != 0x5678 || le32(b, 272) != 0x0102 {
		t.Errorf("ids: %#x %#x %#x", le32(b, 264), le32(b, 268), le32(b, 272))
	}
}

func TestConfigRejected(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"long name", Config{Name: strings.Repeat("n", 128)}, "device name"},
		{"NUL in name", Config{Name: "a\x00b"}, "device name"},
		{"binary uniq", Config{Uniq: "\xff\x01"}, "uniq"},
		{"long uniq", Config{Uniq: strings.Repeat("u", 64)}, "uniq"},
		{"control in phys", Config{Phys: "a\nb"}, "phys"},
		{"vendor too wide", Config{Vendor: 0x10000}, "16 bits"},
	} {
		k := newFakeKernel()
		_, err := newDevice(k, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
		if len(k.writes()) != 0 {
			t.Errorf("%s: wrote to the kernel despite a bad config", c.name)
		}
	}
	// The longest values the kernel keeps whole are accepted.
	if _, err := newDevice(newFakeKernel(), Config{Name: strings.Repeat("n", 127), Uniq: strings.Repeat("u", 63)}); err != nil {
		t.Errorf("maximal config: %v", err)
	}
}

func TestCreate2WriteError(t *testing.T) {
	k := newFakeKernel()
	k.writeErr = syscall.EINVAL
	_, err := newDevice(k, Config{})
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "create 1209:7a55") {
		t.Fatalf("err = %v", err)
	}
}

func TestInput2Layout(t *testing.T) {
	d, k := newTestDevice(t)
	r := testReport(0x40)
	if err := d.WriteReport(r); err != nil {
		t.Fatal(err)
	}
	w := k.writes()
	b := w[len(w)-1]
	if len(b) != 4+2+64 {
		t.Fatalf("UHID_INPUT2 is %d bytes, want 70", len(b))
	}
	if le32(b, 0) != 12 || le16(b, 4) != 64 || !bytes.Equal(b[6:], r) {
		t.Errorf("UHID_INPUT2 = % x", b)
	}
	for _, n := range []int{0, 63, 65, 4096} {
		if err := d.WriteReport(make([]byte, n)); err == nil {
			t.Errorf("WriteReport of %d bytes succeeded", n)
		}
	}
	if got := len(k.writes()); got != len(w) {
		t.Errorf("bad reports reached the kernel: %d events, want %d", got, len(w))
	}
}

func TestReadReportStripsReportNumber(t *testing.T) {
	d, k := newTestDevice(t)
	r := testReport(1)
	k.events <- simpleEvent(uhidStart)
	k.events <- simpleEvent(uhidOpen)
	k.events <- hidrawWrite(r)
	got, err := d.ReadReport()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, r) {
		t.Fatalf("report = % x, want % x", got, r)
	}
	if !d.started.Load() {
		t.Error("UHID_START not noticed")
	}
	// The report must not alias the read buffer, which the next event
	// overwrites.
	k.events <- hidrawWrite(testReport(9))
	if _, err := d.ReadReport(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, r) {
		t.Fatal("an earlier report changed when the next one was read")
	}
}

func TestOutputParsing(t *testing.T) {
	good := testReport(7)
	short := simpleEvent(uhidOutput)[:4102] // rtype missing
	oversized := hidrawWrite(good)
	binary.LittleEndian.PutUint16(oversized[4100:], 4097)
	huge := hidrawWrite(good)
	binary.LittleEndian.PutUint16(huge[4100:], 0xFFFF)
	for _, c := range []struct {
		name     string
		ev       []byte
		parseErr bool
	}{
		{"empty", nil, true},
		{"3 bytes", []byte{6, 0, 0}, true},
		{"type only", []byte{6, 0, 0, 0}, true},
		{"cut before size", hidrawWrite(good)[:100], true},
		{"cut before rtype", short, true},
		{"size over UHID_DATA_MAX", oversized, true},
		{"size 0xFFFF", huge, true},
		{"unknown type", simpleEvent(99), true},
		{"legacy UHID_OUTPUT_EV", simpleEvent(7), true},
		{"an event to the kernel", simpleEvent(uhidInput2), true},
		{"all ones", bytes.Repeat([]byte{0xFF}, eventSize), true},
		{"64 bytes without report number", outputEvent(good, uhidOutputReport), false},
		{"66 bytes", outputEvent(append([]byte{0}, append(good, 0)...), uhidOutputReport), false},
		{"zero-length", outputEvent(nil, uhidOutputReport), false},
		{"report number 1", outputEvent(append([]byte{1}, good...), uhidOutputReport), false},
		{"feature report", outputEvent(append([]byte{0}, good...), uhidFeatureReport), false},
		{"input report type", outputEvent(append([]byte{0}, good...), uhidInputReport), false},
	} {
		ev, err := parseEvent(c.ev)
		if c.parseErr {
			if err == nil {
				t.Errorf("%s: parsed without error: %+v", c.name, ev)
			}
		} else if err != nil {
			t.Errorf("%s: parse: %v", c.name, err)
		} else if r, err := outputReport(ev); err == nil {
			t.Errorf("%s: accepted as report % x", c.name, r)
		}

		// Through the device: the bad event is dropped and the next
		// good one comes out.
		d, k := newTestDevice(t)
		k.events <- c.ev
		k.events <- hidrawWrite(good)
		got, err := d.ReadReport()
		if err != nil || !bytes.Equal(got, good) {
			t.Errorf("%s: ReadReport after it = % x, %v; want the next good report", c.name, got, err)
		}
	}
}

func TestGetReportAnsweredWithError(t *testing.T) {
	d, k := newTestDevice(t)
	ev := simpleEvent(uhidGetReport)
	binary.LittleEndian.PutUint32(ev[4:], 0xA1B2C3D4)
	ev[8] = 0 // rnum
	ev[9] = byte(uhidFeatureReport)
	k.events <- ev
	k.events <- hidrawWrite(testReport(3))
	if _, err := d.ReadReport(); err != nil {
		t.Fatal(err)
	}
	w := k.writes()
	want := []byte{
		10, 0, 0, 0, // UHID_GET_REPORT_REPLY
		0xD4, 0xC3, 0xB2, 0xA1, // id
		5, 0, // err = EIO
		0, 0, // size
	}
	if len(w) != 2 || !bytes.Equal(w[1], want) {
		t.Fatalf("events written = %d, last % x; want % x", len(w), w[len(w)-1], want)
	}
}

func TestSetReportAnsweredWithError(t *testing.T) {
	d, k := newTestDevice(t)
	ev := simpleEvent(uhidSetReport)
	binary.LittleEndian.PutUint32(ev[4:], 77)
	binary.LittleEndian.PutUint16(ev[10:], 2)
	k.events <- ev
	k.events <- hidrawWrite(testReport(3))
	if _, err := d.ReadReport(); err != nil {
		t.Fatal(err)
	}
	w := k.writes()
	want := []byte{14, 0, 0, 0, 77, 0, 0, 0, 5, 0}
	if len(w) != 2 || !bytes.Equal(w[1], want) {
		t.Fatalf("events written = %d, last % x; want % x", len(w), w[len(w)-1], want)
	}
}

func TestCloseUnblocksReadAndDestroys(t *testing.T) {
	k := newFakeKernel()
	d, err := newDevice(k, Config{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadReport()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let ReadReport block
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadReport after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadReport still blocked after Close")
	}
	w := k.writes()
	if last := w[len(w)-1]; !bytes.Equal(last, []byte{1, 0, 0, 0}) {
		t.Errorf("last event = % x, want UHID_DESTROY", last)
	}
	if err := d.WriteReport(testReport(0)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteReport after Close: %v", err)
	}
	if _, err := d.ReadReport(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadReport after Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := len(k.writes()); got != len(w) {
		t.Errorf("%d events written after Close", got-len(w))
	}
}

func TestReadErrorEndsReadReport(t *testing.T) {
	d, k := newTestDevice(t)
	close(k.events)
	if _, err := d.ReadReport(); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF wrapped", err)
	}
}

// A pipe is pollable like /dev/uhid: this checks that Close wakes a Read
// blocked in the runtime poller, as it must for the real device.
func TestCloseUnblocksPollableRead(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	d, err := newDevice(pipeRW{r, io.Discard}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadReport()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadReport: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadReport still blocked after Close")
	}
}

type pipeRW struct {
	*os.File
	w io.Writer
}

func (p pipeRW) Write(b []byte) (int, error) { return p.w.Write(b) }

func TestOpenErrors(t *testing.T) {
	_, err := Open(Config{Path: "/nonexistent/uhid"})
	if err == nil || !strings.Contains(err.Error(), "modprobe uhid") || !strings.HasPrefix(err.Error(), "open /nonexistent/uhid: no such file or directory: ") {
		t.Errorf("missing node: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing node: %v does not wrap fs.ErrNotExist", err)
	}
	for _, c := range []struct {
		errno syscall.Errno
		want  string
	}{
		{syscall.ENOENT, "load the uhid kernel module"},
		{syscall.ENODEV, "load the uhid kernel module"},
		{syscall.EACCES, "permission denied: run passkeyd as a member of the group owning /dev/uhid"},
		{syscall.EPERM, "run passkeyd as a member of the group owning /dev/uhid"},
		{syscall.EBUSY, "open /dev/uhid: device or resource busy"},
	} {
		err := openError("/dev/uhid", &fs.PathError{Op: "open", Path: "/dev/uhid", Err: c.errno})
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || !errors.Is(err, c.errno) {
			t.Errorf("%v: %q, want one line containing %q", c.errno, err, c.want)
		}
	}
}
