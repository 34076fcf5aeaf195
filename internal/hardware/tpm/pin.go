package tpm

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// PIN objects: a CTAP2 client PIN that the TPM checks.
//
// A PIN object is a sealed data object (keyedHash, no sign/decrypt) whose
// authValue is derived from the PIN (pinAuthValue) and which is DA-protected
// (no noDA): each wrong PIN counts against the TPM's dictionary-attack
// counter. The blob holds the authValue only inside the TPM-encrypted
// private area, so nothing in the store lets anyone test a PIN without this
// TPM. The PIN-derived value never crosses the bus in clear: TPM2_Create
// gets it inside inSensitive, encrypted by a salted session (decrypt
// attribute, AES-128-CFB); TPM2_Unseal is authorised by the HMAC of a
// session salted to the SRK and bound to nothing, so a bus sniffer cannot
// turn the HMAC into an offline PIN test (an unsalted, unbound session's
// HMAC key would be the authValue alone), and the unsealed secret comes back
// encrypted (encrypt attribute). A password session would send the
// authValue in clear.
//
// Dictionary attacks, in layers:
//
//  1. Software first. CTAP's counters (8 tries in all, persistent; 3 per
//     power cycle) live above this package and are always checked before a
//     PIN goes to the TPM. They are what a user meets.
//  2. The TPM lockout is the backstop, against guessing with a stolen blob on
//     this machine. It is TPM-wide: at Counter >= MaxTries (DAStatus) the TPM
//     refuses every DA-protected object: the right PIN (ErrLockout) and, on
//     a device TPM, other programs' DA-protected keys too (passkeyd's
//     credential keys are noDA and keep signing). It ends when RecoveryTime
//     of TPM uptime per counted failure has passed, or with
//     TPM2_DictionaryAttackLockReset by the lockout authority (e.g.
//     `tpm2_dictionarylockout --clear-lockout`). A successful PIN does not
//     lower the TPM's counter, unlike CTAP's.
//  3. A private swtpm gets 32 tries, one forgiven per 10 minutes (set at
//     Open, see lockout.go), so CTAP's limits come first; its counter is
//     also reset at every Open. Device and "unix:" TPMs keep their owner's
//     parameters: read them with DictionaryAttackStatus and warn when
//     MaxTries is too low for CTAP's 8.
//
// Unorderly shutdowns count too: after a DA-protected object (a PIN object;
// credential keys are noDA) was used, a TPM2_Startup without a preceding
// TPM2_Shutdown adds one to the counter. For a device TPM that is a power
// loss (the kernel sends TPM2_Shutdown at reboot; a daemon crash does not
// matter). For a private swtpm it is our process dying, which the reset at
// Open undoes. For a "unix:" swtpm that someone restarts without
// TPM2_Shutdown, it adds up (default swtpm: locked out after 3).
//
// Changing the PIN is CreatePINObject with the new pinAuth and deleting the
// old blob: the TPM cannot revoke it, and any copy left (a backup, a
// snapshot) still opens with the old PIN. Sealing a fresh secret on each
// change, and re-keying what it protects, makes old copies worthless.

// ErrPINMismatch is wrapped by UnsealWithPIN's error when the TPM refused
// the PIN (TPM_RC_AUTH_FAIL, or TPM_RC_BAD_AUTH). The TPM has counted the
// failure against its dictionary-attack counter.
var ErrPINMismatch = errors.New("PIN mismatch: the TPM refused the PIN object's authorization")

// ErrLockout is wrapped by errors for TPM_RC_LOCKOUT: the TPM is in
// dictionary-attack lockout.
var ErrLockout = errors.New("TPM is in dictionary-attack lockout: it refuses the PIN and all DA-protected keys " +
	"TPM-wide (not only passkeyd's) until its recovery time has passed, " +
	"or until the lockout authority runs TPM2_DictionaryAttackLockReset (tpm2_dictionarylockout --clear-lockout)")

// pinAuth sizes: CTAP's LEFT(SHA-256(pin),16) at least, a whole digest or
// two at most.
const (
	minPINAuthSize = 16
	maxPINAuthSize = 64
)

// pinAuthLabel separates pinAuthValue from other uses of SHA-256.
const pinAuthLabel = "passkeyd tpm PIN object authValue v1\x00"

// pinSealTemplate is sealTemplate without noDA: wrong PINs count against
// the TPM's dictionary-attack counter.
func pinSealTemplate() tpm2.TPMTPublic {
	tmpl := sealTemplate()
	tmpl.ObjectAttributes.NoDA = false
	return tmpl
}

// pinAuthValue maps pinAuth to the PIN object's authValue: 32 bytes (the
// most a SHA-256 object takes), none of them zero.
//
// Not pinAuth itself, because go-tpm v0.9.8 computes a session's HMAC key
// from the authValue cut at its first zero byte (hmacKeyFromAuthValue means
// to strip trailing zeros only, as the TPM does, Part 1, 19.6.5). Measured
// on swtpm and the simulator: an authValue with an inner zero byte never
// authorizes. LEFT(SHA-256(pin),16) has one for ~6% of PINs, and on a
// DA-protected object each right PIN would then count as a wrong one. The
// hash is no secret and no slowdown: guessing still needs this TPM.
func pinAuthValue(pinAuth []byte) []byte {
	h := sha256.New()
	h.Write([]byte(pinAuthLabel))
	h.Write(pinAuth)
	v := h.Sum(nil)
	for i, b := range v {
		v[i] = 1 + b%255
	}
	return v
}

func checkPINAuth(pinAuth []byte) error {
	if len(pinAuth) < minPINAuthSize || len(pinAuth) > maxPINAuthSize {
		return fmt.Errorf("PIN value is %d bytes, want %d..%d (e.g. LEFT(SHA-256(PIN), 16))",
			len(pinAuth), minPINAuthSize, maxPINAuthSize)
	}
	return nil
}

// CreatePINObject seals secret (1..128 bytes) in a PIN object under the
// storage primary key and returns its blob. pinAuth is a value derived from
// the PIN, 16..64 bytes: CTAP's LEFT(SHA-256(pin), 16) will do. The object
// is keyedHash sealed data, fixedTPM|fixedParent|userWithAuth, not noDA.
// The TPM2_Create runs in a salted HMAC session with parameter encryption,
// so neither the PIN-derived authValue nor the secret is in clear on the
// bus. The blob is the size of Seal's: 208 bytes for a 32-byte secret (the
// TPM pads every authValue to the digest size).
func (t *TPM) CreatePINObject(pinAuth, secret []byte) (KeyBlob, error) {
	if err := checkPINAuth(pinAuth); err != nil {
		return nil, fmt.Errorf("create PIN object: %w", err)
	}
	if len(secret) == 0 || len(secret) > maxSealSize {
		return nil, fmt.Errorf("create PIN object: secret is %d bytes, want 1..%d", len(secret), maxSealSize)
	}
	auth := pinAuthValue(pinAuth)
	defer clear(auth)

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil, errClosed
	}
	// The SRK's authorization (empty authValue) in a salted session whose
	// decrypt attribute has inSensitive, Create's first parameter, sent
	// AES-CFB encrypted.
	sess := t.saltedSession(nil, tpm2.AESEncryption(128, tpm2.EncryptIn))
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: t.srk.Handle, Name: t.srk.Name, Auth: sess},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(pinSealTemplate()),
	}.Execute(t.tpm)
	t.flushSession(sess)
	if err != nil {
		return nil, fmt.Errorf("create PIN object: %w", err)
	}
	blob := encodeBlob(rsp.OutPublic, rsp.OutPrivate)
	if o, err := parseBlob(blob); err != nil || !o.pin {
		return nil, fmt.Errorf("create PIN object: TPM returned an unexpected public area (%v)", err)
	}
	return blob, nil
}

// UnsealWithPIN loads a PIN object, unseals it with pinAuth and flushes
// everything it loaded or started. The authorization is the HMAC of a
// one-shot session salted to the SRK and bound to nothing; the secret comes
// back encrypted by the same session.
//
// Errors wrap ErrPINMismatch when the TPM refused pinAuth (and counted it),
// ErrLockout when the TPM is in dictionary-attack lockout (the right PIN is
// refused too; the message has the counter and the recovery time), and
// ErrInvalidBlob for a blob that is not a PIN object of this TPM (checked
// before any authorization, so it counts nothing).
func (t *TPM) UnsealWithPIN(blob KeyBlob, pinAuth []byte) ([]byte, error) {
	if err := checkPINAuth(pinAuth); err != nil {
		return nil, fmt.Errorf("unseal with PIN: %w", err)
	}
	o, err := parseBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("unseal with PIN: %w", err)
	}
	if !o.pin {
		// A sealed blob without PIN would open for any PIN.
		return nil, fmt.Errorf("unseal with PIN: %w: not a PIN object", ErrInvalidBlob)
	}
	auth := pinAuthValue(pinAuth)
	defer clear(auth)

	var secret []byte
	err = t.withLoaded("unseal with PIN", func(h []tpm2.NamedHandle) error {
		sess := t.saltedSession(auth, tpm2.AESEncryption(128, tpm2.EncryptOut))
		rsp, err := tpm2.Unseal{
			ItemHandle: tpm2.AuthHandle{Handle: h[0].Handle, Name: h[0].Name, Auth: sess},
		}.Execute(t.tpm)
		t.flushSession(sess)
		if err != nil {
			return t.pinError("unseal with PIN", err)
		}
		secret = rsp.OutData.Buffer
		return nil
	}, o)
	return secret, err
}

// saltedSession is a one-shot HMAC session (SHA-256, 16-byte nonces) salted
// to the SRK, bound to nothing, knowing auth, with the parameter encryption
// enc. The caller holds t.mu and passes it to flushSession after use.
func (t *TPM) saltedSession(auth []byte, enc tpm2.AuthOption) tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Auth(auth),
		tpm2.Salted(t.srk.Handle, t.srkPublic),
		enc)
}

// flushSession flushes a one-shot session if it is still loaded. The TPM
// flushes it after a successful command and go-tpm after a failed one; it is
// left only after a transport error or a failed clean-up.
func (t *TPM) flushSession(s tpm2.Session) {
	h := s.Handle()
	if h == tpm2.TPMRHNull {
		return
	}
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
		t.log.Warn("flush session failed", "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
	}
}

// pinError maps a failed PIN authorization to ErrPINMismatch or ErrLockout.
// The caller holds t.mu.
func (t *TPM) pinError(op string, err error) error {
	switch {
	case errors.Is(err, tpm2.TPMRCLockout):
		st, serr := t.daStatus()
		if serr != nil {
			return fmt.Errorf("%s: %w", op, ErrLockout)
		}
		return fmt.Errorf("%s: %w (failed tries %d of %d; one is forgiven per %v of TPM uptime)",
			op, ErrLockout, st.Counter, st.MaxTries, st.RecoveryTime)
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		return fmt.Errorf("%s: %w: %w", op, ErrPINMismatch, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
