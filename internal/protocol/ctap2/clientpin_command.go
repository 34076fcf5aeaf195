package ctap2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// clientPIN subcommands (CTAP 2.1 §6.5.5).
const (
	pinGetPINRetries                            = 0x01
	pinGetKeyAgreement                          = 0x02
	pinSetPIN                                   = 0x03
	pinChangePIN                                = 0x04
	pinGetPinToken                              = 0x05
	pinGetPinUvAuthTokenUsingUvWithPermissions  = 0x06
	pinGetUVRetries                             = 0x07
	pinGetPinUvAuthTokenUsingPinWithPermissions = 0x09
)

// ClientPINRequest is authenticatorClientPIN's parameter map.
type ClientPINRequest struct {
	PinUvAuthProtocol *uint64        `cbor:"1,keyasint"`
	SubCommand        *uint64        `cbor:"2,keyasint"`
	KeyAgreement      *pinuv.COSEKey `cbor:"3,keyasint"`
	PinUvAuthParam    []byte         `cbor:"4,keyasint"`
	NewPinEnc         []byte         `cbor:"5,keyasint"`
	PinHashEnc        []byte         `cbor:"6,keyasint"`
	Permissions       *uint64        `cbor:"9,keyasint"`
	RPID              *string        `cbor:"10,keyasint"`
}

// ClientPINResponse is authenticatorClientPIN's response map.
type ClientPINResponse struct {
	KeyAgreement    *pinuv.COSEKey `cbor:"1,keyasint,omitempty"`
	PinUvAuthToken  []byte         `cbor:"2,keyasint,omitempty"`
	PinRetries      *int           `cbor:"3,keyasint,omitempty"`
	PowerCycleState *bool          `cbor:"4,keyasint,omitempty"`
	UVRetries       *int           `cbor:"5,keyasint,omitempty"`
}

// soleAccountFunc finds the RP's one discoverable credential a prompt can
// name, or nil: the credentials are the authenticator's, not the PIN's.
type soleAccountFunc func(rpID string) *keystore.Credential

// clientPIN is authenticatorClientPIN (CTAP 2.1 §6.5): the command is the
// PIN/UV authority's; the credentials are looked up here.
func (a *Authenticator) clientPIN(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	var req ClientPINRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	resp, err := a.pin.Command(ctx, tx, &req, a.soleAccount)
	if err != nil || resp == nil {
		return nil, err
	}
	return marshal(resp)
}

// Command executes one authenticatorClientPIN subcommand (§6.5.5); a nil
// response is an empty one.
func (c *clientPIN) Command(ctx context.Context, tx ctaphid.Transaction, req *ClientPINRequest, soleAccount soleAccountFunc) (*ClientPINResponse, error) {
	if req.SubCommand == nil {
		return nil, ErrMissingParameter
	}
	switch *req.SubCommand {
	case pinGetPINRetries:
		r, pc := c.retries, c.consecutive >= maxConsecutiveMisses
		return &ClientPINResponse{PinRetries: &r, PowerCycleState: &pc}, nil
	case pinGetUVRetries:
		if !c.BuiltInUV() {
			return nil, ErrInvalidSubcommand
		}
		r := c.retries // built-in UV is the same PIN, so the same counter
		if c.SystemUV() {
			r = systemUVRetries
		}
		return &ClientPINResponse{UVRetries: &r}, nil
	case pinGetKeyAgreement:
		p, err := c.Protocol(req.PinUvAuthProtocol)
		if err != nil {
			return nil, err
		}
		k := p.PublicKey()
		return &ClientPINResponse{KeyAgreement: &k}, nil
	case pinSetPIN:
		return nil, c.setPIN(req)
	case pinChangePIN:
		return nil, c.changePIN(req)
	case pinGetPinToken, pinGetPinUvAuthTokenUsingPinWithPermissions:
		return c.getPinToken(req, *req.SubCommand == pinGetPinUvAuthTokenUsingPinWithPermissions)
	case pinGetPinUvAuthTokenUsingUvWithPermissions:
		return c.getPinUvAuthTokenUsingUv(ctx, tx, req, soleAccount)
	default:
		return nil, ErrInvalidSubcommand
	}
}

// decapsulate is the key agreement with the platform's keyAgreement: an
// error is CTAP1_ERR_INVALID_PARAMETER (§6.5.5.5 step 4, §6.5.5.6 step 4,
// §6.5.5.7.2 step 6). The PIN subcommands call it only after their own
// earlier steps (PIN already set, PIN blocked).
func decapsulate(p pinuv.Protocol, req *ClientPINRequest) (pinuv.SharedSecret, error) {
	if req.KeyAgreement == nil {
		return pinuv.SharedSecret{}, ErrMissingParameter
	}
	s, err := p.Decapsulate(*req.KeyAgreement)
	if err != nil {
		return pinuv.SharedSecret{}, ErrInvalidParameter
	}
	return s, nil
}

// decryptNewPIN decrypts and checks newPinEnc against the PIN policy
// (§6.5.5.5 steps 6-10, §6.5.5.6 steps 9-14): newPinEnc that does not
// decrypt is PIN_AUTH_INVALID, a padded PIN other than 64 bytes
// INVALID_PARAMETER; the PIN is at most 63 bytes and at least
// minPINLength code points.
func (c *clientPIN) decryptNewPIN(p pinuv.Protocol, s pinuv.SharedSecret, newPinEnc []byte) (string, error) {
	padded, err := p.Decrypt(s, newPinEnc)
	if err != nil {
		return "", ErrPinAuthInvalid
	}
	if len(padded) != paddedPINLen {
		return "", ErrInvalidParameter
	}
	pin := padded
	if i := bytes.IndexByte(padded, 0); i >= 0 {
		pin = padded[:i]
	}
	if len(pin) > maxPINBytes || !utf8.Valid(pin) || utf8.RuneCount(pin) < c.policy.MinPINLength {
		return "", ErrPinPolicyViolation
	}
	return string(pin), nil
}

// setPIN is §6.5.5.5.
func (c *clientPIN) setPIN(req *ClientPINRequest) error {
	if req.KeyAgreement == nil || req.PinUvAuthParam == nil || req.NewPinEnc == nil {
		return ErrMissingParameter
	}
	p, err := c.Protocol(req.PinUvAuthProtocol)
	if err != nil {
		return err
	}
	if c.IsSet() {
		return ErrPinAuthInvalid // step 3: a PIN is already set
	}
	s, err := decapsulate(p, req)
	if err != nil {
		return err
	}
	if !p.Verify(s.HMACKey(), req.NewPinEnc, req.PinUvAuthParam) {
		return ErrPinAuthInvalid
	}
	pin, err := c.decryptNewPIN(p, s, req.NewPinEnc)
	if err != nil {
		return err
	}
	if err := c.installPIN(pin); err != nil {
		return err
	}
	c.log.Info("PIN set")
	return nil
}

// changePIN is §6.5.5.6.
func (c *clientPIN) changePIN(req *ClientPINRequest) error {
	if req.KeyAgreement == nil || req.PinUvAuthParam == nil || req.NewPinEnc == nil || req.PinHashEnc == nil {
		return ErrMissingParameter
	}
	p, err := c.Protocol(req.PinUvAuthProtocol)
	if err != nil {
		return err
	}
	if !c.IsSet() {
		return ErrPinNotSet
	}
	if c.retries == 0 {
		return ErrPinBlocked // step 3, before the key agreement (step 4)
	}
	s, err := decapsulate(p, req)
	if err != nil {
		return err
	}
	msg := append(append([]byte{}, req.NewPinEnc...), req.PinHashEnc...)
	if !p.Verify(s.HMACKey(), msg, req.PinUvAuthParam) {
		return ErrPinAuthInvalid
	}
	cur, err := c.checkPINHashEnc(p, s, req.PinHashEnc)
	if err != nil {
		return err
	}
	pin, err := c.decryptNewPIN(p, s, req.NewPinEnc)
	if err != nil {
		return err
	}
	if c.policy.ForcePINChange {
		// Step 13: a forced change needs another PIN. cur is the
		// current PIN's hash: the TPM just accepted it.
		if bytes.Equal(cur, pinHash(pin)) {
			return ErrPinPolicyViolation
		}
	}
	if err := c.installPIN(pin); err != nil {
		return err
	}
	if err := c.setForcePINChange(false); err != nil {
		return err
	}
	if err := c.token.Reset(); err != nil {
		return err
	}
	c.log.Info("PIN changed")
	return nil
}

// checkPINHashEnc decrypts pinHashEnc and has the TPM check it. A
// pinHashEnc that does not decrypt to a PIN hash is a mismatch like a wrong
// PIN: "If an error results, or a mismatch is detected" (§6.5.5.6 step 7,
// §6.5.5.7.2 step 9), after the retry was spent. It returns the hash the
// TPM accepted.
func (c *clientPIN) checkPINHashEnc(p pinuv.Protocol, s pinuv.SharedSecret, pinHashEnc []byte) ([]byte, error) {
	h, err := p.Decrypt(s, pinHashEnc)
	if err != nil {
		h = nil
	}
	err = c.checkPINHash(h)
	if errors.Is(err, ErrPinInvalid) || errors.Is(err, ErrPinAuthBlocked) || errors.Is(err, ErrPinBlocked) {
		// A miss makes the platform start over with a fresh key
		// agreement (§6.5.5.5 step 6).
		if rerr := p.Regenerate(); rerr != nil {
			c.log.Error("regenerate key agreement key", "err", rerr)
		}
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

// tokenRequest checks a token request's parameters in the order of
// §6.5.5.7.2 steps 1-4 (§6.5.5.7.1 and §6.5.5.7.3 alike): every mandatory
// parameter present (withPermissions: permissions too), the protocol
// supported, then the permissions non-zero and, undefined ones ignored,
// only those of features this authenticator has (through built-in UV (uv)
// acfg too: getInfo says uvAcfg, §6.5.5.7.3 step 4). getPinToken
// (withPermissions false) takes neither permissions nor rpId and gets mc
// and ga.
func (c *clientPIN) tokenRequest(req *ClientPINRequest, withPermissions, uv bool) (pinuv.Protocol, pinuv.Permission, string, error) {
	if req.PinUvAuthProtocol == nil || req.KeyAgreement == nil || (!uv && req.PinHashEnc == nil) ||
		(withPermissions && req.Permissions == nil) {
		return nil, 0, "", ErrMissingParameter
	}
	p, err := c.Protocol(req.PinUvAuthProtocol)
	if err != nil {
		return nil, 0, "", err
	}
	if !withPermissions {
		if req.Permissions != nil || req.RPID != nil {
			return nil, 0, "", ErrInvalidParameter
		}
		return p, pinuv.PermMakeCredential | pinuv.PermGetAssertion, "", nil // what legacy getPinToken grants
	}
	if *req.Permissions == 0 {
		return nil, 0, "", ErrInvalidParameter
	}
	// "Undefined permissions present in the permissions parameter are
	// ignored."
	perms := pinuv.Permission(*req.Permissions & uint64(pinuv.PermDefined))
	if perms&^c.supported != 0 {
		return nil, 0, "", ErrUnauthorizedPermission
	}
	rpID := ""
	if req.RPID != nil {
		rpID = *req.RPID
	}
	return p, perms, rpID, nil
}

// getPinToken is §6.5.5.7 (getPinToken, and with permissions when
// withPermissions).
func (c *clientPIN) getPinToken(req *ClientPINRequest, withPermissions bool) (*ClientPINResponse, error) {
	p, perms, rpID, err := c.tokenRequest(req, withPermissions, false)
	if err != nil {
		return nil, err
	}
	if !c.IsSet() {
		return nil, ErrPinNotSet
	}
	if c.retries == 0 {
		return nil, ErrPinBlocked // before the key agreement (§6.5.5.7.2 steps 5-6)
	}
	s, err := decapsulate(p, req)
	if err != nil {
		return nil, err
	}
	if _, err := c.checkPINHashEnc(p, s, req.PinHashEnc); err != nil {
		return nil, err
	}
	if c.policy.ForcePINChange {
		return nil, ErrPinPolicyViolation
	}
	return c.issueToken(p, s, perms, rpID, false)
}

// issueToken makes a new pinUvAuthToken and returns it encrypted.
func (c *clientPIN) issueToken(p pinuv.Protocol, s pinuv.SharedSecret, perms pinuv.Permission, rpID string, userPresent bool) (*ClientPINResponse, error) {
	if err := c.token.Reset(); err != nil {
		return nil, err
	}
	c.tokenAccount = nil
	c.token.Begin(userPresent, perms, rpID)
	c.tokenProtocol = p.Version()
	enc, err := p.Encrypt(s, c.token.Value())
	if err != nil {
		return nil, fmt.Errorf("encrypt token: %w", err)
	}
	return &ClientPINResponse{PinUvAuthToken: enc}, nil
}

// getPinUvAuthTokenUsingUv is §6.5.5.7.3: the token after built-in UV.
func (c *clientPIN) getPinUvAuthTokenUsingUv(ctx context.Context, tx ctaphid.Transaction, req *ClientPINRequest, soleAccount soleAccountFunc) (*ClientPINResponse, error) {
	p, perms, rpID, err := c.tokenRequest(req, true, true)
	if err != nil {
		return nil, err
	}
	s, err := decapsulate(p, req)
	if err != nil {
		return nil, err
	}
	if !c.BuiltInUV() {
		return nil, ErrInvalidSubcommand
	}
	if !c.UVConfigured() {
		return nil, ErrNotAllowed
	}
	// A token for signing in to an RP with a single passkey: the prompt
	// names that account, so typing the PIN chooses it (userSelected).
	var account *keystore.Credential
	if rpID != "" && perms&pinuv.PermGetAssertion != 0 && perms&pinuv.PermMakeCredential == 0 {
		account = soleAccount(rpID)
	}
	pr := prompt.Request{Operation: prompt.OpVerify, RPID: rpID}
	if account != nil {
		pr.UserName = account.UserName
	}
	if err := c.VerifyUser(ctx, tx, pr); err != nil {
		return nil, err
	}
	// Typing the PIN into the prompt, or passing the system's dialog, is
	// also presence.
	resp, err := c.issueToken(p, s, perms, rpID, true)
	if err == nil && account != nil {
		c.tokenAccount = account.ID
	}
	return resp, err
}
