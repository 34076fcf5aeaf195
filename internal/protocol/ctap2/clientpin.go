package ctap2

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
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

// Store value names of the PIN/UV state. The PIN itself is never stored,
// nor anything derived from it: the PIN object is a TPM blob whose
// authorisation value is LEFT(SHA-256(PIN), 16), inside the TPM's own
// encryption, so the TPM is needed for every guess.
const (
	valuePINObject  = "pin-object"  // TPM blob; present iff a PIN is set
	valuePINRetries = "pin-retries" // one byte
	valueConfig     = "config"      // pinPolicy, CBOR
)

// pinValues names the store values a clientPIN owns. The device's
// authority owns devicePINValues; an authority per user would own its own.
type pinValues struct {
	Object  string // the PIN object (TPM blob)
	Retries string // pinRetries, one byte
	Policy  string // pinPolicy (authenticatorConfig's settings)
}

var devicePINValues = pinValues{Object: valuePINObject, Retries: valuePINRetries, Policy: valueConfig}

// valueStore is the part of the store the PIN/UV authority uses: the named
// values of its pinValues, nothing else. Store implements it.
type valueStore interface {
	Get(name string) ([]byte, error)
	Put(name string, value []byte) error
	// PutEventually writes without a sync on the caller's path (the
	// store's flusher writes it within about a second); a crash before
	// then leaves the previous value.
	PutEventually(name string, value []byte)
}

// pinTPM is what the PIN/UV authority needs from the TPM: the PIN object,
// a DA-protected sealed object whose authorisation is the PIN hash. TPM
// implements it; a pinTPM that is also a daReporter is asked for its
// dictionary-attack state before every PIN check.
type pinTPM interface {
	CreatePINObject(pinAuth, secret []byte) (tpm.KeyBlob, error)
	UnsealWithPIN(blob tpm.KeyBlob, pinAuth []byte) ([]byte, error)
}

// clientPINConfig wires a clientPIN.
type clientPINConfig struct {
	Store  valueStore
	TPM    pinTPM
	Prompt prompt.Prompter // built-in UV when it is a prompt.Verifier or a prompt.PINEntry
	Log    *slog.Logger
	Now    func() time.Time
	// Permissions are the pinUvAuthToken permissions of the optional
	// commands this authenticator has (credential management, large
	// blobs); mc, ga and acfg are always granted.
	Permissions pinuv.Permission
	Values      pinValues
	// Floor is the administrator's policy, applied over the stored one.
	Floor AdminPolicy
}

// clientPIN is the one authority for PIN and user verification (CTAP 2.1
// §6.5, in the spirit of OpenSK's ClientPin). It owns the PIN object and
// its counters, the PIN policy of authenticatorConfig (§6.11: minimum
// length, forcePINChange, alwaysUv), the PIN/UV auth protocols, the
// pinUvAuthToken with its protocol and RP binding, and built-in UV (the
// device PIN typed into the prompt). Every command that needs the user
// verified asks it: Authorize for a pinUvAuthParam, VerifyUser for
// built-in UV, CheckPIN for the management API; authenticatorClientPIN is
// its Command. Nothing else reads or writes its fields.
//
// It keeps no global state and reaches the store and the TPM only through
// the narrow interfaces it is given, so an authenticator can hold one per
// user. It is not safe for concurrent use: the Authenticator serialises
// commands.
type clientPIN struct {
	store     valueStore
	tpm       pinTPM
	prompter  prompt.Prompter
	log       *slog.Logger
	now       func() time.Time
	values    pinValues
	supported pinuv.Permission

	policy pinPolicy
	floor  AdminPolicy

	object      tpm.KeyBlob // nil: no PIN set
	retries     int
	consecutive int // misses since power-up
	length      int // code points of the current PIN; 0 until checked this power cycle

	protocols map[uint64]pinuv.Protocol
	token     *pinuv.Token
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

// newClientPIN loads the PIN/UV state from the store: the policy, the PIN
// object and the retry counter. Key agreement keys and the token are new,
// as after a power cycle.
func newClientPIN(cfg clientPINConfig) (*clientPIN, error) {
	c := &clientPIN{
		store: cfg.Store, tpm: cfg.TPM, prompter: cfg.Prompt, log: cfg.Log, now: cfg.Now,
		values:    cfg.Values,
		floor:     cfg.Floor,
		supported: pinuv.PermMakeCredential | pinuv.PermGetAssertion | pinuv.PermAuthenticatorConfig | cfg.Permissions,
		retries:   maxPINRetries,
	}
	if c.prompter == nil {
		c.prompter = prompt.DenyAll{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.loadPolicy(); err != nil {
		return nil, err
	}
	if err := c.loadProtocols(); err != nil {
		return nil, err
	}
	if err := c.loadPIN(); err != nil {
		return nil, err
	}
	if err := c.applyFloor(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *clientPIN) loadProtocols() error {
	p1, err := pinuv.NewProtocolOne()
	if err != nil {
		return err
	}
	p2, err := pinuv.NewProtocolTwo()
	if err != nil {
		return err
	}
	if c.token, err = pinuv.NewToken(c.now); err != nil {
		return err
	}
	c.protocols = map[uint64]pinuv.Protocol{1: p1, 2: p2}
	return nil
}

func (c *clientPIN) loadPIN() error {
	obj, err := c.store.Get(c.values.Object)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read PIN object: %w", err)
	default:
		c.object = obj
	}
	r, err := c.store.Get(c.values.Retries)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
	case err != nil || len(r) != 1 || r[0] > maxPINRetries:
		return fmt.Errorf("read PIN retries: %v", err)
	default:
		c.retries = int(r[0])
	}
	return nil
}

// PowerCycle resets what CTAP ties to power-up (§6.5.5.1): new key
// agreement keys, a new token, the consecutive-miss block lifted.
func (c *clientPIN) PowerCycle() {
	for _, p := range c.protocols {
		if err := p.Regenerate(); err != nil {
			c.log.Error("regenerate key agreement key", "err", err)
		}
	}
	if err := c.token.Reset(); err != nil {
		c.log.Error("reset pinUvAuthToken", "err", err)
	}
	c.consecutive = 0
	c.length = 0
}

// IsSet reports whether a PIN is set (getInfo's clientPin option).
func (c *clientPIN) IsSet() bool { return c.object != nil }

// Retries is pinRetries (§6.5.5.2); built-in UV counts on it too.
func (c *clientPIN) Retries() int { return c.retries }

// Blocked: no PIN retry is left, only a reset helps (§6.5.5.7).
func (c *clientPIN) Blocked() bool { return c.IsSet() && c.retries == 0 }

// BuiltInUV reports whether the prompt can do user verification
// (getInfo's uv option exists): the system verifies the person (a
// prompt.Verifier: polkit), or the person types the device PIN into it (a
// prompt.PINEntry).
func (c *clientPIN) BuiltInUV() bool { return c.verifier() != nil || c.pinEntry() != nil }

// UVConfigured is getInfo's uv option: built-in UV works now. The system's
// verification needs no PIN; the PIN prompt needs a PIN set.
func (c *clientPIN) UVConfigured() bool {
	return c.verifier() != nil || (c.pinEntry() != nil && c.IsSet())
}

// SystemUV reports whether built-in UV is the system's (a Verifier), not
// the TPM-checked device PIN.
func (c *clientPIN) SystemUV() bool { return c.verifier() != nil }

func (c *clientPIN) verifier() prompt.Verifier {
	v, _ := c.prompter.(prompt.Verifier)
	return v
}

func (c *clientPIN) pinEntry() prompt.PINEntry {
	pe, _ := c.prompter.(prompt.PINEntry)
	return pe
}

// systemUVRetries is getUVRetries' answer when the system verifies
// (§6.5.5.3 getUVRetries): the attempts are counted, and locked out, by the
// system (PAM: pam_faillock), which the authenticator cannot see, and a
// failed attempt costs the authenticator nothing. It reports the full
// count, never 0: 0 would make the platform fall back to a PIN that may
// not exist.
const systemUVRetries = maxPINRetries

// Protocol resolves a pinUvAuthProtocol parameter (§6.5.4): missing is
// CTAP2_ERR_MISSING_PARAMETER, unsupported CTAP1_ERR_INVALID_PARAMETER.
// hmac-secret shares the key agreement keys.
func (c *clientPIN) Protocol(v *uint64) (pinuv.Protocol, error) {
	if v == nil {
		return nil, ErrMissingParameter
	}
	p, ok := c.protocols[*v]
	if !ok {
		return nil, ErrInvalidParameter
	}
	return p, nil
}

// rpPermissions are the permissions whose uses bind the token to an RP
// and need its userVerified flag (CTAP 2.1 §6.1.2 step 11, §6.2.2 step 6,
// §6.5.5.7 "permissions RP ID").
const rpPermissions = pinuv.PermMakeCredential | pinuv.PermGetAssertion

// Authorize verifies pinUvAuthParam over message with the pinUvAuthToken,
// for one permission: the check every command makes before it acts on a
// token (makeCredential §6.1.2 step 11, getAssertion §6.2.2 step 6,
// credentialManagement §6.8, largeBlobs §6.10.3, authenticatorConfig
// §6.11). The token must have been issued over protocol and hold
// permission; for makeCredential and getAssertion it must also still be
// user-verified, and its first use binds it to rpID (a token bound to
// another RP is refused). Other commands pass "" for rpID: credential
// management checks the credentials' RP with PermitsRP once it knows
// them.
//
// A missing pinUvAuthParam is CTAP2_ERR_PUAT_REQUIRED; callers that accept
// requests without one decide so before they call.
func (c *clientPIN) Authorize(permission pinuv.Permission, rpID string, message, pinUvAuthParam []byte, protocol *uint64) error {
	if pinUvAuthParam == nil {
		return ErrPUATRequired
	}
	p, err := c.Protocol(protocol)
	if err != nil {
		return err
	}
	t := c.token
	if p.Version() != c.tokenProtocol || !t.Verify(p, message, pinUvAuthParam) || t.Permissions()&permission == 0 {
		return ErrPinAuthInvalid
	}
	if permission&rpPermissions == 0 {
		return nil
	}
	if !t.UserVerified() {
		return ErrPinAuthInvalid
	}
	switch t.RPID() {
	case "":
		t.SetRPID(rpID) // the first use binds the token to this RP
	case rpID:
	default:
		return ErrPinAuthInvalid
	}
	return nil
}

// PermitsRP reports whether the token may act on rpID's credentials: it
// has no permissions RP ID or it is rpID (§6.8.4-6). PermitsRP("") holds
// only for a token bound to no RP, which whole-authenticator views need
// (§6.8.2, §6.8.3).
func (c *clientPIN) PermitsRP(rpID string) bool {
	bound := c.token.RPID()
	return bound == "" || bound == rpID
}

// PermitsRPIDHash is PermitsRP for an RP known by its hash
// (enumerateCredentialsBegin, §6.8.4).
func (c *clientPIN) PermitsRPIDHash(rpIDHash []byte) bool {
	bound := c.token.RPID()
	if bound == "" {
		return true
	}
	h := sha256.Sum256([]byte(bound))
	return bytes.Equal(h[:], rpIDHash)
}

// TokenUserPresent is the token's userPresent flag: the presence its
// issuing collected, still unspent (§6.5.2.1).
func (c *clientPIN) TokenUserPresent() bool { return c.token.UserPresent() }

// TokenAccount is the credential ID of the account the prompt that issued
// the token named, or nil.
func (c *clientPIN) TokenAccount() []byte { return c.tokenAccount }

// ConsumeToken clears the token's one-time flags after a request it
// authorised collected presence (§6.1.2 step 14.4, §6.2.2 step 9.4);
// clearPermissions also drops every permission but lbw (both commands do
// once presence is collected; the exclude list's refusal does not).
func (c *clientPIN) ConsumeToken(clearPermissions bool) {
	c.token.ClearUserPresent()
	c.token.ClearUserVerified()
	if clearPermissions {
		c.token.ClearPermissionsExceptLbw()
	}
}

// UVForRequest decides how makeCredential or getAssertion without a
// pinUvAuthParam verifies the user (§6.1.2 steps 5-6 and 10, §6.2.2 step
// 5; §7.2.2 alwaysUv): verify says built-in UV must run. uvOption is the
// request's uv option; rk says the request needs UV on a protected
// authenticator (a discoverable credential: makeCredUvNotRqd covers only
// non-discoverable ones).
func (c *clientPIN) UVForRequest(uvOption, rk bool) (verify bool, err error) {
	if uvOption {
		// §6.1.2 step 5.3, §6.2.2 step 4.3: no built-in UV, or built-in
		// UV not yet enabled (no PIN for the PIN prompt), are both
		// INVALID_OPTION.
		if !c.UVConfigured() {
			return false, ErrInvalidOption
		}
		return true, nil
	}
	// Protected by some form of UV: a PIN, or the system's verification
	// (uv true in getInfo even without a PIN).
	protected := c.IsSet() || c.SystemUV()
	if !c.policy.AlwaysUV && !(protected && rk) {
		return false, nil
	}
	if c.UVConfigured() && c.policy.AlwaysUV {
		return true, nil // alwaysUv: verify with the prompt instead
	}
	return false, ErrPUATRequired
}

// VerifyUser runs built-in UV. With a prompt.Verifier the system verifies
// the person (systemVerify); when it has nobody to ask and the prompt is
// also a PINEntry with a PIN set ("polkit+agent"), the device PIN is asked
// for instead. Otherwise the prompt asks for the device PIN and the TPM
// checks it like clientPIN, with the same counters. The platform sees
// UPNEEDED keepalives meanwhile.
func (c *clientPIN) VerifyUser(ctx context.Context, tx ctaphid.Transaction, req prompt.Request) error {
	pe := c.pinEntry()
	if v := c.verifier(); v != nil {
		err := c.systemVerify(ctx, tx, v, req)
		if !errors.Is(err, prompt.ErrNoVerifier) {
			return err
		}
		if pe == nil || !c.IsSet() {
			return ErrOperationDenied
		}
		c.log.Info("built-in UV: the system has nobody to ask; asking for the device PIN instead")
	}
	if pe == nil || !c.IsSet() {
		return ErrNotAllowed
	}
	if c.retries == 0 {
		// The PIN's retries are built-in UV's uvRetries (getUVRetries):
		// "If the uvRetries counter is 0, return CTAP2_ERR_UV_BLOCKED"
		// (§6.5.5.7.3 step 7), as a check that reaches 0 does below.
		return ErrUVBlocked
	}
	if c.consecutive >= maxConsecutiveMisses {
		return ErrPinAuthBlocked
	}
	// A TPM in lockout cannot check the PIN: the prompt says so and when
	// it recovers. The PIN is still asked for, and checkPINHash asks the
	// TPM again once it is typed (the lockout may have been reset
	// meanwhile); a lockout costs no retry either way.
	if st, known := c.daStatus(); known && st.Locked() {
		req.Notice = lockoutText(st, known, c.now())
	}
	pin, err := c.enterPIN(ctx, tx, pe, req)
	if err != nil {
		return err
	}
	err = c.checkPINHash(pinHash(pin))
	switch {
	case errors.Is(err, ErrPinInvalid):
		return ErrUVInvalid
	case errors.Is(err, ErrPinBlocked), errors.Is(err, ErrPinAuthBlocked):
		return ErrUVBlocked
	}
	return err
}

// systemVerify is built-in UV through the system (a prompt.Verifier), with
// the statuses of a built-in UV method (CTAP 2.1 §6.1.2 step 11, §6.2.2
// step 6 (the "uv" option), §6.5.5.7.3): the person not verified (a
// wrong password or finger) is CTAP2_ERR_UV_INVALID, as a wrong PIN typed
// into the prompt is; a declined or dismissed dialog is
// CTAP2_ERR_OPERATION_DENIED, as a declined presence prompt (§6.1.2 step
// 14); no answer in time CTAP2_ERR_USER_ACTION_TIMEOUT; CTAPHID_CANCEL
// CTAP2_ERR_KEEPALIVE_CANCEL. prompt.ErrNoVerifier is returned as such,
// for the caller's fallback. No counter: the system counts (PAM), so
// UV_BLOCKED never comes from here.
func (c *clientPIN) systemVerify(ctx context.Context, tx ctaphid.Transaction, v prompt.Verifier, req prompt.Request) error {
	tx.SetStatus(ctaphid.StatusUPNeeded)
	defer tx.SetStatus(ctaphid.StatusProcessing)
	if req.Operation == prompt.OpVerify {
		req.Operation = prompt.OpUnlock // not the PIN: the system's own unlock
	}
	vctx, cancel := context.WithTimeout(ctx, prompt.Timeout)
	defer cancel()
	err := v.VerifyUser(vctx, req)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ErrKeepaliveCancel
	case errors.Is(err, prompt.ErrNoVerifier):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, prompt.ErrTimeout):
		return ErrUserActionTimeout
	case errors.Is(err, prompt.ErrNotVerified):
		return ErrUVInvalid
	default:
		return ErrOperationDenied
	}
}

// enterPIN asks the prompt for the PIN and maps its failures onto CTAP
// statuses (§6.1.2 step 14).
func (c *clientPIN) enterPIN(ctx context.Context, tx ctaphid.Transaction, pe prompt.PINEntry, req prompt.Request) (string, error) {
	tx.SetStatus(ctaphid.StatusUPNeeded)
	defer tx.SetStatus(ctaphid.StatusProcessing)
	pctx, cancel := context.WithTimeout(ctx, prompt.Timeout)
	defer cancel()
	pin, err := pe.EnterPIN(pctx, req, c.retries)
	switch {
	case err == nil:
		return pin, nil
	case ctx.Err() != nil:
		return "", ErrKeepaliveCancel
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, prompt.ErrTimeout):
		return "", ErrUserActionTimeout
	default:
		return "", ErrOperationDenied
	}
}

// CheckPIN has the TPM check pin, counted like clientPIN (the management
// API's PIN check).
func (c *clientPIN) CheckPIN(pin string) error { return c.checkPINHash(pinHash(pin)) }

// AcceptsPIN reports whether pin meets the PIN policy (§6.5.1): at most 63
// bytes of UTF-8 without NUL, at least minPINLength code points.
func (c *clientPIN) AcceptsPIN(pin string) bool {
	return len(pin) <= maxPINBytes && utf8.ValidString(pin) && utf8.RuneCountInString(pin) >= c.policy.MinPINLength &&
		strings.IndexByte(pin, 0) < 0
}

// ReplacePIN sets pin as the PIN without the clientPIN exchange (the
// management API, which checked the old PIN with CheckPIN): the
// forcePINChange flag is cleared and tokens issued under the old PIN die,
// as after a power cycle.
func (c *clientPIN) ReplacePIN(pin string) error {
	if err := c.installPIN(pin); err != nil {
		return err
	}
	if err := c.setForcePINChange(false); err != nil {
		return err
	}
	c.PowerCycle()
	return nil
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

func pinHash(pin string) []byte {
	h := sha256.Sum256([]byte(pin))
	return h[:pinHashLen]
}

// installPIN replaces the PIN object: a new TPM object with the new PIN
// as its authorisation. The old blob is overwritten in the store, so the
// old PIN opens nothing that is kept.
func (c *clientPIN) installPIN(pin string) error {
	data, err := sealedPINData(utf8.RuneCountInString(pin))
	if err != nil {
		return err
	}
	obj, err := c.tpm.CreatePINObject(pinHash(pin), data)
	if err != nil {
		return fmt.Errorf("create PIN object: %w", err)
	}
	if err := c.store.Put(c.values.Object, obj); err != nil {
		return fmt.Errorf("store PIN object: %w", err)
	}
	c.object = obj
	c.length = utf8.RuneCountInString(pin)
	if err := c.setRetries(maxPINRetries); err != nil {
		return err
	}
	c.consecutive = 0
	return nil
}

func (c *clientPIN) setRetries(n int) error {
	if err := c.store.Put(c.values.Retries, []byte{byte(n)}); err != nil {
		return fmt.Errorf("store PIN retries: %w", err)
	}
	c.retries = n
	return nil
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
func (c *clientPIN) checkPINHash(h []byte) error {
	if c.retries == 0 {
		return ErrPinBlocked
	}
	if c.consecutive >= maxConsecutiveMisses {
		return ErrPinAuthBlocked
	}
	if st, known := c.daStatus(); known && st.Locked() {
		return c.tpmLockout(st, known, false)
	}
	if err := c.setRetries(c.retries - 1); err != nil {
		return err
	}
	if len(h) != pinHashLen {
		return c.miss() // not a PIN hash: a mismatch the TPM need not judge
	}
	data, err := c.tpm.UnsealWithPIN(c.object, h)
	switch {
	case errors.Is(err, tpm.ErrPINMismatch):
		return c.miss()
	case errors.Is(err, tpm.ErrLockout):
		// The TPM locked out after the check above: it refused without
		// judging the PIN, so the try is given back.
		if rerr := c.setRetries(c.retries + 1); rerr != nil {
			c.log.Error("could not give back the PIN retry the TPM lockout took", "err", rerr)
		}
		st, known := c.daStatus()
		return c.tpmLockout(st, known, true)
	case err != nil:
		return fmt.Errorf("check PIN: %w", err)
	}
	if len(data) != 33 {
		return fmt.Errorf("PIN object holds %d bytes, want 33", len(data))
	}
	c.length = int(data[32])
	c.consecutive = 0
	// The right PIN gives the attempt back without a sync of its own
	// (it was a second commit on every sign-in with a PIN): a crash
	// before the store's flusher writes it leaves the decremented count
	// on disk, which only costs the owner one try, never refunds one.
	c.store.PutEventually(c.values.Retries, []byte{maxPINRetries})
	c.retries = maxPINRetries
	return nil
}

// miss counts a wrong PIN (its retry is already spent) and says what the
// platform may do next (§6.5.5.7 step 4).
func (c *clientPIN) miss() error {
	c.consecutive++
	if c.retries == 0 {
		return ErrPinBlocked
	}
	if c.consecutive >= maxConsecutiveMisses {
		return ErrPinAuthBlocked
	}
	return ErrPinInvalid
}

// daReporter is a TPM that reports its dictionary-attack state (*tpm.TPM
// does). A TPM without it is not asked before a PIN check; a lockout then
// still costs nothing, through the refund in checkPINHash.
type daReporter interface {
	DictionaryAttackStatus() (tpm.DAStatus, error)
}

// TPMLockout is the TPM's dictionary-attack state; known is false when
// the TPM cannot tell.
func (c *clientPIN) TPMLockout() (st tpm.DAStatus, known bool) { return c.daStatus() }

func (c *clientPIN) daStatus() (st tpm.DAStatus, known bool) {
	r, ok := c.tpm.(daReporter)
	if !ok {
		return tpm.DAStatus{}, false
	}
	st, err := r.DictionaryAttackStatus()
	if err != nil {
		c.log.Warn("could not read the TPM's dictionary-attack status", "err", err)
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
func (c *clientPIN) tpmLockout(st tpm.DAStatus, known, raced bool) error {
	e := &tpmLockoutError{status: st, known: known, at: c.now()}
	within, recovers := st.RecoversWithin()
	c.log.Warn("PIN not checked: the TPM is in dictionary-attack lockout (TPM-wide); no PIN retry was used",
		"failed_tries", st.Counter, "max_tries", st.MaxTries, "status_known", known,
		"recovers_within", within, "recovers_without_reset", known && recovers,
		"locked_during_check", raced, "pin_retries", c.retries)
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
