package bench

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

// pipe is an in-memory ctaphid.Device: the host end is the client below.
type pipe struct {
	toDevice   chan []byte
	fromDevice chan []byte
}

func newPipe() *pipe {
	return &pipe{toDevice: make(chan []byte, 256), fromDevice: make(chan []byte, 256)}
}

func (p *pipe) ReadReport() ([]byte, error) {
	r, ok := <-p.toDevice
	if !ok {
		return nil, io.EOF
	}
	return r, nil
}

func (p *pipe) WriteReport(r []byte) error {
	p.fromDevice <- append([]byte(nil), r...)
	return nil
}

// client is a minimal CTAPHID host (CTAP 2.1 §11.2.4) over a pipe.
type client struct {
	p   *pipe
	cid uint32
}

func dial(p *pipe) (*client, error) {
	c := &client{p: p, cid: ctaphid.BroadcastCID}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	resp, err := c.transact(ctaphid.CmdInit, nonce)
	if err != nil {
		return nil, err
	}
	if len(resp) < 17 || string(resp[:8]) != string(nonce) {
		return nil, errors.New("bad INIT response")
	}
	c.cid = binary.BigEndian.Uint32(resp[8:12])
	return c, nil
}

func (c *client) transact(cmd byte, data []byte) ([]byte, error) {
	pkt := make([]byte, ctaphid.ReportSize)
	binary.BigEndian.PutUint32(pkt, c.cid)
	pkt[4] = cmd
	binary.BigEndian.PutUint16(pkt[5:], uint16(len(data)))
	n := copy(pkt[7:], data)
	c.p.toDevice <- pkt
	for seq := byte(0); n < len(data); seq++ {
		pkt = make([]byte, ctaphid.ReportSize)
		binary.BigEndian.PutUint32(pkt, c.cid)
		pkt[4] = seq
		n += copy(pkt[5:], data[n:])
		c.p.toDevice <- pkt
	}
	timeout := time.After(10 * time.Second)
	var resp []byte
	want := -1
	for {
		var r []byte
		select {
		case r = <-c.p.fromDevice:
		case <-timeout:
			return nil, errors.New("no response")
		}
		if binary.BigEndian.Uint32(r) != c.cid {
			continue
		}
		if want < 0 {
			switch r[4] {
			case ctaphid.CmdKeepalive:
				continue
			case ctaphid.CmdError:
				return nil, fmt.Errorf("CTAPHID error 0x%02x", r[7])
			case cmd:
			default:
				return nil, fmt.Errorf("unexpected response command 0x%02x", r[4])
			}
			want = int(binary.BigEndian.Uint16(r[5:]))
			resp = append(resp, r[7:]...)
		} else {
			resp = append(resp, r[5:]...)
		}
		if len(resp) >= want {
			return resp[:want], nil
		}
	}
}
