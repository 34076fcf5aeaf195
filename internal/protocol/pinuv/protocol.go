package pinuv

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
)

const (
	coordSize = 32 // bytes of a P-256 coordinate (§6.5.6 getPublicKey)
	keySize   = 32 // bytes of every HMAC and AES key, and of a pinUvAuthToken
	ivSize    = aes.BlockSize
)

// Protocol two's kdf inputs (§6.5.7).
var (
	hkdfSalt = make([]byte, 32) // "salt = 32 zero bytes"
)

const (
	hkdfInfoHMAC = "CTAP2 HMAC key"
	hkdfInfoAES  = "CTAP2 AES key"
)

// protocol implements both protocols; version selects the §6.5.6 or §6.5.7
// definition where they differ.
type protocol struct {
	version int

	mu   sync.RWMutex
	priv *ecdh.PrivateKey // the key agreement key
}

// NewProtocolOne returns PIN/UV Auth Protocol One (§6.5.6) with a fresh key
// agreement key (initialize()).
func NewProtocolOne() (Protocol, error) { return newProtocol(1) }

// NewProtocolTwo returns PIN/UV Auth Protocol Two (§6.5.7) with a fresh key
// agreement key (initialize()).
func NewProtocolTwo() (Protocol, error) { return newProtocol(2) }

func newProtocol(version int) (*protocol, error) {
	p := &protocol{version: version}
	if err := p.Regenerate(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *protocol) Version() int { return p.version }

// Regenerate is regenerate() (§6.5.6, shared by §6.5.7): "Generate a fresh,
// random P-256 private key". Shared secrets derived before stay usable;
// new decapsulations use the new key.
func (p *protocol) Regenerate() error {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("pinuv: protocol %d: generate key agreement key: %w", p.version, err)
	}
	p.mu.Lock()
	p.priv = k
	p.mu.Unlock()
	return nil
}

func (p *protocol) key() *ecdh.PrivateKey {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.priv
}

// PublicKey is getPublicKey() (§6.5.6): kty 2 (EC2), alg -25, crv 1 (P-256)
// and the 32-byte big-endian coordinates. The slices are the caller's.
func (p *protocol) PublicKey() COSEKey {
	b := p.key().PublicKey().Bytes() // 0x04 || x || y
	return COSEKey{
		Kty: KeyTypeEC2,
		Alg: AlgECDHESHKDF256,
		Crv: CurveP256,
		X:   append([]byte(nil), b[1:1+coordSize]...),
		Y:   append([]byte(nil), b[1+coordSize:]...),
	}
}

// peerKey parses peerCoseKey "as specified for getPublicKey" and produces a
// P-256 point, failing "if unsuccessful, or if the resulting point is not on
// the curve" (§6.5.6 ecdh).
func peerKey(k COSEKey) (*ecdh.PublicKey, error) {
	switch {
	case k.Kty != KeyTypeEC2:
		return nil, fmt.Errorf("%w: kty %d, want %d (EC2)", ErrInvalidKey, k.Kty, KeyTypeEC2)
	case k.Alg != AlgECDHESHKDF256:
		return nil, fmt.Errorf("%w: alg %d, want %d (ECDH-ES+HKDF-256)", ErrInvalidKey, k.Alg, AlgECDHESHKDF256)
	case k.Crv != CurveP256:
		return nil, fmt.Errorf("%w: crv %d, want %d (P-256)", ErrInvalidKey, k.Crv, CurveP256)
	case len(k.X) != coordSize || len(k.Y) != coordSize:
		return nil, fmt.Errorf("%w: coordinates of %d and %d bytes, want %d", ErrInvalidKey, len(k.X), len(k.Y), coordSize)
	}
	b := make([]byte, 0, 1+2*coordSize)
	b = append(b, 0x04)
	b = append(b, k.X...)
	b = append(b, k.Y...)
	// NewPublicKey rejects coordinates >= p and points not on the curve.
	pub, err := ecdh.P256().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: not a point on P-256", ErrInvalidKey)
	}
	return pub, nil
}

// Decapsulate is decapsulate(peerCoseKey) → ecdh(peerCoseKey) (§6.5.6):
// Z is the 32-byte big-endian x-coordinate of the shared point, and the
// result is kdf(Z).
func (p *protocol) Decapsulate(peer COSEKey) (SharedSecret, error) {
	pub, err := peerKey(peer)
	if err != nil {
		return SharedSecret{}, fmt.Errorf("pinuv: protocol %d: decapsulate: %w", p.version, err)
	}
	z, err := p.key().ECDH(pub) // crypto/ecdh returns the x-coordinate
	if err != nil {
		return SharedSecret{}, fmt.Errorf("pinuv: protocol %d: decapsulate: %w: %v", p.version, ErrInvalidKey, err)
	}
	return p.kdf(z)
}

// kdf is §6.5.6 kdf(Z) = SHA-256(Z) for protocol one, and for protocol two
// §6.5.7 kdf(Z) = HKDF-SHA-256(salt, Z, L = 32, info = "CTAP2 HMAC key") ||
// HKDF-SHA-256(salt, Z, L = 32, info = "CTAP2 AES key") with salt 32 zero
// bytes.
func (p *protocol) kdf(z []byte) (SharedSecret, error) {
	if p.version == 1 {
		sum := sha256.Sum256(z)
		return SharedSecret{version: 1, hmacKey: sum[:], aesKey: sum[:]}, nil
	}
	hmacKey, err := hkdf.Key(sha256.New, z, hkdfSalt, hkdfInfoHMAC, keySize)
	if err != nil {
		return SharedSecret{}, fmt.Errorf("pinuv: protocol 2: kdf: %w", err)
	}
	aesKey, err := hkdf.Key(sha256.New, z, hkdfSalt, hkdfInfoAES, keySize)
	if err != nil {
		return SharedSecret{}, fmt.Errorf("pinuv: protocol 2: kdf: %w", err)
	}
	return SharedSecret{version: 2, hmacKey: hmacKey, aesKey: aesKey}, nil
}

// blockCipher checks that s came from this protocol and returns its AES-256
// key schedule. For protocol two this is §6.5.7's "Discard the first 32
// bytes of key".
func (p *protocol) blockCipher(s SharedSecret, op string) (cipher.Block, error) {
	if s.version != p.version {
		return nil, fmt.Errorf("pinuv: protocol %d: %s: %w (secret of protocol %d)", p.version, op, ErrWrongSecret, s.version)
	}
	if len(s.aesKey) != keySize {
		return nil, fmt.Errorf("pinuv: protocol %d: %s: %w (AES key of %d bytes)", p.version, op, ErrWrongSecret, len(s.aesKey))
	}
	b, err := aes.NewCipher(s.aesKey)
	if err != nil {
		return nil, fmt.Errorf("pinuv: protocol %d: %s: %w", p.version, op, err)
	}
	return b, nil
}

// Encrypt is encrypt(key, demPlaintext). §6.5.6: "the AES-256-CBC
// encryption of demPlaintext using an all-zero IV". §6.5.7: a 16-byte random
// iv, and the result is iv || ct. In both "no padding is performed as the
// size of demPlaintext is required to be a multiple of the AES block
// length"; other sizes are an error here.
func (p *protocol) Encrypt(s SharedSecret, plaintext []byte) ([]byte, error) {
	b, err := p.blockCipher(s, "encrypt")
	if err != nil {
		return nil, err
	}
	if len(plaintext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("pinuv: protocol %d: encrypt: %w: plaintext of %d bytes is not a multiple of %d",
			p.version, ErrInvalidLength, len(plaintext), aes.BlockSize)
	}
	if p.version == 1 {
		out := make([]byte, len(plaintext))
		cipher.NewCBCEncrypter(b, make([]byte, ivSize)).CryptBlocks(out, plaintext)
		return out, nil
	}
	out := make([]byte, ivSize+len(plaintext))
	iv := out[:ivSize]
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("pinuv: protocol 2: encrypt: random IV: %w", err)
	}
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out[ivSize:], plaintext)
	return out, nil
}

// Decrypt is decrypt(key, demCiphertext). §6.5.6: "If the size of
// demCiphertext is not a multiple of the AES block length, return error.
// Otherwise return the AES-256-CBC decryption of demCiphertext using an
// all-zero IV." §6.5.7: "If demCiphertext is less than 16 bytes in length,
// return an error", split it into iv and ct after the 16th byte, and decrypt
// ct with iv; ct too must be whole blocks.
func (p *protocol) Decrypt(s SharedSecret, ciphertext []byte) ([]byte, error) {
	b, err := p.blockCipher(s, "decrypt")
	if err != nil {
		return nil, err
	}
	iv := make([]byte, ivSize)
	ct := ciphertext
	if p.version == 2 {
		if len(ciphertext) < ivSize {
			return nil, fmt.Errorf("pinuv: protocol 2: decrypt: %w: ciphertext of %d bytes is shorter than the %d-byte IV",
				ErrInvalidLength, len(ciphertext), ivSize)
		}
		copy(iv, ciphertext[:ivSize])
		ct = ciphertext[ivSize:]
	}
	if len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("pinuv: protocol %d: decrypt: %w: ciphertext of %d bytes is not a multiple of %d",
			p.version, ErrInvalidLength, len(ct), aes.BlockSize)
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, ct)
	return out, nil
}

// macLen is the length of authenticate's result: "the first 16 bytes of
// the result of computing HMAC-SHA-256" (§6.5.6), the whole result (§6.5.7).
func (p *protocol) macLen() int {
	if p.version == 1 {
		return 16
	}
	return sha256.Size
}

// macKey applies §6.5.7 authenticate/verify step 1: "If key is longer than
// 32 bytes, discard the excess."
func (p *protocol) macKey(key []byte) []byte {
	if p.version == 2 && len(key) > keySize {
		return key[:keySize]
	}
	return key
}

// Authenticate is authenticate(key, message) (§6.5.6, §6.5.7).
func (p *protocol) Authenticate(key, msg []byte) []byte {
	m := hmac.New(sha256.New, p.macKey(key))
	m.Write(msg)
	return m.Sum(nil)[:p.macLen()]
}

// Verify is verify(key, message, signature) (§6.5.6, §6.5.7) for a key that
// is not the pinUvAuthToken, or whose in-use check the caller made (see
// Token.Verify): success "if signature is 16 [32] bytes and is equal to the
// first 16 bytes of [equal to] the result". Every key of these protocols is
// 32 bytes (shared-secret HMAC keys, pinUvAuthTokens); a shorter one, such as
// the empty key of a zero value, never verifies.
func (p *protocol) Verify(key, msg, signature []byte) bool {
	key = p.macKey(key)
	if len(key) < keySize || len(signature) != p.macLen() {
		return false
	}
	return hmac.Equal(p.Authenticate(key, msg), signature)
}
