package ctap2

import (
	"context"

	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

// HIDHandler is a as a CTAPHID handler: the transport gives every request
// its ctaphid.Transaction, through which the authenticator reports
// user-presence waits (KEEPALIVE STATUS_UPNEEDED, CTAP 2.1 §11.2.9.1.7)
// and learns the channel that continuations (getNextAssertion, the
// credential-management enumerations) are bound to: another application
// on the same device, on its own channel (§11.2.3), must not take the
// next signed assertion of someone else's sign-in, nor read the rest of
// an enumeration opened with someone else's PIN token.
func HIDHandler(a *Authenticator) ctaphid.Handler { return hidHandler{a} }

type hidHandler struct{ a *Authenticator }

func (h hidHandler) CBOR(ctx context.Context, tx ctaphid.Transaction, req []byte) []byte {
	return h.a.execute(ctx, tx, req)
}

// MSG needs no transaction: U2F collects presence before it answers
// (u2fPresence) and has no continuations.
func (h hidHandler) MSG(ctx context.Context, _ ctaphid.Transaction, apdu []byte) []byte {
	return h.a.MSG(ctx, apdu)
}

func (h hidHandler) Wink()       { h.a.Wink() }
func (h hidHandler) PowerCycle() { h.a.PowerCycle() }

// inProcess is the transaction of a caller in the same process (tests,
// benchmarks, the management API): channel 0, and nobody to send
// keepalives to.
type inProcess struct{}

func (inProcess) Channel() uint32  { return 0 }
func (inProcess) SetStatus(_ byte) {}
