package ctap2

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// Names of the device values in the store. Secrets are stored only as
// TPM-sealed blobs: a copy of the disk without this TPM opens none of them.
const (
	valueWrapKey  = "wrap-key.sealed"      // credential-ID wrapping key
	valueStoreKey = "store-key.sealed"     // credential metadata encryption key
	valueU2FKey   = "u2f-attestation.key"  // TPM key blob of the U2F attestation key
	valueU2FCert  = "u2f-attestation.cert" // its self-signed certificate (DER)
)

// deviceSecrets are the secrets unsealed at start-up and kept in memory:
// the namespace's own (wrapper, hmacKey) and the device-wide U2F
// attestation key every namespace shares.
type deviceSecrets struct {
	wrapper *credIDWrapper
	u2fKey  tpm.KeyBlob
	u2fPub  *ecdsa.PublicKey
	u2fCert []byte
	hmacKey tpm.KeyBlob
}

// loadDeviceSecrets unseals the device secrets, creating them on first use.
// A sealed blob that no longer unseals means the TPM was cleared or is a
// different one, or (malformed blob) the store is damaged: an error either
// way, never a reason to start a new identity over the old store.
//
// The namespace's secrets come from s, the U2F attestation from device
// (which may be s itself).
func loadDeviceSecrets(t TPM, s Store, device DeviceStore, now time.Time) (*deviceSecrets, error) {
	wrapKey, err := sealedSecret(t, s, valueWrapKey)
	if err != nil {
		return nil, err
	}
	storeKey, err := sealedSecret(t, s, valueStoreKey)
	if err != nil {
		return nil, err
	}
	if err := s.Unlock(storeKey); err != nil {
		return nil, fmt.Errorf("unlock store: %w", err)
	}
	w, err := newCredIDWrapper(wrapKey)
	if err != nil {
		return nil, err
	}
	ds := &deviceSecrets{wrapper: w}
	if ds.hmacKey, err = loadHMACKey(t, s); err != nil {
		return nil, err
	}
	if err := ds.loadU2FAttestation(t, device, now); err != nil {
		return nil, err
	}
	return ds, nil
}

func sealedSecret(t TPM, s Store, name string) ([]byte, error) {
	blob, err := s.Get(name)
	if errors.Is(err, keystore.ErrNotFound) {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("generate %s: %w", name, err)
		}
		if blob, err = t.Seal(secret); err != nil {
			return nil, fmt.Errorf("seal %s: %w", name, err)
		}
		if err := s.Put(name, blob); err != nil {
			return nil, fmt.Errorf("store %s: %w", name, err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	secret, err := t.Unseal(blob)
	switch {
	case errors.Is(err, tpm.ErrBlobRefused):
		// Parses, but fails the TPM's integrity check under its storage key.
		return nil, fmt.Errorf("the TPM cannot unseal the device secret %q: the TPM was cleared or is not the one this state dir was created with (refusing to start a new identity over existing data): %w", name, err)
	case errors.Is(err, tpm.ErrInvalidBlob):
		// Broken bytes: no TPM would take them, so blaming the TPM would
		// send the admin after the wrong problem.
		return nil, fmt.Errorf("the device secret %q in the store is damaged, not the TPM: its sealed blob is malformed or truncated; restore the store from a backup (refusing to start a new identity over existing data): %w", name, err)
	case err != nil:
		return nil, fmt.Errorf("unseal the device secret %q: %w", name, err)
	}
	if len(secret) != 32 {
		return nil, fmt.Errorf("device secret %q: unsealed %d bytes, want 32 (the store is damaged; restore it from a backup)", name, len(secret))
	}
	return secret, nil
}

// loadU2FAttestation loads or creates the per-device U2F attestation key
// (inside the TPM) and its self-signed certificate. Each installation has
// its own, so no private key is shared between devices (FIDO U2F's batch
// attestation is deliberately not imitated).
func (ds *deviceSecrets) loadU2FAttestation(t TPM, s DeviceStore, now time.Time) error {
	blob, errKey := s.Get(valueU2FKey)
	cert, errCert := s.Get(valueU2FCert)
	if errKey == nil && errCert == nil {
		c, err := x509.ParseCertificate(cert)
		if err != nil {
			return fmt.Errorf("parse U2F attestation certificate: %w", err)
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("U2F attestation certificate: not an EC key")
		}
		ds.u2fKey, ds.u2fPub, ds.u2fCert = blob, pub, cert
		return nil
	}
	if !errors.Is(errKey, keystore.ErrNotFound) && errKey != nil {
		return fmt.Errorf("read U2F attestation key: %w", errKey)
	}
	blob, pubKey, err := t.CreateKey(tpm.ES256)
	if err != nil {
		return fmt.Errorf("create U2F attestation key: %w", err)
	}
	pub, ok := pubKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("U2F attestation key: unexpected %T", pubKey)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "passkeyd U2F attestation", Organization: []string{"passkeyd"}},
		NotBefore:             now.Add(-time.Hour).UTC(),
		NotAfter:              now.AddDate(30, 0, 0).UTC(),
		BasicConstraintsValid: true,
	}
	signer, err := tpm.NewSigner(t, blob)
	if err != nil {
		return fmt.Errorf("U2F attestation key: %w", err)
	}
	cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		return fmt.Errorf("self-sign U2F attestation certificate: %w", err)
	}
	if err := s.Put(valueU2FKey, blob); err != nil {
		return fmt.Errorf("store U2F attestation key: %w", err)
	}
	if err := s.Put(valueU2FCert, cert); err != nil {
		return fmt.Errorf("store U2F attestation certificate: %w", err)
	}
	ds.u2fKey, ds.u2fPub, ds.u2fCert = blob, pub, cert
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, keystore.ErrNotFound) }
