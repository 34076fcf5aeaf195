package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// platform is the client side of PIN/UV auth protocol two (CTAP 2.1
// §6.5.7), written here from the specification for the benchmarks.
type platform struct {
	hmacKey, aesKey []byte
	key             pinuv.COSEKey
}

func newPlatform(b *testing.B, r *rig) *platform {
	m := r.cbor(b, ctap2.CmdClientPIN, map[int]any{1: 2, 2: 2})
	var peer pinuv.COSEKey
	if err := cbor.Unmarshal(m[1], &peer); err != nil {
		b.Fatal(err)
	}
	pub, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, peer.X...), peer.Y...))
	if err != nil {
		b.Fatal(err)
	}
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		b.Fatal(err)
	}
	salt := make([]byte, 32)
	hk, _ := hkdf.Key(sha256.New, z, salt, "CTAP2 HMAC key", 32)
	ak, _ := hkdf.Key(sha256.New, z, salt, "CTAP2 AES key", 32)
	raw := priv.PublicKey().Bytes()
	return &platform{hmacKey: hk, aesKey: ak, key: pinuv.COSEKey{Kty: 2, Alg: -25, Crv: 1, X: raw[1:33], Y: raw[33:65]}}
}

func (p *platform) encrypt(pt []byte) []byte {
	block, _ := aes.NewCipher(p.aesKey)
	out := make([]byte, 16+len(pt))
	rand.Read(out[:16])
	cipher.NewCBCEncrypter(block, out[:16]).CryptBlocks(out[16:], pt)
	return out
}

func (p *platform) decrypt(ct []byte) []byte {
	block, _ := aes.NewCipher(p.aesKey)
	out := make([]byte, len(ct)-16)
	cipher.NewCBCDecrypter(block, ct[:16]).CryptBlocks(out, ct[16:])
	return out
}

func authenticate(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// setPIN sets pin and returns a pinUvAuthToken with permissions.
func setPINAndToken(b *testing.B, r *rig, pin string, permissions int) []byte {
	p := newPlatform(b, r)
	padded := make([]byte, 64)
	copy(padded, pin)
	enc := p.encrypt(padded)
	r.cbor(b, ctap2.CmdClientPIN, map[int]any{1: 2, 2: 3, 3: p.key, 4: authenticate(p.hmacKey, enc), 5: enc})
	p = newPlatform(b, r)
	h := sha256.Sum256([]byte(pin))
	m := r.cbor(b, ctap2.CmdClientPIN, map[int]any{1: 2, 2: 9, 3: p.key, 6: p.encrypt(h[:16]), 9: permissions})
	var tokenEnc []byte
	if err := cbor.Unmarshal(m[2], &tokenEnc); err != nil {
		b.Fatal(err)
	}
	return p.decrypt(tokenEnc)
}
