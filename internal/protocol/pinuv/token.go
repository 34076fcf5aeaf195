package pinuv

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// Permission is a set of pinUvAuthToken permissions (§6.5.5.7), the
// permissions parameter of getPinUvAuthTokenUsingPinWithPermissions and
// getPinUvAuthTokenUsingUvWithPermissions.
type Permission uint8

// The pinUvAuthToken permissions of CTAP 2.1 (§6.5.5.7).
const (
	PermMakeCredential       Permission = 0x01 // mc
	PermGetAssertion         Permission = 0x02 // ga
	PermCredentialManagement Permission = 0x04 // cm
	PermBioEnrollment        Permission = 0x08 // be
	PermLargeBlobWrite       Permission = 0x10 // lbw
	PermAuthenticatorConfig  Permission = 0x20 // acfg

	// PermDefined is every permission CTAP 2.1 defines; Begin drops others
	// ("ignoring any undefined permissions", §6.5.5.7).
	PermDefined = PermMakeCredential | PermGetAssertion | PermCredentialManagement |
		PermBioEnrollment | PermLargeBlobWrite | PermAuthenticatorConfig
)

// Has reports whether p includes every permission of q.
func (p Permission) Has(q Permission) bool { return p&q == q }

// Time limits of the pinUvAuthToken (§6.5.2.1). passkeyd speaks USB HID, so
// the USB values apply.
const (
	// TokenSize is the length of a pinUvAuthToken: 32 bytes, which both
	// protocols accept (§6.5.6 allows 16 or 32, §6.5.7 requires 32).
	TokenSize = keySize
	// InitialUsageTimeLimit: "The platform MUST invoke an authenticator
	// operation using the pinUvAuthToken within this time limit for the
	// pinUvAuthToken to remain valid for the full max usage time period";
	// the default maximum for usb is 30 seconds. There is no rolling timer
	// (a MAY): once used, the token lives out its max usage time period.
	InitialUsageTimeLimit = 30 * time.Second
	// UserPresentTimeLimit: how long the user counts as present after user
	// presence is collected; it defaults to the initial usage time limit.
	UserPresentTimeLimit = InitialUsageTimeLimit
	// MaxUsageTimePeriod "SHOULD default to a maximum of 10 minutes".
	MaxUsageTimePeriod = 10 * time.Minute
)

// Token is the pinUvAuthToken and its state (§6.5.2.1): a permissions RP ID
// (initially null, here ""), a permissions set (initially empty), a usage
// timer (initially not running), an in use flag, the time limits, and the
// userVerified and userPresent flags (initially false).
//
// The spec's pinUvAuthTokenUsageTimerObserver() watches the usage timer; here
// every method runs it first against the clock, which gives the same answers
// as a background timer because the state matters only when it is read.
//
// The spec keeps one pinUvAuthToken per protocol but resets them all and
// shares one state when issuing a token (§6.5.5.7); Token keeps one value
// that serves both protocols.
//
// A Token is safe for concurrent use. Use NewToken: the zero Token has no
// value and never verifies.
type Token struct {
	mu  sync.Mutex
	now func() time.Time

	value []byte // TokenSize random bytes; nil until Reset succeeds

	inUse        bool
	start        time.Time // when the usage timer started
	used         bool      // the platform used the token (Verify succeeded)
	permissions  Permission
	rpID         string // "" is null
	userPresent  bool
	userVerified bool
}

// NewToken returns a Token with a fresh value, not in use (initialize()
// → resetPinUvAuthToken(), §6.5.5.1). now is its clock; nil means
// time.Now. The clock should be monotonic (time.Now is); when it runs
// backwards the token stops being in use.
func NewToken(now func() time.Time) (*Token, error) {
	t := &Token{now: now}
	if err := t.Reset(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Token) clock() time.Time {
	if t.now == nil {
		return time.Now()
	}
	return t.now()
}

// Reset is resetPinUvAuthToken() (§6.5.6, §6.5.7): "Generate a fresh 32-byte
// pinUvAuthToken", which ends any use of the old one (§6.5.5.7: "all existing
// pinUvAuthTokens are invalidated"). If randomness fails the Token keeps no
// value and never verifies.
func (t *Token) Reset() error {
	v := make([]byte, TokenSize)
	_, err := rand.Read(v)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stop()
	if err != nil {
		t.value = nil
		return fmt.Errorf("pinuv: reset pinUvAuthToken: %w", err)
	}
	t.value = v
	return nil
}

// Begin is beginUsingPinUvAuthToken(userIsPresent) (§6.5.2.1): set the
// userPresent flag to userIsPresent and the userVerified flag to true, set
// the time limits, start the usage timer and set the in use flag. It also
// assigns the permissions (undefined bits dropped) and the permissions RP
// ID ("" for none), as the token-issuing operations of §6.5.5.7 do right
// after. Callers issue a token with Reset, then Begin.
func (t *Token) Begin(userIsPresent bool, permissions Permission, rpID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.userPresent = userIsPresent
	t.userVerified = true
	t.start = t.clock()
	t.used = false
	t.inUse = true
	t.permissions = permissions & PermDefined
	t.rpID = rpID
}

// observe is pinUvAuthTokenUsageTimerObserver() (§6.5.2.1), run lazily. "If
// the usage timer is not running, return." Then, while the max usage time
// period has not been reached: "If the current user present time limit is
// reached, call clearUserPresentFlag()"; "If the initial usage time limit is
// reached without the platform using the pinUvAuthToken in an authenticator
// operation then call stopUsingPinUvAuthToken()". At the max usage time
// period, stopUsingPinUvAuthToken(). The caller holds t.mu.
func (t *Token) observe() {
	if !t.inUse {
		return
	}
	elapsed := t.clock().Sub(t.start)
	switch {
	case elapsed < 0: // the clock ran backwards: fail closed
		t.stop()
	case elapsed >= MaxUsageTimePeriod:
		t.stop()
	case !t.used && elapsed >= InitialUsageTimeLimit:
		t.stop()
	case elapsed >= UserPresentTimeLimit:
		t.userPresent = false
	}
}

// stop is stopUsingPinUvAuthToken(): every state variable back to its
// initial value (§6.5.2.1). The token value stays. The caller holds t.mu.
func (t *Token) stop() {
	t.inUse = false
	t.start = time.Time{}
	t.used = false
	t.permissions = 0
	t.rpID = ""
	t.userPresent = false
	t.userVerified = false
}

// Value returns a copy of the pinUvAuthToken, for encrypting to the
// platform. It is nil if the Token has no value (zero Token, failed Reset).
func (t *Token) Value() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.value == nil {
		return nil
	}
	return append([]byte(nil), t.value...)
}

// InUse reports whether the token is in use, after running the usage timer
// observer: false once a time limit ended it.
func (t *Token) InUse() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	return t.inUse
}

// Permissions returns the token's permissions; none when it is not in use.
func (t *Token) Permissions() Permission {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	return t.permissions
}

// RPID returns the permissions RP ID; "" (null) when none is associated or
// the token is not in use.
func (t *Token) RPID() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	return t.rpID
}

// SetRPID associates a permissions RP ID with the token in use, as
// authenticatorMakeCredential and authenticatorGetAssertion do when the
// token has none. It does nothing when the token is not in use.
func (t *Token) SetRPID(rpID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	if t.inUse {
		t.rpID = rpID
	}
}

// UserPresent is getUserPresentFlagValue(): the userPresent flag if the
// token is in use, otherwise false.
func (t *Token) UserPresent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	return t.inUse && t.userPresent
}

// ClearUserPresent is clearUserPresentFlag(): "If the pinUvAuthToken is in
// use then set the pinUvAuthToken's userPresent flag to false, otherwise do
// nothing."
func (t *Token) ClearUserPresent() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	if t.inUse {
		t.userPresent = false
	}
}

// UserVerified is getUserVerifiedFlagValue(): the userVerified flag if the
// token is in use, otherwise false.
func (t *Token) UserVerified() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	return t.inUse && t.userVerified
}

// ClearUserVerified is clearUserVerifiedFlag(): if the token is in use, set
// its userVerified flag to false, otherwise do nothing.
func (t *Token) ClearUserVerified() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	if t.inUse {
		t.userVerified = false
	}
}

// ClearPermissionsExceptLbw is clearPinUvAuthTokenPermissionsExceptLbw():
// "If the pinUvAuthToken is in use then clear all of the pinUvAuthToken's
// permissions, except for lbw, otherwise do nothing."
func (t *Token) ClearPermissionsExceptLbw() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	if t.inUse {
		t.permissions &= PermLargeBlobWrite
	}
}

// Stop is stopUsingPinUvAuthToken(): the token is no longer in use and its
// state returns to the initial values (§6.5.2.1).
func (t *Token) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stop()
}

// Verify checks a pinUvAuthParam over msg with protocol p and this token as
// the key: verify(pinUvAuthToken, msg, param), whose first step is "If the
// key parameter value is the current pinUvAuthToken and it is not in use,
// then return error" (§6.5.6, §6.5.7). A success counts as the platform
// using the token in an authenticator operation, which lets it outlive the
// initial usage time limit. Permission and RP ID checks are the caller's.
func (t *Token) Verify(p Protocol, msg, param []byte) bool {
	if p == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe()
	if !t.inUse || t.value == nil {
		return false
	}
	if !p.Verify(t.value, msg, param) {
		return false
	}
	t.used = true
	return true
}
