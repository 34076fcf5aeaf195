package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

var testNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func loadAttester(tb testing.TB, tp TPM, s Store) *TPMAttester {
	tb.Helper()
	a, err := LoadTPMAttester(tp, s, testAAGUID, time.Now())
	if err != nil {
		tb.Fatalf("LoadTPMAttester: %v", err)
	}
	return a
}

// register makes a "tpm" registration for cred, as makeCredential would.
func register(tb testing.TB, a *TPMAttester, cred credential, name string) registration {
	tb.Helper()
	r := registration{name: name, authData: cred.authData, credID: cred.id, challenge: newChallenge()}
	r.clientDataJSON = clientDataJSON(r.challenge)
	var err error
	if r.fmt, r.attStmt, err = a.Statement(cred.authData, r.clientDataHash(), cred.blob); err != nil {
		tb.Fatalf("Statement: %v", err)
	}
	return r
}

// TestTPMStatementVerifiers: go-webauthn and python-fido2 accept the "tpm"
// statements of ES256 keys on the simulator (vendor MSFT) and swtpm (IBM)
// and of RS256 keys, and both reject every tampered one.
func TestTPMStatementVerifiers(t *testing.T) {
	sim := func(testing.TB) *tpm.TPM { return tpmsim.TPM() }
	for _, tc := range []struct {
		name string
		tp   func(testing.TB) *tpm.TPM
		alg  tpm.Algorithm
	}{
		{"sim/ES256", sim, tpm.ES256},
		{"sim/RS256", sim, tpm.RS256},
		{"swtpm/ES256", swtpm, tpm.ES256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := tc.tp(t)
			a := loadAttester(t, tp, newStore(t))
			cred := newCredential(t, a, tc.alg, testAAGUID)
			good := register(t, a, cred, "good")
			verifyTPMRegistration(t, tp, a, cred, good)
		})
	}
}

func verifyTPMRegistration(t *testing.T, tp *tpm.TPM, a *TPMAttester, cred credential, good registration) {
	if good.fmt != "tpm" {
		t.Fatalf("fmt %q", good.fmt)
	}
	stmt := good.attStmt
	if stmt["ver"] != "2.0" || stmt["alg"] != int64(-7) {
		t.Errorf("ver %v alg %v", stmt["ver"], stmt["alg"])
	}
	x5c := stmt["x5c"].([][]byte)
	if len(x5c) != 1 || !bytes.Equal(x5c[0], a.AIKCertificate()) {
		t.Fatal("x5c is not [AIK certificate]")
	}
	certInfo, pubArea := stmt["certInfo"].([]byte), stmt["pubArea"].([]byte)

	// Validly signed statements about the wrong things: only the RP's
	// checks of extraData, the attested name and pubArea catch these.
	other := newCredential(t, a, tpm.ES256, testAAGUID)
	extraData := sha256.Sum256(slices.Concat(good.authData, good.clientDataHash()))
	otherInfo, otherSig, err := tp.Certify(a.ak, other.blob, extraData[:])
	if err != nil {
		t.Fatal(err)
	}
	otherPubArea, err := tpm.PublicArea(other.blob)
	if err != nil {
		t.Fatal(err)
	}
	wrongData := sha256.Sum256(slices.Concat(good.authData, make([]byte, 32)))
	wrongInfo, wrongSig, err := tp.Certify(a.ak, cred.blob, wrongData[:])
	if err != nil {
		t.Fatal(err)
	}
	// An attester on another TPM: its AIK certificate does not match this AK.
	foreign := loadAttester(t, tpmsim.TPM(), newStore(t))
	if tp == tpmsim.TPM() {
		foreign = loadAttester(t, swtpmOrSim(t), newStore(t))
	}

	otherCDJ := good
	otherCDJ.name = "other clientDataHash"
	otherCDJ.challenge = newChallenge()
	otherCDJ.clientDataJSON = clientDataJSON(otherCDJ.challenge)
	otherCounter := good
	otherCounter.name = "authData counter"
	otherCounter.authData = flipped(good.authData, 36)

	bad := []registration{
		good.with("certInfo magic", "certInfo", flipped(certInfo, 0)),
		good.with("certInfo type", "certInfo", flipped(certInfo, 5)),
		good.with("certInfo extraData", "certInfo", flipped(certInfo, 4+2+2+34+2)),
		good.with("certInfo attested name", "certInfo", flipped(certInfo, -1-2-34-1)),
		good.with("certInfo last byte", "certInfo", flipped(certInfo, -1)),
		good.with("pubArea unique", "pubArea", flipped(pubArea, -1)),
		good.with("pubArea attributes", "pubArea", flipped(pubArea, 5)), // TPMA_OBJECT decrypt
		good.with("pubArea nameAlg", "pubArea", flipped(pubArea, 3)),
		good.with("sig", "sig", flipped(stmt["sig"].([]byte), -1)),
		good.with("certify of another key", "certInfo", otherInfo).with("certify of another key", "sig", otherSig),
		good.with("pubArea and certify of another key", "certInfo", otherInfo).
			with("pubArea and certify of another key", "sig", otherSig).
			with("pubArea and certify of another key", "pubArea", otherPubArea),
		good.with("certify over other data", "certInfo", wrongInfo).with("certify over other data", "sig", wrongSig),
		good.with("x5c the CA certificate", "x5c", [][]byte{a.CACertificate()}),
		good.with("AIK certificate of another TPM", "x5c", [][]byte{foreign.AIKCertificate()}),
		good.with("alg RS256", "alg", int64(-257)),
		otherCDJ,
		otherCounter,
	}
	// python-fido2 0.9.1 does not look at ver: go-webauthn only.
	badVer := good.with("ver 1.2", "ver", "1.2")

	// go-webauthn.
	typ, err := goWebAuthn(t, good)
	if err != nil {
		t.Fatalf("go-webauthn rejected the tpm registration: %v", err)
	}
	if typ != "attca" {
		t.Errorf("go-webauthn attestation type %q, want attca", typ)
	}
	for _, r := range append(slices.Clone(bad), badVer) {
		if _, err := goWebAuthn(t, r); err == nil {
			t.Errorf("go-webauthn accepted %q", r.name)
		} else {
			t.Logf("go-webauthn rejects %q: %v", r.name, err)
		}
	}
	// The AIK certificate binds the AAGUID: go-webauthn checks it.
	otherAAGUID := testAAGUID
	otherAAGUID[0] ^= 0xff
	mismatch := newCredential(t, a, tpm.ES256, otherAAGUID)
	if _, err := goWebAuthn(t, register(t, a, mismatch, "aaguid")); err == nil {
		t.Error("go-webauthn accepted an authData AAGUID that differs from the AIK certificate's")
	}

	// python-fido2: the same cases in one run, plus the chain to a
	// trusted CA (the fleet policy an organisation applies). 0.9.1 fails
	// every ECC "tpm" statement on bugs of its own in parsing pubArea
	// (TpmsEccPoint's x is set to y; an AttributeError in public_key()):
	// ES256 runs with those two lines fixed, after checking that the
	// unpatched verifier stops at that bug.
	good.name = "good"
	fixECC := cred.alg == tpm.ES256
	if fixECC {
		r := pythonFido2(t, []registration{good}, nil, false)["good"]
		switch {
		case r.OK:
			t.Log("this python-fido2 verifies ECC tpm statements without the fix")
		case r.Error != "AttributeError: 'TpmsEccParms' object has no attribute 'to_curve'":
			t.Errorf("unpatched python-fido2: %s, want only its ECC to_curve bug", r.Error)
		default:
			t.Logf("unpatched python-fido2 0.9.1: %s", r.Error)
		}
	}
	res := pythonFido2(t, append([]registration{good}, bad...), nil, fixECC)
	if r := res["good"]; !r.OK || r.Type != "ATT_CA" {
		t.Fatalf("python-fido2 TpmAttestation rejected the tpm registration: %+v", r)
	}
	for _, r := range bad {
		if res[r.name].OK {
			t.Errorf("python-fido2 accepted %q", r.name)
		} else {
			t.Logf("python-fido2 rejects %q: %s", r.name, res[r.name].Error)
		}
	}
	trusted := pythonFido2(t, []registration{good}, a.CACertificate(), fixECC)
	if r := trusted["good"]; !r.OK {
		t.Errorf("python-fido2: chain to our CA: %+v", r)
	}
	untrusted := pythonFido2(t, []registration{good}, foreign.CACertificate(), fixECC)
	if r := untrusted["good"]; r.OK {
		t.Error("python-fido2: chain accepted with another CA as the trusted root")
	}
}

// swtpmOrSim gives a TPM other than the simulator where swtpm exists.
func swtpmOrSim(t *testing.T) *tpm.TPM {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil && !inCI() {
		return tpmsim.TPM() // another attester on the same TPM: still another AK
	}
	return swtpm(t)
}

// TestAllFormats: every format the daemon emits (packed self attestation,
// none, tpm) is accepted by go-webauthn and python-fido2 (PackedAttestation,
// NoneAttestation, TpmAttestation), and a flipped signature is rejected.
// Packed is built here the way ctap2's makeCredential builds it.
func TestAllFormats(t *testing.T) {
	tp := tpmsim.TPM()
	a := loadAttester(t, tp, newStore(t))
	cred := newCredential(t, tp, tpm.ES256, testAAGUID) // self, none: tpm.TPM.CreateKey

	packed := registration{name: "packed", fmt: "packed", authData: cred.authData, credID: cred.id, challenge: newChallenge()}
	packed.clientDataJSON = clientDataJSON(packed.challenge)
	d := sha256.Sum256(slices.Concat(cred.authData, packed.clientDataHash()))
	sig, err := tp.Sign(cred.blob, d[:])
	if err != nil {
		t.Fatal(err)
	}
	packed.attStmt = map[string]any{"alg": int64(-7), "sig": sig}

	none := registration{name: "none", fmt: "none", attStmt: map[string]any{}, authData: cred.authData, credID: cred.id, challenge: newChallenge()}
	none.clientDataJSON = clientDataJSON(none.challenge)

	tpmReg := register(t, a, newCredential(t, a, tpm.ES256, testAAGUID), "tpm")
	good := []registration{packed, none, tpmReg}
	bad := []registration{
		packed.with("packed: flipped sig", "sig", flipped(sig, -1)),
		none.with("none: a statement", "sig", sig),
		tpmReg.with("tpm: flipped sig", "sig", flipped(tpmReg.attStmt["sig"].([]byte), -1)),
	}
	// go-webauthn calls self attestation "basic_surrogate".
	wantType := map[string][2]string{"packed": {"basic_surrogate", "SELF"}, "none": {"none", "NONE"}, "tpm": {"attca", "ATT_CA"}}
	for _, r := range good {
		typ, err := goWebAuthn(t, r)
		if err != nil || typ != wantType[r.name][0] {
			t.Errorf("go-webauthn %s: type %q, %v", r.name, typ, err)
		}
	}
	for _, r := range bad {
		if _, err := goWebAuthn(t, r); err == nil {
			t.Errorf("go-webauthn accepted %q", r.name)
		}
	}
	res := pythonFido2(t, append(slices.Clone(good), bad...), nil, true) // ES256: see verifyTPMRegistration
	for _, r := range good {
		if got := res[r.name]; !got.OK || got.Type != wantType[r.name][1] {
			t.Errorf("python-fido2 %s: %+v", r.name, got)
		}
	}
	for _, r := range bad {
		if res[r.name].OK {
			t.Errorf("python-fido2 accepted %q", r.name)
		}
	}
}

// TestAIKCertificateProfile checks every field RPs check (WebAuthn §8.3.1,
// TCG AIK profile) and the AAGUID extension, and that the CA certificate
// verifies the AIK certificate as a chain.
func TestAIKCertificateProfile(t *testing.T) {
	tp := tpmsim.TPM()
	a := loadAttester(t, tp, newStore(t))
	id, err := tp.Identity()
	if err != nil {
		t.Fatal(err)
	}
	aik, err := x509.ParseCertificate(a.AIKCertificate())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(a.CACertificate())
	if err != nil {
		t.Fatal(err)
	}

	// The AIK certificate.
	if aik.Version != 3 {
		t.Errorf("version %d", aik.Version)
	}
	if !bytes.Equal(aik.RawSubject, []byte{0x30, 0x00}) || aik.Subject.String() != "" {
		t.Errorf("subject %x (%q), want empty", aik.RawSubject, aik.Subject)
	}
	if !aik.BasicConstraintsValid || aik.IsCA {
		t.Error("basic constraints: want present with CA=false")
	}
	if len(aik.ExtKeyUsage) != 0 || len(aik.UnknownExtKeyUsage) != 1 || !aik.UnknownExtKeyUsage[0].Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 3}) {
		t.Errorf("EKU %v %v, want exactly 2.23.133.8.3", aik.ExtKeyUsage, aik.UnknownExtKeyUsage)
	}
	if aik.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v", aik.KeyUsage)
	}
	akPub, err := tpm.AttestationKeyPublic(a.ak)
	if err != nil || !akPub.Equal(aik.PublicKey) {
		t.Errorf("AIK certificate key is not the AK (%v)", err)
	}
	if aik.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v", aik.SignatureAlgorithm)
	}
	if !aik.NotBefore.Before(time.Now()) || aik.NotAfter.After(ca.NotAfter) {
		t.Errorf("validity %v..%v (CA until %v)", aik.NotBefore, aik.NotAfter, ca.NotAfter)
	}
	var san, aaguid *pkix.Extension
	for i, e := range aik.Extensions {
		switch {
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}):
			san = &aik.Extensions[i]
		case e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}):
			aaguid = &aik.Extensions[i]
		}
	}
	if san == nil || !san.Critical {
		t.Fatal("subjectAltName missing or not critical")
	}
	wantSAN, _ := aikSAN(id)
	if !bytes.Equal(san.Value, wantSAN) {
		t.Errorf("SAN %x, want %x", san.Value, wantSAN)
	}
	attrs := parseSAN(t, san.Value)
	want := map[string]string{
		"2.23.133.2.1": fmt.Sprintf("id:%08X", id.Manufacturer),
		"2.23.133.2.2": id.Model,
		"2.23.133.2.3": fmt.Sprintf("id:%08X", id.FirmwareVersion1),
	}
	if fmt.Sprint(attrs) != fmt.Sprint(want) {
		t.Errorf("SAN attributes %v, want %v", attrs, want)
	}
	if attrs["2.23.133.2.1"] != "id:4D534654" { // the simulator: MSFT
		t.Errorf("simulator manufacturer %q", attrs["2.23.133.2.1"])
	}
	if aaguid == nil || aaguid.Critical || !bytes.Equal(aaguid.Value, append([]byte{0x04, 0x10}, testAAGUID[:]...)) {
		t.Errorf("AAGUID extension %+v, want non-critical OCTET STRING %x", aaguid, testAAGUID)
	}
	if len(aik.UnhandledCriticalExtensions) != 1 || !aik.UnhandledCriticalExtensions[0].Equal(san.Id) {
		t.Errorf("unhandled critical extensions %v, want only the SAN (directoryName)", aik.UnhandledCriticalExtensions)
	}

	// The CA certificate.
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA basic constraints: IsCA %v pathlen %d zero %v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign {
		t.Errorf("CA key usage %v", ca.KeyUsage)
	}
	if !regexp.MustCompile(`^passkeyd attestation CA [0-9a-f]{16}$`).MatchString(ca.Subject.CommonName) || ca.Subject.String() != "CN="+ca.Subject.CommonName {
		t.Errorf("CA subject %q", ca.Subject)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}
	if !bytes.Equal(aik.RawIssuer, ca.RawSubject) || !bytes.Equal(aik.AuthorityKeyId, ca.SubjectKeyId) || len(ca.SubjectKeyId) == 0 {
		t.Error("AIK issuer / authority key id do not name the CA")
	}

	// The chain: the CA verifies the AIK certificate, as an RP that trusts
	// this CA checks it. crypto/x509 does not parse directoryName SANs, so
	// (like go-webauthn's MDS path) the critical SAN is marked handled.
	if err := aik.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("CA does not verify the AIK certificate: %v", err)
	}
	leaf := *aik
	leaf.UnhandledCriticalExtensions = nil
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("x509 chain verification: %v", err)
	}
	other := loadAttester(t, tp, newStore(t))
	otherCA, _ := x509.ParseCertificate(other.CACertificate())
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherCA)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: otherRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("another installation's CA verifies this AIK certificate")
	}
	if otherCA.Subject.CommonName == ca.Subject.CommonName {
		t.Error("two installations have the same CA name")
	}
}

type rawRDNSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// parseSAN decodes GeneralNames with one directoryName and returns its
// attributes, checking that each value is a UTF8String.
func parseSAN(t *testing.T, der []byte) map[string]string {
	t.Helper()
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &names); err != nil || len(rest) != 0 || len(names) != 1 {
		t.Fatalf("GeneralNames: %v, %d names", err, len(names))
	}
	if dn := names[0]; dn.Class != asn1.ClassContextSpecific || dn.Tag != 4 || !dn.IsCompound {
		t.Fatalf("general name class %d tag %d, want directoryName [4]", dn.Class, dn.Tag)
	}
	var rdns []rawRDNSET
	if rest, err := asn1.Unmarshal(names[0].Bytes, &rdns); err != nil || len(rest) != 0 {
		t.Fatalf("directoryName: %v", err)
	}
	out := map[string]string{}
	for _, rdn := range rdns {
		for _, atv := range rdn {
			if atv.Value.Tag != asn1.TagUTF8String {
				t.Errorf("%v is ASN.1 tag %d, want UTF8String", atv.Type, atv.Value.Tag)
			}
			out[atv.Type.String()] = string(atv.Value.Bytes)
		}
	}
	return out
}

// TestAIKSANEncoding compares the subjectAltName with DER written out by
// hand (TCG EK Credential Profile, "Subject Alternative Name").
func TestAIKSANEncoding(t *testing.T) {
	tlv := func(tag byte, parts ...[]byte) []byte {
		body := slices.Concat(parts...)
		if len(body) > 127 {
			t.Fatal("long form not needed here")
		}
		return append([]byte{tag, byte(len(body))}, body...)
	}
	attr := func(last byte, value string) []byte {
		return tlv(0x31, tlv(0x30, []byte{0x06, 0x05, 0x67, 0x81, 0x05, 0x02, last}, tlv(0x0c, []byte(value))))
	}
	want := tlv(0x30, tlv(0xa4, tlv(0x30,
		attr(1, "id:49424D00"), attr(2, "SW TPM"), attr(3, "id:20191023"))))
	got, err := aikSAN(tpm.Identity{Manufacturer: 0x49424D00, Model: "SW TPM", FirmwareVersion1: 0x20191023, FirmwareVersion2: 0x163636})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SAN\n got %x\nwant %x", got, want)
	}
}

// countingTPM counts key creation and signatures, and can pretend to be
// another TPM model or firmware.
type countingTPM struct {
	TPM
	mu                 sync.Mutex
	keys, aks, signs   int
	identity           *tpm.Identity
	failCreate         error
	certifies          int
	lastQualifyingData []byte
}

func (c *countingTPM) CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error) {
	c.mu.Lock()
	c.keys++
	fail := c.failCreate
	c.mu.Unlock()
	if fail != nil {
		return nil, nil, fail
	}
	return c.TPM.CreateKey(alg)
}

func (c *countingTPM) CreateAttestationKey() (tpm.KeyBlob, crypto.PublicKey, error) {
	c.mu.Lock()
	c.aks++
	c.mu.Unlock()
	return c.TPM.CreateAttestationKey()
}

func (c *countingTPM) Sign(blob tpm.KeyBlob, digest []byte) ([]byte, error) {
	c.mu.Lock()
	c.signs++
	c.mu.Unlock()
	return c.TPM.Sign(blob, digest)
}

func (c *countingTPM) Certify(ak, key tpm.KeyBlob, qd []byte) ([]byte, []byte, error) {
	c.mu.Lock()
	c.certifies++
	c.lastQualifyingData = bytes.Clone(qd)
	c.mu.Unlock()
	return c.TPM.Certify(ak, key, qd)
}

func (c *countingTPM) Identity() (tpm.Identity, error) {
	if c.identity != nil {
		return *c.identity, nil
	}
	return c.TPM.Identity()
}

func (c *countingTPM) counts() [3]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return [3]int{c.keys, c.aks, c.signs}
}

// TestLoadTPMAttester: created once, then loaded without TPM work; the AIK
// certificate is re-issued (same AK, same CA) when the AAGUID or the TPM's
// identity changes or the stored one is not right; the CA is never
// replaced.
func TestLoadTPMAttester(t *testing.T) {
	ct := &countingTPM{TPM: tpmsim.TPM()}
	s := newStore(t)
	a1, err := LoadTPMAttester(ct, s, testAAGUID, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := ct.counts(); got != [3]int{1, 1, 2} {
		t.Errorf("first load: %v keys/AKs/signatures, want 1 CA key, 1 AK, 2 signatures (CA self-signature, AIK certificate)", got)
	}
	for _, name := range []string{NameCAKey, NameCACert, NameAKKey, NameAKCert} {
		if _, err := s.Get(name); err != nil {
			t.Errorf("store %s: %v", name, err)
		}
	}
	aik1, _ := x509.ParseCertificate(a1.AIKCertificate())
	if !aik1.NotBefore.Equal(testNow.Add(-time.Hour)) || !aik1.NotAfter.Equal(testNow.AddDate(30, 0, 0)) {
		t.Errorf("AIK validity %v..%v", aik1.NotBefore, aik1.NotAfter)
	}

	load := func(aaguid [16]byte) *TPMAttester {
		t.Helper()
		a, err := LoadTPMAttester(ct, s, aaguid, testNow.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.CACertificate(), a1.CACertificate()) || !bytes.Equal(a.ak, a1.ak) {
			t.Fatal("the CA or the AK changed")
		}
		return a
	}
	before := ct.counts()
	a2 := load(testAAGUID)
	if ct.counts() != before || !bytes.Equal(a2.AIKCertificate(), a1.AIKCertificate()) {
		t.Errorf("second load did TPM work (%v -> %v) or changed the AIK certificate", before, ct.counts())
	}

	reissued := func(what string, a *TPMAttester, prev []byte) {
		t.Helper()
		after := ct.counts()
		if after != [3]int{before[0], before[1], before[2] + 1} {
			t.Errorf("%s: %v -> %v, want exactly one signature (the new AIK certificate)", what, before, after)
		}
		before = after
		if bytes.Equal(a.AIKCertificate(), prev) {
			t.Errorf("%s: AIK certificate not re-issued", what)
		}
		stored, _ := s.Get(NameAKCert)
		if !bytes.Equal(stored, a.AIKCertificate()) {
			t.Errorf("%s: re-issued certificate not stored", what)
		}
	}
	other := testAAGUID
	other[15] ^= 1
	a3 := load(other)
	reissued("new AAGUID", a3, a2.AIKCertificate())
	aik3, _ := x509.ParseCertificate(a3.AIKCertificate())
	for _, e := range aik3.Extensions {
		if e.Id.Equal(oidFIDOGenCeAAGUID) && !bytes.Equal(e.Value[2:], other[:]) {
			t.Error("re-issued certificate has the old AAGUID")
		}
	}
	a4 := load(testAAGUID)
	reissued("AAGUID back", a4, a3.AIKCertificate())

	id, err := ct.TPM.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id.FirmwareVersion1++
	ct.identity = &id
	a5 := load(testAAGUID)
	reissued("firmware update", a5, a4.AIKCertificate())
	ct.identity = nil
	a6 := load(testAAGUID)
	reissued("firmware back", a6, a5.AIKCertificate())

	if err := s.Put(NameAKCert, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	a7 := load(testAAGUID)
	reissued("garbage AIK certificate", a7, []byte("garbage"))

	foreign := loadAttester(t, tpmsim.TPM(), newStore(t))
	if err := s.Put(NameAKCert, foreign.AIKCertificate()); err != nil {
		t.Fatal(err)
	}
	before = ct.counts()
	a8 := load(testAAGUID)
	reissued("another installation's AIK certificate", a8, foreign.AIKCertificate())

	// Another installation's CA certificate over ours: never silently
	// replaced, never used.
	if err := s.Put(NameCACert, foreign.CACertificate()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTPMAttester(ct, s, testAAGUID, testNow); err == nil {
		t.Error("loaded with a CA certificate that is not the CA key's")
	}
	if err := s.Put(NameCACert, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTPMAttester(ct, s, testAAGUID, testNow); err == nil {
		t.Error("loaded with a garbage CA certificate")
	}
	if err := s.Put(NameCACert, a1.CACertificate()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTPMAttester(ct, s, testAAGUID, testNow); err != nil {
		t.Errorf("restored CA certificate: %v", err)
	}
}

// TestLoadTPMAttesterPartialState: what a crash between the store writes
// leaves behind is completed, not replaced; a CA certificate without its
// key is an error.
func TestLoadTPMAttesterPartialState(t *testing.T) {
	tp := tpmsim.TPM()
	full := newStore(t)
	a := loadAttester(t, tp, full)
	get := func(name string) []byte {
		v, err := full.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// CA key only: its certificate is made for that key.
	s := newStore(t)
	if err := s.Put(NameCAKey, get(NameCAKey)); err != nil {
		t.Fatal(err)
	}
	ct := &countingTPM{TPM: tp}
	b, err := LoadTPMAttester(ct, s, testAAGUID, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if ct.keys != 0 || ct.aks != 1 {
		t.Errorf("CA key only: %d new keys, %d AKs; want 0, 1", ct.keys, ct.aks)
	}
	caA, _ := x509.ParseCertificate(a.CACertificate())
	caB, _ := x509.ParseCertificate(b.CACertificate())
	if !caA.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(caB.PublicKey) {
		t.Error("CA key only: the certificate is for another key")
	}

	// CA and AK keys, no AIK certificate: one is issued for that AK.
	s = newStore(t)
	for _, n := range []string{NameCAKey, NameCACert, NameAKKey} {
		if err := s.Put(n, get(n)); err != nil {
			t.Fatal(err)
		}
	}
	ct = &countingTPM{TPM: tp}
	c, err := LoadTPMAttester(ct, s, testAAGUID, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if ct.counts() != [3]int{0, 0, 1} || !bytes.Equal(c.ak, a.ak) || !bytes.Equal(c.CACertificate(), a.CACertificate()) {
		t.Errorf("no AIK certificate: %v; want only one signature with the same CA and AK", ct.counts())
	}

	// A CA certificate without its key.
	s = newStore(t)
	if err := s.Put(NameCACert, get(NameCACert)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTPMAttester(tp, s, testAAGUID, testNow); err == nil {
		t.Error("loaded a CA certificate without its key")
	}

	// Blobs of the wrong kind.
	for name, blob := range map[string][]byte{NameCAKey: get(NameAKKey), NameAKKey: get(NameCAKey)} {
		s = newStore(t)
		for _, n := range []string{NameCAKey, NameCACert, NameAKKey, NameAKCert} {
			v := get(n)
			if n == name {
				v = blob
			}
			if err := s.Put(n, v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := LoadTPMAttester(tp, s, testAAGUID, testNow); !errors.Is(err, tpm.ErrInvalidBlob) {
			t.Errorf("%s of the wrong kind: %v, want ErrInvalidBlob", name, err)
		}
	}
}

// TestStoredValuesSurviveReset: what ctap2's reset keeps (StoredValues) is
// all the attester needs to come back with the same CA, AK and
// certificate, without TPM work.
func TestStoredValuesSurviveReset(t *testing.T) {
	tp := tpmsim.TPM()
	s := newStore(t)
	a := loadAttester(t, tp, s)
	kept := map[string][]byte{}
	for _, n := range a.StoredValues() {
		v, err := s.Get(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		kept[n] = v
	}
	if len(kept) != 4 {
		t.Fatalf("StoredValues %v", a.StoredValues())
	}
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	for n, v := range kept {
		if err := s.Put(n, v); err != nil {
			t.Fatal(err)
		}
	}
	ct := &countingTPM{TPM: tp}
	b, err := LoadTPMAttester(ct, s, testAAGUID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ct.counts() != [3]int{} || !bytes.Equal(b.CACertificate(), a.CACertificate()) || !bytes.Equal(b.AIKCertificate(), a.AIKCertificate()) {
		t.Errorf("after reset: TPM work %v, or another CA/AIK certificate", ct.counts())
	}
}

type failingStore struct {
	Store
	getErr, putErr error
}

func (f failingStore) Get(name string) ([]byte, error) {
	if f.getErr != nil {
		return nil, f.getErr
	}
	return f.Store.Get(name)
}

func (f failingStore) Put(name string, v []byte) error {
	if f.putErr != nil {
		return f.putErr
	}
	return f.Store.Put(name, v)
}

func TestLoadTPMAttesterErrors(t *testing.T) {
	tp := tpmsim.TPM()
	disk := errors.New("disk on fire")
	if _, err := LoadTPMAttester(tp, failingStore{Store: newStore(t), getErr: disk}, testAAGUID, testNow); !errors.Is(err, disk) {
		t.Errorf("read error: %v", err)
	}
	if _, err := LoadTPMAttester(tp, failingStore{Store: newStore(t), putErr: disk}, testAAGUID, testNow); !errors.Is(err, disk) {
		t.Errorf("write error: %v", err)
	}
	full := failingStore{Store: newStore(t)}
	loadAttester(t, tp, full)
	full.putErr = disk
	if _, err := LoadTPMAttester(tp, full, [16]byte{1}, testNow); !errors.Is(err, disk) {
		t.Errorf("write error re-issuing: %v", err)
	}
	full.putErr = nil
	if _, err := LoadTPMAttester(tp, full, testAAGUID, testNow); err != nil {
		t.Errorf("after write errors: %v", err)
	}
	tpmDown := errors.New("TPM gone")
	if _, err := LoadTPMAttester(&countingTPM{TPM: tp, failCreate: tpmDown}, newStore(t), testAAGUID, testNow); !errors.Is(err, tpmDown) {
		t.Errorf("TPM error: %v", err)
	}
}

// TestStatement checks extraData = SHA-256(authData || clientDataHash) at the
// TPM interface, and the errors.
func TestStatement(t *testing.T) {
	tp := tpmsim.TPM()
	ct := &countingTPM{TPM: tp}
	a := loadAttester(t, ct, newStore(t))
	cred := newCredential(t, a, tpm.ES256, testAAGUID)
	cdh := sha256.Sum256([]byte("client data"))
	f, stmt, err := a.Statement(cred.authData, cdh[:], cred.blob)
	if err != nil || f != "tpm" {
		t.Fatalf("Statement: %q, %v", f, err)
	}
	want := sha256.Sum256(slices.Concat(cred.authData, cdh[:]))
	if ct.certifies != 1 || !bytes.Equal(ct.lastQualifyingData, want[:]) {
		t.Errorf("Certify qualifyingData %x, want SHA-256(authData||clientDataHash) %x", ct.lastQualifyingData, want)
	}
	if len(stmt) != 6 {
		t.Errorf("attStmt has %d fields: %v", len(stmt), stmt)
	}
	// The caller cannot corrupt the attester through the statement.
	stmt["x5c"].([][]byte)[0][0] ^= 0xff
	if _, stmt2, _ := a.Statement(cred.authData, cdh[:], cred.blob); !bytes.Equal(stmt2["x5c"].([][]byte)[0], a.AIKCertificate()) {
		t.Error("x5c aliases the attester's certificate")
	}

	sealed, err := tp.Seal([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string]tpm.KeyBlob{"sealed": sealed, "AK": a.ak, "nil": nil} {
		if _, _, err := a.Statement(cred.authData, cdh[:], blob); !errors.Is(err, tpm.ErrInvalidBlob) {
			t.Errorf("Statement(%s key): %v, want ErrInvalidBlob", name, err)
		}
	}
	if _, _, err := a.Statement(cred.authData, cdh[:31], cred.blob); err == nil {
		t.Error("accepted a 31-byte clientDataHash")
	}
	for _, alg := range []tpm.Algorithm{tpm.ES256, tpm.RS256} {
		plain, _, err := tp.CreateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Statement(cred.authData, cdh[:], plain); !errors.Is(err, ErrNotAttestable) {
			t.Errorf("Statement(%v key from tpm.CreateKey): %v, want ErrNotAttestable", alg, err)
		}
	}
}

// TestSchemeKeyRejectedByPythonFido2 records why Statement wants keys from
// TPMAttester.CreateKey: a statement over a key whose pubArea names its
// signing scheme (tpm.TPM.CreateKey's template) is valid by WebAuthn and
// go-webauthn accepts it, but python-fido2 cannot parse that pubArea.
func TestSchemeKeyRejectedByPythonFido2(t *testing.T) {
	tp := tpmsim.TPM()
	a := loadAttester(t, tp, newStore(t))
	cred := newCredential(t, tp, tpm.ES256, testAAGUID)
	r := registration{name: "scheme key", fmt: "tpm", authData: cred.authData, credID: cred.id, challenge: newChallenge()}
	r.clientDataJSON = clientDataJSON(r.challenge)
	extraData := sha256.Sum256(slices.Concat(cred.authData, r.clientDataHash()))
	certInfo, sig, err := tp.Certify(a.ak, cred.blob, extraData[:])
	if err != nil {
		t.Fatal(err)
	}
	pubArea, err := tpm.PublicArea(cred.blob)
	if err != nil {
		t.Fatal(err)
	}
	r.attStmt = map[string]any{"ver": "2.0", "alg": int64(-7), "x5c": [][]byte{a.AIKCertificate()},
		"sig": sig, "certInfo": certInfo, "pubArea": pubArea}
	if _, err := goWebAuthn(t, r); err != nil {
		t.Errorf("go-webauthn: %v", err)
	}
	res := pythonFido2(t, []registration{r}, nil, true)
	if got := res[r.name]; got.OK {
		t.Log("python-fido2 now accepts pubAreas with a scheme: CreateKey's restriction could be lifted")
	} else if got.Error != "InvalidData: ('unable to parse pubArea', ValueError('scheme is expected to be NULL'))" {
		t.Errorf("python-fido2: %s", got.Error)
	} else {
		t.Logf("python-fido2: %s", got.Error)
	}
}

// TestConcurrentStatements: the attester is used from several requests at
// once.
func TestConcurrentStatements(t *testing.T) {
	tp := tpmsim.TPM()
	a := loadAttester(t, tp, newStore(t))
	cred := newCredential(t, a, tpm.ES256, testAAGUID)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			cdh := sha256.Sum256([]byte{byte(g)})
			if _, _, err := a.Statement(cred.authData, cdh[:], cred.blob); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkTPMStatement is the "tpm" attestation statement of makeCredential
// on swtpm next to its TPM floor, tpm.Certify (TPM2_Load of the AK and of
// the key, TPM2_Certify, two flushes), alternating one of each per
// iteration so both see the same load: median-ns, floor-ns, x-floor.
func BenchmarkTPMStatement(b *testing.B) {
	a, cred, tp := benchSetup(b)
	cdh := sha256.Sum256([]byte("client data"))
	qd := sha256.Sum256(slices.Concat(cred.authData, cdh[:]))
	var floor, full []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, _, err := tp.Certify(a.ak, cred.blob, qd[:]); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, _, err := a.Statement(cred.authData, cdh[:], cred.blob); err != nil {
			b.Fatal(err)
		}
		floor, full = append(floor, t1.Sub(t0)), append(full, time.Since(t1))
	}
	slices.Sort(floor)
	slices.Sort(full)
	mf, mu := floor[len(floor)/2], full[len(full)/2]
	b.ReportMetric(float64(mu.Nanoseconds()), "median-ns")
	b.ReportMetric(float64(mf.Nanoseconds()), "floor-ns")
	b.ReportMetric(float64(mu)/float64(mf), "x-floor")
}

func benchSetup(b *testing.B) (*TPMAttester, credential, *tpm.TPM) {
	tp := swtpm(b)
	a := loadAttester(b, tp, newStore(b))
	cred := newCredential(b, a, tpm.ES256, testAAGUID)
	cdh := sha256.Sum256([]byte("warm-up"))
	// swtpm's first use answers TPM_RC_RETRY once: keep it out of the loop.
	if _, _, err := a.Statement(cred.authData, cdh[:], cred.blob); err != nil {
		b.Fatal(err)
	}
	return a, cred, tp
}
