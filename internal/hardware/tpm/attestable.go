package tpm

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// attestableKeyTemplate is keyTemplate(alg) with the signing scheme left
// TPM_ALG_NULL: the template of credential keys that a "tpm" attestation
// statement certifies. The statement carries the key's TPMT_PUBLIC
// (pubArea), and relying parties parse it: python-fido2 (0.9.1 through the
// current releases) accepts an ECC pubArea only with scheme TPM_ALG_NULL and
// cannot parse an RSA scheme's hashAlg, because Windows Hello's keys, which
// every TPM verifier is tested against, have none. Sign passes ECDSA or
// RSASSA with SHA-256 explicitly (signScheme), so these keys sign exactly as
// keyTemplate's do.
//
// parseBlob accepts both variants (isAttestableKey); everything else about
// the two templates is identical.
func attestableKeyTemplate(alg Algorithm) (tpm2.TPMTPublic, error) {
	tmpl, err := keyTemplate(alg)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	switch alg {
	case ES256:
		tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
	case RS256:
		tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   2048,
			Exponent:  0,
		})
	}
	return tmpl, nil
}

// isAttestableKey reports whether pubArea is the attestableKeyTemplate
// variant of want, a credential key template with its unique field set.
// Used by parseBlob, after want's own bytes did not match; false for every
// other kind of template. Like parseBlob's comparison it pins every byte,
// but without go-tpm's reflection (tens of microseconds per Marshal).
func isAttestableKey(want tpm2.TPMTPublic, pubArea []byte) bool {
	prefix, ok := attestablePrefixes()[want.Type]
	if !ok || !bytes.HasPrefix(pubArea, prefix) {
		return false
	}
	var unique []byte
	switch want.Type {
	case tpm2.TPMAlgECC:
		point, err := want.Unique.ECC()
		if err != nil {
			return false
		}
		unique = append(append2B(nil, point.X.Buffer), append2B(nil, point.Y.Buffer)...)
	case tpm2.TPMAlgRSA:
		n, err := want.Unique.RSA()
		if err != nil {
			return false
		}
		unique = append2B(nil, n.Buffer)
	}
	return bytes.Equal(pubArea[len(prefix):], unique)
}

func append2B(b, body []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(body))), body...)
}

// attestablePrefixes are the attestable templates' bytes up to their unique
// field, by object type: the template marshalled with an empty unique (an
// ECC point of two empty buffers, an empty RSA modulus) minus that.
var attestablePrefixes = sync.OnceValue(func() map[tpm2.TPMAlgID][]byte {
	m := map[tpm2.TPMAlgID][]byte{}
	for alg, emptyUnique := range map[Algorithm]int{ES256: 4, RS256: 2} {
		tmpl, err := attestableKeyTemplate(alg)
		if err != nil {
			panic(err)
		}
		b := tpm2.Marshal(tmpl)
		m[tmpl.Type] = b[:len(b)-emptyUnique]
	}
	return m
})

// signScheme is the scheme TPM2_Sign uses for a credential key of alg:
// the same as keyTemplate's (a TPM accepts an inScheme equal to the key's
// own) and the one that attestable keys, which have none, need.
func signScheme(alg Algorithm) tpm2.TPMTSigScheme {
	if alg == RS256 {
		return tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		}
	}
	return tpm2.TPMTSigScheme{
		Scheme:  tpm2.TPMAlgECDSA,
		Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
	}
}

// CreateAttestableKey makes a credential key like CreateKey whose public
// area has no signing scheme (attestableKeyTemplate): the kind of key a
// "tpm" attestation statement should certify. It signs, parses and stores
// like any other credential key.
func (t *TPM) CreateAttestableKey(alg Algorithm) (KeyBlob, crypto.PublicKey, error) {
	tmpl, err := attestableKeyTemplate(alg)
	if err != nil {
		return nil, nil, fmt.Errorf("create attestable key: %w", err)
	}
	if !t.supports(alg) {
		return nil, nil, fmt.Errorf("create attestable %v key: not supported by this TPM", alg)
	}
	blob, err := t.create(tmpl, tpm2.TPM2BSensitiveCreate{})
	if err != nil {
		return nil, nil, fmt.Errorf("create attestable %v key: %w", alg, err)
	}
	pub, got, err := PublicKey(blob)
	if err != nil || got != alg {
		return nil, nil, fmt.Errorf("create attestable %v key: TPM returned an unexpected public area (%v)", alg, err)
	}
	return blob, pub, nil
}
