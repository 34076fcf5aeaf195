package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// readPersistentSRK returns the public area at 0x81000001, or the error
// of TPM2_ReadPublic.
func readPersistentSRK(tb testing.TB, tp *TPM) (*tpm2.ReadPublicResponse, error) {
	tb.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tpm2.ReadPublic{ObjectHandle: persistentSRK}.Execute(tp.tpm)
}

// signAndVerify signs with blob and verifies the signature with pub.
func signAndVerify(tb testing.TB, tp *TPM, blob KeyBlob, pub any) {
	tb.Helper()
	d := digestOf("srk")
	sig, err := tp.Sign(blob, d)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
		tb.Fatal("signature does not verify")
	}
}

// TestSRKProvisioned: on a TPM with 0x81000001 free, Open persists the TCG
// ECC SRK there (EvictControl), keeps no transient copy, and the next Open
// finds it.
func TestSRKProvisioned(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpm(t, dir)
	if got := tp.Info().SRK; got != SRKProvisioned || !tp.srkPersistent || tp.srk.Handle != persistentSRK {
		t.Fatalf("SRK = %q (handle %x), want %q", got, tp.srk.Handle, SRKProvisioned)
	}
	rp, err := readPersistentSRK(t, tp)
	if err != nil {
		t.Fatalf("ReadPublic 0x81000001: %v", err)
	}
	if !isECCSRK(&rp.OutPublic) {
		t.Fatal("0x81000001 is not the TCG ECC SRK")
	}
	if hs := transientHandles(t, tp); len(hs) != 0 {
		t.Errorf("transient handles after Open = %x, want none (the CreatePrimary copy flushed)", hs)
	}
	blob, pub, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	tp2 := openTestSwtpm(t, dir)
	if got := tp2.Info().SRK; got != SRKPersistent {
		t.Errorf("SRK on the second Open = %q, want %q", got, SRKPersistent)
	}
	signAndVerify(t, tp2, blob, pub)
}

// TestSRKTransientBlobsLoadUnderProvisioned: blobs made by a passkeyd that
// derived its SRK as a transient object (every passkeyd before the
// persistent SRK, and Config.SRK "transient") load under the persistent
// SRK that a later Open provisions, and the other way round: the same
// template on the same owner seed is the same key.
func TestSRKTransientBlobsLoadUnderProvisioned(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpmSRK(t, dir, SRKConfigTransient)
	if got := tp.Info().SRK; got != SRKTransient || tp.srkPersistent || tp.Info().SRKReason == "" {
		t.Fatalf("SRK = %q (%q), want %q with a reason", got, tp.Info().SRKReason, SRKTransient)
	}
	if _, err := readPersistentSRK(t, tp); !errors.Is(err, tpm2.TPMRCHandle) {
		t.Fatalf("ReadPublic 0x81000001 with Config.SRK transient: %v, want TPM_RC_HANDLE (nothing persisted)", err)
	}
	key, pub, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	pin := pinOf("2468")
	pinObj, err := tp.CreatePINObject(pin, []byte("pin secret"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := tp.Seal([]byte("device secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tp2 := openTestSwtpm(t, dir)
	if got := tp2.Info().SRK; got != SRKProvisioned {
		t.Fatalf("SRK = %q, want %q", got, SRKProvisioned)
	}
	signAndVerify(t, tp2, key, pub)
	if got, err := tp2.UnsealWithPIN(pinObj, pin); err != nil || string(got) != "pin secret" {
		t.Errorf("UnsealWithPIN under the provisioned SRK: %q, %v", got, err)
	}
	if got, err := tp2.Unseal(sealed); err != nil || string(got) != "device secret" {
		t.Errorf("Unseal under the provisioned SRK: %q, %v", got, err)
	}

	// The other way: a key made under the persistent SRK loads under a
	// transient one derived from the template.
	key2, _, err := tp2.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseBlob(key2)
	if err != nil {
		t.Fatal(err)
	}
	tp2.mu.Lock()
	defer tp2.mu.Unlock()
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tp2.tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.flush(cp.ObjectHandle)
	ld, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    o.private,
		InPublic:     o.public,
	}.Execute(tp2.tpm)
	if err != nil {
		t.Fatalf("Load under a transient SRK of a blob made under the persistent one: %v", err)
	}
	tp2.flush(ld.ObjectHandle)
}

// TestSRKSlotTaken: when 0x81000001 holds another key, Open leaves it
// alone and derives a transient SRK, says why in Info, and flushes it at
// Close.
func TestSRKSlotTaken(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpm(t, dir)
	tp.mu.Lock()
	// Evict our SRK (EvictControl on a persistent handle removes it) and
	// persist an RSA storage key in its place.
	_, err := tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     tp.srk,
		PersistentHandle: persistentSRK,
	}.Execute(tp.tpm)
	if err != nil {
		tp.mu.Unlock()
		t.Fatalf("evict: %v", err)
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.RSASRKTemplate),
	}.Execute(tp.tpm)
	if err == nil {
		_, err = tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: persistentSRK,
		}.Execute(tp.tpm)
		tp.flush(cp.ObjectHandle)
	}
	tp.srk, tp.srkPersistent = tpm2.NamedHandle{}, false
	tp.mu.Unlock()
	if err != nil {
		t.Fatalf("persist an RSA key at 0x81000001: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tp2 := openTestSwtpm(t, dir)
	info := tp2.Info()
	if info.SRK != SRKTransient || !strings.Contains(info.SRKReason, "not the TCG ECC SRK") {
		t.Fatalf("SRK = %q (%q), want transient because 0x81000001 holds another key", info.SRK, info.SRKReason)
	}
	rp, err := readPersistentSRK(t, tp2)
	if err != nil || rp.OutPublic.Bytes() == nil {
		t.Fatalf("ReadPublic 0x81000001: %v", err)
	}
	if pub, _ := rp.OutPublic.Contents(); pub.Type != tpm2.TPMAlgRSA {
		t.Errorf("0x81000001 changed: type 0x%x, want the RSA key left alone", uint16(pub.Type))
	}
	blob, pub, err := tp2.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, tp2, blob, pub)
	if hs := transientHandles(t, tp2); len(hs) != 1 || hs[0] != tp2.srk.Handle {
		t.Errorf("transient handles = %x, want only the SRK %x", hs, tp2.srk.Handle)
	}
}

// TestSRKOtherTemplateAtPersistentHandle: 0x81000001 holds an SRK of the
// TCG shape made from another template, as systemd-tpm2-setup persists one
// (unique field empty; go-tpm's template, passkeyd's, has 64 zero bytes):
// another key with the same kind of public area. Blobs passkeyd made under
// its transient SRK before that SRK appeared still work: the first refused
// load derives the template's SRK, which loads them, and passkeyd uses it
// (transient) for the run, leaving 0x81000001 alone.
func TestSRKOtherTemplateAtPersistentHandle(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpmSRK(t, dir, SRKConfigTransient)
	key, pub, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	pin := pinOf("8642")
	pinObj, err := tp.CreatePINObject(pin, []byte("pin secret"))
	if err != nil {
		t.Fatal(err)
	}
	// systemd's ECC SRK template: the TCG one with an empty unique.
	other := tpm2.ECCSRKTemplate
	other.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	tp.mu.Lock()
	cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(other)}.Execute(tp.tpm)
	if err == nil {
		_, err = tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: persistentSRK,
		}.Execute(tp.tpm)
		tp.flush(cp.ObjectHandle)
	}
	tp.mu.Unlock()
	if err != nil {
		t.Fatalf("persist an SRK of another template: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tp2 := openTestSwtpm(t, dir)
	if got := tp2.Info().SRK; got != SRKPersistent {
		t.Fatalf("SRK at Open = %q, want %q (the other template's key has the TCG shape)", got, SRKPersistent)
	}
	otherName := tp2.srk.Name
	signAndVerify(t, tp2, key, pub)
	info := tp2.Info()
	if info.SRK != SRKTransient || !strings.Contains(info.SRKReason, "another template") {
		t.Errorf("SRK after the refused load = %q (%q), want transient because of the other template", info.SRK, info.SRKReason)
	}
	if got, err := tp2.UnsealWithPIN(pinObj, pin); err != nil || string(got) != "pin secret" {
		t.Errorf("UnsealWithPIN: %q, %v", got, err)
	}
	key2, pub2, err := tp2.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, tp2, key2, pub2)
	rp, err := readPersistentSRK(t, tp2)
	if err != nil || !bytes.Equal(rp.Name.Buffer, otherName.Buffer) {
		t.Errorf("0x81000001 changed (%v): the other template's SRK must be left alone", err)
	}
	// A blob that is nobody's is still refused, and costs no second
	// CreatePrimary.
	bad := bytes.Clone(key)
	bad[len(bad)-1] ^= 1
	if _, err := tp2.Sign(bad, digestOf("x")); !errors.Is(err, ErrBlobRefused) {
		t.Errorf("tampered blob: %v, want ErrBlobRefused", err)
	}
}
