package ctap2

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
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

// PIN policy (CTAP 2.1 §6.5.1).
const (
	maxPINRetries        = 8
	maxConsecutiveMisses = 3 // then a power cycle is needed
	defaultMinPINLength  = 4
	maxPINBytes          = 63
	paddedPINLen         = 64
	pinHashLen           = 16
)

// Store value names of the PIN state. The PIN itself is never stored, nor
// anything derived from it: the PIN object is a TPM blob whose
// authorisation value is LEFT(SHA-256(PIN), 16), inside the TPM's own
// encryption, so the TPM is needed for every guess.
const (
	valuePINObject  = "pin-object"  // TPM blob; present iff a PIN is set
	valuePINRetries = "pin-retries" // one byte
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

// pinState is the PIN/UV state: the durable part lives in the store, the
// rest is reset at every power cycle.
type pinState struct {
	protocols   map[uint64]pinuv.Protocol
	token       *pinuv.Token
	object      tpm.KeyBlob // nil: no PIN set
	retries     int
	consecutive int // misses since power-up
	length      int // code points of the current PIN; 0 until checked this power cycle
	// tokenProtocol is the protocol the token was issued over: it is
	// verified only with that protocol's MAC length.
	tokenProtocol int
	// tokenAccount is the credential ID of the account that the prompt
	// issuing the token named (built-in UV for a getAssertion token when
	// the RP had exactly one discoverable credential); nil otherwise.
	// getAssertion reports userSelected for it while the token's presence
	// lasts.
	tokenAccount []byte
}

// sealedPINData is what the PIN object seals: a 32-byte secret that only
// the right PIN releases, and the PIN's length (so setMinPINLength can
// tell whether the PIN still complies without anything on disk revealing
// it).
func sealedPINData(pinLen int) ([]byte, error) {
	b := make([]byte, 33)
	if _, err := rand.Read(b[:32]); err != nil {
		return nil, err
	}
	b[32] = byte(pinLen)
	return b, nil
}

func (a *Authenticator) loadPINState() error {
	p1, err := pinuv.NewProtocolOne()
	if err != nil {
		return err
	}
	p2, err := pinuv.NewProtocolTwo()
	if err != nil {
		return err
	}
	tok, err := pinuv.NewToken(a.now)
	if err != nil {
		return err
	}
	a.pin = pinState{protocols: map[uint64]pinuv.Protocol{1: p1, 2: p2}, token: tok, retries: maxPINRetries}
	obj, err := a.store.Get(valuePINObject)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read PIN object: %w", err)
	default:
		a.pin.object = obj
	}
	r, err := a.store.Get(valuePINRetries)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
	case err != nil || len(r) != 1 || r[0] > maxPINRetries:
		return fmt.Errorf("read PIN retries: %v", err)
	default:
		a.pin.retries = int(r[0])
	}
	return nil
}

// powerCyclePIN resets what CTAP ties to power-up (§6.5.5.1): new key
// agreement keys, a new token, the consecutive-miss block lifted.
func (a *Authenticator) powerCyclePIN() {
	for _, p := range a.pin.protocols {
		if err := p.Regenerate(); err != nil {
			a.log.Error("regenerate key agreement key", "err", err)
		}
	}
	if err := a.pin.token.Reset(); err != nil {
		a.log.Error("reset pinUvAuthToken", "err", err)
	}
	a.pin.consecutive = 0
	a.pin.length = 0
}

func (a *Authenticator) pinSet() bool { return a.pin.object != nil }

// protocol resolves a pinUvAuthProtocol parameter.
func (a *Authenticator) protocol(v *uint64) (pinuv.Protocol, error) {
	if v == nil {
		return nil, ErrMissingParameter
	}
	p, ok := a.pin.protocols[*v]
	if !ok {
		return nil, ErrInvalidParameter
	}
	return p, nil
}

func (a *Authenticator) setRetries(n int) error {
	if err := a.store.Put(valuePINRetries, []byte{byte(n)}); err != nil {
		return fmt.Errorf("store PIN retries: %w", err)
	}
	a.pin.retries = n
	return nil
}

// clientPIN is authenticatorClientPIN (CTAP 2.1 §6.5).
func (a *Authenticator) clientPIN(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	var req ClientPINRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	if req.SubCommand == nil {
		return nil, ErrMissingParameter
	}
	var (
		resp *ClientPINResponse
		err  error
	)
	switch *req.SubCommand {
	case pinGetPINRetries:
		r, pc := a.pin.retries, a.pin.consecutive >= maxConsecutiveMisses
		resp = &ClientPINResponse{PinRetries: &r, PowerCycleState: &pc}
	case pinGetUVRetries:
		if !a.builtInUV() {
			return nil, ErrInvalidSubcommand
		}
		r := a.pin.retries // built-in UV is the same PIN, so the same counter
		resp = &ClientPINResponse{UVRetries: &r}
	case pinGetKeyAgreement:
		var p pinuv.Protocol
		if p, err = a.protocol(req.PinUvAuthProtocol); err == nil {
			k := p.PublicKey()
			resp = &ClientPINResponse{KeyAgreement: &k}
		}
	case pinSetPIN:
		err = a.setPIN(&req)
	case pinChangePIN:
		err = a.changePIN(&req)
	case pinGetPinToken, pinGetPinUvAuthTokenUsingPinWithPermissions:
		resp, err = a.getPinToken(&req, *req.SubCommand == pinGetPinUvAuthTokenUsingPinWithPermissions)
	case pinGetPinUvAuthTokenUsingUvWithPermissions:
		resp, err = a.getPinUvAuthTokenUsingUv(ctx, tx, &req)
	default:
		return nil, ErrInvalidSubcommand
	}
	if err != nil || resp == nil {
		return nil, err
	}
	return marshal(resp)
}

// sharedSecret validates the common parameters and runs the key agreement.
func (a *Authenticator) sharedSecret(req *ClientPINRequest) (pinuv.Protocol, pinuv.SharedSecret, error) {
	p, err := a.protocol(req.PinUvAuthProtocol)
	if err != nil {
		return nil, pinuv.SharedSecret{}, err
	}
	if req.KeyAgreement == nil {
		return nil, pinuv.SharedSecret{}, ErrMissingParameter
	}
	s, err := p.Decapsulate(*req.KeyAgreement)
	if err != nil {
		return nil, pinuv.SharedSecret{}, ErrInvalidParameter
	}
	return p, s, nil
}

// decryptNewPIN decrypts and checks newPinEnc against the PIN policy
// (§6.5.5.5 step 7-8): a 64-byte padded PIN, at most 63 bytes, at least
// minPINLength code points.
func (a *Authenticator) decryptNewPIN(p pinuv.Protocol, s pinuv.SharedSecret, newPinEnc []byte) (string, error) {
	padded, err := p.Decrypt(s, newPinEnc)
	if err != nil || len(padded) != paddedPINLen {
		return "", ErrInvalidParameter
	}
	pin := padded
	if i := bytes.IndexByte(padded, 0); i >= 0 {
		pin = padded[:i]
	}
	if len(pin) > maxPINBytes || !utf8.Valid(pin) || utf8.RuneCount(pin) < a.cfg.MinPINLength {
		return "", ErrPinPolicyViolation
	}
	return string(pin), nil
}

func pinHash(pin string) []byte {
	h := sha256.Sum256([]byte(pin))
	return h[:pinHashLen]
}

// installPIN replaces the PIN object: a new TPM object with the new PIN
// as its authorisation. The old blob is overwritten in the store, so the
// old PIN opens nothing that is kept.
func (a *Authenticator) installPIN(pin string) error {
	data, err := sealedPINData(utf8.RuneCountInString(pin))
	if err != nil {
		return err
	}
	obj, err := a.tpm.CreatePINObject(pinHash(pin), data)
	if err != nil {
		return fmt.Errorf("create PIN object: %w", err)
	}
	if err := a.store.Put(valuePINObject, obj); err != nil {
		return fmt.Errorf("store PIN object: %w", err)
	}
	a.pin.object = obj
	a.pin.length = utf8.RuneCountInString(pin)
	if err := a.setRetries(maxPINRetries); err != nil {
		return err
	}
	a.pin.consecutive = 0
	return nil
}

// setPIN is §6.5.5.5.
func (a *Authenticator) setPIN(req *ClientPINRequest) error {
	if req.KeyAgreement == nil || req.PinUvAuthParam == nil || req.NewPinEnc == nil {
		return ErrMissingParameter
	}
	p, s, err := a.sharedSecret(req)
	if err != nil {
		return err
	}
	if a.pinSet() {
		return ErrPinAuthInvalid // §6.5.5.5: a PIN is already set
	}
	if !p.Verify(s.HMACKey(), req.NewPinEnc, req.PinUvAuthParam) {
		return ErrPinAuthInvalid
	}
	pin, err := a.decryptNewPIN(p, s, req.NewPinEnc)
	if err != nil {
		return err
	}
	if err := a.installPIN(pin); err != nil {
		return err
	}
	a.log.Info("PIN set")
	return nil
}

// changePIN is §6.5.5.6.
func (a *Authenticator) changePIN(req *ClientPINRequest) error {
	if req.KeyAgreement == nil || req.PinUvAuthParam == nil || req.NewPinEnc == nil || req.PinHashEnc == nil {
		return ErrMissingParameter
	}
	p, s, err := a.sharedSecret(req)
	if err != nil {
		return err
	}
	if !a.pinSet() {
		return ErrPinNotSet
	}
	if a.pin.retries == 0 {
		return ErrPinBlocked
	}
	msg := append(append([]byte{}, req.NewPinEnc...), req.PinHashEnc...)
	if !p.Verify(s.HMACKey(), msg, req.PinUvAuthParam) {
		return ErrPinAuthInvalid
	}
	if err := a.checkPINHashEnc(p, s, req.PinHashEnc); err != nil {
		return err
	}
	pin, err := a.decryptNewPIN(p, s, req.NewPinEnc)
	if err != nil {
		return err
	}
	if err := a.installPIN(pin); err != nil {
		return err
	}
	a.cfg.ForcePINChange = false
	if err := a.saveConfig(); err != nil {
		return err
	}
	if err := a.pin.token.Reset(); err != nil {
		return err
	}
	a.log.Info("PIN changed")
	return nil
}

// checkPINHashEnc decrypts pinHashEnc and has the TPM check it.
func (a *Authenticator) checkPINHashEnc(p pinuv.Protocol, s pinuv.SharedSecret, pinHashEnc []byte) error {
	h, err := p.Decrypt(s, pinHashEnc)
	if err != nil || len(h) != pinHashLen {
		return ErrInvalidParameter
	}
	err = a.checkPINHash(h)
	if errors.Is(err, ErrPinInvalid) || errors.Is(err, ErrPinAuthBlocked) || errors.Is(err, ErrPinBlocked) {
		// A miss makes the platform start over with a fresh key
		// agreement (§6.5.5.5 step 6).
		if rerr := p.Regenerate(); rerr != nil {
			a.log.Error("regenerate key agreement key", "err", rerr)
		}
	}
	return err
}

// checkPINHash has the TPM check LEFT(SHA-256(PIN), 16). The retry
// counter is decremented durably before the TPM sees the guess, so a
// crash (or a kill) during the check never refunds an attempt.
//
// A TPM in dictionary-attack lockout judges no PIN (TPM_RC_LOCKOUT, for
// the right PIN too), so a lockout never costs a retry: the TPM is asked
// for its lockout state before the decrement, and if it locks out in
// between (another program on the same TPM), the decrement is refunded,
// durably. Either way the answer is ErrPinAuthBlocked (a *tpmLockoutError).
func (a *Authenticator) checkPINHash(h []byte) error {
	if a.pin.retries == 0 {
		return ErrPinBlocked
	}
	if a.pin.consecutive >= maxConsecutiveMisses {
		return ErrPinAuthBlocked
	}
	if st, known := a.daStatus(); known && st.Locked() {
		return a.tpmLockout(st, known, false)
	}
	if err := a.setRetries(a.pin.retries - 1); err != nil {
		return err
	}
	data, err := a.tpm.UnsealWithPIN(a.pin.object, h)
	switch {
	case errors.Is(err, tpm.ErrPINMismatch):
		a.pin.consecutive++
		if a.pin.retries == 0 {
			return ErrPinBlocked
		}
		if a.pin.consecutive >= maxConsecutiveMisses {
			return ErrPinAuthBlocked
		}
		return ErrPinInvalid
	case errors.Is(err, tpm.ErrLockout):
		// The TPM locked out after the check above: it refused without
		// judging the PIN, so the try is given back.
		if rerr := a.setRetries(a.pin.retries + 1); rerr != nil {
			a.log.Error("could not give back the PIN retry the TPM lockout took", "err", rerr)
		}
		st, known := a.daStatus()
		return a.tpmLockout(st, known, true)
	case err != nil:
		return fmt.Errorf("check PIN: %w", err)
	}
	if len(data) != 33 {
		return fmt.Errorf("PIN object holds %d bytes, want 33", len(data))
	}
	a.pin.length = int(data[32])
	a.pin.consecutive = 0
	return a.setRetries(maxPINRetries)
}

// daReporter is a TPM that reports its dictionary-attack state (*tpm.TPM
// does). A TPM without it is not asked before a PIN check; a lockout then
// still costs nothing, through the refund in checkPINHash.
type daReporter interface {
	DictionaryAttackStatus() (tpm.DAStatus, error)
}

// daStatus reads the TPM's dictionary-attack state; known is false when
// the TPM cannot tell.
func (a *Authenticator) daStatus() (st tpm.DAStatus, known bool) {
	r, ok := a.tpm.(daReporter)
	if !ok {
		return tpm.DAStatus{}, false
	}
	st, err := r.DictionaryAttackStatus()
	if err != nil {
		a.log.Warn("could not read the TPM's dictionary-attack status", "err", err)
		return tpm.DAStatus{}, false
	}
	return st, true
}

// tpmLockoutError is ErrPinAuthBlocked (CTAP2_ERR_PIN_AUTH_BLOCKED, CTAP
// 2.1 §6.5.5.7: no PIN can be tried now) because the TPM is in
// dictionary-attack lockout. No PIN retry was spent.
type tpmLockoutError struct {
	status tpm.DAStatus
	known  bool // status was read from the TPM
	at     time.Time
}

func (e *tpmLockoutError) Error() string { return lockoutText(e.status, e.known, e.at) }

// Unwrap makes the error the CTAP status the platform receives.
func (e *tpmLockoutError) Unwrap() error { return ErrPinAuthBlocked }

// tpmLockout logs a refused PIN check and returns its error. raced says
// the TPM answered TPM_RC_LOCKOUT although it was not in lockout just
// before.
func (a *Authenticator) tpmLockout(st tpm.DAStatus, known, raced bool) error {
	e := &tpmLockoutError{status: st, known: known, at: a.now()}
	within, recovers := st.RecoversWithin()
	a.log.Warn("PIN not checked: the TPM is in dictionary-attack lockout (TPM-wide); no PIN retry was used",
		"failed_tries", st.Counter, "max_tries", st.MaxTries, "status_known", known,
		"recovers_within", within, "recovers_without_reset", known && recovers,
		"locked_during_check", raced, "pin_retries", a.pin.retries)
	return e
}

// lockoutText tells a person, in one line, that the TPM is in lockout and
// when it recovers; now is when st was read.
func lockoutText(st tpm.DAStatus, known bool, now time.Time) string {
	const head = "The TPM is in dictionary-attack lockout and cannot check the PIN "
	const tail = "; no PIN attempt is used."
	d, ok := st.RecoversWithin()
	switch {
	case !known:
		return head + "until it recovers or its owner resets it (tpm2_dictionarylockout --clear-lockout)" + tail
	case !ok:
		return head + "until its owner resets it (tpm2_dictionarylockout --clear-lockout)" + tail
	}
	layout := "15:04"
	if d >= 12*time.Hour {
		layout = "Jan 2 15:04"
	}
	return head + fmt.Sprintf("until about %s (within %v of TPM uptime) or until its owner resets it",
		now.Add(d).Format(layout), d) + tail
}

// getPinToken is §6.5.5.7 (getPinToken, and with permissions when
// withPermissions).
func (a *Authenticator) getPinToken(req *ClientPINRequest, withPermissions bool) (*ClientPINResponse, error) {
	if req.KeyAgreement == nil || req.PinHashEnc == nil {
		return nil, ErrMissingParameter
	}
	perms := pinuv.PermMakeCredential | pinuv.PermGetAssertion // what legacy getPinToken grants
	rpID := ""
	if withPermissions {
		if req.Permissions == nil {
			return nil, ErrMissingParameter
		}
		if *req.Permissions == 0 || *req.Permissions > 0xff {
			return nil, ErrInvalidParameter
		}
		perms = pinuv.Permission(*req.Permissions)
		if err := a.checkPermissions(perms); err != nil {
			return nil, err
		}
		if req.RPID != nil {
			rpID = *req.RPID
		}
	} else if req.Permissions != nil || req.RPID != nil {
		return nil, ErrInvalidParameter
	}
	p, s, err := a.sharedSecret(req)
	if err != nil {
		return nil, err
	}
	if !a.pinSet() {
		return nil, ErrPinNotSet
	}
	if err := a.checkPINHashEnc(p, s, req.PinHashEnc); err != nil {
		return nil, err
	}
	if a.cfg.ForcePINChange {
		return nil, ErrPinPolicyViolation
	}
	return a.issueToken(p, s, perms, rpID, false)
}

// issueToken makes a new pinUvAuthToken and returns it encrypted.
func (a *Authenticator) issueToken(p pinuv.Protocol, s pinuv.SharedSecret, perms pinuv.Permission, rpID string, userPresent bool) (*ClientPINResponse, error) {
	if err := a.pin.token.Reset(); err != nil {
		return nil, err
	}
	a.pin.tokenAccount = nil
	a.pin.token.Begin(userPresent, perms, rpID)
	a.pin.tokenProtocol = p.Version()
	enc, err := p.Encrypt(s, a.pin.token.Value())
	if err != nil {
		return nil, fmt.Errorf("encrypt token: %w", err)
	}
	return &ClientPINResponse{PinUvAuthToken: enc}, nil
}

// checkPermissions refuses permissions for features this authenticator
// does not have (§6.5.5.7 step 3: CTAP2_ERR_UNAUTHORIZED_PERMISSION).
func (a *Authenticator) checkPermissions(perms pinuv.Permission) error {
	supported := pinuv.PermMakeCredential | pinuv.PermGetAssertion | pinuv.PermAuthenticatorConfig | a.extraPermissions
	if perms&^supported != 0 {
		return ErrUnauthorizedPermission
	}
	return nil
}

// builtInUV reports whether the prompt can do user verification (the
// person types the PIN into it) and a PIN exists to check.
func (a *Authenticator) builtInUV() bool {
	_, ok := a.prompter.(prompt.PINEntry)
	return ok
}

// verifyUser runs built-in UV: the prompt asks for the device PIN, the
// TPM checks it like clientPIN, with the same counters.
func (a *Authenticator) verifyUser(ctx context.Context, tx ctaphid.Transaction, req prompt.Request) error {
	pe, ok := a.prompter.(prompt.PINEntry)
	if !ok || !a.pinSet() {
		return ErrNotAllowed
	}
	if a.pin.retries == 0 {
		return ErrPinBlocked
	}
	if a.pin.consecutive >= maxConsecutiveMisses {
		return ErrPinAuthBlocked
	}
	// A TPM in lockout cannot check the PIN: the prompt says so and when
	// it recovers. The PIN is still asked for, and checkPINHash asks the
	// TPM again once it is typed (the lockout may have been reset
	// meanwhile); a lockout costs no retry either way.
	if st, known := a.daStatus(); known && st.Locked() {
		req.Notice = lockoutText(st, known, a.now())
	}
	tx.SetStatus(ctaphid.StatusUPNeeded)
	defer tx.SetStatus(ctaphid.StatusProcessing)
	pctx, cancel := context.WithTimeout(ctx, prompt.Timeout)
	defer cancel()
	pin, err := pe.EnterPIN(pctx, req, a.pin.retries)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return ErrKeepaliveCancel
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, prompt.ErrTimeout):
		return ErrUserActionTimeout
	default:
		return ErrOperationDenied
	}
	err = a.checkPINHash(pinHash(pin))
	switch {
	case errors.Is(err, ErrPinInvalid):
		return ErrUVInvalid
	case errors.Is(err, ErrPinBlocked), errors.Is(err, ErrPinAuthBlocked):
		return ErrUVBlocked
	}
	return err
}

// getPinUvAuthTokenUsingUv is §6.5.5.7.3: the token after built-in UV.
func (a *Authenticator) getPinUvAuthTokenUsingUv(ctx context.Context, tx ctaphid.Transaction, req *ClientPINRequest) (*ClientPINResponse, error) {
	if req.KeyAgreement == nil || req.Permissions == nil {
		return nil, ErrMissingParameter
	}
	if *req.Permissions == 0 || *req.Permissions > 0xff {
		return nil, ErrInvalidParameter
	}
	perms := pinuv.Permission(*req.Permissions)
	if err := a.checkPermissions(perms); err != nil {
		return nil, err
	}
	p, s, err := a.sharedSecret(req)
	if err != nil {
		return nil, err
	}
	if !a.builtInUV() {
		return nil, ErrInvalidSubcommand
	}
	if !a.pinSet() {
		return nil, ErrNotAllowed
	}
	rpID := ""
	if req.RPID != nil {
		rpID = *req.RPID
	}
	// A token for signing in to an RP with a single passkey: the prompt
	// names that account, so typing the PIN chooses it (userSelected).
	var account *keystore.Credential
	if rpID != "" && perms&pinuv.PermGetAssertion != 0 && perms&pinuv.PermMakeCredential == 0 {
		account = a.soleAccount(rpID)
	}
	pr := prompt.Request{Operation: prompt.OpVerify, RPID: rpID}
	if account != nil {
		pr.UserName = account.UserName
	}
	if err := a.verifyUser(ctx, tx, pr); err != nil {
		return nil, err
	}
	// Typing the PIN into the prompt is also presence.
	resp, err := a.issueToken(p, s, perms, rpID, true)
	if err == nil && account != nil {
		a.pin.tokenAccount = account.ID
	}
	return resp, err
}
