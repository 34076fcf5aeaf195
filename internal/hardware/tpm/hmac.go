package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// hmacTemplate is a TPM-generated HMAC-SHA256 key (keyedHash with the sign
// attribute): its secret never leaves the TPM, so values derived with it
// (hmac-secret's per-credential CredRandom) exist only through this TPM.
// noDA: the authValue is empty, there is nothing to guess.
func hmacTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
	}
}

// maxHMACData bounds HMAC's input to one TPM2B_MAX_BUFFER.
const maxHMACData = 1024

// CreateHMACKey makes a new HMAC-SHA256 key inside the TPM.
func (t *TPM) CreateHMACKey() (KeyBlob, error) {
	blob, err := t.create(hmacTemplate(), tpm2.TPM2BSensitiveCreate{})
	if err != nil {
		return nil, fmt.Errorf("create HMAC key: %w", err)
	}
	if o, err := parseBlob(blob); err != nil || !o.hmac {
		return nil, fmt.Errorf("create HMAC key: TPM returned an unexpected public area (%v)", err)
	}
	return blob, nil
}

// HMAC loads key, computes HMAC-SHA256 over data inside the TPM and
// flushes the key: one TPM2_Load and one TPM2_HMAC.
func (t *TPM) HMAC(key KeyBlob, data []byte) ([]byte, error) {
	if len(data) > maxHMACData {
		return nil, fmt.Errorf("hmac: %d bytes of data, at most %d", len(data), maxHMACData)
	}
	o, err := parseBlob(key)
	if err != nil {
		return nil, fmt.Errorf("hmac: %w", err)
	}
	if !o.hmac {
		return nil, fmt.Errorf("hmac: %w: not an HMAC key", ErrInvalidBlob)
	}
	var mac []byte
	err = t.withLoaded("hmac", func(h []tpm2.NamedHandle) error {
		rsp, err := tpm2.Hmac{
			Handle:  tpm2.AuthHandle{Handle: h[0].Handle, Name: h[0].Name, Auth: tpm2.PasswordAuth(nil)},
			Buffer:  tpm2.TPM2BMaxBuffer{Buffer: data},
			HashAlg: tpm2.TPMAlgSHA256,
		}.Execute(t.tpm)
		if err != nil {
			return fmt.Errorf("hmac: %w", err)
		}
		mac = rsp.OutHMAC.Buffer
		return nil
	}, o)
	return mac, err
}
