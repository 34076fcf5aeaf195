// Package prompt asks the person at the machine to confirm an
// authenticator operation (user presence, CTAP 2.1 §6 "up").
//
// Backends (approve-all for tests; a session agent and pinentry come with
// the PIN work) all implement Prompter; the authenticator only sees that
// interface.
//
// Layer: daemon. The Prompter interface is the seam the protocol sees;
// the backends (session agent, pinentry, terminal) live here and never
// reach into the authenticator or the hardware.
package prompt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Operation names what the user is asked to approve.
type Operation string

// Operations shown to the user.
const (
	OpRegister Operation = "register a passkey"
	OpSignIn   Operation = "sign in"
	OpReset    Operation = "reset the authenticator (deletes every passkey)"
	OpSelect   Operation = "select this authenticator"
	OpExcluded Operation = "confirm an already registered passkey"
	OpVerify   Operation = "unlock the security key with its PIN"
	OpManage   Operation = "manage passkeys"
	OpSetPIN   Operation = "change the security key's PIN"
	// OpUnlock is built-in UV through the system (a Verifier): the
	// person proves who they are, not the device PIN.
	OpUnlock Operation = "use a passkey"
)

// Request describes one prompt. RPID, UserName and Notice may be empty.
type Request struct {
	Operation Operation
	RPID      string
	UserName  string
	// Notice is one line from the authenticator about its own state that
	// the person should know before answering, e.g. that the TPM is in
	// dictionary-attack lockout and when it recovers.
	Notice string
}

// forUserKey is the context key of ForUser.
type forUserKey struct{}

// ForUser returns ctx for a prompt that only uid may answer: a user's
// request about their own passkeys (passkeyctl delete, pin, reset in seat
// mode) is shown in their session or not at all, also when the seat has
// switched to another user while it waited. Backends that know whose
// session they ask (the seat's agents, polkit) honour it.
func ForUser(ctx context.Context, uid uint32) context.Context {
	return context.WithValue(ctx, forUserKey{}, uid)
}

// UserFrom reports the uid ForUser restricted ctx's prompts to.
func UserFrom(ctx context.Context) (uid uint32, ok bool) {
	uid, ok = ctx.Value(forUserKey{}).(uint32)
	return uid, ok
}

// Errors a Prompter returns when it does not approve. A cancelled or
// expired context is returned as the context's error.
var (
	ErrDenied  = errors.New("prompt: the user declined")
	ErrTimeout = errors.New("prompt: no answer in time")
	ErrNoUser  = errors.New("prompt: nobody can be asked")
)

// Errors of a Verifier. ErrNotVerified is also ErrDenied; ErrNoVerifier
// is also ErrNoUser.
var (
	// ErrNotVerified: the person answered but did not prove who they are
	// (a wrong password or finger), as opposed to declining (ErrDenied).
	ErrNotVerified = fmt.Errorf("%w: user verification failed", ErrDenied)
	// ErrNoVerifier: nobody can verify the user this way now (polkit has
	// no authentication agent in the session, or there is no polkit). A
	// Verifier that is also a PINEntry may be asked for the device PIN
	// instead.
	ErrNoVerifier = fmt.Errorf("%w: no one can verify the user", ErrNoUser)
)

// Prompter obtains user presence. Confirm returns nil only when the user
// approved; ctx is cancelled when the client sends CTAPHID_CANCEL.
type Prompter interface {
	Confirm(ctx context.Context, req Request) error
}

// PINEntry is a Prompter that can also perform built-in user
// verification: the person types the device PIN into the prompt, and the
// authenticator has the TPM check it exactly as it checks a clientPIN PIN.
// Backends that cannot ask for a PIN (approve-all) do not implement it,
// so the authenticator never reports built-in UV through them.
type PINEntry interface {
	Prompter
	// EnterPIN shows req, asks for the device PIN and returns it as typed
	// (UTF-8, no trailing newline). retries is the number of tries left,
	// shown to the person. Errors as for Confirm.
	EnterPIN(ctx context.Context, req Request, retries int) (string, error)
}

// Verifier is a Prompter that performs user verification itself: the
// system verifies the person (polkit: the session user's password, or a
// fingerprint where PAM is set up for it), and one dialog proves both
// presence and verification. The authenticator's built-in UV goes through
// it instead of the device PIN; nothing of it is checked by the TPM.
type Verifier interface {
	Prompter
	// VerifyUser shows req and returns nil only when the person in the
	// active session proved who they are. A failed proof is
	// ErrNotVerified, a refusal ErrDenied, nobody to ask ErrNoVerifier
	// (or ErrNoUser); otherwise as for Confirm.
	VerifyUser(ctx context.Context, req Request) error
}

// Both is "polkit+agent": the system verifies the user (Verifier, which
// need not be a PINEntry) and the session agent (Fallback) asks for
// presence and, when the system has nobody to ask (ErrNoVerifier), for
// the device PIN, which the TPM checks. Presence goes to the agent, and to
// the Verifier only when no agent is connected (ErrNoUser).
type Both struct {
	Verifier Verifier
	Fallback PINEntry
}

// Confirm implements Prompter.
func (b Both) Confirm(ctx context.Context, req Request) error {
	err := b.Fallback.Confirm(ctx, req)
	if errors.Is(err, ErrNoUser) && ctx.Err() == nil {
		return b.Verifier.Confirm(ctx, req)
	}
	return err
}

// EnterPIN implements PINEntry: the device PIN through the agent.
func (b Both) EnterPIN(ctx context.Context, req Request, retries int) (string, error) {
	return b.Fallback.EnterPIN(ctx, req, retries)
}

// VerifyUser implements Verifier.
func (b Both) VerifyUser(ctx context.Context, req Request) error {
	return b.Verifier.VerifyUser(ctx, req)
}

// Timeout bounds every prompt (CTAP leaves it to the authenticator; 30 s
// matches what browsers wait for a touch).
const Timeout = 30 * time.Second

// ApproveAll grants every request after Delay. It exists for tests and the
// demo only: it proves nothing about a person being present, so it logs a
// warning every time it is used.
type ApproveAll struct {
	Delay  time.Duration
	Logger *slog.Logger
}

// Confirm implements Prompter.
func (a ApproveAll) Confirm(ctx context.Context, req Request) error {
	if a.Logger != nil {
		a.Logger.Warn("approve-all prompt: granting user presence without asking anyone", "operation", string(req.Operation))
	}
	t := time.NewTimer(a.Delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// DenyAll refuses every request: the safe backend when there is no way to
// ask anyone.
type DenyAll struct{}

// Confirm implements Prompter.
func (DenyAll) Confirm(context.Context, Request) error { return ErrNoUser }
