package ctap2

import (
	"context"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// userAuth is what makeCredential or getAssertion established about the
// user before asking for presence.
type userAuth struct {
	up, uv    bool // presence / verification already established
	tokenUsed bool // a pinUvAuthToken authorised the request
}

// authRequest holds the parameters the PIN/UV steps look at.
type authRequest struct {
	rpID              string
	clientDataHash    []byte
	pinUvAuthParam    []byte
	pinUvAuthProtocol *uint64
	uvOption          bool
	permission        pinuv.Permission
	// uvRequired: the authenticator is protected and this request may not
	// go without UV (makeCredential of a discoverable credential, or any
	// request under alwaysUv).
	uvRequired bool
	prompt     prompt.Request
}

// authorize runs the PIN/UV steps shared by makeCredential (CTAP 2.1
// §6.1.2 steps 5-6, 9-11) and getAssertion (§6.2.2 steps 5-6), after
// pinUvAuthParamSteps (steps 1-2);
// every decision in them is the PIN/UV authority's.
func (a *Authenticator) authorize(ctx context.Context, tx ctaphid.Transaction, r authRequest) (userAuth, error) {
	switch {
	case r.pinUvAuthParam != nil:
		// Steps 2 and 11 (§6.1.2), 2 and 6 (§6.2.2): the token. With one,
		// the uv option is ignored.
		if err := a.pin.Authorize(r.permission, r.rpID, r.clientDataHash, r.pinUvAuthParam, r.pinUvAuthProtocol); err != nil {
			return userAuth{}, err
		}
		return userAuth{up: a.pin.TokenUserPresent(), uv: true, tokenUsed: true}, nil
	}
	verify, err := a.pin.UVForRequest(r.uvOption, r.uvRequired)
	if err != nil || !verify {
		return userAuth{}, err
	}
	if err := a.pin.VerifyUser(ctx, tx, r.prompt); err != nil {
		return userAuth{}, err
	}
	return userAuth{up: true, uv: true}, nil
}

// pinUvAuthParamSteps is steps 1-2 of makeCredential (§6.1.2) and
// getAssertion (§6.2.2), which come before the algorithm and the options:
// a zero-length pinUvAuthParam is a PIN probe, and a pinUvAuthParam needs
// a supported pinUvAuthProtocol (absent: MISSING_PARAMETER, unsupported:
// INVALID_PARAMETER).
func (a *Authenticator) pinUvAuthParamSteps(ctx context.Context, tx ctaphid.Transaction, rpID string, param []byte, protocol *uint64) error {
	switch {
	case param == nil:
		return nil
	case len(param) == 0:
		return a.probePIN(ctx, tx, rpID)
	}
	_, err := a.pin.Protocol(protocol)
	return err
}

// probePIN is step 1 (§6.1.2, §6.2.2): a zero-length pinUvAuthParam asks
// "is a PIN set?" after a touch (platforms use it to pick an
// authenticator): PIN_INVALID if one is, PIN_NOT_SET if not. Declined or
// timed out is OPERATION_DENIED (step 1.2); CTAPHID_CANCEL stays
// KEEPALIVE_CANCEL (§11.2.9.1.5).
func (a *Authenticator) probePIN(ctx context.Context, tx ctaphid.Transaction, rpID string) error {
	if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpSelect, RPID: rpID}); err != nil {
		if err == ErrKeepaliveCancel {
			return err
		}
		return ErrOperationDenied
	}
	if a.pin.IsSet() {
		return ErrPinInvalid
	}
	return ErrPinNotSet
}

// consumeToken clears the token's one-time flags after a request it
// authorised collected presence (CTAP 2.1 §6.1.2 step 15).
func (a *Authenticator) consumeToken(u userAuth, clearPermissions bool) {
	if u.tokenUsed {
		a.pin.ConsumeToken(clearPermissions)
	}
}
