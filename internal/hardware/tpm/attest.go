package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// akTemplate is the attestation key (AK, a TCG "AIK"): ECC NIST P-256 with
// ECDSA/SHA-256, restricted|sign, so the TPM signs only structures it built
// itself (TPMS_ATTEST, which begins with TPM_GENERATED_VALUE) and never a
// digest handed in from outside that could pass for one. fixedTPM|
// fixedParent|sensitiveDataOrigin: generated in this TPM and never
// duplicated. userWithAuth with an empty authValue and noDA, like the
// credential keys: there is nothing to guess, and the AK must keep working
// while the TPM is in dictionary-attack lockout.
//
// parseBlob rejects AK blobs (their restricted attribute matches none of
// the credential templates), so Sign and Signer refuse them; parseAKBlob
// accepts only them.
func akTemplate() tpm2.TPMTPublic {
	// The ES256 credential key template (the same scheme, curve and
	// attributes) plus restricted: the AK signs only TPM-made structures.
	t, _ := keyTemplate(ES256)
	t.ObjectAttributes.Restricted = true
	return t
}

// parseAKBlob splits and checks an attestation key blob: its public area
// must be akTemplate byte for byte (with some P-256 point as unique).
func parseAKBlob(blob []byte) (*object, error) {
	o, pubArea, pub, err := splitBlob(blob)
	if err != nil {
		return nil, err
	}
	if pub.Type != tpm2.TPMAlgECC {
		return nil, fmt.Errorf("%w: attestation key: object type 0x%04x", ErrInvalidBlob, uint16(pub.Type))
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("%w: ECC unique: %v", ErrInvalidBlob, err)
	}
	key, err := p256Key(point)
	if err != nil {
		return nil, err
	}
	want := akTemplate()
	want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, point)
	if !bytes.Equal(tpm2.Marshal(want), pubArea) {
		return nil, fmt.Errorf("%w: public area is not the passkeyd attestation key template", ErrInvalidBlob)
	}
	o.alg, o.pub = ES256, key
	return o, nil
}

// CreateAttestationKey makes a new attestation key under the storage
// primary key: a restricted ECDSA P-256/SHA-256 signing key (see
// akTemplate). It returns the blob and the *ecdsa.PublicKey.
func (t *TPM) CreateAttestationKey() (KeyBlob, crypto.PublicKey, error) {
	blob, err := t.create(akTemplate(), tpm2.TPM2BSensitiveCreate{})
	if err != nil {
		return nil, nil, fmt.Errorf("create attestation key: %w", err)
	}
	o, err := parseAKBlob(blob)
	if err != nil {
		return nil, nil, fmt.Errorf("create attestation key: TPM returned an unexpected public area (%v)", err)
	}
	return blob, o.pub, nil
}

// AttestationKeyPublic parses the public key of an attestation key blob
// (no TPM command).
func AttestationKeyPublic(blob KeyBlob) (*ecdsa.PublicKey, error) {
	o, err := parseAKBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("parse attestation key: %w", err)
	}
	return o.pub.(*ecdsa.PublicKey), nil
}

// maxQualifyingData is sizeof(TPMT_HA) for SHA-512, the most a TPM2B_DATA
// holds on TPMs that implement SHA-512 (64 bytes of digest plus its alg id);
// WebAuthn passes a 32-byte SHA-256.
const maxQualifyingData = 64

// Certify has the attestation key ak vouch for the credential key key:
// TPM2_Certify(objectHandle=key, signHandle=ak, qualifyingData). Both blobs
// are loaded under one hold of the TPM mutex and flushed before it returns
// (the SRK, the AK and the key exactly fill the three transient slots of
// swtpm and the simulator). It returns the TPMS_ATTEST the TPM signed (the
// contents of TPM2B_ATTEST, WebAuthn's certInfo) and the AK's signature over
// it as ASN.1 DER (WebAuthn's sig for alg ES256).
func (t *TPM) Certify(ak, key KeyBlob, qualifyingData []byte) (certInfo, signature []byte, err error) {
	if len(qualifyingData) > maxQualifyingData {
		return nil, nil, fmt.Errorf("certify: qualifying data is %d bytes, at most %d", len(qualifyingData), maxQualifyingData)
	}
	akObj, err := parseAKBlob(ak)
	if err != nil {
		return nil, nil, fmt.Errorf("certify: attestation key: %w", err)
	}
	keyObj, err := parseBlob(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certify: %w", err)
	}
	if keyObj.sealed || keyObj.hmac {
		return nil, nil, fmt.Errorf("certify: %w: sealed data or HMAC key, not a credential key", ErrInvalidBlob)
	}
	rsp, err := t.loadAndCertify(akObj, keyObj, qualifyingData)
	if err != nil {
		return nil, nil, fmt.Errorf("certify: %w", err)
	}
	ecc, err := rsp.Signature.Signature.ECDSA()
	if err != nil || rsp.Signature.SigAlg != tpm2.TPMAlgECDSA || ecc.Hash != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("certify: TPM returned signature algorithm 0x%04x", uint16(rsp.Signature.SigAlg))
	}
	r := new(big.Int).SetBytes(ecc.SignatureR.Buffer)
	s := new(big.Int).SetBytes(ecc.SignatureS.Buffer)
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, nil, errors.New("certify: TPM returned a zero signature component")
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	if err != nil {
		return nil, nil, fmt.Errorf("certify: encode signature: %w", err)
	}
	info := rsp.CertifyInfo.Bytes()
	if len(info) == 0 {
		return nil, nil, errors.New("certify: TPM returned an empty TPMS_ATTEST")
	}
	return bytes.Clone(info), der, nil
}

func (t *TPM) loadAndCertify(ak, key *object, qualifyingData []byte) (*tpm2.CertifyResponse, error) {
	var rsp *tpm2.CertifyResponse
	err := t.withLoaded("attestation key and credential key", func(h []tpm2.NamedHandle) error {
		akH, keyH := h[0], h[1]
		var err error
		rsp, err = tpm2.Certify{
			ObjectHandle:   tpm2.AuthHandle{Handle: keyH.Handle, Name: keyH.Name, Auth: tpm2.PasswordAuth(nil)},
			SignHandle:     tpm2.AuthHandle{Handle: akH.Handle, Name: akH.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			// NULL: the AK's own scheme, ECDSA with SHA-256.
			InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(t.tpm)
		return err
	}, ak, key)
	return rsp, err
}

// PublicArea returns the marshalled TPMT_PUBLIC of a credential key blob,
// without the TPM2B size prefix: WebAuthn's pubArea. Its Name (nameAlg ||
// SHA-256 of these bytes) is what TPM2_Certify attests. No TPM command.
func PublicArea(blob KeyBlob) ([]byte, error) {
	o, err := parseBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("public area: %w", err)
	}
	if o.sealed || o.hmac {
		return nil, fmt.Errorf("public area: %w: sealed data or HMAC key, not a signing key", ErrInvalidBlob)
	}
	return bytes.Clone(o.public.Bytes()), nil
}

// Identity is what TCG's EK and AIK credential profiles put in a
// certificate's subjectAltName about the TPM, read from its fixed
// properties. Unlike Info, whose Manufacturer is made printable (NUL shown
// as a space), Manufacturer here is the exact 4-byte vendor ID.
type Identity struct {
	// Manufacturer is TPM_PT_MANUFACTURER, the TCG vendor ID: 0x49424D00
	// ("IBM\0") for swtpm, 0x4D534654 ("MSFT") for the reference simulator.
	Manufacturer uint32
	// Model is TPM_PT_VENDOR_STRING_1..4 with NULs dropped and spaces
	// trimmed and collapsed; if the TPM reports none, the printable
	// manufacturer.
	Model string
	// FirmwareVersion1 and FirmwareVersion2 are TPM_PT_FIRMWARE_VERSION_1/_2.
	FirmwareVersion1, FirmwareVersion2 uint32
}

// Identity reads the TPM's vendor ID, vendor string and firmware version
// (one TPM2_GetCapability).
func (t *TPM) Identity() (Identity, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return Identity{}, errClosed
	}
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTManufacturer),
		PropertyCount: uint32(tpm2.TPMPTFirmwareVersion2-tpm2.TPMPTManufacturer) + 1,
	}.Execute(t.tpm)
	if err != nil {
		return Identity{}, fmt.Errorf("get TPM properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return Identity{}, fmt.Errorf("get TPM properties: %w", err)
	}
	var id Identity
	vendor := make([]byte, 16)
	for _, p := range props.TPMProperty {
		v := p.Value
		switch p.Property {
		case tpm2.TPMPTManufacturer:
			id.Manufacturer = v
		case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4:
			i := 4 * int(p.Property-tpm2.TPMPTVendorString1)
			vendor[i], vendor[i+1], vendor[i+2], vendor[i+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		case tpm2.TPMPTFirmwareVersion1:
			id.FirmwareVersion1 = v
		case tpm2.TPMPTFirmwareVersion2:
			id.FirmwareVersion2 = v
		}
	}
	id.Model = printableVendor(vendor)
	if id.Model == "" {
		id.Model = strings.TrimSpace(vendorString(id.Manufacturer))
	}
	return id, nil
}

// printableVendor turns the vendor string octets into text: NULs dropped,
// other non-printable bytes shown as '?', runs of spaces collapsed.
func printableVendor(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == 0:
		case c < 0x20 || c > 0x7e:
			sb.WriteByte('?')
		default:
			sb.WriteByte(c)
		}
	}
	return strings.Join(strings.Fields(sb.String()), " ")
}
