package ctaptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// CTAPHID constants (CTAP 2.1 §11.2), as they appear on the wire: command
// bytes with the initialisation-packet bit set.
const (
	HIDReportSize   = 64         // §11.2.8.1: 64-byte reports
	HIDBroadcastCID = 0xffffffff // §11.2.3
	HIDCmdPing      = 0x81       // CTAPHID_PING, §11.2.9.1.4
	HIDCmdMsg       = 0x83       // CTAPHID_MSG, §11.2.9.1.1
	HIDCmdInit      = 0x86       // CTAPHID_INIT, §11.2.9.1.3
	HIDCmdWink      = 0x88       // CTAPHID_WINK, §11.2.9.2.1
	HIDCmdCBOR      = 0x90       // CTAPHID_CBOR, §11.2.9.1.2
	HIDCmdCancel    = 0x91       // CTAPHID_CANCEL, §11.2.9.1.5
	HIDCmdKeepalive = 0xbb       // CTAPHID_KEEPALIVE, §11.2.9.1.7
	HIDCmdError     = 0xbf       // CTAPHID_ERROR, §11.2.9.1.6
)

// HIDTimeout bounds every wait for a device report.
var HIDTimeout = 10 * time.Second

// Pipe is an in-memory HID device: its ReadReport and WriteReport are the
// device end (a ctaphid.Device, for ctaphid.Server.Serve), Send and Recv
// the host end.
type Pipe struct {
	toDevice   chan []byte
	fromDevice chan []byte
	closeOnce  sync.Once
	closed     chan struct{}
}

// NewPipe is an open Pipe.
func NewPipe() *Pipe {
	return &Pipe{toDevice: make(chan []byte, 256), fromDevice: make(chan []byte, 256), closed: make(chan struct{})}
}

// ReadReport is the device reading the host's next report; io.EOF once
// the pipe is closed.
func (p *Pipe) ReadReport() ([]byte, error) {
	select {
	case r := <-p.toDevice:
		return r, nil
	case <-p.closed:
		return nil, io.EOF
	}
}

// WriteReport is the device sending a report to the host.
func (p *Pipe) WriteReport(r []byte) error {
	select {
	case p.fromDevice <- append([]byte(nil), r...):
		return nil
	case <-p.closed:
		return io.ErrClosedPipe
	}
}

// Close ends the pipe: the device's ReadReport returns io.EOF.
func (p *Pipe) Close() { p.closeOnce.Do(func() { close(p.closed) }) }

// Send is the host writing one report (padded to 64 bytes). Once the
// pipe is closed it fails, as a write to a destroyed hidraw node does.
func (p *Pipe) Send(report []byte) error {
	r := make([]byte, HIDReportSize)
	copy(r, report)
	select {
	case <-p.closed: // first: the buffer could still take the report
		return io.ErrClosedPipe
	default:
	}
	select {
	case p.toDevice <- r:
		return nil
	case <-p.closed:
		return io.ErrClosedPipe
	}
}

// Recv is the host reading the device's next report, waiting at most
// HIDTimeout. Once the pipe is closed it fails, even with reports left
// unread, as a read from a destroyed hidraw node does.
func (p *Pipe) Recv() ([]byte, error) {
	select {
	case <-p.closed:
		return nil, io.ErrClosedPipe
	default:
	}
	select {
	case r := <-p.fromDevice:
		return r, nil
	case <-p.closed:
		return nil, io.ErrClosedPipe
	case <-time.After(HIDTimeout):
		return nil, errors.New("ctaptest: no CTAPHID report from the device")
	}
}

// HIDFrames splits a message into the host's reports (§11.2.4): an
// initialisation packet (CID, CMD, BCNT, 57 bytes) and continuation
// packets (CID, SEQ, 59 bytes).
func HIDFrames(cid uint32, cmd byte, data []byte) [][]byte {
	pkt := make([]byte, HIDReportSize)
	binary.BigEndian.PutUint32(pkt, cid)
	pkt[4] = cmd
	binary.BigEndian.PutUint16(pkt[5:], uint16(len(data)))
	n := copy(pkt[7:], data)
	frames := [][]byte{pkt}
	for seq := byte(0); n < len(data); seq++ {
		pkt = make([]byte, HIDReportSize)
		binary.BigEndian.PutUint32(pkt, cid)
		pkt[4] = seq
		n += copy(pkt[5:], data[n:])
		frames = append(frames, pkt)
	}
	return frames
}

// HIDError is a CTAPHID_ERROR the device answered (§11.2.9.1.6), e.g.
// 0x06 ERR_CHANNEL_BUSY.
type HIDError byte

func (e HIDError) Error() string { return fmt.Sprintf("CTAPHID error 0x%02x", byte(e)) }

// HIDChannel is one application's CTAPHID channel on a Pipe. Its
// transactions run one at a time.
type HIDChannel struct {
	Pipe *Pipe
	CID  uint32
	// Keepalives are the status bytes of the KEEPALIVE packets
	// (§11.2.9.1.7: 1 processing, 2 user presence needed) that the last
	// transaction skipped.
	Keepalives []byte
}

// OpenHID allocates a channel with CTAPHID_INIT on the broadcast CID
// (§11.2.9.1.3) and checks the nonce comes back.
func OpenHID(p *Pipe) (*HIDChannel, error) {
	b := &HIDChannel{Pipe: p, CID: HIDBroadcastCID}
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	resp, err := b.Transact(HIDCmdInit, nonce)
	if err != nil {
		return nil, fmt.Errorf("ctaptest: CTAPHID_INIT: %w", err)
	}
	if len(resp) < 17 || !bytes.Equal(resp[:8], nonce) {
		return nil, fmt.Errorf("ctaptest: CTAPHID_INIT response %x", resp)
	}
	return &HIDChannel{Pipe: p, CID: binary.BigEndian.Uint32(resp[8:12])}, nil
}

// Transact sends one message and returns the reassembled response.
// KEEPALIVE packets are skipped (and recorded in Keepalives); an ERROR
// packet is returned as a HIDError. A report for another channel, a
// response with another command or a continuation out of sequence is an
// error: the kit runs one transaction at a time.
func (c *HIDChannel) Transact(cmd byte, data []byte) ([]byte, error) {
	c.Keepalives = nil
	for _, f := range HIDFrames(c.CID, cmd, data) {
		if err := c.Pipe.Send(f); err != nil {
			return nil, err
		}
	}
	var resp []byte
	want, seq := -1, byte(0)
	for {
		r, err := c.Pipe.Recv()
		if err != nil {
			return nil, err
		}
		if cid := binary.BigEndian.Uint32(r); cid != c.CID {
			return nil, fmt.Errorf("ctaptest: report on channel %08x, want %08x", cid, c.CID)
		}
		if want < 0 {
			switch r[4] {
			case HIDCmdKeepalive:
				c.Keepalives = append(c.Keepalives, r[7])
				continue
			case HIDCmdError:
				return nil, HIDError(r[7])
			case cmd:
			default:
				return nil, fmt.Errorf("ctaptest: response command 0x%02x, want 0x%02x", r[4], cmd)
			}
			want = int(binary.BigEndian.Uint16(r[5:]))
			resp = append(resp, r[7:]...)
		} else {
			if r[4] != seq {
				return nil, fmt.Errorf("ctaptest: continuation packet %d, want %d", r[4], seq)
			}
			seq++
			resp = append(resp, r[5:]...)
		}
		if len(resp) >= want {
			return resp[:want], nil
		}
	}
}

// CBOR is Transport over CTAPHID_CBOR: nil when the transaction fails
// (use Transact to see why). ctx is not sent: cancel with CTAPHID_CANCEL
// through Pipe.Send.
func (c *HIDChannel) CBOR(_ context.Context, req []byte) []byte {
	resp, err := c.Transact(HIDCmdCBOR, req)
	if err != nil {
		return nil
	}
	return resp
}
