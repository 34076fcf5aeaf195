package tpm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestHMACKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		key, err := tp.CreateHMACKey()
		if err != nil {
			t.Fatal(err)
		}
		a, err := tp.HMAC(key, []byte("credential one"))
		if err != nil {
			t.Fatal(err)
		}
		again, _ := tp.HMAC(key, []byte("credential one"))
		b, _ := tp.HMAC(key, []byte("credential two"))
		if len(a) != sha256.Size || !bytes.Equal(a, again) || bytes.Equal(a, b) {
			t.Fatalf("HMAC not deterministic per input: %x %x %x", a, again, b)
		}
		other, _ := tp.CreateHMACKey()
		if c, _ := tp.HMAC(other, []byte("credential one")); bytes.Equal(a, c) {
			t.Error("two HMAC keys give the same output")
		}
		// The key never appears in the blob: no software HMAC with any
		// 32-byte window of the blob reproduces the output.
		for i := 0; i+32 <= len(key); i++ {
			m := hmac.New(sha256.New, key[i:i+32])
			m.Write([]byte("credential one"))
			if bytes.Equal(m.Sum(nil), a) {
				t.Fatal("HMAC key readable from the blob")
			}
		}
		if _, err := tp.HMAC(key, make([]byte, maxHMACData+1)); err == nil {
			t.Error("oversized HMAC input accepted")
		}
		sealed, _ := tp.Seal([]byte("secret"))
		if _, err := tp.HMAC(sealed, []byte("x")); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("HMAC with a sealed blob: %v", err)
		}
		if _, err := tp.Sign(key, make([]byte, 32)); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Sign with an HMAC key: %v", err)
		}
		if _, err := tp.Unseal(key); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Unseal of an HMAC key: %v", err)
		}
		assertNoLeftovers(t, tp)
	})
}
