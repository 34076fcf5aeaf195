// Package pinuv implements the authenticator side of the CTAP 2.1 PIN/UV
// auth protocols: the abstract interface of §6.5.4 with PIN/UV Auth Protocol
// One (§6.5.6) and PIN/UV Auth Protocol Two (§6.5.7), and the pinUvAuthToken
// state of §6.5.2.1 with its maintenance operations (beginUsingPinUvAuthToken,
// pinUvAuthTokenUsageTimerObserver, the flag getters and clearers,
// clearPinUvAuthTokenPermissionsExceptLbw, stopUsingPinUvAuthToken).
//
// The package is cryptography and state only. CBOR decoding, status codes,
// the stored PIN hash and the retry counters belong to the
// authenticatorClientPIN handler that uses it. The errors it returns wrap
// ErrInvalidKey, ErrInvalidLength or ErrWrongSecret so that the handler can
// pick a status code with errors.Is.
//
// Spec references are to "Client to Authenticator Protocol (CTAP)", Proposed
// Standard, 15 June 2021 (errata 21 June 2022).
//
// At power-up (§6.5.5.1) the authenticator calls initialize() for every
// protocol it supports: here NewProtocolOne, NewProtocolTwo (each generates a
// key agreement key, regenerate()) and NewToken (resetPinUvAuthToken()).
// The key agreement key and the token live in memory only.
//
// Layer: protocol. Pure cryptography and token state: no TPM, no store, no
// CBOR; the retry counters and the PIN object belong to ctap2's clientPIN.
package pinuv

import (
	"errors"
)

// Errors wrapped by the errors of this package.
var (
	// ErrInvalidKey: the platform's key agreement key is not a COSE_Key of
	// the form getPublicKey() produces (§6.5.6), or its point is not on
	// P-256. §6.5.5 answers such a keyAgreement with
	// CTAP1_ERR_INVALID_PARAMETER.
	ErrInvalidKey = errors.New("pinuv: invalid key agreement key")
	// ErrInvalidLength: a plaintext or ciphertext whose length the protocol
	// cannot take (not a multiple of the AES block length; for protocol two,
	// shorter than the IV).
	ErrInvalidLength = errors.New("pinuv: invalid length")
	// ErrWrongSecret: a SharedSecret that the protocol did not derive (a
	// zero SharedSecret, or one derived by the other protocol).
	ErrWrongSecret = errors.New("pinuv: shared secret not derived by this protocol")
)

// COSE_Key values of a key agreement key (§6.5.6 getPublicKey, RFC 9053).
const (
	// KeyTypeEC2 is kty 2, an elliptic-curve key with x and y coordinates.
	KeyTypeEC2 = 2
	// AlgECDHESHKDF256 is alg -25, ECDH-ES + HKDF-256. §6.5.6 puts it in the
	// key "although this is NOT the algorithm actually used".
	AlgECDHESHKDF256 = -25
	// CurveP256 is crv 1, NIST P-256.
	CurveP256 = 1
)

// Protocol is a PIN/UV auth protocol, authenticator side (§6.5.4). Its
// methods are safe for concurrent use.
type Protocol interface {
	// Version is the protocol's pinUvAuthProtocol number: 1 or 2.
	Version() int
	// PublicKey is getPublicKey(): the current key agreement public key as
	// a COSE_Key (kty 2, alg -25, crv 1, 32-byte x and y), ready for CBOR
	// encoding in the getKeyAgreement response.
	PublicKey() COSEKey
	// Regenerate is regenerate(): a fresh key agreement key pair. The
	// spec calls it at power-up (initialize) and at the points §6.5.5
	// names (e.g. after a PIN mismatch).
	Regenerate() error
	// Decapsulate is decapsulate(peerCoseKey): ECDH between the current key
	// agreement private key and the platform's key, then kdf(Z). The
	// platform's key must have kty 2, alg -25, crv 1 and 32-byte
	// coordinates of a point on P-256; otherwise the error wraps
	// ErrInvalidKey.
	Decapsulate(peer COSEKey) (SharedSecret, error)
	// Encrypt is encrypt(key, demPlaintext): AES-256-CBC without padding,
	// with an all-zero IV (one) or a random IV that prefixes the result
	// (two). The plaintext must be a multiple of 16 bytes long.
	Encrypt(s SharedSecret, plaintext []byte) ([]byte, error)
	// Decrypt is decrypt(key, demCiphertext). It fails on a ciphertext
	// that is not a multiple of 16 bytes long or, for protocol two,
	// shorter than its 16-byte IV. It removes no padding.
	Decrypt(s SharedSecret, ciphertext []byte) ([]byte, error)
	// Authenticate is authenticate(key, message): HMAC-SHA-256, truncated
	// to 16 bytes (one) or whole, 32 bytes, with key cut to 32 bytes
	// (two). key is a SharedSecret's HMACKey or a pinUvAuthToken.
	Authenticate(key, msg []byte) []byte
	// Verify is verify(key, message, signature) without the token check
	// (Token.Verify adds it): true if signature is exactly as long as the
	// protocol's MAC (16 or 32 bytes) and equal to Authenticate(key, msg),
	// compared in constant time. Keys shorter than 32 bytes never verify.
	Verify(key, msg, signature []byte) bool
}

// COSEKey is the COSE_Key of a key agreement key (§6.5.6 getPublicKey):
// the authenticator's in the getKeyAgreement response, the platform's in
// the keyAgreement parameter of authenticatorClientPIN.
type COSEKey struct {
	Kty int    `cbor:"1,keyasint"`
	Alg int    `cbor:"3,keyasint"`
	Crv int    `cbor:"-1,keyasint"`
	X   []byte `cbor:"-2,keyasint"`
	Y   []byte `cbor:"-3,keyasint"`
}

// SharedSecret is the output of decapsulate: for protocol one the 32-byte
// SHA-256(Z), for protocol two the 32-byte HMAC key and the 32-byte AES key
// (§6.5.7 kdf). The zero value is no secret: Encrypt and Decrypt refuse it.
type SharedSecret struct {
	version int    // protocol that derived it; 0 for the zero value
	hmacKey []byte // 32 bytes
	aesKey  []byte // 32 bytes; for protocol one the same bytes as hmacKey
}

// HMACKey returns a copy of the key that authenticate/verify use with this
// secret, e.g. to verify the pinUvAuthParam of setPIN and changePIN: for
// protocol one the whole 32-byte secret, for protocol two its first 32
// bytes (the "CTAP2 HMAC key" half). It is nil for the zero SharedSecret.
func (s SharedSecret) HMACKey() []byte {
	if s.hmacKey == nil {
		return nil
	}
	return append([]byte(nil), s.hmacKey...)
}
