package ctaphid

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errSequence reports a continuation packet whose SEQ is not the next one
// expected (§11.2.5.4).
var errSequence = errors.New("ctaphid: continuation packet out of sequence")

// packet is one decoded CTAPHID report (§11.2.4).
type packet struct {
	cid  uint32
	init bool   // initialisation packet (bit 7 of byte 4 set)
	cmd  byte   // initialisation packets: CMD, bit 7 set
	bcnt int    // initialisation packets: total message payload length
	seq  byte   // continuation packets: sequence number 0..127
	data []byte // the packet's payload area (57 or 59 bytes), aliasing the report
}

// parsePacket decodes a report. It fails only on a report that is not
// exactly ReportSize bytes, since every byte pattern of that size is a
// well-formed packet.
func parsePacket(report []byte) (packet, error) {
	if len(report) != ReportSize {
		return packet{}, fmt.Errorf("ctaphid: report is %d bytes, want %d", len(report), ReportSize)
	}
	p := packet{cid: binary.BigEndian.Uint32(report[0:4])}
	if report[4]&typeInit != 0 {
		p.init = true
		p.cmd = report[4]
		p.bcnt = int(binary.BigEndian.Uint16(report[5:7]))
		p.data = report[7:]
	} else {
		p.seq = report[4]
		p.data = report[5:]
	}
	return p, nil
}

// fragment splits a message into reports: one initialisation packet with
// the first 57 bytes, then continuation packets with SEQ 0..127 carrying 59
// bytes each, all zero-padded to ReportSize (§11.2.4).
func fragment(cid uint32, cmd byte, payload []byte) ([][]byte, error) {
	if len(payload) > MaxMessageSize {
		return nil, fmt.Errorf("ctaphid: message of %d bytes exceeds %d", len(payload), MaxMessageSize)
	}
	n := 1
	if len(payload) > initDataSize {
		n += (len(payload) - initDataSize + contDataSize - 1) / contDataSize
	}
	// One backing array keeps a 130-packet PING answer to one allocation.
	buf := make([]byte, n*ReportSize)
	reports := make([][]byte, 0, n)

	r := buf[:ReportSize:ReportSize]
	binary.BigEndian.PutUint32(r[0:4], cid)
	r[4] = cmd
	binary.BigEndian.PutUint16(r[5:7], uint16(len(payload)))
	rest := payload[copy(r[7:], payload):]
	reports = append(reports, r)

	for seq := 0; len(rest) > 0; seq++ {
		off := len(reports) * ReportSize
		r := buf[off : off+ReportSize : off+ReportSize]
		binary.BigEndian.PutUint32(r[0:4], cid)
		r[4] = byte(seq)
		rest = rest[copy(r[5:], rest):]
		reports = append(reports, r)
	}
	return reports, nil
}

// reassembly collects one message from its initialisation packet and its
// continuation packets (§11.2.4, §11.2.5.4).
type reassembly struct {
	cid     uint32
	cmd     byte
	bcnt    int
	nextSeq int
	msg     []byte
}

// newReassembly starts a message from its initialisation packet. bcnt must
// not exceed MaxMessageSize (the caller answers ERR_INVALID_LEN first), so
// the buffer is bounded.
func newReassembly(cid uint32, cmd byte, bcnt int, data []byte) *reassembly {
	bcnt = min(max(bcnt, 0), MaxMessageSize)
	a := &reassembly{cid: cid, cmd: cmd, bcnt: bcnt, msg: make([]byte, 0, bcnt)}
	a.msg = append(a.msg, data[:min(len(data), bcnt, initDataSize)]...)
	return a
}

// add appends a continuation packet. A packet whose SEQ is not the next
// expected one fails with errSequence and leaves the message unchanged; the
// caller then drops it (§11.2.5.4).
func (a *reassembly) add(seq byte, data []byte) error {
	if a.complete() || int(seq) != a.nextSeq {
		return fmt.Errorf("%w: got %d, want %d", errSequence, seq, a.nextSeq)
	}
	a.nextSeq++
	a.msg = append(a.msg, data[:min(len(data), contDataSize, a.bcnt-len(a.msg))]...)
	return nil
}

// complete reports whether every byte announced by BCNT has arrived.
func (a *reassembly) complete() bool { return len(a.msg) >= a.bcnt }

// message returns the reassembled payload; valid once complete.
func (a *reassembly) message() []byte { return a.msg }
