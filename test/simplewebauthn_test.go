package test

// SimpleWebAuthn: @simplewebauthn/server (npm, the version pinned in
// test/simplewebauthn/package-lock.json), the most used JavaScript
// relying-party library, verifies what passkeyd answers in real WebAuthn
// ceremonies. The RP (test/simplewebauthn/rp.mjs, on Node) generates the
// options; python-fido2 0.9.1 plays the browser (test/interop/
// webauthn_client.py: clientDataJSON from the options' challenge and the
// origin, CTAP2 on passkeyd's UDP transport, a PIN token for UV); the RP
// verifies the response.
//
//	go test ./test/ -run SimpleWebAuthn -v
//
// Prerequisites, besides the interop ones: node >= 20 (the library's
// "engines") and npm; `npm ci` fills test/simplewebauthn/node_modules from
// the npm registry when it does not hold the locked version. Missing ones
// are installed with apt-get as root (nodejs npm); with CI=true anything
// still missing is a failure, otherwise a skip.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

const (
	swaOrigin  = "https://example.com"
	swaRPID    = "example.com"
	swaPIN     = "4711-swa"
	swaMinNode = 20 // @simplewebauthn/server 14's package.json: "engines": {"node": ">=20.0.0"}
)

var (
	nodeOnce sync.Once
	nodeMsg  string
)

func swaDir(t *testing.T) string { return filepath.Join(repoRoot(t), "test", "simplewebauthn") }

// nodeMajor is the major version of node on PATH, or an error.
func nodeMajor() (int, error) {
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("node --version: %v", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("node --version said %q", out)
	}
	return major, nil
}

func missingNode() []string {
	var missing []string
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

// setupNode makes node and npm available (apt-get as root), checks node's
// version, and runs `npm ci` unless node_modules already holds the locked
// @simplewebauthn/server. It returns why it could not, or "".
func setupNode(dir string) string {
	if missing := missingNode(); len(missing) > 0 {
		if os.Geteuid() != 0 {
			return fmt.Sprintf("missing %s and not root: install nodejs (>= %d) and npm", strings.Join(missing, ", "), swaMinNode)
		}
		install := []string{"install", "-y", "--no-install-recommends"}
		if _, err := exec.LookPath("node"); err != nil {
			install = append(install, "nodejs")
		}
		if _, err := exec.LookPath("npm"); err != nil {
			install = append(install, "npm")
		}
		cmd := exec.Command("apt-get", install...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("apt-get %s: %v\n%s", strings.Join(install, " "), err, tail(string(out), 20))
		}
		if missing := missingNode(); len(missing) > 0 {
			return "still missing after apt-get install: " + strings.Join(missing, ", ")
		}
	}
	major, err := nodeMajor()
	if err != nil {
		return err.Error()
	}
	if major < swaMinNode {
		return fmt.Sprintf("node %d is too old: @simplewebauthn/server 14 needs node >= %d (Debian 12's nodejs is 18: take Node 20 from NodeSource)", major, swaMinNode)
	}
	locked, err := lockedVersion(dir)
	if err != nil {
		return err.Error()
	}
	if installedVersion(dir) == locked {
		return ""
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Sprintf("npm ci in %s: %v\n%s", dir, err, tail(string(out), 20))
	}
	if got := installedVersion(dir); got != locked {
		return fmt.Sprintf("after npm ci, node_modules has @simplewebauthn/server %q, the lock file %q", got, locked)
	}
	return ""
}

func lockedVersion(dir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", err
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(raw, &lock); err != nil {
		return "", fmt.Errorf("package-lock.json: %w", err)
	}
	v := lock.Packages["node_modules/@simplewebauthn/server"].Version
	if v == "" {
		return "", fmt.Errorf("package-lock.json locks no @simplewebauthn/server")
	}
	return v, nil
}

func installedVersion(dir string) string {
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "@simplewebauthn", "server", "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Version string `json:"version"`
	}
	json.Unmarshal(raw, &pkg)
	return pkg.Version
}

func requireSimpleWebAuthn(t *testing.T) {
	t.Helper()
	requirePrereqs(t)
	dir := swaDir(t)
	nodeOnce.Do(func() { nodeMsg = setupNode(dir) })
	if nodeMsg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("SimpleWebAuthn prerequisites: " + nodeMsg)
		}
		t.Skip("SimpleWebAuthn prerequisites: " + nodeMsg)
	}
}

// ---------------------------------------------------------------------------
// The relying party: one rp.mjs process, a JSON line per request.

type swaRP struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startSWARP(t *testing.T) *swaRP {
	t.Helper()
	cmd := exec.Command("node", "rp.mjs")
	cmd.Dir = swaDir(t)
	cmd.Stderr = newLineLogger(t, "rp.mjs: ")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node rp.mjs: %v", err)
	}
	rp := &swaRP{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("rp.mjs exited: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("rp.mjs did not exit when its stdin closed")
		}
	})
	return rp
}

// call sends req and decodes the answer into answer.
func (rp *swaRP) call(req map[string]any, answer any) {
	rp.t.Helper()
	line, _ := json.Marshal(req)
	if _, err := rp.in.Write(append(line, '\n')); err != nil {
		rp.t.Fatalf("rp.mjs %s: %v", req["op"], err)
	}
	type result struct {
		line []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := rp.out.ReadBytes('\n')
		ch <- result{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			rp.t.Fatalf("rp.mjs %s: no answer: %v", req["op"], r.err)
		}
		if err := json.Unmarshal(r.line, answer); err != nil {
			rp.t.Fatalf("rp.mjs %s: %v in %q", req["op"], err, r.line)
		}
	case <-time.After(time.Minute):
		rp.cmd.Process.Kill()
		rp.t.Fatalf("rp.mjs %s: no answer within a minute", req["op"])
	}
}

// swaOptions is what the RP generated, kept as JSON for the client and the
// verification, plus the fields the test reads.
type swaOptions struct {
	raw       map[string]any
	Challenge string
	UserID    string
}

func (rp *swaRP) options(req map[string]any) swaOptions {
	rp.t.Helper()
	var raw map[string]any
	rp.call(req, &raw)
	o := swaOptions{raw: raw}
	o.Challenge, _ = raw["challenge"].(string)
	if user, ok := raw["user"].(map[string]any); ok {
		o.UserID, _ = user["id"].(string)
	}
	if o.Challenge == "" {
		rp.t.Fatalf("rp.mjs %s: no challenge in %v", req["op"], raw)
	}
	return o
}

func (rp *swaRP) registrationOptions(attestation, uv string, algs ...int) swaOptions {
	rp.t.Helper()
	req := map[string]any{"op": "registrationOptions", "rpID": swaRPID, "rpName": "Example",
		"userName": "alice", "attestationType": attestation, "userVerification": uv,
		"residentKey": "required"}
	if len(algs) > 0 {
		req["supportedAlgorithmIDs"] = algs
	}
	return rp.options(req)
}

func (rp *swaRP) authenticationOptions(uv string, allow ...string) swaOptions {
	rp.t.Helper()
	return rp.options(map[string]any{"op": "authenticationOptions", "rpID": swaRPID,
		"allowCredentials": allow, "userVerification": uv})
}

type swaRegResult struct {
	Verified       bool   `json:"verified"`
	Error          string `json:"error"`
	Fmt            string `json:"fmt"`
	AAGUID         string `json:"aaguid"`
	CredentialID   string `json:"credentialID"`
	PublicKey      string `json:"publicKey"`
	Counter        uint32 `json:"counter"`
	UserVerified   bool   `json:"userVerified"`
	CredentialType string `json:"credentialType"`
}

func (rp *swaRP) verifyRegistration(o swaOptions, resp swaResponse, requireUV bool, anchors []string) swaRegResult {
	rp.t.Helper()
	var r swaRegResult
	rp.call(map[string]any{"op": "verifyRegistration", "options": o.raw, "response": resp,
		"origin": swaOrigin, "requireUserVerification": requireUV, "rootCertificates": anchors}, &r)
	return r
}

type swaAuthResult struct {
	Verified     bool   `json:"verified"`
	Error        string `json:"error"`
	CredentialID string `json:"credentialID"`
	NewCounter   uint32 `json:"newCounter"`
	UserVerified bool   `json:"userVerified"`
}

func (rp *swaRP) verifyAuthentication(o swaOptions, resp swaResponse, requireUV bool, cred swaRegResult) swaAuthResult {
	rp.t.Helper()
	var r swaAuthResult
	rp.call(map[string]any{"op": "verifyAuthentication", "options": o.raw, "response": resp,
		"origin": swaOrigin, "requireUserVerification": requireUV,
		"credential": map[string]any{"id": cred.CredentialID, "publicKey": cred.PublicKey, "counter": cred.Counter}}, &r)
	return r
}

// ---------------------------------------------------------------------------
// The client: webauthn_client.py, python-fido2 on passkeyd.

// swaResponse is RegistrationResponseJSON or AuthenticationResponseJSON.
type swaResponse struct {
	ID                      string            `json:"id"`
	RawID                   string            `json:"rawId"`
	Type                    string            `json:"type"`
	AuthenticatorAttachment string            `json:"authenticatorAttachment"`
	Response                map[string]any    `json:"response"`
	ClientExtensionResults  map[string]string `json:"clientExtensionResults"`
}

// field returns response[name], base64url-decoded.
func (r swaResponse) field(t *testing.T, name string) []byte {
	t.Helper()
	s, _ := r.Response[name].(string)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("response.%s: %q (%v)", name, s, err)
	}
	return b
}

// with returns a copy whose response[name] is b, base64url-encoded.
func (r swaResponse) with(name string, b []byte) swaResponse {
	m := make(map[string]any, len(r.Response))
	for k, v := range r.Response {
		m[k] = v
	}
	m[name] = base64.RawURLEncoding.EncodeToString(b)
	r.Response = m
	return r
}

func runClient(t *testing.T, port int, args []string, stdin any) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pythonTimeout)
	defer cancel()
	cmd := pythonCmd(ctx, t, port, append([]string{"webauthn_client.py"}, args...)...)
	in, _ := json.Marshal(stdin)
	cmd.Stdin = bytes.NewReader(in)
	stderr := newLineLogger(t, "py: ")
	defer stderr.close()
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("webauthn_client.py %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func clientCeremony(t *testing.T, port int, op string, o swaOptions, pin string) swaResponse {
	t.Helper()
	out := runClient(t, port, []string{op}, map[string]any{"options": o.raw, "origin": swaOrigin, "pin": pin})
	var r swaResponse
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("webauthn_client.py %s: %v in %q", op, err, out)
	}
	return r
}

// ---------------------------------------------------------------------------
// Tampering

// tamperClientDataChallenge changes one character of the challenge inside
// clientDataJSON, keeping it valid JSON and valid base64url.
func tamperClientDataChallenge(t *testing.T, r swaResponse, challenge string) swaResponse {
	t.Helper()
	cd := r.field(t, "clientDataJSON")
	i := bytes.Index(cd, []byte(challenge))
	if i < 0 {
		t.Fatalf("clientDataJSON %s does not contain the challenge %s", cd, challenge)
	}
	cd = bytes.Clone(cd)
	if cd[i] == 'A' {
		cd[i] = 'B'
	} else {
		cd[i] = 'A'
	}
	return r.with("clientDataJSON", cd)
}

// tamperAuthData flips the bits mask of one byte of the authenticator data
// inside the attestation object (a registration) or of authenticatorData
// (an assertion). WebAuthn §6.1: bytes 0-31 are rpIdHash, 32 the flags
// (0x04 UV).
func tamperAuthData(t *testing.T, r swaResponse, offset int, mask byte) swaResponse {
	t.Helper()
	if _, ok := r.Response["authenticatorData"]; ok {
		ad := bytes.Clone(r.field(t, "authenticatorData"))
		ad[offset] ^= mask
		return r.with("authenticatorData", ad)
	}
	obj := decodeAttObj(t, r)
	ad := bytes.Clone(obj["authData"].([]byte))
	ad[offset] ^= mask
	obj["authData"] = ad
	return r.with("attestationObject", encodeAttObj(t, obj))
}

// tamperAttStmtSig flips the last byte of attStmt.sig in a registration.
func tamperAttStmtSig(t *testing.T, r swaResponse) swaResponse {
	t.Helper()
	obj := decodeAttObj(t, r)
	stmt := obj["attStmt"].(map[any]any)
	sig := bytes.Clone(stmt["sig"].([]byte))
	sig[len(sig)-1] ^= 0x01
	stmt["sig"] = sig
	return r.with("attestationObject", encodeAttObj(t, obj))
}

func decodeAttObj(t *testing.T, r swaResponse) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := cbor.Unmarshal(r.field(t, "attestationObject"), &obj); err != nil {
		t.Fatalf("attestationObject: %v", err)
	}
	return obj
}

func encodeAttObj(t *testing.T, obj map[string]any) []byte {
	t.Helper()
	enc, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := enc.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// coseAlg is the alg (label 3) of a base64url COSE_Key.
func coseAlg(t *testing.T, key string) int {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		t.Fatalf("publicKey: %v", err)
	}
	var k map[int]any
	if err := cbor.Unmarshal(raw, &k); err != nil {
		t.Fatalf("publicKey: %v", err)
	}
	alg, _ := k[3].(int64)
	return int(alg)
}

// foreignCA is a CA certificate (PEM) that never issued anything passkeyd
// made: a trust anchor that must not validate passkeyd's AIK certificate.
func foreignCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not passkeyd's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// ---------------------------------------------------------------------------

// TestSimpleWebAuthn runs passkeyd with each attestation mode and has
// SimpleWebAuthn verify, through whole WebAuthn ceremonies: a registration
// without UV (no PIN set yet), one with UV (PIN token), a sign-in without
// UV with an allow list and one with UV as a discoverable credential, each
// with the expected fmt, UV flag, credential ID and a rising counter; and
// it must reject the same responses with one byte changed (the signature,
// rpIdHash in the authenticator data, the challenge in clientDataJSON), a
// no-UV assertion when UV is required, and for "tpm" an AIK certificate
// that does not chain to the trust anchor it is given.
func TestSimpleWebAuthn(t *testing.T) {
	requireSimpleWebAuthn(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	rp := startSWARP(t)
	for _, mode := range []struct {
		attestation string // passkeyd --attestation
		conveyance  string // the RP's attestation preference
		fmt         string
	}{
		{"none", "none", "none"},
		{"self", "direct", "packed"},
		{"tpm", "direct", "tpm"},
	} {
		t.Run(mode.fmt, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "pkswa-") // a short path for the socket
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			sock := filepath.Join(dir, "control.sock")
			port := freeUDPPort(t)
			d := startDaemonArgs(t, bin, newStateDir(t), port, "swtpm", "--control", sock, "--attestation", mode.attestation)
			var anchors []string
			if mode.fmt == "tpm" {
				ca, code := ctl(t, ctlBin, sock, "", "attestation", "ca")
				if code != 0 || !strings.HasPrefix(ca, "-----BEGIN CERTIFICATE-----") {
					t.Fatalf("passkeyctl attestation ca (%d): %s", code, ca)
				}
				anchors = []string{ca}
			}
			swaCeremonies(t, rp, port, mode.conveyance, mode.fmt, anchors)
			d.stop()
		})
	}
}

func swaCeremonies(t *testing.T, rp *swaRP, port int, conveyance, wantFmt string, anchors []string) {
	register := func(uv, pin string, requireUV bool) (swaOptions, swaResponse, swaRegResult) {
		t.Helper()
		o := rp.registrationOptions(conveyance, uv)
		resp := clientCeremony(t, port, "create", o, pin)
		v := rp.verifyRegistration(o, resp, requireUV, anchors)
		if !v.Verified || v.Error != "" {
			t.Fatalf("registration (userVerification %s) not verified: %s", uv, v.Error)
		}
		if v.Fmt != wantFmt || v.CredentialType != "public-key" {
			t.Errorf("registration: fmt %q type %q, want %q public-key", v.Fmt, v.CredentialType, wantFmt)
		}
		if v.CredentialID != resp.ID || resp.RawID != resp.ID {
			t.Errorf("registration: SimpleWebAuthn's credential ID %s, the response's id %s rawId %s", v.CredentialID, resp.ID, resp.RawID)
		}
		if v.UserVerified != (pin != "") {
			t.Errorf("registration with PIN %v: userVerified %v", pin != "", v.UserVerified)
		}
		t.Logf("registered %s, fmt %s, aaguid %s, counter %d, uv %v", v.CredentialID[:12], v.Fmt, v.AAGUID, v.Counter, v.UserVerified)
		return o, resp, v
	}

	// 1. No PIN yet: a registration without UV.
	_, _, cred1 := register("discouraged", "", false)

	runClient(t, port, []string{"set-pin", swaPIN}, nil)

	// 2. With the PIN: UV required, a pinUvAuthToken with the
	// makeCredential permission.
	regOpts, regResp, cred2 := register("required", swaPIN, true)

	// The same registration with one thing changed: each is refused.
	for _, c := range []struct {
		name string
		resp swaResponse
		want string // in the error; "" = verified false without one
	}{
		{"clientDataJSON challenge", tamperClientDataChallenge(t, regResp, regOpts.Challenge), "Unexpected registration response challenge"},
		{"authData rpIdHash", tamperAuthData(t, regResp, 0, 0x01), "Unexpected RP ID hash"},
		{"authData flags (UV cleared)", tamperAuthData(t, regResp, 32, 0x04), "User verification was required"},
	} {
		if v := rp.verifyRegistration(regOpts, c.resp, true, anchors); v.Verified || !strings.Contains(v.Error, c.want) {
			t.Errorf("tampered registration, %s: verified %v error %q, want %q", c.name, v.Verified, v.Error, c.want)
		}
	}
	if wantFmt != "none" {
		// The statement's signature: packed's over authData || clientDataHash
		// with the credential key, tpm's over certInfo with the AIK.
		// SimpleWebAuthn answers a bad signature with verified false and
		// no error.
		bad := tamperAttStmtSig(t, regResp)
		if v := rp.verifyRegistration(regOpts, bad, true, anchors); v.Verified || v.Error != "" {
			t.Errorf("tampered registration, attStmt.sig: verified %v error %q, want refused without an error", v.Verified, v.Error)
		}
	}
	if wantFmt == "tpm" {
		// With another CA as the only trust anchor the statement is refused:
		// the chain to passkeyd's CA is what the RP checked above.
		v := rp.verifyRegistration(regOpts, regResp, true, []string{foreignCA(t)})
		if v.Verified || !strings.Contains(v.Error, "could not be chained to any specified trust anchor") {
			t.Errorf("tpm registration with a foreign trust anchor: verified %v error %q", v.Verified, v.Error)
		}
	}

	// 3. Sign-in without UV, allow list naming credential 1.
	o := rp.authenticationOptions("discouraged", cred1.CredentialID)
	a := clientCeremony(t, port, "get", o, "")
	v := rp.verifyAuthentication(o, a, false, cred1)
	if !v.Verified || v.Error != "" || v.UserVerified || v.CredentialID != cred1.CredentialID || a.ID != cred1.CredentialID {
		t.Errorf("sign-in without UV: %+v (response id %s), want verified, no UV, credential %s", v, a.ID, cred1.CredentialID)
	}
	if v.NewCounter <= cred1.Counter {
		t.Errorf("sign-in without UV: counter %d after %d at registration", v.NewCounter, cred1.Counter)
	}
	if r := rp.verifyAuthentication(o, a, true, cred1); r.Verified || !strings.Contains(r.Error, "User verification required") {
		t.Errorf("a no-UV assertion where UV is required: %+v", r)
	}

	// 4. Sign-in with UV, discoverable (empty allow list): passkeyd
	// returns the newest credential first (CTAP 2.1 §6.2.2), credential 2.
	o = rp.authenticationOptions("required")
	a = clientCeremony(t, port, "get", o, swaPIN)
	v = rp.verifyAuthentication(o, a, true, cred2)
	if !v.Verified || v.Error != "" || !v.UserVerified || v.CredentialID != cred2.CredentialID || a.ID != cred2.CredentialID {
		t.Errorf("sign-in with UV: %+v (response id %s), want verified, UV, credential %s", v, a.ID, cred2.CredentialID)
	}
	if v.NewCounter <= cred2.Counter {
		t.Errorf("sign-in with UV: counter %d after %d at registration", v.NewCounter, cred2.Counter)
	}
	if uh, _ := a.Response["userHandle"].(string); uh != regOpts.UserID {
		t.Errorf("sign-in with UV: userHandle %q, the registration's user.id %q", uh, regOpts.UserID)
	}

	// The same assertion with one byte changed: each is refused.
	sig := bytes.Clone(a.field(t, "signature"))
	sig[len(sig)-1] ^= 0x01 // the last byte of s: still DER, no longer a signature
	for _, c := range []struct {
		name string
		resp swaResponse
		want string
	}{
		{"signature", a.with("signature", sig), ""},
		{"authenticatorData rpIdHash", tamperAuthData(t, a, 0, 0x01), "Unexpected RP ID hash"},
		{"clientDataJSON challenge", tamperClientDataChallenge(t, a, o.Challenge), "Unexpected authentication response challenge"},
	} {
		r := rp.verifyAuthentication(o, c.resp, true, cred2)
		if r.Verified || !strings.Contains(r.Error, c.want) || (c.want == "" && r.Error != "") {
			t.Errorf("tampered assertion, %s: verified %v error %q, want refused with %q", c.name, r.Verified, r.Error, c.want)
		}
	}
	// The untampered assertion still verifies (the refusals above were
	// the bytes, not the setup).
	if r := rp.verifyAuthentication(o, a, true, cred2); !r.Verified {
		t.Errorf("the untampered assertion, verified again: %+v", r)
	}

	// RS256 when the RP offers only RS256 (CTAP 2.1 §6.1.2: the first
	// algorithm in pubKeyCredParams the authenticator supports). With the
	// PIN set, a discoverable credential needs UV (§6.1.2: makeCredUvNotRqd
	// covers non-discoverable ones only; CTAP2_ERR_PUAT_REQUIRED otherwise).
	rsOpts := rp.registrationOptions(conveyance, "required", -257)
	rsResp := clientCeremony(t, port, "create", rsOpts, swaPIN)
	rs := rp.verifyRegistration(rsOpts, rsResp, true, anchors)
	if !rs.Verified || rs.Fmt != wantFmt || rs.CredentialID != rsResp.ID || !rs.UserVerified {
		t.Errorf("RS256 registration: %+v", rs)
	} else if alg := coseAlg(t, rs.PublicKey); alg != -257 {
		t.Errorf("RS256 registration: credential public key alg %d", alg)
	}
	o = rp.authenticationOptions("discouraged", rs.CredentialID)
	a = clientCeremony(t, port, "get", o, "")
	if v := rp.verifyAuthentication(o, a, false, rs); !v.Verified || v.CredentialID != rs.CredentialID || v.NewCounter <= rs.Counter {
		t.Errorf("RS256 sign-in: %+v", v)
	}
}
