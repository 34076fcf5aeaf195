// Package uhid presents passkeyd to the system as a USB FIDO security key
// through the Linux uhid driver (/dev/uhid, include/uapi/linux/uhid.h).
//
// The kernel turns the device into a /dev/hidrawN node with the FIDO usage
// page, which is what browsers, libfido2 (OpenSSH, pam-u2f,
// systemd-cryptenroll) and python-fido2 look for. A Device exchanges raw
// 64-byte CTAPHID reports and implements ctaphid.Device. The device exists
// exactly as long as the Device is open: Close destroys it, and so does the
// kernel when the process dies and its file descriptor goes away.
//
// Whoever can write /dev/uhid can create any HID device, a keyboard
// included, so access to it belongs to the daemon's own user or group, never
// to the logged-in user.
//
// Layer: hardware. It moves reports and knows nothing of CTAPHID beyond the
// ctaphid.Device interface it implements, nor of CTAP, the TPM or the store.
package uhid

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ReportSize is the size of every input and output report: one CTAPHID
// packet.
const ReportSize = 64

// Identity of the device unless Config says otherwise.
const (
	DefaultPath = "/dev/uhid"
	DefaultName = "passkeyd virtual FIDO2 key"
	// DefaultUniq is the HID serial (HID_UNIQ). It is short printable
	// ASCII on purpose: udev rules that import it choke on arbitrary bytes
	// and then nobody gets access to the node.
	DefaultUniq = "passkeyd"
	// DefaultVendor is 0x1209, the pid.codes vendor ID for open-source
	// hardware. A real VID matters: sandboxed browsers drop HID devices
	// that report 0000:0000.
	DefaultVendor = 0x1209
	// DefaultProduct 0x7A55 was free in the pid.codes registry when chosen
	// but is not registered yet; register it (a pull request to
	// pidcodes/pidcodes.github.com) before the first release.
	DefaultProduct = 0x7A55
)

// fidoReportDescriptor declares one application collection on the FIDO
// Alliance usage page (0xF1D0, usage 1 "CTAPHID") with a 64-byte input
// report (usage 0x20) and a 64-byte output report (usage 0x21), and no
// report IDs (CTAP 2.1 §11.2.8.1).
var fidoReportDescriptor = []byte{
	0x06, 0xD0, 0xF1, // Usage Page (FIDO Alliance)
	0x09, 0x01, // Usage (CTAPHID)
	0xA1, 0x01, // Collection (Application)
	0x09, 0x20, //   Usage (Input Report Data)
	0x15, 0x00, //   Logical Minimum (0)
	0x26, 0xFF, 0x00, //   Logical Maximum (255)
	0x75, 0x08, //   Report Size (8)
	0x95, 0x40, //   Report Count (64)
	0x81, 0x02, //   Input (Data, Var, Abs)
	0x09, 0x21, //   Usage (Output Report Data)
	0x15, 0x00, //   Logical Minimum (0)
	0x26, 0xFF, 0x00, //   Logical Maximum (255)
	0x75, 0x08, //   Report Size (8)
	0x95, 0x40, //   Report Count (64)
	0x91, 0x02, //   Output (Data, Var, Abs)
	0xC0, // End Collection
}

// Config describes the device to create. Zero fields take the defaults
// above.
type Config struct {
	Path    string // the uhid node, normally /dev/uhid
	Name    string // HID_NAME, shown by clients; at most 127 bytes
	Phys    string // HID_PHYS; printable ASCII, at most 63 bytes
	Uniq    string // HID_UNIQ; printable ASCII, at most 63 bytes
	Vendor  uint32 // USB vendor ID
	Product uint32 // USB product ID
	Version uint32 // device release number (bcdDevice)
	// Logger receives device events (debug) and dropped events (debug or
	// warn). Nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Uniq == "" {
		c.Uniq = DefaultUniq
	}
	if c.Vendor == 0 {
		c.Vendor = DefaultVendor
	}
	if c.Product == 0 {
		c.Product = DefaultProduct
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	// The kernel keeps 127, 63 and 63 bytes plus a NUL; a longer string
	// would be cut silently, and an embedded NUL would cut it early.
	if len(c.Name) > create2NameSize-1 || hasNUL(c.Name) {
		return c, fmt.Errorf("uhid: device name %q: want at most %d bytes without NUL", c.Name, create2NameSize-1)
	}
	if len(c.Phys) > create2PhysSize-1 || !printableASCII(c.Phys) {
		return c, fmt.Errorf("uhid: phys %q: want at most %d bytes of printable ASCII", c.Phys, create2PhysSize-1)
	}
	if len(c.Uniq) > create2UniqSize-1 || !printableASCII(c.Uniq) {
		return c, fmt.Errorf("uhid: uniq %q: want at most %d bytes of printable ASCII", c.Uniq, create2UniqSize-1)
	}
	if c.Vendor > 0xFFFF || c.Product > 0xFFFF {
		return c, fmt.Errorf("uhid: vendor:product %04x:%04x: USB IDs are 16 bits", c.Vendor, c.Product)
	}
	return c, nil
}

func hasNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// startTimeout is how long Open waits before warning that no HID driver
// has bound the device. Without hid-generic (loaded by udev from the
// modalias on normal systems) no hidraw node ever appears.
const startTimeout = 5 * time.Second

// Device is a uhid FIDO device. ReadReport and WriteReport may be called
// concurrently with each other and with Close.
type Device struct {
	rw  io.ReadWriteCloser
	log *slog.Logger

	rmu  sync.Mutex // one ReadReport at a time: it owns rbuf
	rbuf []byte

	wmu     sync.Mutex // one event per write(2), none after Close
	wclosed bool

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	started   atomic.Bool
	warnTimer *time.Timer
}

// Open creates the device on cfg.Path (normally /dev/uhid). The hidraw
// node appears asynchronously once a HID driver binds it.
func Open(cfg Config) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// os.OpenFile registers the descriptor with the runtime poller (uhid
	// supports poll), so Close wakes a goroutine blocked in Read.
	f, err := os.OpenFile(cfg.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, openError(cfg.Path, err)
	}
	d, err := newDevice(f, cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.warnTimer = time.AfterFunc(startTimeout, func() {
		if !d.started.Load() && !d.isClosed() {
			d.log.Warn("uhid: no HID driver has started the device yet, so there is no hidraw node: load hid-generic (modprobe hid-generic)", "after", startTimeout)
		}
	})
	return d, nil
}

// Probe checks that the uhid node at path (DefaultPath when "") can be
// opened for creating devices, without creating one: a daemon that creates
// its device later (in seat mode, when a user becomes active) finds out at
// start that it never could, with Open's one line saying how to fix it.
func Probe(path string) error {
	if path == "" {
		path = DefaultPath
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return openError(path, err)
	}
	return f.Close()
}

// openError turns the usual failures to open /dev/uhid into one line that
// says how to fix them.
func openError(path string, err error) error {
	cause := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		cause = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("open %s: %w: load the uhid kernel module (modprobe uhid; to load it at boot, put uhid in /etc/modules-load.d/passkeyd.conf)", path, cause)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open %s: %w: run passkeyd as a member of the group owning %s, e.g. with the udev rule KERNEL==\"uhid\", GROUP=\"passkeyd\", MODE=\"0660\" (never give it to users: it can create keyboards)", path, cause, path)
	default:
		return fmt.Errorf("open %s: %w", path, cause)
	}
}

// newDevice creates the device over rw, which carries one uhid event per
// Read and Write (the /dev/uhid file, or a fake kernel in tests).
func newDevice(rw io.ReadWriteCloser, cfg Config) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	d := &Device{
		rw:   rw,
		log:  cfg.Logger,
		rbuf: make([]byte, eventSize),
		done: make(chan struct{}),
	}
	if err := d.writeEvent(marshalCreate2(cfg)); err != nil {
		return nil, fmt.Errorf("uhid: create %04x:%04x %q: %w", cfg.Vendor, cfg.Product, cfg.Name, err)
	}
	d.log.Debug("uhid: device created", "name", cfg.Name, "vid", fmt.Sprintf("%04x", cfg.Vendor), "pid", fmt.Sprintf("%04x", cfg.Product), "uniq", cfg.Uniq)
	return d, nil
}

func (d *Device) isClosed() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// errClosed is what ReadReport and WriteReport return after Close.
var errClosed = fmt.Errorf("uhid: device closed: %w", os.ErrClosed)

// writeEvent writes one whole event.
func (d *Device) writeEvent(b []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.wclosed {
		return errClosed
	}
	return d.writeLocked(b)
}

func (d *Device) writeLocked(b []byte) error {
	n, err := d.rw.Write(b)
	if err != nil {
		return fmt.Errorf("uhid: write %v: %w", eventType(leUint32(b)), err)
	}
	if n != len(b) {
		return fmt.Errorf("uhid: write %v: wrote %d of %d bytes", eventType(leUint32(b)), n, len(b))
	}
	return nil
}

func leUint32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// ReadReport blocks for the next 64-byte output report (the CTAPHID
// packet, without hidraw's report number). It answers the kernel's other
// requests on the way. Events it cannot use are logged and dropped: they
// come from whatever client has the hidraw node open, and must not stop
// the daemon. After Close it returns an error wrapping os.ErrClosed.
func (d *Device) ReadReport() ([]byte, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for {
		if d.isClosed() {
			return nil, errClosed
		}
		n, err := d.rw.Read(d.rbuf)
		if err != nil {
			if d.isClosed() {
				return nil, errClosed
			}
			return nil, fmt.Errorf("uhid: read event: %w", err)
		}
		if report := d.handle(d.rbuf[:n]); report != nil {
			return report, nil
		}
	}
}

// handle acts on one event and returns the output report it carried, if
// any.
func (d *Device) handle(b []byte) []byte {
	ev, err := parseEvent(b)
	if err != nil {
		d.log.Warn("uhid: dropping event", "err", err)
		return nil
	}
	switch ev.typ {
	case uhidStart:
		d.started.Store(true)
		d.log.Debug("uhid: UHID_START: a HID driver bound the device", "dev_flags", ev.devFlags)
	case uhidStop:
		d.started.Store(false)
		d.log.Debug("uhid: UHID_STOP")
	case uhidOpen:
		// A client opened the hidraw node. Nothing to do: a real key
		// keeps its state (channels, PIN retry state) across opens,
		// and an OPEN is not a power cycle.
		d.log.Debug("uhid: UHID_OPEN: a client opened the device")
	case uhidClose:
		d.log.Debug("uhid: UHID_CLOSE: the last client closed the device")
	case uhidOutput:
		report, err := outputReport(ev)
		if err != nil {
			d.log.Debug("uhid: dropping output report", "err", err)
			return nil
		}
		return report
	case uhidGetReport:
		// Without a reply the caller (an ioctl on hidraw) blocks for
		// the kernel's 5 s timeout.
		if err := d.writeEvent(marshalGetReportReply(ev.id, errnoEIO)); err != nil {
			d.log.Warn("uhid: answer UHID_GET_REPORT", "err", err)
		}
	case uhidSetReport:
		if err := d.writeEvent(marshalSetReportReply(ev.id, errnoEIO)); err != nil {
			d.log.Warn("uhid: answer UHID_SET_REPORT", "err", err)
		}
	}
	return nil
}

// WriteReport sends one 64-byte input report to the clients reading the
// hidraw node. With no client it goes nowhere, as on a USB bus.
func (d *Device) WriteReport(report []byte) error {
	if len(report) != ReportSize {
		return fmt.Errorf("uhid: input report of %d bytes, want %d", len(report), ReportSize)
	}
	return d.writeEvent(marshalInput2(report))
}

// Close destroys the device (clients see an unplug) and closes the uhid
// descriptor, which ends a ReadReport in progress. It is safe to call more
// than once and from any goroutine.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		close(d.done)
		if d.warnTimer != nil {
			d.warnTimer.Stop()
		}
		d.wmu.Lock()
		// An explicit DESTROY, although closing the descriptor would
		// also destroy the device: it reports a failure, where close
		// alone would not.
		derr := d.writeLocked(marshalDestroy())
		d.wclosed = true
		d.wmu.Unlock()
		cerr := d.rw.Close()
		switch {
		case cerr != nil:
			d.closeErr = fmt.Errorf("uhid: close: %w", cerr)
		case derr != nil:
			d.closeErr = derr
		}
	})
	return d.closeErr
}
