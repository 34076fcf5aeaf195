package pinuv

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
)

// withKey returns protocol version with the key agreement private key d.
func withKey(tb testing.TB, version int, d string) *protocol {
	tb.Helper()
	k, err := ecdh.P256().NewPrivateKey(mustHex(tb, d))
	if err != nil {
		tb.Fatal(err)
	}
	return &protocol{version: version, priv: k}
}

func newP(tb testing.TB, version int) Protocol {
	tb.Helper()
	var (
		p   Protocol
		err error
	)
	if version == 1 {
		p, err = NewProtocolOne()
	} else {
		p, err = NewProtocolTwo()
	}
	if err != nil {
		tb.Fatal(err)
	}
	if p.Version() != version {
		tb.Fatalf("Version() = %d, want %d", p.Version(), version)
	}
	return p
}

func cose(tb testing.TB, x, y string) COSEKey {
	return COSEKey{Kty: 2, Alg: -25, Crv: 1, X: mustHex(tb, x), Y: mustHex(tb, y)}
}

// RFC 5903 §8.1 (ECDH on P-256): the authenticator holds i, the platform r.
// The derived values were computed independently with Python's cryptography
// package (OpenSSL): SHA-256(Z), HKDF-SHA-256 with the §6.5.7 salt and infos,
// AES-256-CBC and HMAC-SHA-256 over LEFT(SHA-256("1234"), 16).
const (
	rfc5903I    = "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433"
	rfc5903GIX  = "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180"
	rfc5903GIY  = "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3"
	rfc5903GRX  = "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63"
	rfc5903GRY  = "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab"
	rfc5903GIRX = "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de"
)

func TestKnownAnswerRFC5903(t *testing.T) {
	const (
		secret1  = "0519dc09b36efad1d00aef1d5b53b100202eb910b5de0dede75f190a357a367d"
		hmacKey2 = "b9111d382554aa6ba0a8704b14ba83e59260204b3ed2e08bf1c887602f9d4636"
		aesKey2  = "41c8213da7d845552c23da07f946f6fe28951e81f62e2103043af94b29fe1b18"
		pinHash  = "03ac674216f3e15c761ee1a5e255f067" // LEFT(SHA-256("1234"), 16)
		enc1     = "f069957203a0209e7ef70d4ecb627e51"
		enc2     = "000102030405060708090a0b0c0d0e0f" + "e18d98ed28ac173658a02c90e63e7d71"
		auth1    = "143d3717f9b5e8f6bad9eba4bac1cf51"
		auth2    = "f1df73f58b09eece3ec62a719363c658237ddcf03b6b318706e7c8e2b81b0823"
	)
	peer := cose(t, rfc5903GRX, rfc5903GRY)
	for _, tc := range []struct {
		version          int
		hmacKey, aesKey  string
		pinHashEnc, auth string
	}{
		{1, secret1, secret1, enc1, auth1},
		{2, hmacKey2, aesKey2, enc2, auth2},
	} {
		t.Run(fmt.Sprint("protocol", tc.version), func(t *testing.T) {
			p := withKey(t, tc.version, rfc5903I)
			pub := p.PublicKey()
			want := cose(t, rfc5903GIX, rfc5903GIY)
			if pub.Kty != 2 || pub.Alg != -25 || pub.Crv != 1 || !bytes.Equal(pub.X, want.X) || !bytes.Equal(pub.Y, want.Y) {
				t.Fatalf("PublicKey() = %+v, want %+v", pub, want)
			}
			// The shared point's x-coordinate is RFC 5903's gir.x.
			if z := platformKDF(tc.version, mustHex(t, rfc5903GIRX)); !bytes.Equal(z[:32], mustHex(t, tc.hmacKey)) {
				t.Fatalf("test vector and spec-text kdf disagree: %x", z)
			}
			s, err := p.Decapsulate(peer)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.hmacKey, mustHex(t, tc.hmacKey)) || !bytes.Equal(s.aesKey, mustHex(t, tc.aesKey)) {
				t.Fatalf("secret = %x / %x, want %s / %s", s.hmacKey, s.aesKey, tc.hmacKey, tc.aesKey)
			}
			if !bytes.Equal(s.HMACKey(), mustHex(t, tc.hmacKey)) {
				t.Fatalf("HMACKey() = %x", s.HMACKey())
			}
			got, err := p.Decrypt(s, mustHex(t, tc.pinHashEnc))
			if err != nil || !bytes.Equal(got, mustHex(t, pinHash)) {
				t.Fatalf("Decrypt(pinHashEnc) = %x, %v; want %s", got, err, pinHash)
			}
			if a := p.Authenticate(s.HMACKey(), mustHex(t, tc.pinHashEnc)); !bytes.Equal(a, mustHex(t, tc.auth)) {
				t.Fatalf("Authenticate = %x, want %s", a, tc.auth)
			}
			if !p.Verify(s.HMACKey(), mustHex(t, tc.pinHashEnc), mustHex(t, tc.auth)) {
				t.Fatal("Verify rejects the known pinUvAuthParam")
			}
			if tc.version == 1 {
				c, err := p.Encrypt(s, mustHex(t, pinHash))
				if err != nil || !bytes.Equal(c, mustHex(t, enc1)) {
					t.Fatalf("Encrypt(pinHash) = %x, %v; want %s", c, err, enc1)
				}
			}
		})
	}
}

// The worked example of the CTAP 2.1 migration guide
// (github.com/WebauthnWorks/CTAP2.1-Migration-Guide, Protocol/PinProtocol/2.md),
// each value checked against Python's cryptography package. The platform's
// x-coordinate starts with a zero byte, which must stay (32-byte
// coordinates). The guide's prose swaps the two HKDF labels; its values
// follow the spec: the AES key is the "CTAP2 AES key" output.
func TestKnownAnswerMigrationGuide(t *testing.T) {
	const (
		authenticatorD = "90f0a83dba763dfa331061198fc90033a7adefe8fe63da224667b2c5ac0a52ba"
		authenticatorX = "d7404f738990a0af2bbc053d39f0a9c293898bf8e7c0fb9ab1ef4dd61bb70d37"
		authenticatorY = "c09bed90721b78631be0e68f42997f7a1957b87a6537cfade9f0a68cd432e7f9"
		platformX      = "003a0bc15db601a238e891db21ca5f71eab98c8e05bf4e318daf471ea6e76dab"
		platformY      = "3e303d19dcf2147db8d4ee0d932b0a0308ca55d69cf021c1c7e111d0cdc59efe"
		secret1        = "8f186f64182b86cfd8bbf73354772066ba46de6514149a7a79c050a3ce4f1ff9"
		hmacKey2       = "efe50001d97a7cf14096589e65147b108653683cc22aaf4d1f3bd91dc8e41cbd"
		aesKey2        = "6e1db0c8ebc48dad977a81d26ca7e5bfb0243bd1a2aba6c45adc7a00729b2027"
		// "passwordsAreBad" padded to 64 bytes.
		message = "70617373776f72647341726542616400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		enc1    = "b206fc6039c9817a045fd274c601f448900b37a9bd2a7fdfe02e60471f684d0d1be5318c1c1d29c02ac2333bb039b0f7e2f9cccb6b4faca97281f95a8805f782"
		mac1    = "8d4bb4e328427041bfd1e3dd70b1fffd"
		enc2    = "3672a1bc264e2cef5f647aff51100b15c2cdbe642fe446d1e7eb6cf52ef5268b616d1d2720c5b0d05195d0ab3b07a248a2f99930060ad3ce58a89824928050a93aa453ca66a8feade0333721dbf1b966"
		mac2    = "6572fe937c1c04fb68b5a91408f9058246a6650013fe8dc023c5eec130f01a28"
		// changePIN, protocol two: "123456" -> "09876".
		newPinEnc2  = "4b41b0af9beecf165e9a1f4abc852fe81441cf87ab46a5de55b752c5203498c14e8d0f52be4ec1ac731e1e1fb99c00bf0fc8a768b40a95a7b1f2dd907f3af35f2cc4f3a3aa00b3f5267623e624f33ebc"
		pinHashEnc2 = "6af8b75c50296805d34fc6326956ca20708f38d17a782ffdd1a537d221eecb3e"
		changeMac2  = "d6b8d7cf32879f9515ac310a3a99cf6ec025644e921745aba8a34be20faa17e7"
	)
	peer := cose(t, platformX, platformY)

	p1 := withKey(t, 1, authenticatorD)
	if pub := p1.PublicKey(); !bytes.Equal(pub.X, mustHex(t, authenticatorX)) || !bytes.Equal(pub.Y, mustHex(t, authenticatorY)) {
		t.Fatalf("PublicKey() = %x, %x", pub.X, pub.Y)
	}
	s1, err := p1.Decapsulate(peer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1.HMACKey(), mustHex(t, secret1)) {
		t.Fatalf("protocol 1 secret = %x, want %s", s1.HMACKey(), secret1)
	}
	if pt, err := p1.Decrypt(s1, mustHex(t, enc1)); err != nil || !bytes.Equal(pt, mustHex(t, message)) {
		t.Fatalf("protocol 1 Decrypt = %x, %v", pt, err)
	}
	if ct, err := p1.Encrypt(s1, mustHex(t, message)); err != nil || !bytes.Equal(ct, mustHex(t, enc1)) {
		t.Fatalf("protocol 1 Encrypt = %x, %v", ct, err)
	}
	if !p1.Verify(s1.HMACKey(), mustHex(t, enc1), mustHex(t, mac1)) {
		t.Fatal("protocol 1 Verify rejects the setPIN pinUvAuthParam")
	}

	p2 := withKey(t, 2, authenticatorD)
	s2, err := p2.Decapsulate(peer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s2.HMACKey(), mustHex(t, hmacKey2)) || !bytes.Equal(s2.aesKey, mustHex(t, aesKey2)) {
		t.Fatalf("protocol 2 secret = %x / %x", s2.HMACKey(), s2.aesKey)
	}
	if pt, err := p2.Decrypt(s2, mustHex(t, enc2)); err != nil || !bytes.Equal(pt, mustHex(t, message)) {
		t.Fatalf("protocol 2 Decrypt = %x, %v", pt, err)
	}
	if !p2.Verify(s2.HMACKey(), mustHex(t, enc2), mustHex(t, mac2)) {
		t.Fatal("protocol 2 Verify rejects the setPIN pinUvAuthParam")
	}
	if pt, err := p2.Decrypt(s2, mustHex(t, newPinEnc2)); err != nil || !bytes.Equal(pt, padPIN("09876")) {
		t.Fatalf("protocol 2 Decrypt(newPinEnc) = %x, %v", pt, err)
	}
	if pt, err := p2.Decrypt(s2, mustHex(t, pinHashEnc2)); err != nil || !bytes.Equal(pt, pinHash("123456")) {
		t.Fatalf("protocol 2 Decrypt(pinHashEnc) = %x, %v", pt, err)
	}
	if !p2.Verify(s2.HMACKey(), mustHex(t, newPinEnc2+pinHashEnc2), mustHex(t, changeMac2)) {
		t.Fatal("protocol 2 Verify rejects the changePIN pinUvAuthParam")
	}
}

// NIST SP 800-38A F.1.5 (ECB-AES256, block 1: CBC with a zero IV is ECB on
// the first block) and F.2.5/F.2.6 (CBC-AES256), and RFC 4231 test case 2
// (HMAC-SHA-256).
func TestKnownAnswerPrimitives(t *testing.T) {
	key := mustHex(t, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	plain := mustHex(t, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	iv := mustHex(t, "000102030405060708090a0b0c0d0e0f")
	cbc := mustHex(t, "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b")

	p1 := &protocol{version: 1}
	s1 := SharedSecret{version: 1, hmacKey: key, aesKey: key}
	if c, err := p1.Encrypt(s1, plain[:16]); err != nil || !bytes.Equal(c, mustHex(t, "f3eed1bdb5d2a03c064b5a7e3db181f8")) {
		t.Fatalf("protocol 1 Encrypt = %x, %v", c, err)
	}
	p2 := &protocol{version: 2}
	s2 := SharedSecret{version: 2, hmacKey: make([]byte, 32), aesKey: key}
	if pt, err := p2.Decrypt(s2, append(iv, cbc...)); err != nil || !bytes.Equal(pt, plain) {
		t.Fatalf("protocol 2 Decrypt = %x, %v", pt, err)
	}
	c, err := p2.Encrypt(s2, plain)
	if err != nil || len(c) != 16+len(plain) {
		t.Fatalf("protocol 2 Encrypt = %x, %v", c, err)
	}
	if pt, err := p2.Decrypt(s2, c); err != nil || !bytes.Equal(pt, plain) {
		t.Fatalf("protocol 2 round trip = %x, %v", pt, err)
	}
	c2, _ := p2.Encrypt(s2, plain)
	if bytes.Equal(c[:16], c2[:16]) {
		t.Fatal("protocol 2 Encrypt repeats its IV")
	}

	mac := mustHex(t, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
	msg := []byte("what do ya want for nothing?")
	if a := p1.Authenticate([]byte("Jefe"), msg); !bytes.Equal(a, mac[:16]) {
		t.Fatalf("protocol 1 Authenticate = %x", a)
	}
	if a := p2.Authenticate([]byte("Jefe"), msg); !bytes.Equal(a, mac) {
		t.Fatalf("protocol 2 Authenticate = %x", a)
	}
	// Protocol two cuts a longer key to 32 bytes (the HMAC-key half of a
	// 64-byte shared secret); protocol one uses it whole.
	long := bytes.Repeat([]byte{0xaa}, 64)
	if a := p2.Authenticate(long, msg); !bytes.Equal(a, hmacSHA256(long[:32], msg)) {
		t.Fatal("protocol 2 does not cut the key to 32 bytes")
	}
	if a := p1.Authenticate(long, msg); !bytes.Equal(a, hmacSHA256(long, msg)[:16]) {
		t.Fatal("protocol 1 cuts the key")
	}
}

// TestPlatformRoundTrip runs setPIN, changePIN and getPinUvAuthToken the way
// a platform does, with the platform side computed from the spec text
// (platform_test.go).
func TestPlatformRoundTrip(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprint("protocol", version), func(t *testing.T) {
			p := newP(t, version)
			plat, ka := encapsulate(t, version, p.PublicKey(), nil)
			s, err := p.Decapsulate(ka)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.HMACKey(), plat.hmacKey()) {
				t.Fatalf("HMAC key %x, platform has %x", s.HMACKey(), plat.hmacKey())
			}

			// setPIN: pinUvAuthParam = authenticate(sharedSecret, newPinEnc).
			newPinEnc := plat.encrypt(t, padPIN("123456"), nil)
			param := plat.authenticate(plat.secret, newPinEnc)
			if len(param) != map[int]int{1: 16, 2: 32}[version] {
				t.Fatalf("platform param of %d bytes", len(param))
			}
			if !p.Verify(s.HMACKey(), newPinEnc, param) {
				t.Fatal("setPIN pinUvAuthParam does not verify")
			}
			if got, err := p.Decrypt(s, newPinEnc); err != nil || !bytes.Equal(got, padPIN("123456")) {
				t.Fatalf("Decrypt(newPinEnc) = %x, %v", got, err)
			}
			tampered := append([]byte(nil), newPinEnc...)
			tampered[len(tampered)-1] ^= 1
			if p.Verify(s.HMACKey(), tampered, param) {
				t.Fatal("Verify accepts a tampered newPinEnc")
			}

			// changePIN: authenticate(sharedSecret, newPinEnc || pinHashEnc).
			pinHashEnc := plat.encrypt(t, pinHash("123456"), nil)
			newPinEnc = plat.encrypt(t, padPIN("654321"), nil)
			msg := append(append([]byte(nil), newPinEnc...), pinHashEnc...)
			if !p.Verify(s.HMACKey(), msg, plat.authenticate(plat.secret, msg)) {
				t.Fatal("changePIN pinUvAuthParam does not verify")
			}
			if got, err := p.Decrypt(s, pinHashEnc); err != nil || !bytes.Equal(got, pinHash("123456")) {
				t.Fatalf("Decrypt(pinHashEnc) = %x, %v", got, err)
			}

			// getPinUvAuthTokenUsingPinWithPermissions: the authenticator
			// encrypts the token, the platform decrypts it and MACs a
			// clientDataHash with it.
			tok, err := NewToken(nil)
			if err != nil {
				t.Fatal(err)
			}
			tok.Begin(false, PermMakeCredential|PermGetAssertion, "example.com")
			enc, err := p.Encrypt(s, tok.Value())
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int]int{1: 32, 2: 48}[version]; len(enc) != want {
				t.Fatalf("encrypted token of %d bytes, want %d", len(enc), want)
			}
			token := plat.decrypt(t, enc)
			if !bytes.Equal(token, tok.Value()) {
				t.Fatal("platform decrypts another token")
			}
			cdh := bytes.Repeat([]byte{0x5c}, 32)
			param = plat.authenticate(token, cdh)
			if !tok.Verify(p, cdh, param) {
				t.Fatal("token pinUvAuthParam does not verify")
			}
			if a := p.Authenticate(token, cdh); !bytes.Equal(a, param) {
				t.Fatalf("Authenticate = %x, platform %x", a, param)
			}
		})
	}
}

func TestAuthenticateLengths(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	for version, n := range map[int]int{1: 16, 2: 32} {
		p := newP(t, version)
		a := p.Authenticate(key, []byte("m"))
		if len(a) != n {
			t.Fatalf("protocol %d: Authenticate gives %d bytes, want %d", version, len(a), n)
		}
		full := hmacSHA256(key, []byte("m"))
		for _, sig := range [][]byte{nil, {}, full[:15], full[:16], full[:17], full[:31], full, append(full, 0)} {
			if got, want := p.Verify(key, []byte("m"), sig), len(sig) == n; got != want {
				t.Errorf("protocol %d: Verify(signature of %d bytes) = %v, want %v", version, len(sig), got, want)
			}
		}
		// Keys shorter than 32 bytes (e.g. a zero value's nil) never verify.
		for _, k := range [][]byte{nil, {}, key[:16], key[:31]} {
			if p.Verify(k, []byte("m"), p.Authenticate(k, []byte("m"))) {
				t.Errorf("protocol %d: Verify accepts a %d-byte key", version, len(k))
			}
		}
		bad := append([]byte(nil), a...)
		bad[0] ^= 0x80
		if p.Verify(key, []byte("m"), bad) {
			t.Errorf("protocol %d: Verify accepts a wrong MAC", version)
		}
	}
}

// p256P is the field prime of P-256.
var p256P, _ = new(big.Int).SetString("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", 16)

func TestDecapsulateRejects(t *testing.T) {
	good := cose(t, rfc5903GRX, rfc5903GRY)
	mod := func(f func(k *COSEKey)) COSEKey {
		k := COSEKey{Kty: good.Kty, Alg: good.Alg, Crv: good.Crv,
			X: append([]byte(nil), good.X...), Y: append([]byte(nil), good.Y...)}
		f(&k)
		return k
	}
	pBytes := p256P.FillBytes(make([]byte, 32))
	cases := map[string]COSEKey{
		"zero COSEKey":        {},
		"kty 1 (OKP)":         mod(func(k *COSEKey) { k.Kty = 1 }),
		"kty 3 (RSA)":         mod(func(k *COSEKey) { k.Kty = 3 }),
		"alg -7 (ES256)":      mod(func(k *COSEKey) { k.Alg = -7 }),
		"alg absent":          mod(func(k *COSEKey) { k.Alg = 0 }),
		"alg -26":             mod(func(k *COSEKey) { k.Alg = -26 }),
		"crv 2 (P-384)":       mod(func(k *COSEKey) { k.Crv = 2 }),
		"x of 31 bytes":       mod(func(k *COSEKey) { k.X = k.X[1:] }),
		"x of 33 bytes":       mod(func(k *COSEKey) { k.X = append([]byte{0}, k.X...) }),
		"y of 31 bytes":       mod(func(k *COSEKey) { k.Y = k.Y[:31] }),
		"y absent":            mod(func(k *COSEKey) { k.Y = nil }),
		"off the curve (y+1)": mod(func(k *COSEKey) { k.Y[31]++ }),
		"off the curve (x+1)": mod(func(k *COSEKey) { k.X[31]++ }),
		"point at infinity (0,0)": mod(func(k *COSEKey) {
			k.X, k.Y = make([]byte, 32), make([]byte, 32)
		}),
		// Coordinates are field elements: p itself is out of range.
		"y = p":                mod(func(k *COSEKey) { k.Y = pBytes }),
		"x = p":                mod(func(k *COSEKey) { k.X = pBytes }),
		"all ones coordinates": mod(func(k *COSEKey) { k.X, k.Y = bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 32) }),
	}
	for _, version := range []int{1, 2} {
		p := newP(t, version)
		if _, err := p.Decapsulate(good); err != nil {
			t.Fatalf("protocol %d rejects the good key: %v", version, err)
		}
		for name, k := range cases {
			s, err := p.Decapsulate(k)
			if err == nil {
				t.Errorf("protocol %d accepts %s", version, name)
				continue
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("protocol %d, %s: error %v does not wrap ErrInvalidKey", version, name, err)
			}
			if s.HMACKey() != nil {
				t.Errorf("protocol %d, %s: secret with an error", version, name)
			}
		}
	}
	// (x, p - y) is the negated point, on the curve: accepted.
	y := new(big.Int).SetBytes(good.Y)
	neg := mod(func(k *COSEKey) { k.Y = new(big.Int).Sub(p256P, y).FillBytes(make([]byte, 32)) })
	if _, err := newP(t, 2).Decapsulate(neg); err != nil {
		t.Fatalf("the negated point is rejected: %v", err)
	}
}

func TestCiphertextLengths(t *testing.T) {
	for _, version := range []int{1, 2} {
		p := newP(t, version)
		_, ka := encapsulate(t, version, p.PublicKey(), nil)
		s, err := p.Decapsulate(ka)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n <= 66; n++ {
			_, err := p.Decrypt(s, make([]byte, n))
			ok := n%16 == 0
			if version == 2 {
				ok = ok && n >= 16
			}
			if (err == nil) != ok {
				t.Errorf("protocol %d: Decrypt(%d bytes) error = %v", version, n, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidLength) {
				t.Errorf("protocol %d: Decrypt(%d bytes): %v does not wrap ErrInvalidLength", version, n, err)
			}
			c, err := p.Encrypt(s, make([]byte, n))
			if (err == nil) != (n%16 == 0) {
				t.Errorf("protocol %d: Encrypt(%d bytes) error = %v", version, n, err)
			}
			if err == nil && len(c) != n+map[int]int{1: 0, 2: 16}[version] {
				t.Errorf("protocol %d: Encrypt(%d bytes) gives %d", version, n, len(c))
			}
		}
		// An IV alone is the empty plaintext (§6.5.7 decrypt).
		if version == 2 {
			if pt, err := p.Decrypt(s, make([]byte, 16)); err != nil || len(pt) != 0 {
				t.Errorf("Decrypt(IV only) = %x, %v", pt, err)
			}
		}
	}
}

func TestWrongSecret(t *testing.T) {
	p1, p2 := newP(t, 1), newP(t, 2)
	_, ka1 := encapsulate(t, 1, p1.PublicKey(), nil)
	s1, err := p1.Decapsulate(ka1)
	if err != nil {
		t.Fatal(err)
	}
	_, ka2 := encapsulate(t, 2, p2.PublicKey(), nil)
	s2, err := p2.Decapsulate(ka2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p Protocol
		s SharedSecret
	}{{p1, s2}, {p2, s1}, {p1, SharedSecret{}}, {p2, SharedSecret{}}, {p1, SharedSecret{version: 1}}} {
		if _, err := tc.p.Encrypt(tc.s, make([]byte, 16)); !errors.Is(err, ErrWrongSecret) {
			t.Errorf("protocol %d, secret of %d: Encrypt error %v", tc.p.Version(), tc.s.version, err)
		}
		if _, err := tc.p.Decrypt(tc.s, make([]byte, 32)); !errors.Is(err, ErrWrongSecret) {
			t.Errorf("protocol %d, secret of %d: Decrypt error %v", tc.p.Version(), tc.s.version, err)
		}
	}
	if (SharedSecret{}).HMACKey() != nil {
		t.Error("zero SharedSecret has an HMAC key")
	}
	// HMACKey is a copy.
	k := s2.HMACKey()
	k[0] ^= 0xff
	if bytes.Equal(k, s2.HMACKey()) {
		t.Error("HMACKey returns the secret's own bytes")
	}
}

func TestRegenerate(t *testing.T) {
	for _, version := range []int{1, 2} {
		p := newP(t, version)
		old := p.PublicKey()
		old.X[0] ^= 0xff // the caller's copy
		if bytes.Equal(old.X, p.PublicKey().X) {
			t.Fatal("PublicKey returns the protocol's own bytes")
		}
		old.X[0] ^= 0xff
		plat, ka := encapsulate(t, version, old, nil)
		if err := p.Regenerate(); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(old.X, p.PublicKey().X) {
			t.Fatal("Regenerate kept the key")
		}
		// A platform that encapsulated to the old key no longer agrees.
		s, err := p.Decapsulate(ka)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(s.HMACKey(), plat.hmacKey()) {
			t.Fatal("secret unchanged by Regenerate")
		}
	}
}

// Decapsulate, Regenerate and PublicKey race-free (go test -race).
func TestConcurrent(t *testing.T) {
	p := newP(t, 2)
	_, ka := encapsulate(t, 2, p.PublicKey(), nil)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if i%2 == 0 {
					if err := p.Regenerate(); err != nil {
						t.Error(err)
					}
				} else if _, err := p.Decapsulate(ka); err != nil {
					t.Error(err)
				}
				_ = p.PublicKey()
			}
		}()
	}
	wg.Wait()
}
