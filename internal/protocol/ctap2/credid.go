package ctap2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// A credential ID carries everything needed to use its key, so that
// non-discoverable credentials need no storage (CTAP 2.1 §6.1.2 step 17,
// "wrap the private key"): here the "private key" is the TPM's own
// encrypted key blob, and the wrapping authenticates it and binds it to
// the relying party and the credential's options.
//
//	version(1) | flags(1) | credProtect(1) | alg(1) | nonce(12) | AES-256-GCM(keyBlob) | tag(16)
//
// The header and the rpIdHash are the GCM additional data, so an ID from
// another authenticator, another RP or with a flipped option fails
// authentication before any TPM command runs.
const (
	credIDVersion    = 1
	credIDHeaderLen  = 4
	credIDNonceLen   = 12
	credIDTagLen     = 16
	credIDOverhead   = credIDHeaderLen + credIDNonceLen + credIDTagLen
	maxKeyBlobLen    = 1024
	maxCredentialIDs = credIDOverhead + maxKeyBlobLen
)

// Flags of a credential ID.
const (
	credFlagDiscoverable = 1 << 0 // the credential also lives in the store
	credFlagU2F          = 1 << 1 // created by U2F REGISTER
)

// credAlgCodes maps the algorithm to its one-byte code in the ID.
var credAlgCodes = map[tpm.Algorithm]byte{tpm.ES256: 1, tpm.RS256: 2}

// wrappedCredential is the content of a credential ID.
type wrappedCredential struct {
	Flags       byte
	CredProtect byte
	Alg         tpm.Algorithm
	KeyBlob     tpm.KeyBlob
}

func (w wrappedCredential) discoverable() bool { return w.Flags&credFlagDiscoverable != 0 }

var errForeignCredential = errors.New("credential ID not issued by this authenticator for this RP")

// credIDWrapper seals and opens credential IDs with the device wrapping key.
type credIDWrapper struct{ aead cipher.AEAD }

func newCredIDWrapper(key []byte) (*credIDWrapper, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("credential wrapping key: want 32 bytes, have %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("credential wrapping key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("credential wrapping key: %w", err)
	}
	return &credIDWrapper{aead: aead}, nil
}

func additionalData(header []byte, rpIDHash []byte) []byte {
	ad := make([]byte, 0, len(header)+len(rpIDHash))
	return append(append(ad, header...), rpIDHash...)
}

// wrap builds the credential ID for w, bound to rpIDHash.
func (c *credIDWrapper) wrap(w wrappedCredential, rpIDHash []byte) ([]byte, error) {
	code, ok := credAlgCodes[w.Alg]
	if !ok {
		return nil, fmt.Errorf("wrap credential: unsupported algorithm %d", w.Alg)
	}
	if len(w.KeyBlob) == 0 || len(w.KeyBlob) > maxKeyBlobLen {
		return nil, fmt.Errorf("wrap credential: key blob of %d bytes", len(w.KeyBlob))
	}
	id := make([]byte, credIDHeaderLen+credIDNonceLen, credIDOverhead+len(w.KeyBlob))
	id[0], id[1], id[2], id[3] = credIDVersion, w.Flags, w.CredProtect, code
	if _, err := rand.Read(id[credIDHeaderLen:]); err != nil {
		return nil, fmt.Errorf("wrap credential: %w", err)
	}
	nonce := id[credIDHeaderLen : credIDHeaderLen+credIDNonceLen]
	return c.aead.Seal(id, nonce, w.KeyBlob, additionalData(id[:credIDHeaderLen], rpIDHash)), nil
}

// unwrap opens a credential ID presented for rpIDHash. Any ID that this
// authenticator did not issue for that RP yields errForeignCredential.
func (c *credIDWrapper) unwrap(id []byte, rpIDHash []byte) (wrappedCredential, error) {
	if len(id) <= credIDOverhead || len(id) > maxCredentialIDs || id[0] != credIDVersion {
		return wrappedCredential{}, errForeignCredential
	}
	var alg tpm.Algorithm
	for a, code := range credAlgCodes {
		if code == id[3] {
			alg = a
		}
	}
	if alg == 0 || id[2] > 3 {
		return wrappedCredential{}, errForeignCredential
	}
	nonce := id[credIDHeaderLen : credIDHeaderLen+credIDNonceLen]
	blob, err := c.aead.Open(nil, nonce, id[credIDHeaderLen+credIDNonceLen:], additionalData(id[:credIDHeaderLen], rpIDHash))
	if err != nil {
		return wrappedCredential{}, errForeignCredential
	}
	return wrappedCredential{Flags: id[1], CredProtect: id[2], Alg: alg, KeyBlob: blob}, nil
}
