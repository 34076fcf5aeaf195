package ctap2

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/test/rpverify"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestNoneAttestation(t *testing.T) {
	st, err := keystore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(Config{TPM: tpmsim.TPM(), Store: st, Prompt: &testPrompter{}, Attestation: AttestationNone})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{a: a, store: st}
	st2, m := e.call(t, CmdMakeCredential, mcParams("example.com", []byte("u"), false))
	if st2 != StatusOK {
		t.Fatal(st2)
	}
	if f := field[string](t, m, 1); f != "none" {
		t.Errorf("fmt = %q", f)
	}
	if stmt := field[map[string]any](t, m, 3); len(stmt) != 0 {
		t.Errorf("attStmt = %v, want empty", stmt)
	}
	if _, err := New(Config{TPM: tpmsim.TPM(), Store: st, Attestation: AttestationTPM}); err == nil {
		t.Error("tpm attestation without an Attester accepted")
	}
	if _, err := New(Config{TPM: tpmsim.TPM(), Store: st, Attestation: "basic"}); err == nil {
		t.Error("unknown attestation mode accepted")
	}
}

// packedVerdict is what WebAuthn §8.2's verification procedure returns.
type packedVerdict struct {
	self bool              // no x5c: attestation type Self
	cert *x509.Certificate // x5c[0]: Basic, AttCA or uncertainty, trust path x5c
}

// verifyPacked is WebAuthn §8.2's verification procedure for a "packed"
// ES256 statement, written from the specification's text:
//   - x5c present: sig is a valid signature over authData || clientDataHash
//     with x5c[0]'s key, and x5c[0] meets §8.2.1: version 3; subject C (a
//     PrintableString ISO 3166 code), O, OU = "Authenticator Attestation"
//     and CN (UTF8Strings); basicConstraints with CA false; an
//     id-fido-gen-ce-aaguid extension, if present, not critical and holding
//     authData's AAGUID;
//   - x5c absent (self attestation): alg is the credential key's, and sig
//     verifies with the credential public key.
func verifyPacked(t *testing.T, format string, stmt map[string]any, authData, clientDataHash []byte) (packedVerdict, error) {
	t.Helper()
	if format != "packed" {
		return packedVerdict{}, fmt.Errorf("fmt %q", format)
	}
	if alg, ok := stmt["alg"].(int64); !ok || alg != -7 {
		return packedVerdict{}, fmt.Errorf("alg %v", stmt["alg"])
	}
	sig, ok := stmt["sig"].([]byte)
	if !ok {
		return packedVerdict{}, errors.New("no sig")
	}
	ad := parseAuthData(t, authData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), clientDataHash...))
	raw, hasX5C := stmt["x5c"]
	if !hasX5C {
		if !ecdsa.VerifyASN1(ad.pub, digest[:], sig) {
			return packedVerdict{}, errors.New("self attestation: sig does not verify with the credential key")
		}
		return packedVerdict{self: true}, nil
	}
	x5c, ok := raw.([]any)
	if !ok || len(x5c) == 0 {
		return packedVerdict{}, fmt.Errorf("x5c is %T %v", raw, raw)
	}
	der, ok := x5c[0].([]byte)
	if !ok {
		return packedVerdict{}, fmt.Errorf("x5c[0] is %T", x5c[0])
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return packedVerdict{}, fmt.Errorf("x5c[0]: %w", err)
	}
	if key, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !ecdsa.VerifyASN1(key, digest[:], sig) {
		return packedVerdict{}, errors.New("sig does not verify with x5c[0]'s key")
	}
	// §8.2.1.
	if cert.Version != 3 {
		return packedVerdict{}, fmt.Errorf("certificate version %d", cert.Version)
	}
	subject, err := subjectAttributes(cert.RawSubject)
	if err != nil {
		return packedVerdict{}, err
	}
	if c := subject["C"]; len(c.Bytes) != 2 || c.Tag != asn1.TagPrintableString {
		return packedVerdict{}, fmt.Errorf("subject C %q (tag %d)", c.Bytes, c.Tag)
	}
	for _, n := range []string{"O", "OU", "CN"} {
		if v := subject[n]; len(v.Bytes) == 0 || v.Tag != asn1.TagUTF8String {
			return packedVerdict{}, fmt.Errorf("subject %s %q (tag %d), want a UTF8String", n, v.Bytes, v.Tag)
		}
	}
	if ou := string(subject["OU"].Bytes); ou != "Authenticator Attestation" {
		return packedVerdict{}, fmt.Errorf("subject OU %q", ou)
	}
	if !cert.BasicConstraintsValid || cert.IsCA {
		return packedVerdict{}, fmt.Errorf("basicConstraints present %v, CA %v", cert.BasicConstraintsValid, cert.IsCA)
	}
	for _, e := range cert.Extensions {
		if !e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}) {
			continue
		}
		var aaguid []byte
		if rest, err := asn1.Unmarshal(e.Value, &aaguid); err != nil || len(rest) != 0 {
			return packedVerdict{}, fmt.Errorf("AAGUID extension: %v", err)
		}
		if e.Critical || !bytes.Equal(aaguid, ad.aaguid) {
			return packedVerdict{}, fmt.Errorf("AAGUID extension %x (critical %v), authData has %x", aaguid, e.Critical, ad.aaguid)
		}
	}
	return packedVerdict{cert: cert}, nil
}

// subjectAttributes reads C, O, OU and CN of a DER Name with their string
// types (crypto/x509's pkix.Name drops the types).
func subjectAttributes(name []byte) (map[string]asn1.RawValue, error) {
	short := map[string]string{"2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN"}
	var rdns []asn1.RawValue
	if rest, err := asn1.Unmarshal(name, &rdns); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("subject: %v", err)
	}
	out := map[string]asn1.RawValue{}
	for _, set := range rdns {
		var atvs []struct {
			Type  asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		if _, err := asn1.UnmarshalWithParams(set.FullBytes, &atvs, "set"); err != nil {
			return nil, fmt.Errorf("subject RDN: %w", err)
		}
		for _, a := range atvs {
			if n, ok := short[a.Type.String()]; ok {
				out[n] = a.Value
			}
		}
	}
	return out, nil
}

// register makes a non-discoverable ES256 credential for rpID and returns
// fmt, attStmt, authData and the client data hash.
func register(t *testing.T, e *testEnv, rpID string) (string, map[string]any, []byte, []byte) {
	t.Helper()
	p := mcParams(rpID, []byte("user"), false)
	st, m := e.call(t, CmdMakeCredential, p)
	if st != StatusOK {
		t.Fatalf("makeCredential for %q: %v", rpID, st)
	}
	return field[string](t, m, 1), field[map[string]any](t, m, 3), field[[]byte](t, m, 2), p[1].([]byte)
}

// TestSelfAttestationWebRPID: the default attestation for an RP ID a web
// page can use is unchanged: packed self attestation, no x5c.
func TestSelfAttestationWebRPID(t *testing.T) {
	e := newEnv(t)
	for _, rpID := range []string{"example.com", "login.example.co.uk", "localhost", "xn--bcher-kva.example"} {
		f, stmt, authData, h := register(t, e, rpID)
		v, err := verifyPacked(t, f, stmt, authData, h)
		if err != nil {
			t.Fatalf("%s: %v", rpID, err)
		}
		if !v.self {
			t.Errorf("%s: x5c in the statement; web RP IDs get self attestation", rpID)
		}
	}
}

// TestCredentialCertificateNonWebRPID: an RP ID no browser can send
// (pam-u2f's, OpenSSH's) gets packed with x5c = [a certificate of the
// credential key, self-issued], which passes WebAuthn §8.2 with x5c and
// §8.2.1, links nothing, and libfido2's fido_cred_verify (what pamu2fcfg
// 1.1.0 calls) accepts.
func TestCredentialCertificateNonWebRPID(t *testing.T) {
	e := newEnv(t)
	var certs []*x509.Certificate
	for _, rpID := range []string{"pam://host", "pam://host", "ssh:", "ssh:work"} {
		f, stmt, authData, h := register(t, e, rpID)
		v, err := verifyPacked(t, f, stmt, authData, h)
		if err != nil {
			t.Fatalf("%s: %v", rpID, err)
		}
		if v.self || len(stmt["x5c"].([]any)) != 1 {
			t.Fatalf("%s: want exactly one certificate in x5c, got %v", rpID, stmt["x5c"])
		}
		c := v.cert
		// The certificate's key is the credential's and signs it: it
		// tells what self attestation tells, and chains to nothing.
		ad := parseAuthData(t, authData)
		if !ad.pub.Equal(c.PublicKey) {
			t.Errorf("%s: the certificate's key is not the credential key", rpID)
		}
		// (CheckSignatureFrom would refuse: the issuer is no CA.)
		if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil || !bytes.Equal(c.RawIssuer, c.RawSubject) {
			t.Errorf("%s: not issued by the credential key: %v", rpID, err)
		}
		if !c.NotBefore.Equal(credentialCertNotBefore) || !c.NotAfter.Equal(credentialCertNotAfter) {
			t.Errorf("%s: validity %v - %v, want the fixed dates", rpID, c.NotBefore, c.NotAfter)
		}
		// A tampered statement fails the same verification.
		sig := stmt["sig"].([]byte)
		sig[len(sig)/2] ^= 1
		if _, err := verifyPacked(t, f, stmt, authData, h); err == nil {
			t.Errorf("%s: a flipped signature byte passed", rpID)
		}
		sig[len(sig)/2] ^= 1
		certs = append(certs, c)
		if rpID == "ssh:work" {
			fido2CredVerify(t, rpID, f, authData, h, ad.credID, sig, c.Raw)
		}
	}
	// Nothing shared: the subject is the same for all (it names no
	// device); keys and serials differ; the U2F attestation key, the one
	// device-wide certificate key, is in none.
	u2fCert, err := x509.ParseCertificate(e.a.secrets.u2fCert)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range certs {
		if !bytes.Equal(c.RawSubject, credentialCertSubject) {
			t.Errorf("certificate %d: subject %x", i, c.RawSubject)
		}
		if c.PublicKey.(*ecdsa.PublicKey).Equal(u2fCert.PublicKey) || u2fCert.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil {
			t.Errorf("certificate %d: the device's U2F attestation key appears in it", i)
		}
		for _, d := range certs[:i] {
			if c.SerialNumber.Cmp(d.SerialNumber) == 0 || c.PublicKey.(*ecdsa.PublicKey).Equal(d.PublicKey) {
				t.Errorf("certificate %d shares its serial or key with an earlier one", i)
			}
		}
	}
}

// TestCredentialCertificateRS256: an RS256 credential's certificate is
// signed (PKCS#1 v1.5) by its RSA key in the TPM, like ES256's.
func TestCredentialCertificateRS256(t *testing.T) {
	e := newEnv(t)
	p := mcParams("ssh:rsa", []byte("user"), false)
	p[4] = []any{map[string]any{"type": "public-key", "alg": -257}}
	st, m := e.call(t, CmdMakeCredential, p)
	if st != StatusOK {
		t.Fatalf("makeCredential: %v", st)
	}
	f, stmt, authData, h := field[string](t, m, 1), field[map[string]any](t, m, 3), field[[]byte](t, m, 2), p[1].([]byte)
	if f != "packed" || stmt["alg"] != int64(-257) {
		t.Fatalf("fmt %q, alg %v", f, stmt["alg"])
	}
	x5c, _ := stmt["x5c"].([]any)
	if len(x5c) != 1 {
		t.Fatalf("x5c %v", stmt["x5c"])
	}
	c, err := x509.ParseCertificate(x5c[0].([]byte))
	if err != nil {
		t.Fatal(err)
	}
	key, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("certificate key %T", c.PublicKey)
	}
	sig := stmt["sig"].([]byte)
	digest := sha256.Sum256(append(append([]byte{}, authData...), h...))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("sig with x5c[0]'s key: %v", err)
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil || c.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Fatalf("certificate not signed by its own key (%v): %v", c.SignatureAlgorithm, err)
	}
	// (Not fido2-cred -V: its input has no line for attStmt's alg, and
	// libfido2 then takes an x5c statement for ES256.)
}

// fido2CredVerify runs libfido2's own verification, fido2-cred -V (Debian's
// fido2-tools): with an attestation certificate it calls fido_cred_verify,
// the call with which pamu2fcfg 1.1.0 refused self attestation (-7).
func fido2CredVerify(t *testing.T, rpID, format string, authData, clientDataHash, credID, sig, cert []byte) {
	t.Helper()
	bin, err := exec.LookPath("fido2-cred")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fido2-cred (fido2-tools) is missing; test/deps.sh installs it")
		}
		t.Log("fido2-cred (fido2-tools) not installed: libfido2's check skipped")
		return
	}
	b64 := base64.StdEncoding.EncodeToString
	ad, _ := cbor.Marshal(authData) // libfido2 takes authData CBOR-encoded
	verify := func(sig []byte) ([]byte, error) {
		in := strings.Join([]string{b64(clientDataHash), rpID, format, b64(ad), b64(credID), b64(sig), b64(cert)}, "\n") + "\n"
		cmd := exec.Command(bin, "-V", "es256")
		cmd.Stdin = strings.NewReader(in)
		return cmd.CombinedOutput()
	}
	if out, err := verify(sig); err != nil {
		t.Fatalf("fido2-cred -V (libfido2 fido_cred_verify) refused the statement: %v: %s", err, out)
	}
	bad := bytes.Clone(sig)
	bad[len(bad)/2] ^= 1
	if out, err := verify(bad); err == nil {
		t.Fatalf("fido2-cred -V accepted a flipped signature byte: %s", out)
	}
}

// TestNonWebRPID pins the classification: only RP IDs with a code point
// no domain can have are non-web.
func TestNonWebRPID(t *testing.T) {
	for id, want := range map[string]bool{
		"example.com": false, "localhost": false, "a-b.example": false, "xn--bcher-kva.example": false,
		"pam://host": true, "ssh:": true, "ssh:work": true, "https://example.com": true,
		"a b": true, "x%41": true, "user@host": true, "a\x00b": true, "a\x7f": true,
	} {
		if got := nonWebRPID(id); got != want {
			t.Errorf("nonWebRPID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestCredentialCertificateRelyingParties: verifiers no one here wrote,
// python-fido2's PackedAttestation (which checks §8.2.1 too) and
// go-webauthn, accept both statements: Self for the web RP ID, Basic for
// the non-web one (x5c, whose root no RP trusts).
func TestCredentialCertificateRelyingParties(t *testing.T) {
	e := newEnv(t)
	var regs []rpverify.Registration
	for _, rpID := range []string{"example.com", "pam://host"} {
		challenge := base64.RawURLEncoding.EncodeToString([]byte("challenge for " + rpID))
		origin := "https://" + rpID
		if nonWebRPID(rpID) {
			origin = rpID
		}
		cdj, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": challenge, "origin": origin, "crossOrigin": false})
		h := sha256.Sum256(cdj)
		p := mcParams(rpID, []byte("user"), false)
		p[1] = h[:]
		st, m := e.call(t, CmdMakeCredential, p)
		if st != StatusOK {
			t.Fatalf("makeCredential for %q: %v", rpID, st)
		}
		authData := field[[]byte](t, m, 2)
		regs = append(regs, rpverify.Registration{
			Name: rpID, Fmt: field[string](t, m, 1), AttStmt: field[map[string]any](t, m, 3), AuthData: authData,
			CredentialID: parseAuthData(t, authData).credID, Challenge: challenge, ClientDataJSON: cdj, RPID: rpID, Origin: origin,
		})
	}
	py, err := rpverify.PythonFido2(context.Background(), regs, nil, false)
	if err != nil {
		t.Fatalf("python-fido2 (test/deps.sh installs python3-fido2): %v", err)
	}
	// go-webauthn names self attestation "basic_surrogate".
	want := map[string][2]string{"example.com": {"SELF", "basic_surrogate"}, "pam://host": {"BASIC", "basic_full"}}
	for _, r := range regs {
		if got := py[r.Name]; !got.OK || got.Type != want[r.Name][0] {
			t.Errorf("python-fido2 on %s: %+v, want %s", r.Name, got, want[r.Name][0])
		}
		if typ, err := rpverify.GoWebAuthn(r); err != nil || typ != want[r.Name][1] {
			t.Errorf("go-webauthn on %s: %q, %v; want %s", r.Name, typ, err, want[r.Name][1])
		}
	}
}
