// Package ctaphid implements CTAPHID, the USB HID transport of CTAP 2.1
// (§11.2), independently of any operating-system device: a Server speaks
// the protocol over anything that exchanges 64-byte reports (a uhid device,
// the UDP simulation transport in this package, or an in-memory pipe in
// tests) and hands complete CBOR and U2F messages to a Handler.
//
// # Design
//
// One goroutine per Serve call owns all protocol state (channels, the
// message being reassembled, the running transaction) and is the only
// writer to the device, so writes are serialised by construction rather
// than by a lock. A second goroutine blocks in Device.ReadReport and feeds
// reports to it, because the state goroutine must also react to timers
// (message timeout, keepalive) and to the handler finishing. Handler calls
// for CBOR, MSG and WINK run in a third goroutine so the read loop keeps
// answering other channels with ERR_CHANNEL_BUSY and keeps emitting
// KEEPALIVE while a TPM operation or a user-presence wait is under way.
//
// # Decisions where CTAP 2.1 §11.2 leaves room
//
//   - Busy (§11.2.5.1): the device is busy from the first packet of a
//     message until the response is sent. Any request packet from another
//     channel gets ERR_CHANNEL_BUSY at once, CTAPHID_INIT included (on the
//     broadcast CID too: a new application waits like any other, and no
//     channel is allocated), except CTAPHID_CANCEL (never answered,
//     §11.2.9.1.5). Packets on CID 0 and non-INIT packets on the broadcast
//     CID get ERR_INVALID_CHANNEL even then, the more specific error.
//     Continuation packets from other channels are not requests and are
//     ignored (§11.2.5.4).
//   - INIT on the busy channel itself aborts that channel's transaction
//     (§11.2.5.3) and is answered.
//   - INIT on an unallocated, non-zero, non-broadcast CID is treated as a
//     re-synchronisation of that CID and allocates it. §11.2.9.1.3 defines
//     INIT only for the broadcast CID and allocated CIDs; public suites
//     open channels this way (INIT on a CID they chose), and it costs
//     nothing. Every other command on an unallocated CID gets
//     ERR_INVALID_CHANNEL.
//   - A new initialisation packet on the channel whose message is being
//     reassembled gets ERR_INVALID_SEQ: the message was cut short, which is
//     a sequencing error, not contention with another application. Both the
//     half-received message and the new packet are dropped.
//   - ERR_MSG_TIMEOUT (§11.2.5.2) fires when no packet of an incomplete
//     message arrived for Config.MsgTimeout: a host still sending is not
//     stalling.
//   - CTAPHID_CANCEL cancels only a running CBOR request on the same
//     channel (§11.2.9.1.5: "received while no CTAPHID_CBOR request is
//     being processed, or on a non-active CID SHALL be ignored"). It never
//     gets a reply; the handler answers the cancelled request itself with
//     CTAP2_ERR_KEEPALIVE_CANCEL.
//   - CTAPHID_LOCK (optional, §11.2.9.2.2) is not supported and answered
//     with ERR_INVALID_CMD, like WINK, CBOR and MSG when Config.Capabilities
//     does not advertise them. ERR_LOCK_REQUIRED is therefore never sent.
//   - CID 0 is reserved (§11.2.3): an initialisation packet on it gets
//     ERR_INVALID_CHANNEL (CANCEL excepted, it is never answered); a
//     continuation packet on it is a spurious continuation and ignored.
//   - A power cycle (ErrPowerCycle, the simulation transport's datagram)
//     drops the message being reassembled and the running transaction and
//     calls Handler.PowerCycle, but keeps the allocated channels, as the
//     simulators of that convention do. A real unplug (a uhid device
//     destroyed and created again) is a new Device and a new Serve, which
//     starts without channels.
//   - A transaction aborted by INIT re-synchronisation or a power cycle
//     keeps the device busy until its handler call returns (handler calls
//     are serialised), and its response is dropped.
//   - KEEPALIVE (§11.2.9.1.7) is sent for CBOR, MSG and WINK requests: the
//     first within 50 ms (or KeepaliveInterval if shorter) of reassembly,
//     then every KeepaliveInterval, and at once whenever the handler's
//     Transaction.SetStatus changes the status, so a handler that asks for user presence and gets it
//     instantly still produces one UPNEEDED keepalive before its response.
package ctaphid

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// ReportSize is the size of every CTAPHID packet: the FIDO HID report
// descriptor declares 64-byte input and output reports (§11.2.8.1).
const ReportSize = 64

// Packet layout (§11.2.4): an initialisation packet carries CID (4), CMD (1),
// BCNT (2) and 57 payload bytes; a continuation packet carries CID (4),
// SEQ (1) and 59 payload bytes.
const (
	initDataSize = ReportSize - 7
	contDataSize = ReportSize - 5
	// maxSeq is the highest continuation sequence number: bit 7 of the
	// fifth byte tells initialisation packets (set) from continuation
	// packets (clear).
	maxSeq = 0x7f
	// typeInit marks an initialisation packet (§11.2.4).
	typeInit = 0x80
)

// MaxMessageSize is the largest message payload that fits in one
// initialisation packet and 128 continuation packets (§11.2.4):
// 64-7 + 128*(64-5) = 7609 bytes.
const MaxMessageSize = initDataSize + (maxSeq+1)*contDataSize

// BroadcastCID is the channel on which CTAPHID_INIT allocates a channel
// (§11.2.3).
const BroadcastCID uint32 = 0xffffffff

// protocolVersion is the CTAPHID protocol version reported in INIT
// (§11.2.9.1.3).
const protocolVersion = 2

// CTAPHID commands (§11.2.9), with the initialisation-packet bit set, as
// they appear in the CMD byte on the wire.
const (
	CmdPing      = 0x81 // CTAPHID_PING (0x01), §11.2.9.1.4
	CmdMsg       = 0x83 // CTAPHID_MSG (0x03), §11.2.9.1.1
	CmdLock      = 0x84 // CTAPHID_LOCK (0x04), §11.2.9.2.2
	CmdInit      = 0x86 // CTAPHID_INIT (0x06), §11.2.9.1.3
	CmdWink      = 0x88 // CTAPHID_WINK (0x08), §11.2.9.2.1
	CmdCBOR      = 0x90 // CTAPHID_CBOR (0x10), §11.2.9.1.2
	CmdCancel    = 0x91 // CTAPHID_CANCEL (0x11), §11.2.9.1.5
	CmdKeepalive = 0xBB // CTAPHID_KEEPALIVE (0x3B), §11.2.9.1.7
	CmdError     = 0xBF // CTAPHID_ERROR (0x3F), §11.2.9.1.6
)

// CTAPHID_ERROR codes (§11.2.9.1.6).
const (
	ErrInvalidCmd     = 0x01 // ERR_INVALID_CMD
	ErrInvalidPar     = 0x02 // ERR_INVALID_PAR
	ErrInvalidLen     = 0x03 // ERR_INVALID_LEN
	ErrInvalidSeq     = 0x04 // ERR_INVALID_SEQ
	ErrMsgTimeout     = 0x05 // ERR_MSG_TIMEOUT
	ErrChannelBusy    = 0x06 // ERR_CHANNEL_BUSY
	ErrLockRequired   = 0x0A // ERR_LOCK_REQUIRED
	ErrInvalidChannel = 0x0B // ERR_INVALID_CHANNEL
	ErrOther          = 0x7F // ERR_OTHER
)

// CTAPHID_KEEPALIVE status codes (§11.2.9.1.7).
const (
	StatusProcessing = 1 // STATUS_PROCESSING
	StatusUPNeeded   = 2 // STATUS_UPNEEDED
)

// Capability flags reported in the INIT response (§11.2.9.1.3).
const (
	CapWink = 0x01 // CAPABILITY_WINK: CTAPHID_WINK is implemented
	CapCBOR = 0x04 // CAPABILITY_CBOR: CTAPHID_CBOR is implemented
	CapNMSG = 0x08 // CAPABILITY_NMSG: CTAPHID_MSG is NOT implemented
)

// Defaults for Config.
const (
	// defaultMsgTimeout sits inside the 400-1000 ms window that
	// conformance suites accept for ERR_MSG_TIMEOUT.
	defaultMsgTimeout = 500 * time.Millisecond
	// defaultKeepaliveInterval leaves 25 ms of scheduling slack under the
	// "at least every 100ms" of §11.2.9.1.7.
	defaultKeepaliveInterval = 75 * time.Millisecond
	// maxFirstKeepalive bounds the delay of the first keepalive so it goes
	// out well within 100 ms even on a loaded machine.
	maxFirstKeepalive = 50 * time.Millisecond
	// maxChannels bounds the allocated channels; the least recently used
	// one is recycled beyond that.
	maxChannels = 64
)

// Device is one HID-like endpoint exchanging 64-byte reports (uhid, UDP,
// tests).
type Device interface {
	// ReadReport blocks for the next 64-byte output report from the host.
	// It returns ErrPowerCycle for a simulated power cycle (the UDP
	// transport's PowerCycleDatagram): the server then drops any partial
	// message and running transaction and calls Handler.PowerCycle, but
	// keeps the allocated channels, as the simulators of that convention
	// do. Any other error ends Serve; a device that is really unplugged
	// (a uhid device destroyed) is a new Device and a new Serve, which
	// starts without channels.
	ReadReport() ([]byte, error)
	// WriteReport sends one 64-byte input report to the host.
	WriteReport(report []byte) error
}

// ErrPowerCycle is returned by Device.ReadReport when the device went
// through a simulated power cycle (unplug and replug). It is not fatal to
// Serve, and channels survive it (see Device).
var ErrPowerCycle = errors.New("ctaphid: device power cycle")

// Handler executes complete messages. Calls are serialised: at most one at a
// time.
type Handler interface {
	// CBOR executes an authenticator API request (command byte + CBOR) and
	// returns the response (status byte + CBOR). ctx is cancelled by
	// CTAPHID_CANCEL, in which case the handler answers
	// CTAP2_ERR_KEEPALIVE_CANCEL itself, and when the transaction is
	// aborted (INIT, power cycle, Serve ending), in which case the response
	// is dropped. t is the transaction: its channel, and its keepalive
	// status for user-presence waits.
	CBOR(ctx context.Context, t Transaction, req []byte) []byte
	// MSG executes a CTAP1/U2F request APDU and returns the response APDU.
	MSG(ctx context.Context, t Transaction, apdu []byte) []byte
	// Wink performs a vendor-defined action that identifies the device
	// (§11.2.9.2.1).
	Wink()
	// PowerCycle resets everything CTAP ties to a power cycle.
	PowerCycle()
}

// Transaction is what the transport tells a Handler about the request it
// executes (a CTAPHID transaction, §11.2.5: one request and its response).
// Its methods are safe to call from the handler's goroutine.
type Transaction interface {
	// Channel is the CID the request came in on. Handlers bind
	// multi-command state (getNextAssertion, credential-management
	// enumerations) to it, so that another application, on its own
	// channel (§11.2.3), cannot continue it.
	Channel() uint32
	// SetStatus sets the KEEPALIVE status (StatusProcessing by default,
	// StatusUPNeeded while waiting for the user). A change is reported at
	// once, so even a presence check that succeeds instantly shows the
	// client one UPNEEDED keepalive (§11.2.9.1.7: "whenever the status
	// changes"). Undefined status values are ignored, and so is every
	// call after the transaction ended.
	SetStatus(status byte)
}

// Config configures a Server.
type Config struct {
	// Capabilities reported in INIT, e.g. CapWink|CapCBOR (MSG supported =>
	// no CapNMSG). Commands that are not advertised get ERR_INVALID_CMD.
	Capabilities byte
	// Version is the device version: major, minor, build.
	Version [3]byte
	// MsgTimeout is how long an incomplete message may wait for its next
	// packet before ERR_MSG_TIMEOUT; default 500ms.
	MsgTimeout time.Duration
	// KeepaliveInterval is the period of KEEPALIVE while a handler runs;
	// default 75ms. The first keepalive goes out within 50ms of the
	// request completing reassembly.
	KeepaliveInterval time.Duration
	// Logger receives protocol diagnostics; may be nil.
	Logger *slog.Logger
}
