package ctap2

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// attestationStatement makes the statement the configuration asks for
// (CTAP 2.1 §6.1.2 step 19, WebAuthn §8):
//   - self (default): "packed" signed by the new credential's own key
//     (WebAuthn §8.2, self attestation: no x5c), so it proves possession
//     and identifies nothing beyond the AAGUID. For an RP ID that no web
//     page can use (nonWebRPID: pam-u2f's "pam://host", OpenSSH's "ssh:")
//     the same signature comes with x5c = [a certificate of the credential
//     key, issued by that key itself] (credentialCertificate);
//   - none;
//   - tpm: an attestation key in the TPM certifies the credential key.
func (a *Authenticator) attestationStatement(rpID string, authData, clientDataHash []byte, blob tpm.KeyBlob, pub crypto.PublicKey, alg tpm.Algorithm) (string, map[string]any, error) {
	switch a.attestation {
	case AttestationNone:
		return "none", map[string]any{}, nil
	case AttestationTPM:
		f, stmt, err := a.attester.Statement(authData, clientDataHash, blob)
		if err != nil {
			return "", nil, fmt.Errorf("tpm attestation: %w", err)
		}
		return f, stmt, nil
	}
	digest := sha256.Sum256(append(append([]byte{}, authData...), clientDataHash...))
	sig, err := a.tpm.Sign(blob, digest[:])
	if err != nil {
		return "", nil, fmt.Errorf("self attestation: %w", err)
	}
	stmt := map[string]any{"alg": int64(alg), "sig": sig}
	if nonWebRPID(rpID) {
		cert, err := credentialCertificate(a.tpm, blob, pub)
		if err != nil {
			return "", nil, err
		}
		stmt["x5c"] = [][]byte{cert}
	}
	return "packed", stmt, nil
}

// nonWebRPID reports whether rpID is one that no browser can send: it has
// a code point that the WHATWG URL Standard forbids in a domain ("forbidden
// domain code point", §3.2: among them ':', '/', '%', '@', space and C0
// controls). A web page's RP ID is a valid domain (WebAuthn §5.1.3, the
// client checks it against the page's origin), so it never has one;
// pam-u2f's "pam://HOSTNAME" and OpenSSH's "ssh:..." always do.
//
// Why this matters: libfido2's fido_cred_verify, which pam-u2f 1.1.0's
// pamu2fcfg (Debian 12, Ubuntu 24.04) calls on every registration, refuses
// a statement without x5c (FIDO_ERR_INVALID_ARGUMENT, -7) and then checks
// only the signature with x5c[0]'s key, not the certificate. Web RP IDs
// keep plain self attestation, the type every RP library knows.
func nonWebRPID(rpID string) bool {
	for i := 0; i < len(rpID); i++ {
		c := rpID[i]
		if c <= 0x20 || c == 0x7f || strings.IndexByte("#%/:<>?@[\\]^|", c) >= 0 {
			return true
		}
	}
	return false
}

// Subject of the credential certificates (WebAuthn §8.2.1): C, O, OU
// "Authenticator Attestation", CN. "XX" is an ISO 3166-1 user-assigned
// code: passkeyd is not a vendor incorporated anywhere. Every credential
// certificate has this subject, so the subject tells nothing apart.
var credentialCertSubject = mustRDNs([]rdn{
	{oid: asn1.ObjectIdentifier{2, 5, 4, 6}, value: "XX", printable: true},                  // C
	{oid: asn1.ObjectIdentifier{2, 5, 4, 10}, value: "passkeyd"},                            // O
	{oid: asn1.ObjectIdentifier{2, 5, 4, 11}, value: "Authenticator Attestation"},           // OU
	{oid: asn1.ObjectIdentifier{2, 5, 4, 3}, value: "passkeyd credential key, self-issued"}, // CN
})

// oidFIDOGenCeAAGUID is id-fido-gen-ce-aaguid (WebAuthn §8.2.1).
var oidFIDOGenCeAAGUID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}

// Validity of the credential certificates: fixed, so that a certificate
// does not carry the device's clock; NotAfter is RFC 5280 §4.1.2.5's "no
// well-defined expiration date".
var (
	credentialCertNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	credentialCertNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// credentialCertificate issues the x5c certificate for the credential key
// blob (public key pub): a WebAuthn §8.2.1 packed attestation certificate
// (version 3, the subject above, basicConstraints CA=false, the AAGUID
// extension, not critical) whose key is the credential key and which that
// key signs itself, inside the TPM (one more signature per registration).
//
// What a verifier learns from it is exactly what self attestation tells:
// whoever made the statement holds the credential's private key. The
// certificate chains to nothing (WebAuthn §8.2's verification returns
// "Basic, AttCA or uncertainty" with x5c as the trust path, and no trust
// anchor ends that path); nothing in it is shared with any other
// credential: the key is the credential's, the serial is derived from it,
// the subject and dates are the same for every credential. A device-wide
// certificate (the U2F attestation one) would have linked every pam-u2f
// and ssh key of a machine together, for no trust in return.
func credentialCertificate(t tpm.BlobSigner, blob tpm.KeyBlob, pub crypto.PublicKey) ([]byte, error) {
	signer, err := tpm.NewSigner(t, blob)
	if err != nil {
		return nil, fmt.Errorf("credential certificate: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("credential certificate: %w", err)
	}
	aaguid, err := asn1.Marshal(AAGUID[:])
	if err != nil {
		return nil, fmt.Errorf("credential certificate: %w", err)
	}
	// RFC 5280 §4.1.2.2: unique per issuer (all these certificates have
	// one issuer name), positive, at most 20 bytes: 127 bits of the key's
	// hash.
	h := sha256.Sum256(spki)
	h[0] &= 0x7f
	serial := new(big.Int).SetBytes(h[:16])
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            credentialCertSubject,
		NotBefore:             credentialCertNotBefore,
		NotAfter:              credentialCertNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions:       []pkix.Extension{{Id: oidFIDOGenCeAAGUID, Value: aaguid}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("credential certificate: %w", err)
	}
	return der, nil
}

// rdn is one attribute of a distinguished name. WebAuthn §8.2.1 wants
// O, OU and CN as UTF8String and C as PrintableString; Go's pkix.Name
// would pick PrintableString for all of them.
type rdn struct {
	oid       asn1.ObjectIdentifier
	value     string
	printable bool
}

func mustRDNs(attrs []rdn) []byte {
	type utf8Attr struct {
		Type  asn1.ObjectIdentifier
		Value string `asn1:"utf8"`
	}
	type printableAttr struct {
		Type  asn1.ObjectIdentifier
		Value string `asn1:"printable"`
	}
	var seq []asn1.RawValue
	for _, a := range attrs {
		var attr any = utf8Attr{a.oid, a.value}
		if a.printable {
			attr = printableAttr{a.oid, a.value}
		}
		b, err := asn1.Marshal(attr)
		if err != nil {
			panic(err)
		}
		// A RelativeDistinguishedName is a SET OF one attribute.
		set, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: b})
		if err != nil {
			panic(err)
		}
		seq = append(seq, asn1.RawValue{FullBytes: set})
	}
	name, err := asn1.Marshal(seq)
	if err != nil {
		panic(err)
	}
	return name
}
