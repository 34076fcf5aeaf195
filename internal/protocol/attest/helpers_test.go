package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
	"github.com/passkeyd/passkeyd/test/rpverify"
)

func TestMain(m *testing.M) { tpmsim.Main(m) }

func inCI() bool { return os.Getenv("CI") == "true" }

func skipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if inCI() {
		tb.Fatal(msg + " (CI=true)")
	}
	tb.Skip(msg)
}

// swtpm starts a private swtpm for the test.
func swtpm(tb testing.TB) *tpm.TPM {
	tb.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		skipOrFail(tb, "swtpm is not installed; apt-get install swtpm swtpm-tools")
	}
	tp, err := tpm.Open(tpm.Config{Spec: "swtpm", StateDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("open swtpm: %v", err)
	}
	tb.Cleanup(func() {
		if err := tp.Close(); err != nil {
			tb.Errorf("close swtpm: %v", err)
		}
	})
	return tp
}

func newStore(tb testing.TB) *keystore.Store {
	tb.Helper()
	s, err := keystore.Open(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := s.Unlock(key); err != nil {
		tb.Fatal(err)
	}
	return s
}

// testAAGUID is passkeyd's AAGUID (ctap2.AAGUID).
var testAAGUID = [16]byte{0x9d, 0x72, 0xba, 0x2f, 0x2f, 0x52, 0x4f, 0x5d, 0xbc, 0x83, 0xaa, 0x03, 0x43, 0x8c, 0x76, 0x36}

const (
	rpID   = "example.com"
	origin = "https://example.com"
)

var ctap2Enc = func() cbor.EncMode {
	em, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

func mustCBOR(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := ctap2Enc.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// credential is a new credential key and the authenticator data that
// makeCredential would return for it.
type credential struct {
	blob     tpm.KeyBlob
	pub      crypto.PublicKey
	alg      tpm.Algorithm
	id       []byte
	authData []byte
}

// keyMaker is *tpm.TPM (CreateKey: packed) or *TPMAttester (CreateKey:
// attestable keys).
type keyMaker interface {
	CreateKey(tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error)
}

// newCredential creates a credential key with km and builds its authData:
// rpIdHash, flags UP|AT, counter, aaguid, credential ID, COSE key.
func newCredential(tb testing.TB, km keyMaker, alg tpm.Algorithm, aaguid [16]byte) credential {
	tb.Helper()
	blob, pub, err := km.CreateKey(alg)
	if err != nil {
		tb.Fatal(err)
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	rpIDHash := sha256.Sum256([]byte(rpID))
	ad := slices.Concat(rpIDHash[:], []byte{0x01 | 0x40}, binary.BigEndian.AppendUint32(nil, 7), aaguid[:],
		binary.BigEndian.AppendUint16(nil, uint16(len(id))), id, coseKey(tb, alg, pub))
	return credential{blob: blob, pub: pub, alg: alg, id: id, authData: ad}
}

func coseKey(tb testing.TB, alg tpm.Algorithm, pub crypto.PublicKey) []byte {
	tb.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		if err != nil {
			tb.Fatal(err)
		}
		return mustCBOR(tb, map[int]any{1: 2, 3: int(alg), -1: 1, -2: raw[1:33], -3: raw[33:]})
	case *rsa.PublicKey:
		return mustCBOR(tb, map[int]any{1: 3, 3: int(alg), -1: k.N.Bytes(), -2: big.NewInt(int64(k.E)).Bytes()})
	}
	tb.Fatalf("key %T", pub)
	return nil
}

// registration is what an RP receives: the attestation object's parts and
// the client data.
type registration struct {
	name           string
	fmt            string
	attStmt        map[string]any
	authData       []byte
	credID         []byte
	challenge      string
	clientDataJSON []byte
}

func clientDataJSON(challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "webauthn.create", "challenge": challenge, "origin": origin, "crossOrigin": false})
	return b
}

func newChallenge() string {
	c := make([]byte, 32)
	_, _ = rand.Read(c)
	return base64.RawURLEncoding.EncodeToString(c)
}

func (r registration) clientDataHash() []byte {
	h := sha256.Sum256(r.clientDataJSON)
	return h[:]
}

// with returns a copy of r whose attStmt has key set to v.
func (r registration) with(name, key string, v any) registration {
	r.name = name
	stmt := make(map[string]any, len(r.attStmt))
	for k, v := range r.attStmt {
		stmt[k] = v
	}
	stmt[key] = v
	r.attStmt = stmt
	return r
}

// flipped returns a copy of b with byte i (negative: from the end) flipped.
func flipped(b []byte, i int) []byte {
	b = bytes.Clone(b)
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 0x01
	return b
}

// rp is r as the shared relying-party verifiers take it.
func (r registration) rp() rpverify.Registration {
	return rpverify.Registration{Name: r.name, Fmt: r.fmt, AttStmt: r.attStmt, AuthData: r.authData,
		CredentialID: r.credID, Challenge: r.challenge, ClientDataJSON: r.clientDataJSON, RPID: rpID, Origin: origin}
}

// goWebAuthn has go-webauthn v0.18 verify the registration with its default
// policy and returns the attestation type it found.
func goWebAuthn(tb testing.TB, r registration) (string, error) {
	tb.Helper()
	return rpverify.GoWebAuthn(r.rp())
}

func requireFido2(tb testing.TB) {
	tb.Helper()
	out, err := exec.Command(rpverify.Python, "-c", "import fido2.attestation").CombinedOutput()
	if err != nil {
		skipOrFail(tb, fmt.Sprintf("%s with the fido2 module (python3-fido2): %v %s", rpverify.Python, err, strings.TrimSpace(string(out))))
	}
}

// pythonFido2 has python-fido2 0.9.1 verify each registration; trustedCA,
// when set, must also be the end of each accepted trust path. fixECC applies
// the fixes of 0.9.1's two ECC bugs (test/rpverify/verify_attestation.py).
func pythonFido2(tb testing.TB, regs []registration, trustedCA []byte, fixECC bool) map[string]rpverify.PyResult {
	tb.Helper()
	requireFido2(tb)
	rps := make([]rpverify.Registration, len(regs))
	for i, r := range regs {
		rps[i] = r.rp()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := rpverify.PythonFido2(ctx, rps, trustedCA, fixECC)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}
