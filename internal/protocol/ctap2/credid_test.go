package ctap2

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

func testWrapper(t testing.TB) *credIDWrapper {
	w, err := newCredIDWrapper(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestCredentialIDBinding(t *testing.T) {
	w := testWrapper(t)
	rp := sha256.Sum256([]byte("example.com"))
	other := sha256.Sum256([]byte("example.org"))
	blob := tpm.KeyBlob(bytes.Repeat([]byte{1}, 218))
	id, err := w.wrap(wrappedCredential{Flags: credFlagDiscoverable, CredProtect: 2, Alg: tpm.ES256, KeyBlob: blob}, rp[:])
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != credIDOverhead+len(blob) || len(id) > 255 {
		t.Errorf("ES256 credential ID of %d bytes (U2F key handles stop at 255)", len(id))
	}
	got, err := w.unwrap(id, rp[:])
	if err != nil || !bytes.Equal(got.KeyBlob, blob) || got.CredProtect != 2 || !got.discoverable() || got.Alg != tpm.ES256 {
		t.Fatalf("unwrap = %+v, %v", got, err)
	}
	if _, err := w.unwrap(id, other[:]); err != errForeignCredential {
		t.Error("ID opened for another RP")
	}
	for i := range id {
		bad := append([]byte{}, id...)
		bad[i] ^= 0x04
		if _, err := w.unwrap(bad, rp[:]); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	otherKey, _ := newCredIDWrapper(bytes.Repeat([]byte{8}, 32))
	if _, err := otherKey.unwrap(id, rp[:]); err == nil {
		t.Error("ID opened under another device's wrapping key")
	}
	if _, err := newCredIDWrapper(make([]byte, 16)); err == nil {
		t.Error("16-byte wrapping key accepted")
	}
	if _, err := w.wrap(wrappedCredential{Alg: -8, KeyBlob: blob}, rp[:]); err == nil {
		t.Error("wrapped an unknown algorithm")
	}
}

func FuzzUnwrapCredentialID(f *testing.F) {
	w := testWrapper(f)
	rp := sha256.Sum256([]byte("example.com"))
	id, _ := w.wrap(wrappedCredential{Alg: tpm.ES256, KeyBlob: []byte("blob")}, rp[:])
	f.Add(id)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 1})
	f.Add(bytes.Repeat([]byte{1}, 2000))
	f.Fuzz(func(t *testing.T, id []byte) {
		got, err := w.unwrap(id, rp[:])
		if err == nil && (len(got.KeyBlob) == 0 || got.Alg == 0) {
			t.Fatalf("accepted %x as %+v", id, got)
		}
	})
}
