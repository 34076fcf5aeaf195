package pinuv

// The platform side of the PIN/UV auth protocols is internal/ctaptest's,
// written from the spec text of §6.5.6 and §6.5.7 (encapsulate, kdf,
// encrypt, decrypt, authenticate) without this package's code paths: HKDF
// spelled out from RFC 5869 (checked against its test vector there),
// AES-CBC run through crypto/cipher directly. These tests compare the two.

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
)

// platform is one platform-side encapsulation (s) for a protocol version.
type platform struct {
	version int
	s       *ctaptest.Session
	secret  []byte // 32 bytes (one) or HMAC key || AES key (two)
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

// platformKDF is kdf(Z) of §6.5.6 and §6.5.7, platform side.
func platformKDF(version int, z []byte) []byte { return ctaptest.KDF(version, z) }

// encapsulate is the platform's encapsulate(peerCoseKey) with a fresh key,
// or with priv when given.
func encapsulate(tb testing.TB, version int, peer COSEKey, priv *ecdh.PrivateKey) (*platform, COSEKey) {
	tb.Helper()
	s, err := ctaptest.Encapsulate(version, ctaptest.COSEKey(peer), priv)
	if err != nil {
		tb.Fatal(err)
	}
	return &platform{version: version, s: s, secret: s.Secret()}, COSEKey(s.PublicKey)
}

func (p *platform) hmacKey() []byte { return p.s.HMACKey() }

// encrypt is encrypt(key, demPlaintext); iv is used by protocol two (nil:
// random).
func (p *platform) encrypt(tb testing.TB, plaintext, iv []byte) []byte {
	tb.Helper()
	out, err := p.s.EncryptIV(plaintext, iv)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func (p *platform) decrypt(tb testing.TB, ciphertext []byte) []byte {
	tb.Helper()
	return p.s.MustDecrypt(tb, ciphertext)
}

// authenticate is authenticate(key, message) of p's protocol version.
func (p *platform) authenticate(key, msg []byte) []byte {
	return ctaptest.Authenticate(p.version, key, msg)
}

// padPIN pads a PIN with zeros to 64 bytes (§6.5.5.5).
func padPIN(pin string) []byte { return ctaptest.PadPIN(pin) }

func pinHash(pin string) []byte { return ctaptest.PINHash(pin) }
