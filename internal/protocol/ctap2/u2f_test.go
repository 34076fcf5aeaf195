package ctap2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/u2f"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// apdu builds an extended-length command APDU, as browsers send.
func apdu(ins, p1 byte, data []byte) []byte {
	b := []byte{0, ins, p1, 0}
	if len(data) > 0 {
		b = append(b, 0, byte(len(data)>>8), byte(len(data)))
		b = append(b, data...)
	}
	return append(b, 0, 0)
}

// msgUntilPresent repeats a U2F request while it answers
// CONDITIONS_NOT_SATISFIED, as U2F clients do.
func msgUntilPresent(t *testing.T, e *testEnv, req []byte) ([]byte, u2f.StatusWord) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := e.a.MSG(context.Background(), req)
		sw := u2f.StatusWord(binary.BigEndian.Uint16(resp[len(resp)-2:]))
		if sw != u2f.SWConditionsNotSatisfied || time.Now().After(deadline) {
			return resp[:len(resp)-2], sw
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestU2FVersion(t *testing.T) {
	e := newEnv(t)
	for _, req := range [][]byte{{0, 3, 0, 0}, {0, 3, 0, 0, 0}, {0, 3, 0, 0, 0, 0, 0}} {
		if resp := e.a.MSG(context.Background(), req); string(resp) != "U2F_V2\x90\x00" {
			t.Errorf("VERSION % x: % x", req, resp)
		}
	}
}

func TestU2FRegisterAuthenticate(t *testing.T) {
	e := newEnv(t)
	app := sha256.Sum256([]byte("example.com"))
	chal := sha256.Sum256([]byte("challenge"))

	// The first REGISTER only starts the prompt.
	first := e.a.MSG(context.Background(), apdu(u2f.InsRegister, 0, append(chal[:], app[:]...)))
	if !bytes.Equal(first, []byte{0x69, 0x85}) {
		t.Fatalf("first REGISTER: % x, want 69 85", first)
	}
	body, sw := msgUntilPresent(t, e, apdu(u2f.InsRegister, 0, append(chal[:], app[:]...)))
	if sw != u2f.SWNoError {
		t.Fatalf("REGISTER: %v", sw)
	}
	// 05 | pub(65) | L | kh | cert | sig
	if body[0] != 0x05 || body[1] != 0x04 {
		t.Fatalf("register response header % x", body[:2])
	}
	pubBytes := body[1:66]
	khLen := int(body[66])
	kh := body[67 : 67+khLen]
	rest := body[67+khLen:]
	var certRaw asn1Raw
	certLen, err := certRaw.length(rest)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(rest[:certLen])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Fatalf("attestation certificate is not self-signed: %v", err)
	}
	msg := append(append(append(append([]byte{0}, app[:]...), chal[:]...), kh...), pubBytes...)
	if err := cert.CheckSignature(x509.ECDSAWithSHA256, msg, rest[certLen:]); err != nil {
		t.Fatalf("registration signature: %v", err)
	}
	pkAny, err := x509.ParsePKIXPublicKey(pkixP256(pubBytes))
	if err != nil {
		t.Fatal(err)
	}
	pub := pkAny.(*ecdsa.PublicKey)

	authReq := func(control byte, app []byte, kh []byte) []byte {
		d := append(append(append([]byte{}, chal[:]...), app...), byte(len(kh)))
		return apdu(u2f.InsAuthenticate, control, append(d, kh...))
	}
	// check-only: ours -> 6985, not ours -> 6A80.
	if resp := e.a.MSG(context.Background(), authReq(u2f.CheckOnly, app[:], kh)); !bytes.Equal(resp, []byte{0x69, 0x85}) {
		t.Errorf("check-only, valid: % x", resp)
	}
	other := sha256.Sum256([]byte("other.example"))
	if resp := e.a.MSG(context.Background(), authReq(u2f.CheckOnly, other[:], kh)); !bytes.Equal(resp, []byte{0x6a, 0x80}) {
		t.Errorf("check-only, other app: % x", resp)
	}
	verify := func(body []byte, wantFlags byte) uint32 {
		t.Helper()
		if body[0] != wantFlags {
			t.Fatalf("user presence byte %02x, want %02x", body[0], wantFlags)
		}
		signed := append(append(append([]byte{}, app[:]...), body[:5]...), chal[:]...)
		h := sha256.Sum256(signed)
		if !ecdsa.VerifyASN1(pub, h[:], body[5:]) {
			t.Fatal("authentication signature does not verify")
		}
		return binary.BigEndian.Uint32(body[1:5])
	}
	body, sw = msgUntilPresent(t, e, authReq(u2f.EnforceUserPresenceAndSign, app[:], kh))
	if sw != u2f.SWNoError {
		t.Fatalf("AUTHENTICATE: %v", sw)
	}
	c1 := verify(body, 1)
	resp := e.a.MSG(context.Background(), authReq(u2f.DontEnforceUserPresence, app[:], kh))
	if sw := binary.BigEndian.Uint16(resp[len(resp)-2:]); sw != 0x9000 {
		t.Fatalf("dont-enforce: %04x", sw)
	}
	if c2 := verify(resp[:len(resp)-2], 0); c2 <= c1 {
		t.Errorf("counter %d after %d", c2, c1)
	}

	// Interop: the U2F credential signs a CTAP2 assertion for the RP whose
	// hash is the application parameter.
	st, m := e.call(t, CmdGetAssertion, gaParams("example.com", kh))
	if st != StatusOK {
		t.Fatalf("CTAP2 getAssertion with a U2F key handle: %v", st)
	}
	verifySig(t, pub, field[[]byte](t, m, 2), cdh("ga-example.com"), field[[]byte](t, m, 3))
}

func TestU2FBogusRegistrationCreatesNoKey(t *testing.T) {
	e := newEnv(t)
	data := append(bytes.Repeat([]byte{0x42}, 32), bogusAppParam...)
	body, sw := msgUntilPresent(t, e, apdu(u2f.InsRegister, 0, data))
	if sw != u2f.SWNoError {
		t.Fatalf("bogus REGISTER: %v", sw)
	}
	kh := body[67 : 67+int(body[66])]
	// The handle opens nothing, for this app or any other.
	d := append(append(bytes.Repeat([]byte{0x42}, 32), bogusAppParam...), byte(len(kh)))
	resp := e.a.MSG(context.Background(), apdu(u2f.InsAuthenticate, u2f.CheckOnly, append(d, kh...)))
	if !bytes.Equal(resp, []byte{0x6a, 0x80}) {
		t.Errorf("bogus key handle: % x", resp)
	}
}

func TestU2FErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		apdu []byte
		want []byte
	}{
		{"too short", []byte{0, 1}, []byte{0x67, 0x00}},
		{"bad CLA", []byte{0x80, 3, 0, 0}, []byte{0x6e, 0x00}},
		{"unknown INS", []byte{0, 0x44, 0, 0}, []byte{0x6d, 0x00}},
		{"register short data", apdu(u2f.InsRegister, 0, make([]byte, 63)), []byte{0x67, 0x00}},
		{"register long data", apdu(u2f.InsRegister, 0, make([]byte, 65)), []byte{0x67, 0x00}},
		{"authenticate length mismatch", apdu(u2f.InsAuthenticate, 3, append(make([]byte, 64), 10, 1, 2)), []byte{0x67, 0x00}},
		{"authenticate bad P1", apdu(u2f.InsAuthenticate, 0x55, append(make([]byte, 64), 1, 1)), []byte{0x6a, 0x80}},
		{"authenticate foreign handle", apdu(u2f.InsAuthenticate, 3, append(make([]byte, 64), 1, 1)), []byte{0x6a, 0x80}},
		{"version with data", apdu(u2f.InsVersion, 0, []byte{1}), []byte{0x67, 0x00}},
		{"extended Lc mismatch", []byte{0, 1, 0, 0, 0, 0, 64, 1, 2}, []byte{0x67, 0x00}},
		{"short Lc mismatch", []byte{0, 1, 0, 0, 5, 1, 2}, []byte{0x67, 0x00}},
	} {
		if resp := e.a.MSG(context.Background(), tc.apdu); !bytes.Equal(resp, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, resp, tc.want)
		}
	}
}

// asn1Raw finds the length of the leading DER element (the certificate).
type asn1Raw struct{}

func (asn1Raw) length(b []byte) (int, error) {
	if len(b) < 2 || b[0] != 0x30 {
		return 0, errShort
	}
	if b[1] < 0x80 {
		return 2 + int(b[1]), nil
	}
	n := int(b[1] & 0x7f)
	if n == 0 || n > 3 || len(b) < 2+n {
		return 0, errShort
	}
	l := 0
	for _, c := range b[2 : 2+n] {
		l = l<<8 | int(c)
	}
	return 2 + n + l, nil
}

var errShort = errorString("short DER")

type errorString string

func (e errorString) Error() string { return string(e) }

// openPrompter holds every prompt open until its context ends, and says
// when one was asked and when it was withdrawn.
type openPrompter struct {
	asked     chan struct{}
	withdrawn chan error
}

func newOpenPrompter() *openPrompter {
	return &openPrompter{asked: make(chan struct{}, 8), withdrawn: make(chan error, 8)}
}

func (p *openPrompter) Confirm(ctx context.Context, _ prompt.Request) error {
	p.asked <- struct{}{}
	<-ctx.Done()
	p.withdrawn <- ctx.Err()
	return ctx.Err()
}

// u2fPromptWithdrawn checks that the U2F touch prompt a REGISTER opens on a
// (which asks p) is withdrawn by unplug, and not left on the screen for
// whoever comes next (U2F clients poll; the prompt runs on its own).
func u2fPromptWithdrawn(t *testing.T, a *Authenticator, p *openPrompter, unplug func()) {
	t.Helper()
	app := sha256.Sum256([]byte("example.com"))
	chal := sha256.Sum256([]byte("challenge"))
	if resp := a.MSG(context.Background(), apdu(u2f.InsRegister, 0, append(chal[:], app[:]...))); !bytes.Equal(resp, []byte{0x69, 0x85}) {
		t.Fatalf("REGISTER: % x, want 69 85 (the prompt started)", resp)
	}
	select {
	case <-p.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("REGISTER asked nobody")
	}
	unplug()
	select {
	case err := <-p.withdrawn:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the prompt ended with %v, want it withdrawn (context.Canceled)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the U2F prompt is still open after the key lost power")
	}
}

// TestU2FPromptWithdrawnByPowerCycle: a power cycle (the key unplugged)
// withdraws a U2F touch prompt still waiting for the person.
func TestU2FPromptWithdrawnByPowerCycle(t *testing.T) {
	e := newEnv(t)
	p := newOpenPrompter()
	a, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Prompt: p, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	u2fPromptWithdrawn(t, a, p, a.PowerCycle)
}
