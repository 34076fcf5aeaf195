package test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/test/rpverify"
)

// registration is what attest_register.py prints for one credential: what
// a relying party receives from navigator.credentials.create.
type registration struct {
	Alg               int    `json:"alg"`
	Challenge         string `json:"challenge"`
	ClientDataJSON    string `json:"clientDataJSON"`
	AttestationObject string `json:"attestationObject"`

	clientData []byte
	fmt        string
	attStmt    map[string]any
	authData   []byte
}

func (r *registration) decode(t *testing.T) {
	t.Helper()
	var err error
	if r.clientData, err = base64.RawURLEncoding.DecodeString(r.ClientDataJSON); err != nil {
		t.Fatalf("clientDataJSON: %v", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(r.AttestationObject)
	if err != nil {
		t.Fatalf("attestationObject: %v", err)
	}
	var obj struct {
		Fmt      string         `cbor:"fmt"`
		AttStmt  map[string]any `cbor:"attStmt"`
		AuthData []byte         `cbor:"authData"`
	}
	if err := cbor.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("attestationObject: %v", err)
	}
	r.fmt, r.attStmt, r.authData = obj.Fmt, obj.AttStmt, obj.AuthData
}

// credentialID reads the credential ID from the attested credential data
// (WebAuthn §6.5.1: rpIdHash 32, flags 1, signCount 4, AAGUID 16, length 2).
func (r *registration) credentialID() []byte {
	n := int(r.authData[53])<<8 | int(r.authData[54])
	return r.authData[55 : 55+n]
}

// tampered returns a copy whose attStmt[name] has one byte flipped.
func (r registration) tampered(name string) registration {
	stmt := make(map[string]any, len(r.attStmt))
	for k, v := range r.attStmt {
		stmt[k] = v
	}
	b := bytes.Clone(stmt[name].([]byte))
	b[len(b)/2] ^= 0x01
	stmt[name] = b
	r.attStmt = stmt
	return r
}

// rp is r as the shared relying-party verifiers take it.
func (r registration) rp(name string) rpverify.Registration {
	return rpverify.Registration{Name: name, Fmt: r.fmt, AttStmt: r.attStmt, AuthData: r.authData,
		CredentialID: r.credentialID(), Challenge: r.Challenge, ClientDataJSON: r.clientData,
		RPID: "example.com", Origin: "https://example.com"}
}

// verifyGoWebAuthn has go-webauthn v0.18 verify a registration with its
// default policy; it returns the attestation type it found.
func verifyGoWebAuthn(r registration) (string, error) { return rpverify.GoWebAuthn(r.rp("")) }

// verifyPythonFido2 has python-fido2 0.9.1's verifiers check each
// registration and that its trust path chains to trustedCA: "ok TYPE" or
// "rejected: why" per name. fixECC: see rpverify.PythonFido2.
func verifyPythonFido2(t *testing.T, regs map[string]registration, trustedCA []byte, fixECC bool) map[string]string {
	t.Helper()
	var rps []rpverify.Registration
	for name, r := range regs {
		rps = append(rps, r.rp(name))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := rpverify.PythonFido2(ctx, rps, trustedCA, fixECC)
	if err != nil {
		t.Fatal(err)
	}
	verdicts := make(map[string]string)
	for name, res := range results {
		if res.OK {
			verdicts[name] = "ok " + res.Type
		} else {
			verdicts[name] = "rejected: " + res.Error
		}
	}
	return verdicts
}

func registerWith(t *testing.T, port int, algs ...string) []registration {
	t.Helper()
	out, err := runPython(t, port, append([]string{"attest_register.py"}, algs...)...)
	if err != nil {
		t.Fatalf("attest_register.py: %v", err)
	}
	var regs []registration
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r registration
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("attest_register.py line %q: %v", line, err)
		}
		r.decode(t)
		regs = append(regs, r)
	}
	if len(regs) != len(algs) {
		t.Fatalf("attest_register.py registered %d credentials, want %d", len(regs), len(algs))
	}
	return regs
}

func exportCA(t *testing.T, ctlBin, sock string) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.der")
	if out, code := ctl(t, ctlBin, sock, "", "attestation", "ca", "--der", "-o", file); code != 0 {
		t.Fatalf("passkeyctl attestation ca (%d): %s", code, out)
	}
	der, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestTPMAttestation runs the daemon with --attestation tpm and registers
// through python-fido2's Fido2Client, as a relying party would see it: every
// statement is "tpm", go-webauthn and python-fido2 accept it, its AIK
// certificate (x5c's only one) chains to the CA `passkeyctl attestation ca`
// exports, a flipped byte in certInfo
// or pubArea is rejected by both, the attested keys sign assertions, and
// the CA outlives a restart and a reset.
func TestTPMAttestation(t *testing.T) {
	requirePrereqs(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	dir, err := os.MkdirTemp("", "pkattest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "control.sock")
	stateDir := newStateDir(t)
	port := freeUDPPort(t)
	d := startDaemonArgs(t, bin, stateDir, port, "swtpm", "--control", sock, "--attestation", "tpm")

	out, code := ctl(t, ctlBin, sock, "", "info", "--json")
	var info mgmtapi.Info
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Attestation != "tpm" {
		t.Fatalf("info (%d): %s", code, out)
	}
	caDER := exportCA(t, ctlBin, sock)
	ca, err := x509.ParseCertificate(caDER)
	if err != nil || !ca.IsCA {
		t.Fatalf("exported CA: %v (IsCA %v)", err, ca != nil && ca.IsCA)
	}
	out, code = ctl(t, ctlBin, sock, "", "attestation", "ca")
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("attestation ca as PEM (%d): %s", code, out)
	}

	regs := registerWith(t, port, "-7", "-257")
	cases := map[string]registration{}
	for _, r := range regs {
		name := fmt.Sprintf("alg %d", r.Alg)
		if r.fmt != "tpm" {
			t.Fatalf("%s: fmt %q, want tpm", name, r.fmt)
		}
		// x5c is the AIK certificate alone: the CA is the RP's trust
		// anchor, not part of the path (attest.TPMAttester.Statement).
		x5c, _ := r.attStmt["x5c"].([]any)
		if len(x5c) != 1 {
			t.Fatalf("%s: x5c has %d certificates, want the AIK certificate alone", name, len(x5c))
		}
		aik, err := x509.ParseCertificate(x5c[0].([]byte))
		if err != nil {
			t.Fatalf("%s: AIK certificate: %v", name, err)
		}
		// CheckSignatureFrom, not Verify: Go's verifier refuses the
		// critical directoryName-only subjectAltName that the TCG profile
		// requires ("unhandled critical extension").
		if err := aik.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s: AIK certificate does not chain to the exported CA: %v", name, err)
		}
		typ, err := verifyGoWebAuthn(r)
		if err != nil || typ != "attca" {
			t.Errorf("%s: go-webauthn: type %q, %v", name, typ, err)
		}
		for _, field := range []string{"certInfo", "pubArea", "sig"} {
			bad := r.tampered(field)
			if _, err := verifyGoWebAuthn(bad); err == nil {
				t.Errorf("%s: go-webauthn accepted a tampered %s", name, field)
			}
			cases[name+" tampered "+field] = bad
		}
		cases[name] = r
	}
	verdicts := verifyPythonFido2(t, cases, caDER, true)
	for name, v := range verdicts {
		want := "ok ATT_CA"
		if strings.Contains(name, "tampered") {
			want = "rejected"
		}
		if !strings.HasPrefix(v, want) {
			t.Errorf("python-fido2 TpmAttestation, %s: %s, want %s", name, v, want)
		}
	}
	// RSA needs no fix of python-fido2: the stock verifier accepts it.
	rsa := map[string]registration{"alg -257": cases["alg -257"]}
	if v := verifyPythonFido2(t, rsa, caDER, false)["alg -257"]; v != "ok ATT_CA" {
		t.Errorf("stock python-fido2 TpmAttestation, RS256: %s", v)
	}

	// The CA is created once: a restart and a reset keep it.
	d.stop()
	d = startDaemonArgs(t, bin, stateDir, port, "swtpm", "--control", sock, "--attestation", "tpm")
	if got := exportCA(t, ctlBin, sock); !bytes.Equal(got, caDER) {
		t.Error("the attestation CA changed across a restart")
	}
	if out, code := ctl(t, ctlBin, sock, "", "reset", "--yes", "--stdin"); code != 0 {
		t.Fatalf("reset (%d): %s", code, out)
	}
	if got := exportCA(t, ctlBin, sock); !bytes.Equal(got, caDER) {
		t.Error("the attestation CA changed across a reset")
	}
	after := registerWith(t, port, "-7")[0]
	if x5c, _ := after.attStmt["x5c"].([]any); len(x5c) != 1 {
		t.Errorf("after reset, x5c has %d certificates, want 1", len(x5c))
	} else if aik, err := x509.ParseCertificate(x5c[0].([]byte)); err != nil || aik.CheckSignatureFrom(ca) != nil {
		t.Error("after reset, the AIK certificate does not chain to the same CA")
	}
	if _, err := verifyGoWebAuthn(after); err != nil {
		t.Errorf("after reset: go-webauthn: %v", err)
	}
	d.stop()

	// Self attestation (the default) has no CA to export.
	d = startDaemonArgs(t, bin, stateDir, port, "swtpm", "--control", sock)
	out, code = ctl(t, ctlBin, sock, "", "attestation", "ca")
	if code != 1 || !strings.Contains(out, "--attestation tpm") {
		t.Errorf("attestation ca with self attestation (%d): %s", code, out)
	}
	if r := registerWith(t, port, "-7")[0]; r.fmt != "packed" {
		t.Errorf("default attestation: fmt %q, want packed", r.fmt)
	}
	d.stop()
}
