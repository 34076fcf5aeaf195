package ctap2

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// Extension identifiers (CTAP 2.1 §12, CTAP 2.2 for hmac-secret-mc).
const (
	extHMACSecret   = "hmac-secret"
	extHMACSecretMC = "hmac-secret-mc"
	extCredBlob     = "credBlob"
	extLargeBlobKey = "largeBlobKey"
	extMinPINLength = "minPinLength"
)

// supportedExtensions is getInfo's list: exactly the ones that work.
var supportedExtensions = []string{credProtectExt, extHMACSecret, extHMACSecretMC, extCredBlob, extLargeBlobKey, extMinPINLength}

// maxCredBlobLength is getInfo's maxCredBlobLength (at least 32).
const maxCredBlobLength = 32

// credFlagHMACSecret marks a credential created with hmac-secret.
const credFlagHMACSecret = 1 << 2

// valueHMACKey is the device's TPM HMAC key: hmac-secret's CredRandom
// values are derived with it, so they exist only through this TPM.
const valueHMACKey = "hmac-secret.key"

// hmacSecretInput is the hmac-secret (and hmac-secret-mc) extension input
// (CTAP 2.1 §12.5).
type hmacSecretInput struct {
	KeyAgreement      *pinuv.COSEKey `cbor:"1,keyasint"`
	SaltEnc           []byte         `cbor:"2,keyasint"`
	SaltAuth          []byte         `cbor:"3,keyasint"`
	PinUvAuthProtocol *uint64        `cbor:"4,keyasint"`
}

// hmacSecretRequest is a validated hmac-secret input: the shared secret
// and the salts, kept for getNextAssertion.
type hmacSecretRequest struct {
	protocol pinuv.Protocol
	secret   pinuv.SharedSecret
	salts    []byte // 32 or 64 bytes
}

// parseHMACSecret validates an hmac-secret input: every part present, the
// salts authenticated and 32 or 64 bytes long.
func (a *Authenticator) parseHMACSecret(raw cbor.RawMessage) (*hmacSecretRequest, error) {
	var in hmacSecretInput
	if err := decodeParams(raw, &in); err != nil {
		return nil, err
	}
	if in.KeyAgreement == nil || in.SaltEnc == nil || in.SaltAuth == nil {
		return nil, ErrMissingParameter
	}
	version := uint64(1) // the default when absent
	if in.PinUvAuthProtocol != nil {
		version = *in.PinUvAuthProtocol
	}
	p, err := a.pin.Protocol(&version)
	if err != nil {
		return nil, err
	}
	s, err := p.Decapsulate(*in.KeyAgreement)
	if err != nil {
		return nil, ErrInvalidParameter
	}
	if !p.Verify(s.HMACKey(), in.SaltEnc, in.SaltAuth) {
		return nil, ErrPinAuthInvalid
	}
	salts, err := p.Decrypt(s, in.SaltEnc)
	if err != nil || (len(salts) != 32 && len(salts) != 64) {
		return nil, ErrInvalidLength
	}
	return &hmacSecretRequest{protocol: p, secret: s, salts: salts}, nil
}

// hmacSecretOutput computes the encrypted hmac-secret output for a
// credential: HMAC-SHA-256(CredRandom, salt1) [|| HMAC(CredRandom, salt2)],
// where CredRandom comes from the TPM's HMAC key, different with and
// without user verification (§12.5).
func (a *Authenticator) hmacSecretOutput(r *hmacSecretRequest, credID []byte, uv bool) ([]byte, error) {
	label := "passkeyd hmac-secret v1 without UV\x00"
	if uv {
		label = "passkeyd hmac-secret v1 with UV\x00"
	}
	h := sha256.Sum256(credID)
	credRandom, err := a.tpm.HMAC(a.secrets.hmacKey, append([]byte(label), h[:]...))
	if err != nil {
		return nil, fmt.Errorf("hmac-secret: %w", err)
	}
	var out []byte
	for i := 0; i < len(r.salts); i += 32 {
		m := hmac.New(sha256.New, credRandom)
		m.Write(r.salts[i : i+32])
		out = m.Sum(out)
	}
	return r.protocol.Encrypt(r.secret, out)
}

// mcExtensions are makeCredential's extension requests.
type mcExtensions struct {
	credProtect  int
	hmacSecret   bool
	hmacSecretMC *hmacSecretRequest
	credBlob     []byte
	hasCredBlob  bool
	largeBlobKey bool
	minPINLength bool
}

func boolExtension(raw cbor.RawMessage) (bool, error) {
	var v bool
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return false, ErrCBORUnexpectedType
	}
	return v, nil
}

// parseMCExtensions reads makeCredential's extensions map. Unknown
// extensions are ignored, as CTAP requires.
func (a *Authenticator) parseMCExtensions(exts map[string]cbor.RawMessage) (mcExtensions, error) {
	var e mcExtensions
	var err error
	if e.credProtect, err = parseCredProtect(exts); err != nil {
		return e, err
	}
	for name, raw := range exts {
		switch name {
		case extHMACSecret:
			e.hmacSecret, err = boolExtension(raw)
		case extHMACSecretMC:
			e.hmacSecretMC, err = a.parseHMACSecret(raw)
		case extCredBlob:
			if err = decMode.Unmarshal(raw, &e.credBlob); err != nil {
				err = ErrCBORUnexpectedType
			}
			e.hasCredBlob = true
		case extLargeBlobKey:
			if e.largeBlobKey, err = boolExtension(raw); err == nil && !e.largeBlobKey {
				err = ErrInvalidOption // only true is meaningful (§12.3)
			}
		case extMinPINLength:
			e.minPINLength, err = boolExtension(raw)
		}
		if err != nil {
			return e, err
		}
	}
	if e.hmacSecretMC != nil && !e.hmacSecret {
		e.hmacSecretMC = nil // hmac-secret-mc only with hmac-secret
	}
	return e, nil
}

// mcExtensionOutputs builds the authenticator-data extension outputs of
// makeCredential; nil when there are none.
func (a *Authenticator) mcExtensionOutputs(e mcExtensions, rpID string, rk bool, credID []byte, uv bool) (map[string]any, error) {
	out := map[string]any{}
	if e.credProtect != 0 {
		out[credProtectExt] = e.credProtect
	}
	if e.hmacSecret {
		out[extHMACSecret] = true
	}
	if e.hmacSecretMC != nil {
		v, err := a.hmacSecretOutput(e.hmacSecretMC, credID, uv)
		if err != nil {
			return nil, err
		}
		out[extHMACSecretMC] = v
	}
	if e.hasCredBlob {
		// Stored only with a discoverable credential, and only whole.
		out[extCredBlob] = rk && len(e.credBlob) <= maxCredBlobLength
	}
	if e.minPINLength {
		if n, ok := a.pin.MinPINLengthFor(rpID); ok {
			out[extMinPINLength] = n
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// gaExtensions are getAssertion's extension requests.
type gaExtensions struct {
	hmacSecret   *hmacSecretRequest
	credBlob     bool
	largeBlobKey bool
}

func (a *Authenticator) parseGAExtensions(exts map[string]cbor.RawMessage) (gaExtensions, error) {
	var e gaExtensions
	var err error
	for name, raw := range exts {
		switch name {
		case extHMACSecret:
			e.hmacSecret, err = a.parseHMACSecret(raw)
		case extCredBlob:
			e.credBlob, err = boolExtension(raw)
		case extLargeBlobKey:
			if e.largeBlobKey, err = boolExtension(raw); err == nil && !e.largeBlobKey {
				err = ErrInvalidOption
			}
		}
		if err != nil {
			return e, err
		}
	}
	return e, nil
}

// gaExtensionOutputs builds getAssertion's extension outputs for c. up
// says whether the person was present: without presence no value bound to
// the credential leaves (hmac-secret was refused earlier; credBlob is
// omitted, as largeBlobKey is).
func (a *Authenticator) gaExtensionOutputs(e gaExtensions, c assertionCredential, up, uv bool) (map[string]any, error) {
	if !up {
		return nil, nil
	}
	out := map[string]any{}
	if e.hmacSecret != nil && c.hmacSecret {
		v, err := a.hmacSecretOutput(e.hmacSecret, c.id, uv)
		if err != nil {
			return nil, err
		}
		out[extHMACSecret] = v
	}
	if e.credBlob {
		blob := []byte{}
		if c.stored != nil && c.stored.CredBlob != nil {
			blob = c.stored.CredBlob
		}
		out[extCredBlob] = blob
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// newLargeBlobKey is a credential's random largeBlobKey (§12.3).
func newLargeBlobKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}

// loadHMACKey returns the device HMAC key, creating it on first use.
func loadHMACKey(t TPM, s Store) (tpm.KeyBlob, error) {
	blob, err := s.Get(valueHMACKey)
	if err == nil {
		return blob, nil
	}
	if !isNotFound(err) {
		return nil, fmt.Errorf("read hmac-secret key: %w", err)
	}
	blob, err = t.CreateHMACKey()
	if err != nil {
		return nil, err
	}
	if err := s.Put(valueHMACKey, blob); err != nil {
		return nil, fmt.Errorf("store hmac-secret key: %w", err)
	}
	return blob, nil
}
