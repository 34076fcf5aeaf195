// Package control is passkeyd's control socket: a unix socket on which
// local programs (passkeyctl, the session prompt agent) ask the daemon for
// named operations.
//
// # Protocol
//
// Newline-delimited JSON, one object per line, at most MaxRequest bytes
// per request. A request
//
//	{"op": "version", "args": {...}}
//
// is answered by
//
//	{"ok": true, "result": ...}
//	{"ok": false, "code": "not-allowed", "error": "not allowed: ..."}
//
// Codes: "bad-request" (not a request object, or too long: the connection
// is then closed), "unknown-op", "not-allowed" (the connection is then
// closed), "busy" (too many connections, see below), "failed" (the
// operation's own error). A connection may
// carry any number of requests, answered in order. A stream operation
// (the prompt agent, passkeyctl's listings) answers once and then hands
// the connection to the operation, which exchanges its own JSON messages
// on it.
//
// # Authorisation
//
// The socket is mode 0666 in a 0755 directory: anyone may connect, and
// every operation decides by the peer's credentials, which the kernel
// reports (SO_PEERCRED) and the peer cannot forge, instead of by file
// modes, which would force a group on every installation. An operation
// refused to a peer is answered "not allowed: ..." and the connection
// closed.
//
// Since anyone may connect, nobody may hold the socket hostage: each
// unprivileged uid gets at most maxConnsPerUID connections, and the last
// reservedConns of the maxConns slots are kept for the privileged peers
// (root and the owner, Server.Reserve). Refusals are logged once per uid
// when they start and then as a count per interval, not line by line.
//
// The other way round, a client checks who serves the socket before it
// sends anything (Dial, Trust): a socket placed by another user could be
// phishing for the PIN.
//
// # What it owns
//
// The framing, the peer checks and the connection limits, for both ends;
// not the operations, which their owners register (Server.Handle: the
// management operations of package mgmt, the prompt agent). Client and
// server share this package because neither side needs more than the
// standard library and x/sys: it may not import CTAP, the TPM or the store
// (internal/protocol, internal/hardware), since passkeyctl links it.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"strconv"
)

// DefaultPath is where passkeyd listens unless told otherwise.
const DefaultPath = "/run/passkeyd/control.sock"

// MaxRequest bounds one request line, and every message of a stream. The
// largest legitimate request is a handful of short strings.
const MaxRequest = 64 << 10

// maxReply bounds a reply the client reads: a list of many credentials is
// legitimately larger than a request, but not without limit.
const maxReply = 8 << 20

// Reply codes.
const (
	CodeBadRequest = "bad-request"
	CodeUnknownOp  = "unknown-op"
	CodeNotAllowed = "not-allowed"
	CodeBusy       = "busy"
	CodeFailed     = "failed"
	// CodeNotActive: the operation is for the active user at the seat
	// (seat mode's prompt agent), and the caller is not them now; they
	// may be later, so a client may retry.
	CodeNotActive = "not-active"
	// CodeAgentConnected: the caller's user already has a prompt agent
	// connected; a second one is refused, not swapped in.
	CodeAgentConnected = "agent-connected"
)

// Errors a client can test for with errors.Is.
var (
	ErrNotRunning = errors.New("passkeyd is not running")
	ErrNotAllowed = errors.New("not allowed")
)

type request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

type reply struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Code   string `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
}

type rawReply struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Code   string          `json:"code,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Error is an error with a reply code. A handler may return one to choose
// the code; the client returns the daemon's refusals as *Error.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, ErrNotAllowed) true for a refusal.
func (e *Error) Is(target error) bool {
	return target == ErrNotAllowed && e.Code == CodeNotAllowed
}

// Peer is the process at the other end of a connection, as the kernel
// saw it when it connected.
type Peer struct {
	UID uint32
	GID uint32
	PID int32
}

func (p Peer) String() string { return fmt.Sprintf("uid %d (pid %d)", p.UID, p.PID) }

// Anyone allows every peer: for operations that reveal nothing, such as
// the daemon's version.
func Anyone(Peer) bool { return true }

// RootOnly allows uid 0.
func RootOnly(p Peer) bool { return p.UID == 0 }

// NoOwner is the owner value of a device that serves root only.
const NoOwner = -1

// OwnerOrRoot allows root and the device's owner (a uid; NoOwner for none).
func OwnerOrRoot(owner int) func(Peer) bool {
	return func(p Peer) bool {
		return p.UID == 0 || (owner >= 0 && int64(p.UID) == int64(owner))
	}
}

// ParseOwner turns a user name or a numeric uid (the daemon's --owner)
// into a uid; empty is NoOwner.
func ParseOwner(s string) (int, error) {
	if s == "" {
		return NoOwner, nil
	}
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		return int(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("no user or uid %q", s)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("user %q has the non-numeric uid %q", s, u.Uid)
	}
	return int(n), nil
}
