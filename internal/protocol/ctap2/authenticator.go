package ctap2

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// AAGUID identifies passkeyd as a model (WebAuthn §6.5.1). It is the same
// for every installation, so it identifies nothing beyond "passkeyd".
var AAGUID = [16]byte{0x9d, 0x72, 0xba, 0x2f, 0x2f, 0x52, 0x4f, 0x5d, 0xbc, 0x83, 0xaa, 0x03, 0x43, 0x8c, 0x76, 0x36}

// TPM is what the authenticator needs from the TPM: keys that never leave
// it, and sealing for device secrets. *tpm.TPM implements it.
type TPM interface {
	Algorithms() []tpm.Algorithm
	CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error)
	Sign(blob tpm.KeyBlob, digest []byte) ([]byte, error)
	Seal(secret []byte) (tpm.KeyBlob, error)
	Unseal(blob tpm.KeyBlob) ([]byte, error)
	// The PIN object: a DA-protected sealed object whose authorisation is
	// the PIN hash, checked by the TPM over a salted session.
	CreatePINObject(pinAuth, secret []byte) (tpm.KeyBlob, error)
	UnsealWithPIN(blob tpm.KeyBlob, pinAuth []byte) ([]byte, error)
	// hmac-secret derives per-credential values with a TPM HMAC key.
	CreateHMACKey() (tpm.KeyBlob, error)
	HMAC(key tpm.KeyBlob, data []byte) ([]byte, error)
}

// Store is the durable state. *keystore.Store implements it.
type Store interface {
	Get(name string) ([]byte, error)
	Put(name string, value []byte) error
	PutEventually(name string, value []byte)
	Unlock(key []byte) error
	// PutCredential stores c and deletes the replaced credentials in
	// one transaction.
	PutCredential(c *keystore.Credential, replaces ...[]byte) error
	Credential(id []byte) (*keystore.Credential, error)
	CredentialsByRP(rpID string) ([]*keystore.Credential, error)
	// ForEachCredential walks every credential holding a batch at a
	// time; keystore.ErrSkipAll from fn ends it early.
	ForEachCredential(fn func(*keystore.Credential) error) error
	DeleteCredential(id []byte) error
	CountCredentials() int
	TouchCredential(id []byte, t time.Time)
	NextCounter() (uint32, error)
	// Wipe deletes everything but the device values named in keep, in
	// one transaction.
	Wipe(keep ...string) error
}

// DeviceStore is where the device-wide values live (Config.Device).
// *keystore.Store implements it.
type DeviceStore interface {
	Get(name string) ([]byte, error)
	Put(name string, value []byte) error
}

// AttestationMode selects the attestation statement of makeCredential.
type AttestationMode string

// Attestation modes (passkeyd serve --attestation).
const (
	AttestationSelf AttestationMode = "self" // packed self attestation (default; see attestationStatement)
	AttestationNone AttestationMode = "none"
	AttestationTPM  AttestationMode = "tpm"
)

// Attester makes "tpm" attestation statements (internal/protocol/attest implements it).
type Attester interface {
	// CreateKey makes the key of a credential Statement will attest:
	// relying parties parse its TPM public area, so its layout is the
	// attester's business (tpm.TPM.CreateAttestableKey).
	CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error)
	Statement(authData, clientDataHash []byte, credKey tpm.KeyBlob) (format string, attStmt map[string]any, err error)
	// StoredValues names the store values the attester keeps (its CA and
	// attestation key): a reset leaves them, as it leaves a hardware
	// key's attestation certificate, so a fleet's trust survives it.
	StoredValues() []string
}

// Config wires an Authenticator.
type Config struct {
	// Attestation defaults to AttestationSelf; AttestationTPM needs
	// Attester.
	Attestation AttestationMode
	Attester    Attester
	TPM         TPM
	// Store is the namespace: credentials, large blobs, the PIN object
	// and its counters, authenticatorConfig's settings, and the sealed
	// keys that protect them (the credential-ID wrapping key, the store
	// key, the hmac-secret key). A reset wipes it.
	Store Store
	// Device holds the device-wide values every namespace shares: the
	// U2F attestation key and certificate (and the Attester's CA and
	// AK, which the caller loads from it). nil: Store holds them too,
	// as with one namespace (the single-owner layout), and a reset
	// keeps them there.
	Device DeviceStore
	// DeviceValues names further device-wide values (the caller's) that
	// a reset keeps when Store is also Device.
	DeviceValues []string
	Prompt       prompt.Prompter
	Logger       *slog.Logger
	// Capacity bounds discoverable credentials (getInfo's
	// remainingDiscoverableCredentials). Default DefaultCapacity.
	Capacity int
	// Now is the clock; tests replace it. Default time.Now.
	Now func() time.Time
	// Policy is the administrator's floor under the PIN policy.
	Policy AdminPolicy
}

// AdminPolicy is what an administrator sets for a fleet (the daemon's
// configuration file): floors under the PIN policy a platform configures
// with authenticatorConfig (CTAP 2.1 §6.11), which the person at the key
// cannot lower. A reset keeps them.
type AdminPolicy struct {
	// AlwaysUV turns alwaysUv on and keeps it on: toggleAlwaysUv answers
	// CTAP2_ERR_OPERATION_DENIED, as §6.11.2 allows an authenticator
	// that does not support disabling it.
	AlwaysUV bool
	// MinPINLength raises the minimum PIN length (0: CTAP's default of
	// 4). A PIN set before the raise must be changed (forcePINChange).
	MinPINLength int
	// MinPINLengthRPs may read the minimum through the minPinLength
	// extension (§12.4), besides those setMinPINLength lists.
	MinPINLengthRPs []string
}

// maxAdminMinPINLengthRPs bounds the administrator's RP list.
const maxAdminMinPINLengthRPs = 32

func (p AdminPolicy) check() error {
	if p.MinPINLength != 0 && (p.MinPINLength < defaultMinPINLength || p.MinPINLength > maxPINBytes) {
		return fmt.Errorf("ctap2: administrator's minimum PIN length %d: want %d to %d", p.MinPINLength, defaultMinPINLength, maxPINBytes)
	}
	if len(p.MinPINLengthRPs) > maxAdminMinPINLengthRPs {
		return fmt.Errorf("ctap2: %d RPs may read the minimum PIN length: at most %d", len(p.MinPINLengthRPs), maxAdminMinPINLengthRPs)
	}
	return nil
}

// DefaultCapacity is the number of discoverable credentials allowed by
// default: the store is indexed, so this is a policy bound, not a limit
// of the implementation.
const DefaultCapacity = 25000

// resetWindow: authenticatorReset is refused later than this after power-up
// (CTAP 2.1 §6.6).
const resetWindow = 10 * time.Second

// nextAssertionTimeout: getNextAssertion state expires 30 s after the last
// getAssertion or getNextAssertion (CTAP 2.1 §6.3 steps 3 and 7).
const nextAssertionTimeout = 30 * time.Second

// Authenticator is one CTAP2 authenticator. Its methods are safe for
// concurrent use; commands are serialised.
type Authenticator struct {
	tpm    TPM
	store  Store
	device DeviceStore
	// shared: store and device are one store, whose reset keeps the
	// device-wide values (keep).
	shared   bool
	keep     []string
	prompter prompt.Prompter
	log      *slog.Logger
	capacity int
	now      func() time.Time

	mu        sync.Mutex
	secrets   *deviceSecrets
	powerUp   time.Time
	next      *assertionState // getNextAssertion state, nil when none
	presence  u2fPresence
	algorithm []tpm.Algorithm
	// pin is the PIN/UV authority: every PIN, token and UV decision is
	// its (clientpin.go).
	pin         *clientPIN
	cm          credMgmtState
	lbWrite     *largeBlobWrite // a large-blob write in progress
	attestation AttestationMode
	attester    Attester
	policy      AdminPolicy // the administrator's floor, kept across resets
}

// New provisions (first run) or loads the device secrets and returns a
// ready authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.TPM == nil || cfg.Store == nil {
		return nil, errors.New("ctap2: TPM and Store are required")
	}
	a := &Authenticator{
		tpm:      cfg.TPM,
		store:    cfg.Store,
		device:   cfg.Device,
		prompter: cfg.Prompt,
		log:      cfg.Logger,
		capacity: cfg.Capacity,
		now:      cfg.Now,
		policy:   cfg.Policy,
	}
	if err := a.policy.check(); err != nil {
		return nil, err
	}
	if a.device == nil || any(a.device) == any(a.store) {
		a.device, a.shared = a.store, true
		a.keep = append([]string{valueU2FKey, valueU2FCert}, cfg.DeviceValues...)
	}
	if a.prompter == nil {
		a.prompter = prompt.DenyAll{}
	}
	switch a.attestation = cfg.Attestation; a.attestation {
	case "":
		a.attestation = AttestationSelf
	case AttestationSelf, AttestationNone:
	case AttestationTPM:
		if cfg.Attester == nil {
			return nil, errors.New("ctap2: tpm attestation needs an Attester")
		}
		a.attester = cfg.Attester
		if a.shared {
			a.keep = append(a.keep, a.attester.StoredValues()...)
		}
	default:
		return nil, fmt.Errorf("ctap2: unknown attestation %q (want self, none or tpm)", cfg.Attestation)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.capacity <= 0 {
		a.capacity = DefaultCapacity
	}
	if a.now == nil {
		a.now = time.Now
	}
	for _, alg := range cfg.TPM.Algorithms() {
		if _, ok := credAlgCodes[alg]; ok {
			a.algorithm = append(a.algorithm, alg)
		}
	}
	if len(a.algorithm) == 0 {
		return nil, errors.New("ctap2: the TPM supports none of ES256, RS256")
	}
	s, err := loadDeviceSecrets(a.tpm, a.store, a.device, a.now())
	if err != nil {
		return nil, err
	}
	a.secrets = s
	if a.pin, err = newClientPIN(a.clientPINConfig()); err != nil {
		return nil, err
	}
	a.powerUp = a.now()
	return a, nil
}

// clientPINConfig wires the device's PIN/UV authority to this
// authenticator's store, TPM and prompt.
func (a *Authenticator) clientPINConfig() clientPINConfig {
	return clientPINConfig{
		Store: a.store, TPM: a.tpm, Prompt: a.prompter, Log: a.log, Now: a.now,
		// The optional commands this authenticator has.
		Permissions: pinuv.PermCredentialManagement | pinuv.PermLargeBlobWrite,
		Values:      devicePINValues,
		Floor:       a.policy,
	}
}

// PowerCycle resets everything CTAP ties to power-up: the reset window, the
// getNextAssertion state, U2F presence, the PIN/UV state of §6.5.5.1 (new
// key agreement keys, a new pinUvAuthToken, the consecutive-miss block
// lifted) and a large-blob write in progress. CTAPHID channels are the
// transport's and survive a simulated power cycle (see ctaphid.Device).
func (a *Authenticator) PowerCycle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.powerUp = a.now()
	a.next = nil
	a.presence.clear()
	a.pin.PowerCycle()
	a.lbWrite = nil
	a.log.Info("power cycle")
}

// Wink is CTAPHID_WINK: there is no LED, so it is only logged.
func (a *Authenticator) Wink() { a.log.Info("wink") }

// CBOR executes one authenticator API request (command byte followed by
// its CBOR parameters) and returns status byte followed by the response.
// It is for in-process callers: channel 0, no keepalives. Transports use
// HIDHandler.
func (a *Authenticator) CBOR(ctx context.Context, req []byte) []byte {
	return a.execute(ctx, inProcess{}, req)
}

// execute runs one request of transaction tx.
func (a *Authenticator) execute(ctx context.Context, tx ctaphid.Transaction, req []byte) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(req) == 0 {
		return []byte{byte(ErrInvalidLength)}
	}
	cmd, params := req[0], req[1:]
	if cmd != CmdGetNextAssertion {
		a.next = nil // CTAP 2.1 §6.3: state lives only until another command
	}
	if cmd != CmdCredentialManagement && cmd != CmdCredentialManagementPreview {
		a.cm = credMgmtState{}
	}
	var (
		body []byte
		err  error
	)
	switch cmd {
	case CmdMakeCredential:
		body, err = a.makeCredential(ctx, tx, params)
	case CmdGetAssertion:
		body, err = a.getAssertion(ctx, tx, params)
	case CmdGetNextAssertion:
		body, err = a.getNextAssertion(tx.Channel())
	case CmdGetInfo:
		body, err = a.getInfo()
	case CmdReset:
		err = a.reset(ctx, tx)
	case CmdSelection:
		err = a.selection(ctx, tx)
	case CmdClientPIN:
		body, err = a.clientPIN(ctx, tx, params)
	case CmdConfig:
		err = a.authenticatorConfig(params)
	case CmdCredentialManagement, CmdCredentialManagementPreview:
		body, err = a.credentialManagement(params, tx.Channel())
	case CmdLargeBlobs:
		body, err = a.largeBlobs(params)
	default:
		err = ErrInvalidCommand
	}
	return a.respond(cmd, body, err)
}

func (a *Authenticator) respond(cmd byte, body []byte, err error) []byte {
	if err == nil {
		return append([]byte{byte(StatusOK)}, body...)
	}
	var st Status
	if !errors.As(err, &st) {
		// Internal failure (TPM, store): the client learns only that it
		// failed; the log has the cause, which never includes secrets.
		a.log.Error("command failed", "command", cmd, "err", err)
		st = ErrOther
	} else {
		a.log.Debug("command refused", "command", cmd, "status", st.Error())
	}
	return []byte{byte(st)}
}

// userPresence asks the prompter and maps the outcome onto CTAP statuses
// (CTAP 2.1 §6.1.2 step 14), keeping KEEPALIVE at UPNEEDED meanwhile.
func (a *Authenticator) userPresence(ctx context.Context, tx ctaphid.Transaction, req prompt.Request) error {
	tx.SetStatus(ctaphid.StatusUPNeeded)
	defer tx.SetStatus(ctaphid.StatusProcessing)
	pctx, cancel := context.WithTimeout(ctx, prompt.Timeout)
	defer cancel()
	err := a.prompter.Confirm(pctx, req)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ErrKeepaliveCancel
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, prompt.ErrTimeout):
		return ErrUserActionTimeout
	default:
		return ErrOperationDenied
	}
}
