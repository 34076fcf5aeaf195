package ctaphid

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// udpClient is a host speaking the UDP simulation convention.
type udpClient struct {
	t    *testing.T
	conn *net.UDPConn
	dev  net.Addr
}

func newUDPClient(t *testing.T, dev net.Addr) *udpClient {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &udpClient{t: t, conn: conn, dev: dev}
}

func (c *udpClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteTo(b, c.dev); err != nil {
		c.t.Fatal(err)
	}
}

func (c *udpClient) recv() []byte {
	c.t.Helper()
	buf := make([]byte, 1024)
	if err := c.conn.SetReadDeadline(time.Now().Add(recvTimeout)); err != nil {
		c.t.Fatal(err)
	}
	n, err := c.conn.Read(buf)
	if err != nil {
		c.t.Fatalf("no datagram from the device: %v", err)
	}
	return buf[:n]
}

func (c *udpClient) expect(want []byte) {
	c.t.Helper()
	if got := c.recv(); !bytes.Equal(got, want) {
		c.t.Fatalf("\n got %x\nwant %x", got, want)
	}
}

func TestUDP(t *testing.T) {
	dev, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if a, ok := dev.LocalAddr().(*net.UDPAddr); !ok || !a.IP.Equal(net.IPv4(127, 0, 0, 1)) || a.Port == 0 {
		t.Fatalf("LocalAddr = %v", dev.LocalAddr())
	}

	h := newFakeHandler()
	h.cbor = func(ctx context.Context, _ Transaction, req []byte) []byte {
		<-ctx.Done() // until CANCEL
		return []byte{0x2d}
	}
	srv := NewServer(h, Config{Capabilities: testCaps, Version: testVersion, Logger: testLogger()})
	var next atomic.Uint32
	next.Store(firstCID)
	srv.newCID = func() uint32 { return next.Add(1) - 1 }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), dev) }()

	c := newUDPClient(t, dev.LocalAddr())
	c.send(initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8))
	c.expect(mustHex(t, "ffffffff 86 0011 0102030405060708 01020304 02 050607 05"+strings.Repeat("00", 40)))

	// Datagrams that are not one report are dropped.
	c.send(append(initFrame(firstCID, CmdPing, 1, 1), 0))
	c.send(initFrame(firstCID, CmdPing, 1, 2)[:10])
	c.send(initFrame(firstCID, CmdPing, 1, 3))
	c.expect(initFrame(firstCID, CmdPing, 1, 3))

	// A fragmented message both ways.
	payload := pattern(1000)
	for _, f := range hostFrames(firstCID, CmdPing, payload) {
		c.send(f)
	}
	for _, f := range hostFrames(firstCID, CmdPing, payload) {
		c.expect(f)
	}

	// A second client on its own socket: replies follow the channel, not
	// merely the latest sender.
	c2 := newUDPClient(t, dev.LocalAddr())
	c2.send(initFrame(BroadcastCID, CmdInit, 8, 9, 9, 9, 9, 9, 9, 9, 9))
	c2.expect(mustHex(t, "ffffffff 86 0011 0909090909090909 01020305 02 050607 05"+strings.Repeat("00", 40)))
	c.send(initFrame(firstCID, CmdCBOR, 1, 4)) // blocks until cancelled
	c2.send(initFrame(firstCID+1, CmdPing, 1, 4))
	c2.expect(errFrame(firstCID+1, ErrChannelBusy))
	c.send(initFrame(firstCID, CmdCancel, 0))
	for {
		r := c.recv()
		if r[4] == CmdKeepalive {
			continue
		}
		if w := initFrame(firstCID, CmdCBOR, 1, 0x2d); !bytes.Equal(r, w) {
			t.Fatalf("\n got %x\nwant %x", r, w)
		}
		break
	}
	// A CID nobody has used yet goes to the latest sender.
	c2.send(initFrame(0x0a0b0c0d, CmdPing, 1, 4))
	c2.expect(errFrame(0x0a0b0c0d, ErrInvalidChannel))

	// The magic datagram is a power cycle (TestUDPPowerCycle).
	c.send(PowerCycleDatagram[:])
	h.waitEvent(t, "powercycle")

	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve = %v, want it to wrap net.ErrClosed", err)
		}
	case <-time.After(recvTimeout):
		t.Fatal("Serve did not return after Close")
	}
}

// TestUDPPowerCycle checks the power-cycle datagram end to end: the handler
// is power-cycled and a half-sent message dropped, but channels and their
// routes stay, as in the simulators the convention comes from (FIELD-NOTES
// §6); conformance suites keep using their channel after it.
func TestUDPPowerCycle(t *testing.T) {
	dev, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	h := newFakeHandler()
	srv := NewServer(h, Config{Capabilities: testCaps, Version: testVersion, Logger: testLogger(),
		MsgTimeout: 20 * time.Millisecond})
	var next atomic.Uint32
	next.Store(firstCID)
	srv.newCID = func() uint32 { return next.Add(1) - 1 }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), dev) }()
	defer func() {
		dev.Close()
		<-errc
	}()

	c, c2 := newUDPClient(t, dev.LocalAddr()), newUDPClient(t, dev.LocalAddr())
	c.send(initFrame(BroadcastCID, CmdInit, 8, 1, 2, 3, 4, 5, 6, 7, 8))
	c.expect(mustHex(t, "ffffffff 86 0011 0102030405060708 01020304 02 050607 05"+strings.Repeat("00", 40)))
	c2.send(initFrame(BroadcastCID, CmdInit, 8, 9, 9, 9, 9, 9, 9, 9, 9))
	c2.expect(mustHex(t, "ffffffff 86 0011 0909090909090909 01020305 02 050607 05"+strings.Repeat("00", 40)))

	c.send(initFrame(firstCID, CmdPing, 100, pattern(57)...)) // half a message
	c.send(PowerCycleDatagram[:])
	h.waitEvent(t, "powercycle")
	c.send(contFrame(firstCID, 0, pattern(100)[57:]...)) // spurious now

	// Each client's channel still works, and replies still go to the
	// client that owns the channel.
	c2.send(initFrame(firstCID+1, CmdPing, 1, 6))
	c.send(initFrame(firstCID, CmdPing, 1, 5))
	c.expect(initFrame(firstCID, CmdPing, 1, 5))
	c2.expect(initFrame(firstCID+1, CmdPing, 1, 6))
}

func TestUDPDevice(t *testing.T) {
	dev, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.WriteReport(make([]byte, ReportSize)); !errors.Is(err, errNoPeer) {
		t.Errorf("WriteReport before any datagram = %v, want errNoPeer", err)
	}
	c := newUDPClient(t, dev.LocalAddr())
	c.send(PowerCycleDatagram[:])
	if _, err := dev.ReadReport(); !errors.Is(err, ErrPowerCycle) {
		t.Errorf("ReadReport(power-cycle datagram) = %v, want ErrPowerCycle", err)
	}
	almost := PowerCycleDatagram
	almost[63] ^= 1
	c.send(almost[:])
	if r, err := dev.ReadReport(); err != nil || !bytes.Equal(r, almost[:]) {
		t.Errorf("ReadReport = %x, %v; want %x", r, err, almost)
	}
	if err := dev.WriteReport(make([]byte, ReportSize+1)); err == nil {
		t.Error("WriteReport accepted 65 bytes")
	}
	if err := dev.WriteReport(almost[:]); err != nil {
		t.Errorf("WriteReport: %v", err)
	}
	c.expect(almost[:])

	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.ReadReport(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadReport after Close = %v, want net.ErrClosed", err)
	}
}

func TestListenUDPErrors(t *testing.T) {
	dev, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// The address is taken: binding it again fails rather than picking
	// another port.
	if d2, err := ListenUDP(dev.LocalAddr().String()); err == nil {
		d2.Close()
		t.Error("second ListenUDP on the same address succeeded")
	}
	if _, err := ListenUDP("not an address"); err == nil {
		t.Error("ListenUDP accepted a malformed address")
	}
}
