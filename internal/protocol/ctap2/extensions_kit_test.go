package ctap2

// Black-box tests of the hmac-secret extension (CTAP 2.1 §12.5, and
// hmac-secret-mc of CTAP 2.2) and credBlob (§12.2) with the platform side
// of internal/ctaptest.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// wantHMACSecret is the output the authenticator must give for salt:
// HMAC-SHA-256(CredRandom, salt), CredRandom being the device HMAC key's
// HMAC over the label for uv and SHA-256(credential ID) (extensions.go).
// It is computed here with the TPM directly.
func wantHMACSecret(t *testing.T, e *testEnv, credID []byte, uv bool, salt []byte) []byte {
	t.Helper()
	label := "passkeyd hmac-secret v1 without UV\x00"
	if uv {
		label = "passkeyd hmac-secret v1 with UV\x00"
	}
	h := sha256.Sum256(credID)
	credRandom, err := tpmsim.TPM().HMAC(e.a.secrets.hmacKey, append([]byte(label), h[:]...))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, credRandom)
	m.Write(salt)
	return m.Sum(nil)
}

// TestKitHMACSecret: getAssertion's hmac-secret outputs, decrypted by the
// platform, are exactly HMAC(CredRandom, salt) for one and two salts, over
// both protocols; with UV (a token) CredRandom is the other one; a
// credential made without hmac-secret gives no output.
func TestKitHMACSecret(t *testing.T) {
	e, c2 := kitEnv(t, 2)
	mc := mcParams("prf.example", []byte("u"), false)
	mc[6] = map[string]any{"hmac-secret": true}
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatal(st)
	}
	cred := parseAuthData(t, field[[]byte](t, m, 2))
	if cred.ext["hmac-secret"] != true {
		t.Fatalf("makeCredential extensions %v, want hmac-secret: true", cred.ext)
	}
	plain := makeCred(t, e, "prf.example", []byte("u2"), false)
	salt1, salt2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)

	get := func(c *ctaptest.Client, in *ctaptest.HMACSecret, id []byte, tok []byte) (Status, parsedAuthData) {
		t.Helper()
		p := gaParams("prf.example", id)
		p[4] = map[string]any{"hmac-secret": in.Input}
		if tok != nil {
			p[6], p[7] = c.Param(tok, p[2].([]byte)), c.Version
		}
		st, m := e.call(t, CmdGetAssertion, p)
		if st != StatusOK {
			return st, parsedAuthData{}
		}
		return st, parseAuthData(t, field[[]byte](t, m, 2))
	}

	for _, version := range []int{1, 2} {
		c := ctaptest.NewClient(e.a, version)
		for _, salts := range [][][]byte{{salt1}, {salt1, salt2}} {
			in := c.HMACSecretInput(t, salts...)
			st, ad := get(c, in, cred.credID, nil)
			if st != StatusOK || ad.flags&flagUV != 0 {
				t.Fatalf("protocol %d, %d salts: %v, flags %02x", version, len(salts), st, ad.flags)
			}
			enc := ad.ext["hmac-secret"].([]byte)
			if want := 32*len(salts) + 16*(version-1); len(enc) != want {
				t.Errorf("protocol %d: output of %d bytes, want %d", version, len(enc), want)
			}
			for i, out := range in.Outputs(t, enc) {
				if want := wantHMACSecret(t, e, cred.credID, false, salts[i]); !bytes.Equal(out, want) {
					t.Errorf("protocol %d, salt %d of %d: output %x, want %x", version, i+1, len(salts), out, want)
				}
			}
		}
	}

	// With UV: the other CredRandom.
	if st := c2.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	tok := mustToken(t, c2, "1234", pinuv.PermGetAssertion, "")
	in := c2.HMACSecretInput(t, salt1, salt2)
	st, ad := get(c2, in, cred.credID, tok)
	if st != StatusOK || ad.flags&flagUV == 0 {
		t.Fatalf("with a token: %v, flags %02x", st, ad.flags)
	}
	outs := in.Outputs(t, ad.ext["hmac-secret"].([]byte))
	for i, salt := range [][]byte{salt1, salt2} {
		if want := wantHMACSecret(t, e, cred.credID, true, salt); !bytes.Equal(outs[i], want) {
			t.Errorf("with UV, salt %d: %x, want %x", i+1, outs[i], want)
		}
		if bytes.Equal(outs[i], wantHMACSecret(t, e, cred.credID, false, salt)) {
			t.Errorf("with UV, salt %d: the output without UV", i+1)
		}
	}

	// No hmac-secret credential, no output.
	st, ad = get(c2, c2.HMACSecretInput(t, salt1), plain.credID, nil)
	if st != StatusOK || ad.ext["hmac-secret"] != nil {
		t.Errorf("credential without hmac-secret: %v, extensions %v", st, ad.ext)
	}
}

// TestKitHMACSecretInputErrors (§12.5): a saltAuth that does not verify is
// PIN_AUTH_INVALID, salts of other than 32 or 64 bytes INVALID_LENGTH,
// missing parts MISSING_PARAMETER, an unknown protocol INVALID_PARAMETER.
func TestKitHMACSecretInputErrors(t *testing.T) {
	e, c := kitEnv(t, 2)
	mc := mcParams("prf.example", []byte("u"), false)
	mc[6] = map[string]any{"hmac-secret": true}
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatal(st)
	}
	id := parseAuthData(t, field[[]byte](t, m, 2)).credID
	try := func(name string, edit func(in map[int]any, s *ctaptest.Session), want Status) {
		t.Helper()
		in := c.HMACSecretInput(t, make([]byte, 32))
		edit(in.Input, in.Session)
		p := gaParams("prf.example", id)
		p[4] = map[string]any{"hmac-secret": in.Input}
		if got := c.Raw(t, CmdGetAssertion, p); !bytes.Equal(got, []byte{byte(want)}) {
			t.Errorf("%s: %x, want %02x", name, got, byte(want))
		}
	}
	try("saltAuth of another message", func(in map[int]any, s *ctaptest.Session) { in[3] = s.Authenticate(s.HMACKey(), []byte("x")) }, ErrPinAuthInvalid)
	for _, n := range []int{16, 48, 96} {
		try(fmt.Sprintf("%d bytes of salt", n), func(in map[int]any, s *ctaptest.Session) {
			enc := s.MustEncrypt(t, make([]byte, n))
			in[2], in[3] = enc, s.Authenticate(s.HMACKey(), enc)
		}, ErrInvalidLength)
	}
	try("no saltAuth", func(in map[int]any, _ *ctaptest.Session) { delete(in, 3) }, ErrMissingParameter)
	try("no keyAgreement", func(in map[int]any, _ *ctaptest.Session) { delete(in, 1) }, ErrMissingParameter)
	try("protocol 3", func(in map[int]any, _ *ctaptest.Session) { in[4] = 3 }, ErrInvalidParameter)
	// Absent pinUvAuthProtocol means one (§12.5): a protocol-two input
	// then fails the protocol-one MAC check.
	try("protocol absent, two's MAC", func(in map[int]any, _ *ctaptest.Session) { delete(in, 4) }, ErrPinAuthInvalid)
}

// TestKitHMACSecretMC: hmac-secret-mc (CTAP 2.2 §12.7) returns at
// makeCredential what getAssertion (without UV) returns later for the same
// salt; without hmac-secret it is ignored. credBlob (§12.2) is stored only
// with a discoverable credential of at most 32 bytes.
func TestKitHMACSecretMC(t *testing.T) {
	e, c := kitEnv(t, 2)
	salt := bytes.Repeat([]byte{9}, 32)
	in := c.HMACSecretInput(t, salt)
	mc := mcParams("mc.example", []byte("u"), true)
	mc[6] = map[string]any{"hmac-secret": true, "hmac-secret-mc": in.Input, "credBlob": []byte("blob")}
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatal(st)
	}
	ad := parseAuthData(t, field[[]byte](t, m, 2))
	out := in.Outputs(t, ad.ext["hmac-secret-mc"].([]byte))[0]
	if want := wantHMACSecret(t, e, ad.credID, false, salt); !bytes.Equal(out, want) {
		t.Errorf("hmac-secret-mc output %x, want %x", out, want)
	}
	if ad.ext["credBlob"] != true {
		t.Errorf("credBlob on a discoverable credential: %v, want true", ad.ext["credBlob"])
	}
	in = c.HMACSecretInput(t, salt)
	p := gaParams("mc.example", ad.credID)
	p[4] = map[string]any{"hmac-secret": in.Input, "credBlob": true}
	st, m = e.call(t, CmdGetAssertion, p)
	if st != StatusOK {
		t.Fatal(st)
	}
	ga := parseAuthData(t, field[[]byte](t, m, 2))
	if got := in.Outputs(t, ga.ext["hmac-secret"].([]byte))[0]; !bytes.Equal(got, out) {
		t.Errorf("getAssertion output %x, makeCredential's %x", got, out)
	}
	if !bytes.Equal(ga.ext["credBlob"].([]byte), []byte("blob")) {
		t.Errorf("credBlob %v, want blob", ga.ext["credBlob"])
	}

	for name, tc := range map[string]struct {
		rk   bool
		exts map[string]any
		want map[string]any
	}{
		"hmac-secret-mc without hmac-secret": {false, map[string]any{"hmac-secret-mc": c.HMACSecretInput(t, salt).Input}, nil},
		"credBlob of 33 bytes":               {true, map[string]any{"credBlob": make([]byte, 33)}, map[string]any{"credBlob": false}},
		"credBlob, not discoverable":         {false, map[string]any{"credBlob": []byte("b")}, map[string]any{"credBlob": false}},
	} {
		mc := mcParams("x.example", []byte(name), tc.rk)
		mc[6] = tc.exts
		st, m := e.call(t, CmdMakeCredential, mc)
		if st != StatusOK {
			t.Fatalf("%s: %v", name, st)
		}
		if got := parseAuthData(t, field[[]byte](t, m, 2)).ext; fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: extensions %v, want %v", name, got, tc.want)
		}
	}
}
