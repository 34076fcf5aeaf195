package ctaphid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// PowerCycleDatagram is the datagram that simulates unplugging and
// replugging the device in the Solo-style UDP simulation convention
// authenticator test suites use. UDPDevice.ReadReport returns ErrPowerCycle
// when it arrives. As in the simulators of that convention, it resets the
// authenticator's power-up state but not the channels, nor the routes of
// their replies: test suites keep using their channel after it.
var PowerCycleDatagram = [ReportSize]byte{
	0xac, 0x10, 0x52, 0xca, 0x95, 0xe5, 0x69, 0xde, 0x69, 0xe0, 0x2e, 0xbf, 0xf3, 0x33, 0x48, 0x5f,
	0x13, 0xf9, 0xb2, 0xda, 0x34, 0xc5, 0xa8, 0xa3, 0x40, 0x52, 0x66, 0x97, 0xa9, 0xab, 0x2e, 0x0b,
	0x39, 0x4d, 0x8d, 0x04, 0x97, 0x3c, 0x13, 0x40, 0x05, 0xbe, 0x1a, 0x01, 0x40, 0xbf, 0xf6, 0x04,
	0x5b, 0xb2, 0x6e, 0xb7, 0x7a, 0x73, 0xea, 0xa4, 0x78, 0x13, 0xf6, 0xb4, 0x9a, 0x72, 0x50, 0xdc,
}

// errNoPeer is returned by WriteReport before any host has sent a report.
var errNoPeer = errors.New("ctaphid: no UDP peer yet")

// maxRoutes bounds the CID-to-address table of a UDPDevice; when it is
// full the table starts over and replies fall back to the latest source
// until each client sends again.
const maxRoutes = 256

// UDPDevice is the UDP simulation transport: one datagram is one raw
// 64-byte report, without a report ID, in both directions. It implements
// Device and io.Closer.
type UDPDevice struct {
	conn *net.UDPConn

	mu     sync.Mutex
	peer   netip.AddrPort            // source of the most recent accepted datagram
	routes map[uint32]netip.AddrPort // CID -> source of its most recent datagram
}

// ListenUDP binds exactly addr (e.g. "127.0.0.1:8111"). A report goes to
// the address that most recently sent a datagram on the report's CID, and
// otherwise to the source of the most recent datagram. With one client that
// is the Solo convention ("reply to the source"); with several clients on
// separate sockets each still gets its own channel's replies, as each
// program would reading a real HID device. Datagrams of any size other than
// 64 bytes are dropped (logged at debug level to slog.Default) and change
// no address.
func ListenUDP(addr string) (*UDPDevice, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("ctaphid: resolve UDP address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("ctaphid: listen on UDP %q: %w", addr, err)
	}
	return &UDPDevice{conn: conn, routes: make(map[uint32]netip.AddrPort)}, nil
}

// LocalAddr returns the bound address, useful when addr had port 0.
func (d *UDPDevice) LocalAddr() net.Addr { return d.conn.LocalAddr() }

// ReadReport returns the next 64-byte datagram, or ErrPowerCycle for
// PowerCycleDatagram. After Close it returns an error wrapping
// net.ErrClosed.
func (d *UDPDevice) ReadReport() ([]byte, error) {
	for {
		// One byte more than a report tells a 64-byte datagram from a
		// longer one that the kernel truncated.
		buf := make([]byte, ReportSize+1)
		n, from, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// An ICMP port-unreachable for an earlier reply to a
				// client that went away: not our problem.
				continue
			}
			return nil, fmt.Errorf("ctaphid: read UDP datagram: %w", err)
		}
		if n != ReportSize {
			slog.Debug("ctaphid: dropping UDP datagram that is not one report", "from", from, "len", n)
			continue
		}
		powerCycle := bytes.Equal(buf[:n], PowerCycleDatagram[:])
		d.mu.Lock()
		d.peer = from
		if !powerCycle {
			if len(d.routes) >= maxRoutes {
				clear(d.routes)
			}
			d.routes[binary.BigEndian.Uint32(buf[0:4])] = from
		}
		d.mu.Unlock()
		if powerCycle {
			return nil, ErrPowerCycle
		}
		return buf[:n], nil
	}
}

// WriteReport sends report to the address that last used the report's
// CID, or else to the source of the most recent datagram.
func (d *UDPDevice) WriteReport(report []byte) error {
	if len(report) != ReportSize {
		return fmt.Errorf("ctaphid: UDP report is %d bytes, want %d", len(report), ReportSize)
	}
	d.mu.Lock()
	peer, ok := d.routes[binary.BigEndian.Uint32(report[0:4])]
	if !ok {
		peer = d.peer
	}
	d.mu.Unlock()
	if !peer.IsValid() {
		return errNoPeer
	}
	if _, err := d.conn.WriteToUDPAddrPort(report, peer); err != nil {
		return fmt.Errorf("ctaphid: send UDP report to %v: %w", peer, err)
	}
	return nil
}

// Close closes the socket; a blocked ReadReport returns.
func (d *UDPDevice) Close() error {
	if err := d.conn.Close(); err != nil {
		return fmt.Errorf("ctaphid: close UDP device: %w", err)
	}
	return nil
}
