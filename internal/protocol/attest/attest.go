// Package attest makes WebAuthn "tpm" attestation statements (WebAuthn
// §8.3): an attestation key (AK) inside the TPM certifies each new
// credential key with TPM2_Certify, and an AIK certificate issued by a local
// attestation CA vouches for the AK.
//
// The CA is created once per installation, its key inside the TPM. An
// organisation that exports the CA certificate from each of its machines
// (TPMAttester.CACertificate, `passkeyctl attestation ca`) can tell
// registrations from its own fleet apart from any other authenticator: the
// statement's x5c is [AIK certificate], and the RP checks that it chains to
// a CA it trusts. Without that policy, a "tpm"
// statement proves what packed self attestation proves, plus that the key is
// a non-duplicable key of the TPM the AK lives in (as far as one trusts that
// the AK is one).
package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// Names of the attestation values in the store (device bucket). The keys
// are TPM blobs (only this TPM can use them), the certificates DER.
const (
	NameCAKey  = "attestation-ca.key"
	NameCACert = "attestation-ca.cert"
	NameAKKey  = "attestation-ak.key"
	NameAKCert = "attestation-ak.cert"
)

// Store keeps the attestation values. *keystore.Store satisfies it; Get
// returns an error matching keystore.ErrNotFound for a missing name.
type Store interface {
	Get(name string) ([]byte, error)
	Put(name string, value []byte) error
}

// TPM is what attestation needs of the TPM. *tpm.TPM satisfies it.
type TPM interface {
	// CreateKey and Sign make and use the CA key (an ordinary,
	// unrestricted ES256 signing key: it signs certificates).
	CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error)
	Sign(blob tpm.KeyBlob, digest []byte) ([]byte, error)
	// CreateAttestableKey makes credential keys whose pubArea relying
	// parties can parse (no signing scheme; see TPMAttester.CreateKey).
	CreateAttestableKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error)
	// CreateAttestationKey and Certify make and use the AK (restricted).
	CreateAttestationKey() (tpm.KeyBlob, crypto.PublicKey, error)
	Certify(ak, key tpm.KeyBlob, qualifyingData []byte) (certInfo, signature []byte, err error)
	// Identity gives the AIK certificate's subjectAltName: the exact vendor
	// ID (tpm.Info shows a NUL as a space), the vendor string and the
	// firmware version.
	Identity() (tpm.Identity, error)
}

// Object identifiers of the TCG EK/AIK credential profiles and FIDO.
var (
	oidSubjectAltName       = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTCGAtTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTCGAtTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTCGAtTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTCGKpAIKCertificate  = asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	oidFIDOGenCeAAGUID      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}
)

// Certificate lifetimes. Nothing renews them: 30 years outlives the
// hardware. NotBefore is back-dated an hour for clocks that run behind.
const (
	validity = 30
	backdate = time.Hour
)

// TPMAttester makes "tpm" attestation statements. It is safe for concurrent
// use (the TPM serialises its commands).
type TPMAttester struct {
	tpm    TPM
	ak     tpm.KeyBlob
	akCert []byte
	caCert []byte
}

// LoadTPMAttester loads the attestation CA, the AK and the AK's certificate
// from s, creating what is missing (the first time: a CA key and
// self-signed certificate, an AK, and its AIK certificate). The AIK
// certificate is re-issued by the same CA when it no longer matches this
// TPM (say, after a firmware update changed tpmVersion), the AAGUID, or the
// CA; an existing CA is never replaced, because a fleet may trust it. A CA
// certificate that does not belong to the stored CA key is an error.
//
// The AIK certificate follows WebAuthn §8.3.1 and the TCG AIK profile:
// version 3, empty subject, a critical subjectAltName directoryName with
// tcg-at-tpmManufacturer "id:" + the vendor ID in hex (e.g. "id:49424D00"
// for swtpm, "id:4D534654" for the reference simulator), tcg-at-tpmModel
// (the TPM's vendor string) and tcg-at-tpmVersion "id:" + hex of
// TPM_PT_FIRMWARE_VERSION_1; extended key usage tcg-kp-AIKCertificate
// (2.23.133.8.3); basic constraints CA=false; key usage digitalSignature;
// and the FIDO AAGUID extension (1.3.6.1.4.1.45724.1.1.4).
//
// Relying parties check the vendor ID against the TCG vendor registry
// (go-webauthn: "Invalid TPM manufacturer" otherwise). Every real TPM,
// swtpm and the reference simulator are listed there; a TPM whose ID is not
// still gets a truthful certificate, and such RPs reject its statements.
func LoadTPMAttester(t TPM, s Store, aaguid [16]byte, now time.Time) (*TPMAttester, error) {
	id, err := t.Identity()
	if err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	ca, err := loadCA(t, s, now)
	if err != nil {
		return nil, err
	}
	ak, akPub, err := loadAK(t, s)
	if err != nil {
		return nil, err
	}
	wantSAN, err := aikSAN(id)
	if err != nil {
		return nil, err
	}
	wantAAGUID, _ := asn1.Marshal(aaguid[:])
	akCert, err := s.Get(NameAKCert)
	switch {
	case err == nil && aikCertCurrent(akCert, akPub, ca.cert, wantSAN, wantAAGUID, now):
	case err == nil || errors.Is(err, keystore.ErrNotFound):
		if akCert, err = issueAIKCert(ca, akPub, wantSAN, wantAAGUID, now); err != nil {
			return nil, err
		}
		if err := s.Put(NameAKCert, akCert); err != nil {
			return nil, fmt.Errorf("attestation: store AIK certificate: %w", err)
		}
	default:
		return nil, fmt.Errorf("attestation: read AIK certificate: %w", err)
	}
	return &TPMAttester{tpm: t, ak: ak, akCert: akCert, caCert: ca.cert.Raw}, nil
}

// CreateKey makes the key of a credential that Statement will attest: a
// credential key like tpm.TPM.CreateKey's, but without a signing scheme in
// its public area (tpm.TPM.CreateAttestableKey). python-fido2's
// TpmAttestation rejects a pubArea that names a scheme (it expects Windows
// Hello's layout), so makeCredential must create the key here when the
// attestation mode is "tpm". The key signs assertions like any other.
func (a *TPMAttester) CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error) {
	return a.tpm.CreateAttestableKey(alg)
}

// Statement returns the "tpm" attestation statement for a new credential
// whose key is credKey (made by CreateKey): TPM2_Certify of credKey by the
// AK over extraData = SHA-256(authData || clientDataHash) (alg ES256 is the
// AK's algorithm). attStmt is {ver: "2.0", alg: -7, x5c: [AIK certificate],
// sig, certInfo, pubArea}. authData must be the final authenticator data,
// with credKey's public key in its attested credential data.
//
// x5c leaves out the CA, the trust anchor: an RP that trusts the CA has it
// already, and a path validated per RFC 5280 §6.1 does not contain its
// trust anchor. RPs built to FIDO's conformance tools reject an x5c that
// repeats their trust anchor ("found duplicate certificates" in
// SimpleWebAuthn 14; the tools' server test F-10 requires that error).
func (a *TPMAttester) Statement(authData, clientDataHash []byte, credKey tpm.KeyBlob) (string, map[string]any, error) {
	if len(clientDataHash) != sha256.Size {
		return "", nil, fmt.Errorf("tpm attestation: clientDataHash is %d bytes, want %d", len(clientDataHash), sha256.Size)
	}
	pubArea, err := tpm.PublicArea(credKey)
	if err != nil {
		return "", nil, fmt.Errorf("tpm attestation: %w", err)
	}
	if err := checkSchemeNull(pubArea); err != nil {
		return "", nil, err
	}
	h := sha256.New()
	h.Write(authData)
	h.Write(clientDataHash)
	certInfo, sig, err := a.tpm.Certify(a.ak, credKey, h.Sum(nil))
	if err != nil {
		return "", nil, fmt.Errorf("tpm attestation: %w", err)
	}
	return "tpm", map[string]any{
		"ver":      "2.0",
		"alg":      int64(tpm.ES256),
		"x5c":      [][]byte{bytes.Clone(a.akCert)},
		"sig":      sig,
		"certInfo": certInfo,
		"pubArea":  pubArea,
	}, nil
}

// ErrNotAttestable is returned by Statement for a credential key with a
// signing scheme in its public area, i.e. not made by TPMAttester.CreateKey.
var ErrNotAttestable = errors.New("tpm attestation: the credential key's pubArea names a signing scheme, which relying parties (python-fido2) reject: create it with TPMAttester.CreateKey")

// checkSchemeNull makes sure pubArea, a credential key's TPMT_PUBLIC as
// tpm.PublicArea returns it (so one of passkeyd's templates), has no
// signing scheme. It reads the few fields in front of the scheme by hand:
// type, nameAlg, objectAttributes, authPolicy (TPM2B), the symmetric
// algorithm (TPM_ALG_NULL for signing keys) and then the scheme, the same
// place for ECC and RSA. (go-tpm's reflective Unmarshal costs tens of
// microseconds.)
func checkSchemeNull(pubArea []byte) error {
	const null = uint16(tpm2.TPMAlgNull)
	if len(pubArea) < 10 {
		return fmt.Errorf("tpm attestation: pubArea of %d bytes", len(pubArea))
	}
	off := 10 + int(binary.BigEndian.Uint16(pubArea[8:]))
	if len(pubArea) < off+4 || binary.BigEndian.Uint16(pubArea[off:]) != null ||
		binary.BigEndian.Uint16(pubArea[off+2:]) != null {
		return ErrNotAttestable
	}
	return nil
}

// CACertificate returns the attestation CA's certificate (DER), for
// `passkeyctl attestation ca`: what an organisation adds to its relying
// parties' trusted attestation roots.
func (a *TPMAttester) CACertificate() []byte { return bytes.Clone(a.caCert) }

// StoredValues names the store values the attester keeps: the CA key and
// certificate, the AK and its certificate. authenticatorReset keeps them
// (ctap2.Attester), so a fleet's trust in the CA survives a reset.
func (a *TPMAttester) StoredValues() []string {
	return []string{NameCAKey, NameCACert, NameAKKey, NameAKCert}
}

// AIKCertificate returns the AK's certificate (DER), the only one in x5c.
func (a *TPMAttester) AIKCertificate() []byte { return bytes.Clone(a.akCert) }

// ca is the loaded attestation CA.
type ca struct {
	cert   *x509.Certificate
	signer crypto.Signer
}

// loadCA loads the CA, or creates it when nothing is stored. A key without
// a certificate (a crash between the two writes) gets its certificate now.
func loadCA(t TPM, s Store, now time.Time) (*ca, error) {
	blob, errKey := s.Get(NameCAKey)
	der, errCert := s.Get(NameCACert)
	for _, err := range []error{errKey, errCert} {
		if err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return nil, fmt.Errorf("attestation: read CA: %w", err)
		}
	}
	if errKey != nil && errCert == nil {
		return nil, errors.New("attestation: the store has a CA certificate but no CA key (refusing to replace a CA that relying parties may trust)")
	}
	var pub *ecdsa.PublicKey
	if errKey != nil {
		var k crypto.PublicKey
		var err error
		if blob, k, err = t.CreateKey(tpm.ES256); err != nil {
			return nil, fmt.Errorf("attestation: create CA key: %w", err)
		}
		if pub, _ = k.(*ecdsa.PublicKey); pub == nil {
			return nil, fmt.Errorf("attestation: CA key is %T", k)
		}
		if err := s.Put(NameCAKey, blob); err != nil {
			return nil, fmt.Errorf("attestation: store CA key: %w", err)
		}
	} else {
		k, alg, err := tpm.PublicKey(blob)
		if err != nil || alg != tpm.ES256 {
			return nil, fmt.Errorf("attestation: stored CA key (%v): %w", alg, err)
		}
		pub = k.(*ecdsa.PublicKey)
	}
	signer, err := tpm.NewSigner(t, blob)
	if err != nil {
		return nil, fmt.Errorf("attestation: CA key: %w", err)
	}
	if errCert == nil {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("attestation: parse CA certificate: %w", err)
		}
		if !pub.Equal(cert.PublicKey) || !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
			return nil, errors.New("attestation: the stored CA certificate does not belong to the stored CA key")
		}
		return &ca{cert: cert, signer: signer}, nil
	}
	cert, err := issueCACert(signer, now)
	if err != nil {
		return nil, err
	}
	if err := s.Put(NameCACert, cert.Raw); err != nil {
		return nil, fmt.Errorf("attestation: store CA certificate: %w", err)
	}
	return &ca{cert: cert, signer: signer}, nil
}

func issueCACert(signer crypto.Signer, now time.Time) (*x509.Certificate, error) {
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("attestation: CA id: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "passkeyd attestation CA " + hex.EncodeToString(id)},
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.AddDate(validity, 0, 0).UTC(),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("attestation: self-sign CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// loadAK loads the AK, creating it when the store has none.
func loadAK(t TPM, s Store) (tpm.KeyBlob, *ecdsa.PublicKey, error) {
	blob, err := s.Get(NameAKKey)
	if err == nil {
		pub, err := tpm.AttestationKeyPublic(blob)
		if err != nil {
			return nil, nil, fmt.Errorf("attestation: stored attestation key: %w", err)
		}
		return blob, pub, nil
	}
	if !errors.Is(err, keystore.ErrNotFound) {
		return nil, nil, fmt.Errorf("attestation: read attestation key: %w", err)
	}
	blob, k, err := t.CreateAttestationKey()
	if err != nil {
		return nil, nil, fmt.Errorf("attestation: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("attestation: attestation key is %T", k)
	}
	if err := s.Put(NameAKKey, blob); err != nil {
		return nil, nil, fmt.Errorf("attestation: store attestation key: %w", err)
	}
	return blob, pub, nil
}

// aikCertCurrent reports whether der is an AIK certificate for akPub issued
// by ca with the wanted subjectAltName and AAGUID, valid now.
func aikCertCurrent(der []byte, akPub *ecdsa.PublicKey, ca *x509.Certificate, wantSAN, wantAAGUID []byte, now time.Time) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil || !akPub.Equal(c.PublicKey) || !bytes.Equal(c.RawIssuer, ca.RawSubject) ||
		c.CheckSignatureFrom(ca) != nil || now.After(c.NotAfter) {
		return false
	}
	var san, aaguid []byte
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(oidSubjectAltName):
			san = e.Value
		case e.Id.Equal(oidFIDOGenCeAAGUID):
			aaguid = e.Value
		}
	}
	return bytes.Equal(san, wantSAN) && bytes.Equal(aaguid, wantAAGUID)
}

// tpmAttribute is an AttributeTypeAndValue whose value is a UTF8String, as
// the TCG profile has it (Go would pick PrintableString for a plain string).
type tpmAttribute struct {
	Type  asn1.ObjectIdentifier
	Value string `asn1:"utf8"`
}

// rdnSET is a RelativeDistinguishedName (encoding/asn1 encodes a slice type
// whose name ends in SET as a SET OF).
type rdnSET []tpmAttribute

// aikSAN encodes the subjectAltName: GeneralNames holding one directoryName
// whose three RDNs are the TPM's manufacturer, model and version (TCG EK
// Credential Profile, "Subject Alternative Name").
func aikSAN(id tpm.Identity) ([]byte, error) {
	rdns := []rdnSET{
		{{oidTCGAtTPMManufacturer, fmt.Sprintf("id:%08X", id.Manufacturer)}},
		{{oidTCGAtTPMModel, id.Model}},
		{{oidTCGAtTPMVersion, fmt.Sprintf("id:%08X", id.FirmwareVersion1)}},
	}
	name, err := asn1.Marshal(rdns)
	if err != nil {
		return nil, fmt.Errorf("attestation: encode TPM name: %w", err)
	}
	// directoryName [4] is EXPLICIT (Name is a CHOICE).
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		return nil, fmt.Errorf("attestation: encode subjectAltName: %w", err)
	}
	return san, nil
}

func issueAIKCert(ca *ca, akPub *ecdsa.PublicKey, san, aaguid []byte, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.AddDate(validity, 0, 0).UTC()
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Subject: empty (WebAuthn §8.3.1); the subjectAltName is
		// therefore critical (RFC 5280 §4.2.1.6).
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidTCGKpAIKCertificate},
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: true, Value: san},
			{Id: oidFIDOGenCeAAGUID, Value: aaguid},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, akPub, ca.signer)
	if err != nil {
		return nil, fmt.Errorf("attestation: issue AIK certificate: %w", err)
	}
	return der, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("attestation: certificate serial: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // positive, non-zero
}
