package pinuv

// The platform side of the PIN/UV auth protocols, written for the tests from
// the spec text of §6.5.6 and §6.5.7 (encapsulate, kdf, encrypt, decrypt,
// authenticate) without the package's code paths: HKDF is spelled out from
// RFC 5869, AES-CBC is run through crypto/cipher directly.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// platform is one platform-side encapsulation: its ephemeral key and the
// shared secret as the platform holds it (32 bytes for protocol one,
// HMAC key || AES key for protocol two).
type platform struct {
	version int
	priv    *ecdh.PrivateKey
	secret  []byte
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// hkdf32 is HKDF-SHA-256 with L = 32 (RFC 5869 §2.2, §2.3): PRK =
// HMAC(salt, IKM); T(1) = HMAC(PRK, info || 0x01).
func hkdf32(salt, ikm []byte, info string) []byte {
	prk := hmacSHA256(salt, ikm)
	return hmacSHA256(prk, append([]byte(info), 0x01))
}

// platformKDF is kdf(Z) of §6.5.6 (SHA-256(Z)) and §6.5.7 (HKDF with a salt
// of 32 zero bytes, "CTAP2 HMAC key" || "CTAP2 AES key").
func platformKDF(version int, z []byte) []byte {
	if version == 1 {
		s := sha256.Sum256(z)
		return s[:]
	}
	salt := make([]byte, 32)
	return append(hkdf32(salt, z, "CTAP2 HMAC key"), hkdf32(salt, z, "CTAP2 AES key")...)
}

// encapsulate is the platform's encapsulate(peerCoseKey) with a fresh key,
// or with priv when given.
func encapsulate(tb testing.TB, version int, peer COSEKey, priv *ecdh.PrivateKey) (*platform, COSEKey) {
	tb.Helper()
	if priv == nil {
		var err error
		if priv, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			tb.Fatal(err)
		}
	}
	pub, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, peer.X...), peer.Y...))
	if err != nil {
		tb.Fatalf("authenticator key: %v", err)
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		tb.Fatal(err)
	}
	b := priv.PublicKey().Bytes()
	key := COSEKey{Kty: 2, Alg: -25, Crv: 1, X: b[1:33], Y: b[33:]}
	return &platform{version: version, priv: priv, secret: platformKDF(version, z)}, key
}

func (p *platform) hmacKey() []byte { return p.secret[:32] }

func (p *platform) aesKey() []byte {
	if p.version == 1 {
		return p.secret
	}
	return p.secret[32:]
}

// encrypt is encrypt(key, demPlaintext); iv is used by protocol two (nil:
// random).
func (p *platform) encrypt(tb testing.TB, plaintext, iv []byte) []byte {
	tb.Helper()
	b, err := aes.NewCipher(p.aesKey())
	if err != nil {
		tb.Fatal(err)
	}
	if p.version == 1 {
		out := make([]byte, len(plaintext))
		cipher.NewCBCEncrypter(b, make([]byte, 16)).CryptBlocks(out, plaintext)
		return out
	}
	if iv == nil {
		iv = make([]byte, 16)
		rand.Read(iv)
	}
	out := make([]byte, len(plaintext))
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, plaintext)
	return append(append([]byte(nil), iv...), out...)
}

func (p *platform) decrypt(tb testing.TB, ciphertext []byte) []byte {
	tb.Helper()
	b, err := aes.NewCipher(p.aesKey())
	if err != nil {
		tb.Fatal(err)
	}
	iv := make([]byte, 16)
	if p.version == 2 {
		iv, ciphertext = ciphertext[:16], ciphertext[16:]
	}
	if len(ciphertext)%16 != 0 {
		tb.Fatalf("ciphertext of %d bytes", len(ciphertext))
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, ciphertext)
	return out
}

// authenticate is authenticate(key, message): the first 16 bytes of
// HMAC-SHA-256 (one), all 32 with the key cut to 32 bytes (two).
func (p *platform) authenticate(key, msg []byte) []byte {
	if p.version == 1 {
		return hmacSHA256(key, msg)[:16]
	}
	if len(key) > 32 {
		key = key[:32]
	}
	return hmacSHA256(key, msg)
}

// padPIN pads a PIN with zeros to 64 bytes (§6.5.5.5).
func padPIN(pin string) []byte {
	b := make([]byte, 64)
	copy(b, pin)
	return b
}

func pinHash(pin string) []byte {
	h := sha256.Sum256([]byte(pin))
	return h[:16]
}

func TestPlatformHelpersMatchRFC5869(t *testing.T) {
	// RFC 5869 A.1 (HKDF-SHA-256, L = 42): the first 32 bytes of OKM.
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt := mustHex(t, "000102030405060708090a0b0c")
	info := string(mustHex(t, "f0f1f2f3f4f5f6f7f8f9"))
	want := mustHex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
	if got := hkdf32(salt, ikm, info); !bytes.Equal(got, want) {
		t.Fatalf("hkdf32 = %x, want %x", got, want)
	}
}
