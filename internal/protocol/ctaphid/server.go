package ctaphid

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Server runs the CTAPHID protocol for one Handler. It serves one Device at
// a time, since handler calls must be serialised.
type Server struct {
	h       Handler
	cfg     Config
	log     *slog.Logger
	serving atomic.Bool

	// newCID proposes a channel ID for INIT on the broadcast CID. Random
	// IDs keep one application from guessing another's channel
	// (§11.2.3); tests substitute a deterministic sequence.
	newCID func() uint32
}

// NewServer returns a Server that hands complete messages to h. Zero
// durations in cfg take their defaults.
func NewServer(h Handler, cfg Config) *Server {
	if cfg.MsgTimeout <= 0 {
		cfg.MsgTimeout = defaultMsgTimeout
	}
	if cfg.KeepaliveInterval <= 0 {
		cfg.KeepaliveInterval = defaultKeepaliveInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{h: h, cfg: cfg, log: log, newCID: rand.Uint32}
}

// Serve reads reports from dev until ReadReport fails with an error other
// than ErrPowerCycle or ctx is done. It returns the read error, wrapped, or
// ctx.Err(). Before returning it cancels a running handler call and waits
// for it to return. A ReadReport call in progress at that point may still
// consume one report; close dev to end it.
func (s *Server) Serve(ctx context.Context, dev Device) error {
	if s == nil || s.h == nil {
		return errors.New("ctaphid: Serve on a Server without a Handler")
	}
	if dev == nil {
		return errors.New("ctaphid: Serve with a nil Device")
	}
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("ctaphid: Serve already running on this Server")
	}
	defer s.serving.Store(false)

	ss := &session{
		s:        s,
		dev:      dev,
		ctx:      ctx,
		log:      s.log,
		reports:  make(chan readResult),
		done:     make(chan txnResult, 1),
		statusCh: make(chan statusUpdate),
		quit:     make(chan struct{}),
		channels: make(map[uint32]uint64),
		asmTimer: stoppedTimer(),
		kaTimer:  stoppedTimer(),
	}
	go ss.readLoop()
	return ss.loop()
}

// Channel is the CID the request came in on (Transaction).
func (t *transaction) Channel() uint32 { return t.cid }

// SetStatus reports a KEEPALIVE status (Transaction). The send is
// unbuffered: the session goroutine has taken the update when SetStatus
// returns, so it writes the keepalive before it can see the handler's
// response. After the transaction ended SetStatus returns at once.
func (t *transaction) SetStatus(status byte) {
	if status != StatusProcessing && status != StatusUPNeeded {
		return
	}
	select {
	case t.sess.statusCh <- statusUpdate{txn: t, status: status}:
	case <-t.sess.quit:
	case <-t.done:
	}
}

// transaction is one CBOR, MSG or WINK request being executed by the
// Handler; it is the Transaction the handler receives. sess, cid and done
// never change; the other fields are owned by the session goroutine.
type transaction struct {
	sess   *session
	cid    uint32
	done   <-chan struct{} // closed when the transaction ends or is cancelled
	cmd    byte
	cancel context.CancelFunc
	status byte
	// dropped is set when INIT re-synchronisation or a power cycle aborted
	// the transaction: its response is not sent and no keepalives go out,
	// but the device stays busy until the handler returns.
	dropped bool
}

type readResult struct {
	report     []byte
	powerCycle bool
	err        error
}

type txnResult struct {
	txn  *transaction
	resp []byte
	ok   bool // false when the handler panicked
}

type statusUpdate struct {
	txn    *transaction
	status byte
}

// session is the state of one Serve call. Everything but the channels is
// touched only by the goroutine running loop.
type session struct {
	s   *Server
	dev Device
	ctx context.Context
	log *slog.Logger

	reports  chan readResult
	done     chan txnResult
	statusCh chan statusUpdate
	quit     chan struct{}

	// channels maps each allocated CID to the stamp of its last use, for
	// least-recently-used recycling.
	channels map[uint32]uint64
	clock    uint64

	// asm is the message being reassembled; there is at most one, since a
	// device is busy from a message's first packet (§11.2.5.1).
	asm      *reassembly
	asmTimer *time.Timer

	txn     *transaction
	kaTimer *time.Timer

	// pendingPowerCycle defers Handler.PowerCycle until the aborted
	// transaction's handler call returns, keeping calls serialised.
	pendingPowerCycle bool
}

// stoppedTimer returns a timer that has not been started. Since Go 1.23
// Stop and Reset discard any pending expiry, so a stale tick is never
// received after a timer was re-armed.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// readLoop forwards reports to loop, since ReadReport blocks and loop must
// also react to timers and handler completions.
func (ss *session) readLoop() {
	for {
		report, err := ss.dev.ReadReport()
		var r readResult
		switch {
		case errors.Is(err, ErrPowerCycle):
			r.powerCycle = true
		case err != nil:
			r.err = err
		default:
			// The device may reuse its buffer for the next read.
			r.report = append([]byte(nil), report...)
		}
		select {
		case ss.reports <- r:
		case <-ss.quit:
			return
		}
		if r.err != nil {
			return
		}
	}
}

func (ss *session) loop() error {
	for {
		select {
		case <-ss.ctx.Done():
			return ss.shutdown(ss.ctx.Err())
		case r := <-ss.reports:
			switch {
			case r.err != nil:
				return ss.shutdown(fmt.Errorf("ctaphid: read report: %w", r.err))
			case r.powerCycle:
				ss.powerCycle()
			default:
				ss.handleReport(r.report)
			}
		case <-ss.asmTimer.C:
			ss.msgTimeout()
		case <-ss.kaTimer.C:
			ss.keepalive()
		case res := <-ss.done:
			ss.finish(res)
		case u := <-ss.statusCh:
			ss.setStatus(u)
		}
	}
}

// shutdown aborts the running transaction, waits for its handler call so
// the caller may tear the handler down once Serve returns, and stops the
// reader.
func (ss *session) shutdown(err error) error {
	ss.asmTimer.Stop()
	ss.kaTimer.Stop()
	ss.asm = nil
	if t := ss.txn; t != nil {
		t.dropped = true
		t.cancel()
		for ss.txn != nil {
			select {
			case res := <-ss.done:
				ss.finish(res)
			case <-ss.statusCh:
				// Keep SetStatus from blocking the handler we wait for.
			}
		}
	}
	close(ss.quit)
	return err
}

func (ss *session) handleReport(report []byte) {
	p, err := parsePacket(report)
	if err != nil {
		ss.log.Debug("ctaphid: dropping report", "err", err)
		return
	}
	if p.init {
		ss.handleInitPacket(p)
	} else {
		ss.handleContPacket(p)
	}
}

// handleInitPacket applies the checks of §11.2 to an initialisation packet
// in an order that makes each error the most specific one: channel
// validity, then contention with another channel (which even INIT gets,
// §11.2.5.1), then INIT, then sequencing and contention on the packet's own
// channel, then allocation, command and length.
func (ss *session) handleInitPacket(p packet) {
	switch {
	case p.cmd == CmdCancel:
		// §11.2.9.1.5: the authenticator MUST NOT reply to CANCEL, so
		// this precedes even the CID checks.
		ss.cancel(p.cid)
		return
	case p.cid == 0:
		// CID 0 is reserved (§11.2.3).
		ss.protocolError(p.cid, ErrInvalidChannel, "reserved CID 0")
		return
	case p.cid == BroadcastCID && p.cmd != CmdInit:
		// The broadcast CID is only for INIT (§11.2.3).
		ss.protocolError(p.cid, ErrInvalidChannel, "broadcast CID on a command other than INIT")
		return
	case ss.busyOnOtherChannel(p.cid):
		// §11.2.5.1: while a transaction is in progress, any request
		// from another channel fails at once, INIT included (on the
		// broadcast CID too: a new application waits like any other).
		ss.protocolError(p.cid, ErrChannelBusy, "busy with another channel")
		return
	case p.cmd == CmdInit:
		// On the busy channel itself INIT aborts its transaction
		// (§11.2.5.3); see resync.
		ss.handleInit(p)
		return
	case ss.asm != nil:
		// The host started a new message before finishing the last one
		// on this channel (§11.2.5.4).
		ss.dropAssembly()
		ss.protocolError(p.cid, ErrInvalidSeq, "initialisation packet while reassembling")
		return
	case ss.txn != nil:
		// §11.2.5.1: this channel's own transaction is still running.
		ss.protocolError(p.cid, ErrChannelBusy, "busy")
		return
	case !ss.allocated(p.cid):
		ss.protocolError(p.cid, ErrInvalidChannel, "unallocated CID")
		return
	case !ss.supported(p.cmd):
		ss.protocolError(p.cid, ErrInvalidCmd, fmt.Sprintf("unsupported command 0x%02x", p.cmd))
		return
	case p.bcnt > MaxMessageSize:
		ss.protocolError(p.cid, ErrInvalidLen, fmt.Sprintf("BCNT %d exceeds %d", p.bcnt, MaxMessageSize))
		return
	case p.bcnt == 0 && (p.cmd == CmdCBOR || p.cmd == CmdMsg):
		// CBOR needs at least the command byte (§11.2.9.1.2), MSG at
		// least an APDU header (§11.2.9.1.1).
		ss.protocolError(p.cid, ErrInvalidLen, "empty request")
		return
	}

	ss.touch(p.cid)
	a := newReassembly(p.cid, p.cmd, p.bcnt, p.data)
	if a.complete() {
		ss.dispatch(a)
		return
	}
	ss.asm = a
	ss.asmTimer.Reset(ss.s.cfg.MsgTimeout)
}

// busyOnOtherChannel reports whether a transaction is in progress (a message
// being reassembled or a handler call running, aborted or not) on a channel
// other than cid.
func (ss *session) busyOnOtherChannel(cid uint32) bool {
	switch {
	case ss.asm != nil:
		return ss.asm.cid != cid
	case ss.txn != nil:
		return ss.txn.cid != cid
	default:
		return false
	}
}

func (ss *session) handleContPacket(p packet) {
	a := ss.asm
	if a == nil || a.cid != p.cid {
		// §11.2.5.4: spurious continuation packets are ignored. A
		// continuation from another channel while busy is not a request,
		// so it gets no ERR_CHANNEL_BUSY either.
		return
	}
	if err := a.add(p.seq, p.data); err != nil {
		ss.dropAssembly()
		ss.protocolError(p.cid, ErrInvalidSeq, err.Error())
		return
	}
	if a.complete() {
		ss.dropAssembly()
		ss.dispatch(a)
		return
	}
	// The timeout measures a stalled host (§11.2.5.2), so every packet
	// restarts it.
	ss.asmTimer.Reset(ss.s.cfg.MsgTimeout)
}

func (ss *session) dropAssembly() {
	ss.asm = nil
	ss.asmTimer.Stop()
}

func (ss *session) msgTimeout() {
	a := ss.asm
	if a == nil {
		return
	}
	ss.dropAssembly()
	ss.protocolError(a.cid, ErrMsgTimeout, fmt.Sprintf("message incomplete after %v (%d of %d bytes)",
		ss.s.cfg.MsgTimeout, len(a.msg), a.bcnt))
}

// handleInit answers CTAPHID_INIT (§11.2.9.1.3). The CID is valid (not 0).
func (ss *session) handleInit(p packet) {
	if p.bcnt != 8 {
		ss.protocolError(p.cid, ErrInvalidLen, fmt.Sprintf("INIT with %d bytes, want an 8-byte nonce", p.bcnt))
		return
	}
	cid := p.cid
	if cid == BroadcastCID {
		cid = ss.allocate()
	} else {
		ss.resync(cid)
	}
	resp := make([]byte, 17)
	copy(resp[0:8], p.data[:8])
	binary.BigEndian.PutUint32(resp[8:12], cid)
	resp[12] = protocolVersion
	copy(resp[13:16], ss.s.cfg.Version[:])
	resp[16] = ss.s.cfg.Capabilities
	// The reply goes out on the channel the request came in on, so a new
	// channel's CID travels on the broadcast CID.
	ss.writeMessage(p.cid, CmdInit, resp)
}

// resync aborts whatever the channel was doing and keeps (or, for an
// unallocated CID, takes) the channel (§11.2.5.3).
func (ss *session) resync(cid uint32) {
	if ss.asm != nil && ss.asm.cid == cid {
		ss.dropAssembly()
	}
	if t := ss.txn; t != nil && t.cid == cid && !t.dropped {
		t.dropped = true
		t.cancel()
		ss.kaTimer.Stop()
	}
	ss.touch(cid)
}

// cancel handles CTAPHID_CANCEL (§11.2.9.1.5): only a CBOR request running
// on the same channel is cancelled; anything else is ignored.
func (ss *session) cancel(cid uint32) {
	if t := ss.txn; t != nil && t.cid == cid && t.cmd == CmdCBOR && !t.dropped {
		t.cancel()
	}
}

// powerCycle handles ErrPowerCycle: the partial message and the running
// transaction are dropped and Handler.PowerCycle resets what CTAP ties to
// power-up, but the allocated channels stay. The simulators whose
// convention ErrPowerCycle comes from keep them, and conformance suites go
// on using their channel after a power cycle. A device that really goes
// away (uhid) ends Serve instead; the next Serve starts without channels.
func (ss *session) powerCycle() {
	ss.log.Debug("ctaphid: power cycle")
	ss.dropAssembly()
	if t := ss.txn; t != nil {
		if !t.dropped {
			t.dropped = true
			t.cancel()
			ss.kaTimer.Stop()
		}
		ss.pendingPowerCycle = true
		return
	}
	ss.callPowerCycle()
}

func (ss *session) callPowerCycle() {
	defer func() {
		if r := recover(); r != nil {
			ss.log.Error("ctaphid: Handler.PowerCycle panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	ss.s.h.PowerCycle()
}

func (ss *session) supported(cmd byte) bool {
	caps := ss.s.cfg.Capabilities
	switch cmd {
	case CmdPing:
		return true
	case CmdMsg:
		return caps&CapNMSG == 0
	case CmdCBOR:
		return caps&CapCBOR != 0
	case CmdWink:
		return caps&CapWink != 0
	default:
		// CmdLock is optional and not implemented (§11.2.9.2.2);
		// KEEPALIVE and ERROR are device-to-host only.
		return false
	}
}

// dispatch executes a complete message.
func (ss *session) dispatch(a *reassembly) {
	if a.cmd == CmdPing {
		// §11.2.9.1.4: echoed by the transport, no handler involved.
		ss.writeMessage(a.cid, CmdPing, a.message())
		return
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	t := &transaction{sess: ss, cid: a.cid, done: ctx.Done(), cmd: a.cmd, cancel: cancel, status: StatusProcessing}
	ss.txn = t
	ss.kaTimer.Reset(min(ss.s.cfg.KeepaliveInterval, maxFirstKeepalive))
	go ss.run(ctx, t, a.message())
}

// run executes one handler call off the session goroutine. A panicking
// handler is reported as ERR_OTHER rather than taking the daemon down: the
// request bytes come from any local process.
func (ss *session) run(ctx context.Context, t *transaction, req []byte) {
	res := txnResult{txn: t}
	defer func() {
		if r := recover(); r != nil {
			ss.log.Error("ctaphid: handler panicked", "cmd", fmt.Sprintf("0x%02x", t.cmd),
				"panic", r, "stack", string(debug.Stack()))
		}
		ss.done <- res
	}()
	switch t.cmd {
	case CmdCBOR:
		res.resp = ss.s.h.CBOR(ctx, t, req)
	case CmdMsg:
		res.resp = ss.s.h.MSG(ctx, t, req)
	case CmdWink:
		ss.s.h.Wink()
	}
	res.ok = true
}

func (ss *session) finish(res txnResult) {
	t := res.txn
	if t != ss.txn {
		// Cannot happen: at most one handler call runs at a time.
		ss.log.Error("ctaphid: completion of an unknown transaction")
		return
	}
	ss.txn = nil
	ss.kaTimer.Stop()
	t.cancel()
	if !t.dropped {
		ss.respond(t, res)
	}
	if ss.pendingPowerCycle {
		ss.pendingPowerCycle = false
		ss.callPowerCycle()
	}
}

func (ss *session) respond(t *transaction, res txnResult) {
	switch {
	case !res.ok:
		ss.writeError(t.cid, ErrOther)
	case t.cmd == CmdWink:
		// §11.2.9.2.1: the response is an empty WINK.
		ss.writeMessage(t.cid, CmdWink, nil)
	case len(res.resp) == 0 || len(res.resp) > MaxMessageSize:
		// A CBOR response carries at least its status byte, a U2F
		// response at least its status word.
		ss.log.Error("ctaphid: handler returned an unsendable response",
			"cmd", fmt.Sprintf("0x%02x", t.cmd), "len", len(res.resp))
		ss.writeError(t.cid, ErrOther)
	default:
		ss.writeMessage(t.cid, t.cmd, res.resp)
	}
}

func (ss *session) keepalive() {
	t := ss.txn
	if t == nil || t.dropped {
		return
	}
	ss.writeMessage(t.cid, CmdKeepalive, []byte{t.status})
	ss.kaTimer.Reset(ss.s.cfg.KeepaliveInterval)
}

func (ss *session) setStatus(u statusUpdate) {
	t := u.txn
	if t != ss.txn || t.dropped || t.status == u.status {
		return
	}
	t.status = u.status
	// §11.2.9.1.7: a keepalive goes out whenever the status changes; the
	// periodic ones continue a full interval from here.
	ss.keepalive()
}

func (ss *session) allocated(cid uint32) bool {
	_, ok := ss.channels[cid]
	return ok
}

// touch marks a channel as used now, allocating it if needed and recycling
// the least recently used channel beyond maxChannels. The busy channel is
// never recycled.
func (ss *session) touch(cid uint32) {
	ss.clock++
	if _, ok := ss.channels[cid]; !ok && len(ss.channels) >= maxChannels {
		var victim uint32
		oldest := ^uint64(0)
		for c, used := range ss.channels {
			if (ss.asm != nil && ss.asm.cid == c) || (ss.txn != nil && ss.txn.cid == c) {
				continue
			}
			if used < oldest {
				victim, oldest = c, used
			}
		}
		delete(ss.channels, victim)
	}
	ss.channels[cid] = ss.clock
}

// allocate picks a fresh CID that is neither reserved (0, broadcast) nor in
// use. Stepping past collisions terminates since at most maxChannels CIDs
// are in use.
func (ss *session) allocate() uint32 {
	cid := ss.s.newCID()
	for cid == 0 || cid == BroadcastCID || ss.allocated(cid) {
		cid++
	}
	ss.touch(cid)
	return cid
}

func (ss *session) protocolError(cid uint32, code byte, reason string) {
	ss.log.Debug("ctaphid: error reply", "cid", fmt.Sprintf("%08x", cid),
		"code", fmt.Sprintf("0x%02x", code), "reason", reason)
	ss.writeError(cid, code)
}

func (ss *session) writeError(cid uint32, code byte) {
	ss.writeMessage(cid, CmdError, []byte{code})
}

// writeMessage sends a message as consecutive reports. Only the session
// goroutine calls it, which keeps one message's packets together and
// serialises all writes to the device.
func (ss *session) writeMessage(cid uint32, cmd byte, payload []byte) {
	reports, err := fragment(cid, cmd, payload)
	if err != nil {
		ss.log.Error("ctaphid: cannot send message", "cid", fmt.Sprintf("%08x", cid), "err", err)
		return
	}
	for _, r := range reports {
		if err := ss.dev.WriteReport(r); err != nil {
			// The host may be gone; the next read will tell Serve.
			ss.log.Warn("ctaphid: write report", "cid", fmt.Sprintf("%08x", cid),
				"cmd", fmt.Sprintf("0x%02x", cmd), "err", err)
			return
		}
	}
}
