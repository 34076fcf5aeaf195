// Package rpverify has relying parties that nobody here wrote check WebAuthn
// registrations: go-webauthn v0.18 and Debian's python3-fido2 0.9.1
// (PackedAttestation, TpmAttestation, NoneAttestation). Tests of the
// attestation code (internal/protocol/attest) and of the daemon (test/) share it.
package rpverify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// Python is Debian's interpreter, the one with python3-fido2.
const Python = "/usr/bin/python3"

// Registration is what a relying party receives from
// navigator.credentials.create, split into the parts the verifiers need.
type Registration struct {
	Name           string // names the case in PythonFido2's answer
	Fmt            string
	AttStmt        map[string]any
	AuthData       []byte
	CredentialID   []byte
	Challenge      string // base64url, as the RP issued it
	ClientDataJSON []byte
	RPID, Origin   string
}

// GoWebAuthn has go-webauthn verify r with its default policy (no
// metadata: it checks the statement, not the chain's root) and returns the
// attestation type it found ("self", "attca", "none", ...).
func GoWebAuthn(r Registration) (string, error) {
	enc := base64.RawURLEncoding.EncodeToString
	attObj, err := cbor.Marshal(map[string]any{"fmt": r.Fmt, "attStmt": r.AttStmt, "authData": r.AuthData})
	if err != nil {
		return "", err
	}
	body, _ := json.Marshal(map[string]any{
		"id": enc(r.CredentialID), "rawId": enc(r.CredentialID), "type": "public-key",
		"response": map[string]string{"clientDataJSON": enc(r.ClientDataJSON), "attestationObject": enc(attObj)},
	})
	pcc, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return "", err
	}
	params := []protocol.CredentialParameter{
		{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgES256},
		{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgRS256},
	}
	if _, err := pcc.Verify(r.Challenge, r.RPID, []string{r.Origin}, nil, nil, protocol.TopOriginExplicitVerificationMode,
		false, false, true, nil, params, protocol.AttestationPolicy{}, protocol.SignaturePolicy{}); err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return "", fmt.Errorf("%w (%s; %s)", err, pe.DevInfo, pe.Details)
		}
		return "", err
	}
	if got := pcc.Response.AttestationObject.Format; got != r.Fmt {
		return "", fmt.Errorf("go-webauthn parsed format %q, want %q", got, r.Fmt)
	}
	return pcc.Response.AttestationObject.Type, nil
}

// PyResult is python-fido2's verdict on one registration.
type PyResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Type  string `json:"type"`  // AttestationType name when OK (SELF, ATT_CA, NONE)
	Error string `json:"error"` // why not
}

// PythonFido2 has python-fido2 verify each registration (names must be
// unique); with trustedCA, an accepted trust path must also chain to that
// certificate (and not contain it: it is the trust anchor). fixECC first fixes 0.9.1's two ECC parsing bugs in its
// TPM structures (verify_attestation.py says which); RSA needs none.
func PythonFido2(ctx context.Context, regs []Registration, trustedCA []byte, fixECC bool) (map[string]PyResult, error) {
	type pyCase struct {
		Name           string `json:"name"`
		Fmt            string `json:"fmt"`
		AttStmt        string `json:"attStmt"`
		AuthData       string `json:"authData"`
		ClientDataHash string `json:"clientDataHash"`
		TrustedCA      string `json:"trustedCA,omitempty"`
	}
	cases := make([]pyCase, 0, len(regs))
	for _, r := range regs {
		stmt, err := cbor.Marshal(r.AttStmt)
		if err != nil {
			return nil, fmt.Errorf("%s: attStmt: %w", r.Name, err)
		}
		h := sha256.Sum256(r.ClientDataJSON)
		cases = append(cases, pyCase{Name: r.Name, Fmt: r.Fmt, AttStmt: hex.EncodeToString(stmt),
			AuthData: hex.EncodeToString(r.AuthData), ClientDataHash: hex.EncodeToString(h[:]),
			TrustedCA: hex.EncodeToString(trustedCA)})
	}
	in, _ := json.Marshal(cases)
	_, self, _, _ := runtime.Caller(0)
	args := []string{filepath.Join(filepath.Dir(self), "verify_attestation.py")}
	if fixECC {
		args = append(args, "--fix-ecc")
	}
	cmd := exec.CommandContext(ctx, Python, args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("verify_attestation.py: %w: %s", err, stderr.String())
	}
	var results []PyResult
	if err := json.Unmarshal(out, &results); err != nil {
		return nil, fmt.Errorf("verify_attestation.py output %q: %w", out, err)
	}
	m := make(map[string]PyResult, len(results))
	for _, r := range results {
		m[r.Name] = r
	}
	if len(m) != len(regs) {
		return nil, fmt.Errorf("python-fido2 answered %d of %d cases", len(m), len(regs))
	}
	return m, nil
}
