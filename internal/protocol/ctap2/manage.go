package ctap2

import (
	"context"
	"errors"
	"fmt"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// The management API serves passkeyctl through the daemon's control socket.
// It is the same authenticator state as the CTAP commands and follows the
// same rules: destructive operations need presence through the prompt, and
// the PIN (checked by the TPM, counted like clientPIN) when one is set.

// Info is what passkeyctl info shows about the authenticator.
type Info struct {
	AAGUID       [16]byte
	PINSet       bool
	PINRetries   int
	MinPINLength int
	AlwaysUV     bool
	BuiltInUV    bool
	Credentials  int
	Capacity     int
	Algorithms   []int
	Attestation  AttestationMode
	// TPMLockout is the TPM's dictionary-attack state (TPM-wide); nil
	// when the TPM does not report it. While it is Locked the TPM checks
	// no PIN, and no PIN retry is used.
	TPMLockout *tpm.DAStatus
}

// ErrManagementDenied wraps the reason a management request was refused.
var ErrManagementDenied = errors.New("refused")

// Info reports the authenticator's state.
func (a *Authenticator) Info() Info {
	a.mu.Lock()
	defer a.mu.Unlock()
	algs := make([]int, len(a.algorithm))
	for i, alg := range a.algorithm {
		algs[i] = int(alg)
	}
	in := Info{
		AAGUID: AAGUID, PINSet: a.pin.IsSet(), PINRetries: a.pin.Retries(), MinPINLength: a.pin.MinPINLength(),
		AlwaysUV: a.pin.AlwaysUV(), BuiltInUV: a.pin.BuiltInUV(), Credentials: a.store.CountCredentials(),
		Capacity: a.capacity, Algorithms: algs, Attestation: a.attestation,
	}
	if st, known := a.pin.TPMLockout(); known {
		in.TPMLockout = &st
	}
	return in
}

// InfoOfNew is Info as a namespace created now on the same configuration
// would report it: no PIN, no passkeys, and the PIN policy at the
// administrator's floor (what a seat-mode user without a namespace yet
// is shown).
func (a *Authenticator) InfoOfNew() Info {
	in := a.Info()
	in.PINSet, in.PINRetries, in.Credentials = false, 0, 0
	in.AlwaysUV = a.policy.AlwaysUV
	in.MinPINLength = max(defaultMinPINLength, a.policy.MinPINLength)
	return in
}

// EachCredential calls fn with every discoverable credential, in the
// store's order, as a copy of the stored record with two differences:
// CredProtect is the effective level (unset is userVerificationOptional,
// 1), and the key material (KeyBlob, CredBlob, LargeBlobKey) is nil, so
// that no listing can show it. Listing needs no presence: the control
// socket already limits it to root and the device's owner (or, per user,
// to the namespace's own user).
//
// It holds no more than one batch of credentials
// (keystore.ForEachCredential): the control socket streams a listing of
// any size with it. It does not take the authenticator's lock, so CTAP
// commands go on while a slow client reads. Unreadable records are logged
// and skipped, as for the CTAP enumerations; an error from fn ends the
// walk and is returned.
func (a *Authenticator) EachCredential(fn func(keystore.Credential) error) error {
	return a.eachCredential(func(c *keystore.Credential) error {
		v := *c
		v.CredProtect = max(c.CredProtect, credProtectUVOptional)
		v.KeyBlob, v.CredBlob, v.LargeBlobKey = nil, nil, nil
		return fn(v)
	})
}

// authorizeManagement asks for presence and, when a PIN is set, checks
// pin with the TPM. It maps CTAP statuses to errors a person can read.
func (a *Authenticator) authorizeManagement(ctx context.Context, op prompt.Operation, pin string) error {
	if a.pin.IsSet() {
		if pin == "" {
			return fmt.Errorf("%w: a PIN is set: give the PIN", ErrManagementDenied)
		}
		if err := a.pin.CheckPIN(pin); err != nil {
			return a.pinError(err)
		}
	}
	if err := a.userPresence(ctx, inProcess{}, prompt.Request{Operation: op}); err != nil {
		return fmt.Errorf("%w: nobody confirmed at the prompt (%v)", ErrManagementDenied, err)
	}
	return nil
}

// pinError explains a failed PIN check.
func (a *Authenticator) pinError(err error) error {
	var lockout *tpmLockoutError
	switch {
	case errors.As(err, &lockout):
		return fmt.Errorf("%w: %v", ErrManagementDenied, lockout)
	case errors.Is(err, ErrPinInvalid):
		return fmt.Errorf("%w: wrong PIN (%d tries left)", ErrManagementDenied, a.pin.Retries())
	case errors.Is(err, ErrPinAuthBlocked):
		return fmt.Errorf("%w: too many wrong PINs in a row: restart passkeyd (a power cycle) to try again", ErrManagementDenied)
	case errors.Is(err, ErrPinBlocked):
		return fmt.Errorf("%w: the PIN is blocked: only a reset (which deletes every passkey) helps", ErrManagementDenied)
	}
	return err
}

// DeleteCredentials deletes the credentials with the given IDs after
// presence (and the PIN when one is set). All IDs must exist.
func (a *Authenticator) DeleteCredentials(ctx context.Context, ids [][]byte, pin string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		if _, err := a.store.Credential(id); err != nil {
			return fmt.Errorf("credential %x: %w", id[:min(8, len(id))], err)
		}
	}
	if err := a.authorizeManagement(ctx, prompt.OpManage, pin); err != nil {
		return err
	}
	for _, id := range ids {
		if err := a.store.DeleteCredential(id); err != nil {
			return fmt.Errorf("delete credential: %w", err)
		}
	}
	a.log.Info("credentials deleted through the control socket", "count", len(ids))
	return nil
}

// SetPIN sets the first PIN, or changes it (old must then be the current
// PIN), after presence. The PIN policy of clientPIN applies.
func (a *Authenticator) SetPIN(ctx context.Context, old, pin string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pin.AcceptsPIN(pin) {
		return fmt.Errorf("%w: a PIN has %d to %d characters (at most %d bytes)", ErrManagementDenied, a.pin.MinPINLength(), maxPINBytes, maxPINBytes)
	}
	if err := a.authorizeManagement(ctx, prompt.OpSetPIN, old); err != nil {
		return err
	}
	if err := a.pin.ReplacePIN(pin); err != nil { // tokens issued under the old PIN die
		return err
	}
	a.log.Info("PIN set through the control socket")
	return nil
}

// Reset deletes every credential and device secret, like
// authenticatorReset but without its 10-second window: the control
// socket is local and root/owner only, and presence (plus the PIN when
// set) is still required.
func (a *Authenticator) Reset(ctx context.Context, pin string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pin.Blocked() {
		pin = "" // a blocked PIN cannot be given; reset is the way out
		if err := a.userPresence(ctx, inProcess{}, prompt.Request{Operation: prompt.OpReset}); err != nil {
			return fmt.Errorf("%w: nobody confirmed at the prompt (%v)", ErrManagementDenied, err)
		}
	} else if err := a.authorizeManagement(ctx, prompt.OpReset, pin); err != nil {
		return err
	}
	return a.wipe()
}
