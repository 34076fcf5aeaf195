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
// §6.1.2 steps 1-2, 5-6, 9-11) and getAssertion (§6.2.2 steps 1-2, 5-6).
func (a *Authenticator) authorize(ctx context.Context, tx ctaphid.Transaction, r authRequest) (userAuth, error) {
	// Step 1 (§6.1.2, §6.2.2): a zero-length pinUvAuthParam asks "is a
	// PIN set?" after a touch (platforms use it to pick an
	// authenticator): PIN_INVALID if one is, PIN_NOT_SET if not.
	if r.pinUvAuthParam != nil && len(r.pinUvAuthParam) == 0 {
		if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpSelect, RPID: r.rpID}); err != nil {
			if err == ErrKeepaliveCancel || err == ErrUserActionTimeout {
				return userAuth{}, err
			}
			return userAuth{}, ErrOperationDenied
		}
		if a.pinSet() {
			return userAuth{}, ErrPinInvalid
		}
		return userAuth{}, ErrPinNotSet
	}
	// Step 2.
	var p pinuv.Protocol
	if r.pinUvAuthParam != nil {
		var err error
		if p, err = a.protocol(r.pinUvAuthProtocol); err != nil {
			return userAuth{}, err
		}
	}
	uv := r.uvOption && r.pinUvAuthParam == nil // with a token the option is ignored
	if uv {
		if !a.builtInUV() {
			return userAuth{}, ErrInvalidOption
		}
		if !a.pinSet() {
			return userAuth{}, ErrOperationDenied // built-in UV not configured
		}
	}
	protected := a.pinSet()
	if r.pinUvAuthParam == nil && !uv && (a.cfg.AlwaysUV || (protected && r.uvRequired)) {
		if protected && a.builtInUV() && a.cfg.AlwaysUV {
			uv = true // alwaysUv: verify with the prompt instead
		} else {
			return userAuth{}, ErrPUATRequired
		}
	}
	if r.pinUvAuthParam != nil {
		t := a.pin.token
		if p.Version() != a.pin.tokenProtocol || !t.Verify(p, r.clientDataHash, r.pinUvAuthParam) || t.Permissions()&r.permission == 0 || !t.UserVerified() {
			return userAuth{}, ErrPinAuthInvalid
		}
		switch t.RPID() {
		case "":
			t.SetRPID(r.rpID) // the first use binds the token to this RP
		case r.rpID:
		default:
			return userAuth{}, ErrPinAuthInvalid
		}
		return userAuth{up: t.UserPresent(), uv: true, tokenUsed: true}, nil
	}
	if uv {
		if err := a.verifyUser(ctx, tx, r.prompt); err != nil {
			return userAuth{}, err
		}
		return userAuth{up: true, uv: true}, nil
	}
	return userAuth{}, nil
}

// consumeToken clears the token's one-time flags after a request it
// authorised collected presence (CTAP 2.1 §6.1.2 step 15).
func (a *Authenticator) consumeToken(u userAuth, clearPermissions bool) {
	if !u.tokenUsed {
		return
	}
	a.pin.token.ClearUserPresent()
	a.pin.token.ClearUserVerified()
	if clearPermissions {
		a.pin.token.ClearPermissionsExceptLbw()
	}
}
