package pinuv

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"math/big"
	"testing"
)

// FuzzDecrypt: Decrypt never panics, fails exactly on the lengths §6.5.6 and
// §6.5.7 rule out (and on keys that are not 32 bytes), and otherwise returns
// the plaintext that CBC-encrypts back to the ciphertext.
func FuzzDecrypt(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	f.Add(uint8(1), key, make([]byte, 16))
	f.Add(uint8(2), key, make([]byte, 48))
	f.Add(uint8(2), key, make([]byte, 16))
	f.Add(uint8(2), key, make([]byte, 15))
	f.Add(uint8(1), key, make([]byte, 17))
	f.Add(uint8(1), key[:31], make([]byte, 32))
	f.Add(uint8(2), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, v uint8, key, ct []byte) {
		version := 1 + int(v%2)
		p := &protocol{version: version}
		s := SharedSecret{version: version, hmacKey: key, aesKey: key}
		pt, err := p.Decrypt(s, ct)

		ivLen := 0
		if version == 2 {
			ivLen = 16
		}
		valid := len(key) == 32 && len(ct) >= ivLen && (len(ct)-ivLen)%16 == 0
		if (err == nil) != valid {
			t.Fatalf("protocol %d, key %d, ciphertext %d bytes: error %v", version, len(key), len(ct), err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidLength) && !errors.Is(err, ErrWrongSecret) {
				t.Fatalf("error %v wraps neither ErrInvalidLength nor ErrWrongSecret", err)
			}
			return
		}
		if len(pt) != len(ct)-ivLen {
			t.Fatalf("plaintext of %d bytes from %d", len(pt), len(ct))
		}
		b, _ := aes.NewCipher(key)
		iv := make([]byte, 16)
		if version == 2 {
			iv = ct[:16]
		}
		back := make([]byte, len(pt))
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(back, pt)
		if !bytes.Equal(back, ct[ivLen:]) {
			t.Fatal("plaintext does not encrypt back to the ciphertext")
		}
		if version == 1 {
			if again, err := p.Encrypt(s, pt); err != nil || !bytes.Equal(again, ct) {
				t.Fatalf("Encrypt(Decrypt(c)) = %x, %v; want %x", again, err, ct)
			}
		}
	})
}

// onP256 checks y² = x³ - 3x + b (mod p) with 0 <= x, y < p, independently
// of crypto/ecdh.
func onP256(x, y []byte) bool {
	b, _ := new(big.Int).SetString("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b", 16)
	X, Y := new(big.Int).SetBytes(x), new(big.Int).SetBytes(y)
	if X.Cmp(p256P) >= 0 || Y.Cmp(p256P) >= 0 {
		return false
	}
	lhs := new(big.Int).Mul(Y, Y)
	lhs.Mod(lhs, p256P)
	rhs := new(big.Int).Mul(X, X)
	rhs.Mul(rhs, X)
	rhs.Sub(rhs, new(big.Int).Mul(big.NewInt(3), X))
	rhs.Add(rhs, b)
	rhs.Mod(rhs, p256P)
	return lhs.Cmp(rhs) == 0
}

// FuzzDecapsulate: Decapsulate never panics and accepts exactly the keys of
// the §6.5.6 form whose point is on P-256.
func FuzzDecapsulate(f *testing.F) {
	x, y := mustHex(f, rfc5903GRX), mustHex(f, rfc5903GRY)
	f.Add(int64(2), int64(-25), int64(1), x, y)
	f.Add(int64(2), int64(-7), int64(1), x, y)
	f.Add(int64(1), int64(-25), int64(1), x, y)
	f.Add(int64(2), int64(-25), int64(2), x, y)
	f.Add(int64(2), int64(-25), int64(1), x, x)
	f.Add(int64(2), int64(-25), int64(1), x[1:], y)
	f.Add(int64(2), int64(-25), int64(1), make([]byte, 32), make([]byte, 32))
	f.Add(int64(2), int64(-25), int64(1), []byte(nil), []byte(nil))
	ps := map[int]*protocol{
		1: withKey(f, 1, rfc5903I),
		2: withKey(f, 2, rfc5903I),
	}
	f.Fuzz(func(t *testing.T, kty, alg, crv int64, x, y []byte) {
		k := COSEKey{Kty: int(kty), Alg: int(alg), Crv: int(crv), X: x, Y: y}
		valid := kty == 2 && alg == -25 && crv == 1 && len(x) == 32 && len(y) == 32 && onP256(x, y)
		for version, p := range ps {
			s, err := p.Decapsulate(k)
			if (err == nil) != valid {
				t.Fatalf("protocol %d: Decapsulate(%+v) error = %v, want valid=%v", version, k, err, valid)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("error %v does not wrap ErrInvalidKey", err)
				}
				continue
			}
			if len(s.hmacKey) != 32 || len(s.aesKey) != 32 || s.version != version {
				t.Fatalf("secret %+v", s)
			}
		}
	})
}
