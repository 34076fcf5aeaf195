package ctaptest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// COSEKey is a key agreement key as a COSE_Key (§6.5.6 getPublicKey):
// kty 2, alg -25, crv 1 and the 32-byte P-256 coordinates. It has the
// fields and CBOR keys of pinuv.COSEKey, so either converts to the other.
type COSEKey struct {
	Kty int    `cbor:"1,keyasint"`
	Alg int    `cbor:"3,keyasint"`
	Crv int    `cbor:"-1,keyasint"`
	X   []byte `cbor:"-2,keyasint"`
	Y   []byte `cbor:"-3,keyasint"`
}

// Session is the platform's half of one key agreement: its ephemeral key
// (sent as keyAgreement) and the shared secret (§6.5.6, §6.5.7).
type Session struct {
	// Version is the pinUvAuthProtocol: 1 or 2.
	Version int
	// PublicKey is the platform's key agreement key, the keyAgreement
	// parameter of clientPIN and of hmac-secret.
	PublicKey COSEKey
	secret    []byte // 32 bytes (one) or HMAC key || AES key (two)
}

// Encapsulate is the platform's encapsulate(peerCoseKey) for protocol
// version 1 or 2: ECDH with the authenticator's key peer, then kdf(Z).
// priv is the platform's key; nil makes a fresh one.
func Encapsulate(version int, peer COSEKey, priv *ecdh.PrivateKey) (*Session, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("ctaptest: no PIN/UV auth protocol %d", version)
	}
	if priv == nil {
		var err error
		if priv, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	pub, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, peer.X...), peer.Y...))
	if err != nil {
		return nil, fmt.Errorf("ctaptest: authenticator key agreement key: %w", err)
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	b := priv.PublicKey().Bytes()
	return &Session{
		Version:   version,
		PublicKey: COSEKey{Kty: 2, Alg: -25, Crv: 1, X: b[1:33], Y: b[33:]},
		secret:    KDF(version, z),
	}, nil
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// hkdf32 is HKDF-SHA-256 with L = 32 (RFC 5869 §2.2, §2.3): PRK =
// HMAC(salt, IKM); T(1) = HMAC(PRK, info || 0x01).
func hkdf32(salt, ikm []byte, info string) []byte {
	return hmacSHA256(hmacSHA256(salt, ikm), append([]byte(info), 0x01))
}

// KDF is kdf(Z): SHA-256(Z) for protocol one (§6.5.6), and for protocol
// two (§6.5.7) HKDF-SHA-256 with a salt of 32 zero bytes, "CTAP2 HMAC key"
// || "CTAP2 AES key" (64 bytes).
func KDF(version int, z []byte) []byte {
	if version == 1 {
		s := sha256.Sum256(z)
		return s[:]
	}
	salt := make([]byte, 32)
	return append(hkdf32(salt, z, "CTAP2 HMAC key"), hkdf32(salt, z, "CTAP2 AES key")...)
}

// Secret is the shared secret as the platform holds it: 32 bytes for
// protocol one, HMAC key || AES key (64 bytes) for protocol two.
func (s *Session) Secret() []byte { return s.secret }

// HMACKey is the key of authenticate with the shared secret (the whole
// secret for one, its first 32 bytes for two).
func (s *Session) HMACKey() []byte { return s.secret[:32] }

// AESKey is the key of encrypt and decrypt (the whole secret for one, its
// last 32 bytes for two).
func (s *Session) AESKey() []byte {
	if s.Version == 1 {
		return s.secret
	}
	return s.secret[32:]
}

// Encrypt is encrypt(key, demPlaintext) with a random IV (protocol two).
func (s *Session) Encrypt(plaintext []byte) ([]byte, error) { return s.EncryptIV(plaintext, nil) }

// EncryptIV is Encrypt with the IV of protocol two given (nil: random);
// protocol one ignores iv (all zero, §6.5.6). plaintext must be whole AES
// blocks.
func (s *Session) EncryptIV(plaintext, iv []byte) ([]byte, error) {
	if len(plaintext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("ctaptest: encrypt: %d bytes are not whole AES blocks", len(plaintext))
	}
	b, err := aes.NewCipher(s.AESKey())
	if err != nil {
		return nil, err
	}
	if s.Version == 1 {
		out := make([]byte, len(plaintext))
		cipher.NewCBCEncrypter(b, make([]byte, aes.BlockSize)).CryptBlocks(out, plaintext)
		return out, nil
	}
	if iv == nil {
		iv = make([]byte, aes.BlockSize)
		if _, err := rand.Read(iv); err != nil {
			return nil, err
		}
	}
	out := make([]byte, aes.BlockSize+len(plaintext))
	copy(out, iv)
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out[aes.BlockSize:], plaintext)
	return out, nil
}

// Decrypt is decrypt(key, demCiphertext): for protocol two the first 16
// bytes are the IV.
func (s *Session) Decrypt(ciphertext []byte) ([]byte, error) {
	b, err := aes.NewCipher(s.AESKey())
	if err != nil {
		return nil, err
	}
	iv := make([]byte, aes.BlockSize)
	if s.Version == 2 {
		if len(ciphertext) < aes.BlockSize {
			return nil, errors.New("ctaptest: decrypt: ciphertext shorter than the IV")
		}
		iv, ciphertext = ciphertext[:aes.BlockSize], ciphertext[aes.BlockSize:]
	}
	if len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("ctaptest: decrypt: %d bytes are not whole AES blocks", len(ciphertext))
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, ciphertext)
	return out, nil
}

// Authenticate is authenticate(key, message) of the session's protocol.
func (s *Session) Authenticate(key, msg []byte) []byte { return Authenticate(s.Version, key, msg) }

// Authenticate is authenticate(key, message): the first 16 bytes of
// HMAC-SHA-256 (protocol one, §6.5.6), all 32 with the key cut to 32 bytes
// (protocol two, §6.5.7). With a pinUvAuthToken as key it makes a
// pinUvAuthParam.
func Authenticate(version int, key, msg []byte) []byte {
	if version == 1 {
		return hmacSHA256(key, msg)[:16]
	}
	if len(key) > 32 {
		key = key[:32]
	}
	return hmacSHA256(key, msg)
}

// PadPIN is a PIN padded with zeros to 64 bytes (§6.5.5.5 newPinEnc); a
// PIN of 64 bytes or more is returned unpadded, whole.
func PadPIN(pin string) []byte {
	b := make([]byte, max(64, len(pin)))
	copy(b, pin)
	return b
}

// PINHash is LEFT(SHA-256(pin), 16), what pinHashEnc encrypts (§6.5.5.6).
func PINHash(pin string) []byte {
	h := sha256.Sum256([]byte(pin))
	return h[:16]
}
