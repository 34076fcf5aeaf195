package ctap2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
)

func TestGetInfo(t *testing.T) {
	e := newEnv(t)
	st, m := e.call(t, CmdGetInfo, nil)
	if st != StatusOK {
		t.Fatalf("getInfo: %v", st)
	}
	if got := field[[]string](t, m, 1); !equalStrings(got, []string{"FIDO_2_0", "FIDO_2_1", "U2F_V2"}) {
		t.Errorf("versions = %q", got)
	}
	if got := field[[]byte](t, m, 3); !bytes.Equal(got, AAGUID[:]) {
		t.Errorf("aaguid = %x", got)
	}
	opts := field[map[string]bool](t, m, 4)
	want := map[string]bool{"rk": true, "up": true, "plat": false, "clientPin": false, "pinUvAuthToken": true,
		"alwaysUv": false, "setMinPINLength": true, "makeCredUvNotRqd": true, "authnrCfg": true,
		"credMgmt": true, "credentialMgmtPreview": true, "largeBlobs": true}
	if len(opts) != len(want) {
		t.Errorf("options = %v, want exactly %v", opts, want)
	}
	for k, v := range want {
		if got, ok := opts[k]; !ok || got != v {
			t.Errorf("option %s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if got := field[int](t, m, 5); got != MaxMsgSize {
		t.Errorf("maxMsgSize = %d", got)
	}
	if got := field[[]string](t, m, 9); !equalStrings(got, []string{"usb"}) {
		t.Errorf("transports = %q", got)
	}
	algs := field[[]map[string]any](t, m, 10)
	if len(algs) == 0 || algs[0]["alg"] != int64(-7) || algs[0]["type"] != "public-key" {
		t.Errorf("algorithms = %v, want ES256 first", algs)
	}
	if got := field[int](t, m, 20); got != DefaultCapacity {
		t.Errorf("remainingDiscoverableCredentials = %d", got)
	}
	if got := field[int](t, m, 8); got < 250 {
		t.Errorf("maxCredentialIdLength = %d", got)
	}
	if got := field[[]int](t, m, 6); len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Errorf("pinUvAuthProtocols = %v, want [2 1]", got)
	}
	if got := field[int](t, m, 13); got != 4 {
		t.Errorf("minPINLength = %d", got)
	}
	if _, ok := opts["uv"]; ok {
		t.Error("uv reported by a prompt that cannot take a PIN")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func makeCred(t *testing.T, e *testEnv, rpID string, userID []byte, rk bool) parsedAuthData {
	t.Helper()
	params := mcParams(rpID, userID, rk)
	st, m := e.call(t, CmdMakeCredential, params)
	if st != StatusOK {
		t.Fatalf("makeCredential: %v", st)
	}
	if f := field[string](t, m, 1); f != "packed" {
		t.Fatalf("fmt = %q", f)
	}
	authData := field[[]byte](t, m, 2)
	ad := parseAuthData(t, authData)
	att := field[map[string]any](t, m, 3)
	if att["alg"] != int64(-7) {
		t.Fatalf("attStmt alg = %v", att["alg"])
	}
	if _, ok := att["x5c"]; ok {
		t.Fatal("self attestation must not carry x5c")
	}
	// Self attestation: signed by the credential key itself.
	verifySig(t, ad.pub, authData, params[1].([]byte), att["sig"].([]byte))
	rpHash := sha256.Sum256([]byte(rpID))
	if !bytes.Equal(ad.rpIDHash, rpHash[:]) || ad.flags != flagUP|flagAT || !bytes.Equal(ad.aaguid, AAGUID[:]) {
		t.Fatalf("authData: rpIdHash %x flags %02x aaguid %x", ad.rpIDHash, ad.flags, ad.aaguid)
	}
	return ad
}

func TestMakeCredentialGetAssertion(t *testing.T) {
	e := newEnv(t)
	cred := makeCred(t, e, "example.com", []byte("user-1"), false)
	if e.store.CountCredentials() != 0 {
		t.Fatal("a non-discoverable credential was stored")
	}
	st, m := e.call(t, CmdGetAssertion, gaParams("example.com", []byte("junk"), cred.credID))
	if st != StatusOK {
		t.Fatalf("getAssertion: %v", st)
	}
	authData := field[[]byte](t, m, 2)
	ad := parseAuthData(t, authData)
	if ad.flags != flagUP {
		t.Errorf("flags = %02x, want UP only", ad.flags)
	}
	if ad.counter <= cred.counter {
		t.Errorf("counter %d not above %d", ad.counter, cred.counter)
	}
	verifySig(t, cred.pub, authData, cdh("ga-example.com"), field[[]byte](t, m, 3))
	desc := field[map[string]any](t, m, 1)
	if !bytes.Equal(desc["id"].([]byte), cred.credID) || desc["type"] != "public-key" {
		t.Errorf("credential = %v", desc)
	}
	if _, ok := m[4]; ok {
		t.Error("user entity returned for a non-discoverable credential")
	}
	if _, ok := m[5]; ok {
		t.Error("numberOfCredentials returned with an allowList")
	}
	// Another RP, a tampered ID, a truncated ID: not ours.
	tampered := append([]byte{}, cred.credID...)
	tampered[len(tampered)-1] ^= 1
	for name, p := range map[string]map[int]any{
		"other RP": gaParams("evil.example", cred.credID),
		"tampered": gaParams("example.com", tampered),
		"short":    gaParams("example.com", cred.credID[:20]),
		"empty id": gaParams("example.com", []byte{}),
	} {
		if st, _ := e.call(t, CmdGetAssertion, p); st != ErrNoCredentials {
			t.Errorf("%s: status %v, want NO_CREDENTIALS", name, st)
		}
	}
}

func TestSilentAssertion(t *testing.T) {
	e := newEnv(t)
	cred := makeCred(t, e, "example.com", []byte("u"), false)
	asked := e.prompt.count()
	p := gaParams("example.com", cred.credID)
	p[5] = map[string]bool{"up": false}
	st, m := e.call(t, CmdGetAssertion, p)
	if st != StatusOK {
		t.Fatal(st)
	}
	if ad := parseAuthData(t, field[[]byte](t, m, 2)); ad.flags != 0 {
		t.Errorf("flags = %02x, want 0 for up=false", ad.flags)
	}
	if e.prompt.count() != asked {
		t.Error("up=false still prompted the user")
	}
}

func TestDiscoverableCredentials(t *testing.T) {
	e := newEnv(t)
	first := makeCred(t, e, "example.com", []byte("alice"), true)
	second := makeCred(t, e, "example.com", []byte("bob"), true)
	makeCred(t, e, "other.example", []byte("carol"), true)

	st, m := e.call(t, CmdGetAssertion, gaParams("example.com"))
	if st != StatusOK {
		t.Fatal(st)
	}
	if n := field[int](t, m, 5); n != 2 {
		t.Fatalf("numberOfCredentials = %d", n)
	}
	user := field[map[string]any](t, m, 4)
	if !bytes.Equal(user["id"].([]byte), []byte("bob")) {
		t.Fatalf("first assertion is for %q, want the newest (bob)", user["id"])
	}
	if _, ok := user["name"]; ok {
		t.Error("user name returned without user verification")
	}
	verifySig(t, second.pub, field[[]byte](t, m, 2), cdh("ga-example.com"), field[[]byte](t, m, 3))

	st, m = e.call(t, CmdGetNextAssertion, nil)
	if st != StatusOK {
		t.Fatal(st)
	}
	if user := field[map[string]any](t, m, 4); !bytes.Equal(user["id"].([]byte), []byte("alice")) {
		t.Fatalf("next assertion is for %q", user["id"])
	}
	if _, ok := m[5]; ok {
		t.Error("numberOfCredentials in getNextAssertion")
	}
	verifySig(t, first.pub, field[[]byte](t, m, 2), cdh("ga-example.com"), field[[]byte](t, m, 3))
	if st, _ := e.call(t, CmdGetNextAssertion, nil); st != ErrNotAllowed {
		t.Errorf("third getNextAssertion: %v, want NOT_ALLOWED", st)
	}

	// State is dropped by any other command and after 30 s.
	e.call(t, CmdGetAssertion, gaParams("example.com"))
	e.call(t, CmdGetInfo, nil)
	if st, _ := e.call(t, CmdGetNextAssertion, nil); st != ErrNotAllowed {
		t.Errorf("getNextAssertion after getInfo: %v", st)
	}
	e.call(t, CmdGetAssertion, gaParams("example.com"))
	e.clock.Advance(31 * time.Second)
	if st, _ := e.call(t, CmdGetNextAssertion, nil); st != ErrNotAllowed {
		t.Errorf("getNextAssertion after 31 s: %v", st)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("nobody.example")); st != ErrNoCredentials {
		t.Errorf("unknown RP: %v", st)
	}

	// With an allow list a discoverable credential is found too, with its
	// user handle and no count.
	st, m = e.call(t, CmdGetAssertion, gaParams("example.com", first.credID))
	if st != StatusOK {
		t.Fatal(st)
	}
	if user := field[map[string]any](t, m, 4); !bytes.Equal(user["id"].([]byte), []byte("alice")) || len(user) != 1 {
		t.Errorf("user = %v", user)
	}
	if _, ok := m[5]; ok {
		t.Error("numberOfCredentials with an allowList")
	}
	// Deleted from the store: the ID stops working.
	if err := e.store.DeleteCredential(first.credID); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", first.credID)); st != ErrNoCredentials {
		t.Errorf("deleted credential: %v", st)
	}
}

func TestSameUserReplacesDiscoverableCredential(t *testing.T) {
	e := newEnv(t)
	old := makeCred(t, e, "example.com", []byte("alice"), true)
	makeCred(t, e, "example.com", []byte("bob"), true)
	newer := makeCred(t, e, "example.com", []byte("alice"), true)
	if n := e.store.CountCredentials(); n != 2 {
		t.Fatalf("%d credentials stored, want 2 (alice replaced)", n)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", old.credID)); st != ErrNoCredentials {
		t.Errorf("replaced credential still signs: %v", st)
	}
	st, m := e.call(t, CmdGetAssertion, gaParams("example.com"))
	if st != StatusOK || field[int](t, m, 5) != 2 {
		t.Fatalf("getAssertion: %v %v", st, m[5])
	}
	if id := field[map[string]any](t, m, 1)["id"].([]byte); !bytes.Equal(id, newer.credID) {
		t.Error("the new alice credential is not the newest")
	}
}

func TestUserEntityStoredIntact(t *testing.T) {
	e := newEnv(t)
	name := string(bytes.Repeat([]byte("n"), 64))
	display := "Zoë " + string(bytes.Repeat([]byte("d"), 59)) // 64 bytes, multi-byte rune
	p := mcParams("example.com", bytes.Repeat([]byte{7}, 64), true)
	p[3] = map[string]any{"id": bytes.Repeat([]byte{7}, 64), "name": name, "displayName": display}
	if st, _ := e.call(t, CmdMakeCredential, p); st != StatusOK {
		t.Fatal(st)
	}
	creds, err := e.store.CredentialsByRP("example.com")
	if err != nil || len(creds) != 1 {
		t.Fatal(creds, err)
	}
	if creds[0].UserName != name || creds[0].UserDisplayName != display || len(creds[0].UserID) != 64 {
		t.Errorf("stored user = %q %q %d", creds[0].UserName, creds[0].UserDisplayName, len(creds[0].UserID))
	}
	if got := truncate("ab€", 4); got != "ab" {
		t.Errorf("truncate split a rune: %q", got)
	}
}

func TestExcludeList(t *testing.T) {
	e := newEnv(t)
	cred := makeCred(t, e, "example.com", []byte("u"), false)
	p := mcParams("example.com", []byte("u"), false)
	p[5] = []any{map[string]any{"type": "public-key", "id": cred.credID}}
	before := e.prompt.count()
	if st, _ := e.call(t, CmdMakeCredential, p); st != ErrCredentialExcluded {
		t.Fatalf("status %v, want CREDENTIAL_EXCLUDED", st)
	}
	if e.prompt.count() != before+1 {
		t.Error("CREDENTIAL_EXCLUDED without asking for presence")
	}
	// The same ID excluded for another RP is not a match.
	p = mcParams("other.example", []byte("u"), false)
	p[5] = []any{map[string]any{"type": "public-key", "id": cred.credID}}
	if st, _ := e.call(t, CmdMakeCredential, p); st != StatusOK {
		t.Fatalf("foreign exclude entry: %v", st)
	}
}

func TestPresenceOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer error
		block  bool
		want   Status
	}{
		{"denied", prompt.ErrDenied, false, ErrOperationDenied},
		{"nobody", prompt.ErrNoUser, false, ErrOperationDenied},
		{"timeout", prompt.ErrTimeout, false, ErrUserActionTimeout},
		{"cancel", nil, true, ErrKeepaliveCancel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.prompt.answer, e.prompt.block = tc.answer, tc.block
			ctx, cancel := context.WithCancel(context.Background())
			if tc.block {
				time.AfterFunc(20*time.Millisecond, cancel)
			}
			defer cancel()
			if st, _ := e.callCtx(ctx, t, CmdMakeCredential, mcParams("example.com", []byte("u"), true)); st != tc.want {
				t.Errorf("makeCredential: %v, want %v", st, tc.want)
			}
			if e.store.CountCredentials() != 0 {
				t.Error("a refused makeCredential left a credential behind")
			}
			if st, _ := e.callCtx(ctx, t, CmdSelection, nil); st != tc.want && !tc.block {
				t.Errorf("selection: %v, want %v", st, tc.want)
			}
		})
	}
}

func TestReset(t *testing.T) {
	e := newEnv(t)
	old := makeCred(t, e, "example.com", []byte("u"), false)
	makeCred(t, e, "example.com", []byte("v"), true)

	e.clock.Advance(11 * time.Second)
	if st, _ := e.call(t, CmdReset, nil); st != ErrNotAllowed {
		t.Fatalf("reset 11 s after power-up: %v", st)
	}
	e.a.PowerCycle()
	e.prompt.answer = prompt.ErrDenied
	if st, _ := e.call(t, CmdReset, nil); st != ErrOperationDenied {
		t.Fatalf("reset without presence: %v", st)
	}
	e.prompt.answer = nil
	if st, _ := e.call(t, CmdReset, nil); st != StatusOK {
		t.Fatalf("reset: %v", st)
	}
	if e.store.CountCredentials() != 0 {
		t.Error("credentials survived reset")
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com")); st != ErrNoCredentials {
		t.Errorf("discoverable after reset: %v", st)
	}
	// The wrapping key changed: old non-discoverable IDs are dead.
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", old.credID)); st != ErrNoCredentials {
		t.Errorf("old credential ID after reset: %v", st)
	}
	makeCred(t, e, "example.com", []byte("u"), false)
}

func TestRestartKeepsCredentials(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir)
	cred := makeCred(t, e, "example.com", []byte("u"), true)
	nonDisc := makeCred(t, e, "example.com", []byte("w"), false)
	e.store.Close()

	e2 := openEnv(t, dir)
	st, m := e2.call(t, CmdGetAssertion, gaParams("example.com"))
	if st != StatusOK {
		t.Fatal(st)
	}
	ad := parseAuthData(t, field[[]byte](t, m, 2))
	verifySig(t, cred.pub, field[[]byte](t, m, 2), cdh("ga-example.com"), field[[]byte](t, m, 3))
	if ad.counter <= nonDisc.counter {
		t.Errorf("counter went back: %d after %d", ad.counter, nonDisc.counter)
	}
	if st, _ := e2.call(t, CmdGetAssertion, gaParams("example.com", nonDisc.credID)); st != StatusOK {
		t.Errorf("non-discoverable after restart: %v", st)
	}
}

func TestCredProtect(t *testing.T) {
	e := newEnv(t)
	mk := func(level int, rk bool) parsedAuthData {
		p := mcParams("example.com", []byte{byte(level)}, rk)
		p[6] = map[string]any{"credProtect": level}
		st, m := e.call(t, CmdMakeCredential, p)
		if st != StatusOK {
			t.Fatal(st)
		}
		ad := parseAuthData(t, field[[]byte](t, m, 2))
		if ad.flags&flagED == 0 || ad.ext["credProtect"] != uint64(level) {
			t.Fatalf("credProtect extension output = %v (flags %02x)", ad.ext, ad.flags)
		}
		return ad
	}
	l1 := mk(1, true)
	l2 := mk(2, true)
	l3 := mk(3, false)
	// Without UV and without a list only level 1 is visible.
	st, m := e.call(t, CmdGetAssertion, gaParams("example.com"))
	if _, ok := m[5]; st != StatusOK || ok {
		t.Fatalf("discoverable without UV: %v, numberOfCredentials %v (want absent: one credential)", st, m[5])
	}
	if id := field[map[string]any](t, m, 1)["id"].([]byte); !bytes.Equal(id, l1.credID) {
		t.Error("wrong credential")
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", l2.credID)); st != StatusOK {
		t.Errorf("level 2 with allowList: %v", st)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", l3.credID)); st != ErrNoCredentials {
		t.Errorf("level 3 without UV: %v", st)
	}
	p := mcParams("example.com", []byte("x"), false)
	p[6] = map[string]any{"credProtect": 4}
	if st, _ := e.call(t, CmdMakeCredential, p); st != ErrInvalidParameter {
		t.Errorf("credProtect 4: %v", st)
	}
}

// TestMalformed is the fixture table: every malformed or missing parameter
// gets the status CTAP 2.1 names, and nothing panics.
func TestMalformed(t *testing.T) {
	e := newEnv(t)
	cred := makeCred(t, e, "example.com", []byte("u"), false)
	mc := func(mod func(map[int]any)) map[int]any {
		p := mcParams("example.com", []byte("u"), false)
		mod(p)
		return p
	}
	ga := func(mod func(map[int]any)) map[int]any {
		p := gaParams("example.com", cred.credID)
		mod(p)
		return p
	}
	enc := func(v any) []byte { b, _ := cbor.Marshal(v); return b }
	for _, tc := range []struct {
		name   string
		cmd    byte
		params any
		want   Status
	}{
		{"unknown command", 0x55, nil, ErrInvalidCommand},
		{"vendor command", 0x40, nil, ErrInvalidCommand},
		{"mc no params", CmdMakeCredential, nil, ErrMissingParameter},
		{"mc not a map", CmdMakeCredential, enc([]int{1, 2}), ErrCBORUnexpectedType},
		{"mc truncated cbor", CmdMakeCredential, enc(mcParams("example.com", []byte("u"), false))[:20], ErrInvalidCBOR},
		{"mc trailing bytes", CmdMakeCredential, append(enc(mcParams("example.com", []byte("u"), false)), 0), ErrInvalidCBOR},
		{"mc indefinite map", CmdMakeCredential, []byte{0xbf, 0x01, 0x02, 0xff}, ErrInvalidCBOR},
		{"mc duplicate key", CmdMakeCredential, []byte{0xa2, 0x01, 0x40, 0x01, 0x40}, ErrInvalidCBOR},
		{"mc tagged value", CmdMakeCredential, []byte{0xa1, 0x01, 0xc2, 0x40}, ErrInvalidCBOR},
		{"mc missing cdh", CmdMakeCredential, mc(func(p map[int]any) { delete(p, 1) }), ErrMissingParameter},
		{"mc missing rp", CmdMakeCredential, mc(func(p map[int]any) { delete(p, 2) }), ErrMissingParameter},
		{"mc missing user", CmdMakeCredential, mc(func(p map[int]any) { delete(p, 3) }), ErrMissingParameter},
		{"mc missing params", CmdMakeCredential, mc(func(p map[int]any) { delete(p, 4) }), ErrMissingParameter},
		{"mc rp without id", CmdMakeCredential, mc(func(p map[int]any) { p[2] = map[string]any{"name": "x"} }), ErrMissingParameter},
		{"mc user without id", CmdMakeCredential, mc(func(p map[int]any) { p[3] = map[string]any{"name": "x"} }), ErrMissingParameter},
		{"mc cdh wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[1] = "hash" }), ErrCBORUnexpectedType},
		{"mc cdh short", CmdMakeCredential, mc(func(p map[int]any) { p[1] = []byte{1, 2} }), ErrInvalidLength},
		{"mc rp id wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[2] = map[string]any{"id": 5} }), ErrCBORUnexpectedType},
		{"mc rp not a map", CmdMakeCredential, mc(func(p map[int]any) { p[2] = "example.com" }), ErrCBORUnexpectedType},
		{"mc user id wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[3] = map[string]any{"id": "str"} }), ErrCBORUnexpectedType},
		{"mc user id too long", CmdMakeCredential, mc(func(p map[int]any) { p[3] = map[string]any{"id": make([]byte, 65)} }), ErrInvalidLength},
		{"mc params not array", CmdMakeCredential, mc(func(p map[int]any) { p[4] = map[string]any{"alg": -7} }), ErrCBORUnexpectedType},
		{"mc param without alg", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{map[string]any{"type": "public-key"}} }), ErrMissingParameter},
		{"mc param without type", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{map[string]any{"alg": -7}} }), ErrMissingParameter},
		{"mc param alg wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{map[string]any{"type": "public-key", "alg": "ES256"}} }), ErrCBORUnexpectedType},
		{"mc only EdDSA", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{map[string]any{"type": "public-key", "alg": -8}} }), ErrUnsupportedAlgorithm},
		{"mc empty params", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{} }), ErrUnsupportedAlgorithm},
		{"mc unknown type only", CmdMakeCredential, mc(func(p map[int]any) { p[4] = []any{map[string]any{"type": "x", "alg": -7}} }), ErrUnsupportedAlgorithm},
		{"mc up false", CmdMakeCredential, mc(func(p map[int]any) { p[7] = map[string]bool{"up": false} }), ErrInvalidOption},
		{"mc uv true", CmdMakeCredential, mc(func(p map[int]any) { p[7] = map[string]bool{"uv": true} }), ErrInvalidOption},
		{"mc option not bool", CmdMakeCredential, mc(func(p map[int]any) { p[7] = map[string]any{"rk": 1} }), ErrCBORUnexpectedType},
		{"mc options not map", CmdMakeCredential, mc(func(p map[int]any) { p[7] = []bool{true} }), ErrCBORUnexpectedType},
		{"mc exclude not array", CmdMakeCredential, mc(func(p map[int]any) { p[5] = 3 }), ErrCBORUnexpectedType},
		{"mc exclude without id", CmdMakeCredential, mc(func(p map[int]any) { p[5] = []any{map[string]any{"type": "public-key"}} }), ErrMissingParameter},
		{"mc exclude without type", CmdMakeCredential, mc(func(p map[int]any) { p[5] = []any{map[string]any{"id": []byte{1}}} }), ErrMissingParameter},
		{"mc extensions not map", CmdMakeCredential, mc(func(p map[int]any) { p[6] = 1 }), ErrCBORUnexpectedType},
		{"mc credProtect wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[6] = map[string]any{"credProtect": "high"} }), ErrCBORUnexpectedType},
		{"mc pinUvAuthParam without protocol", CmdMakeCredential, mc(func(p map[int]any) { p[8] = []byte{1} }), ErrMissingParameter},
		{"mc pinUvAuthParam unsupported protocol", CmdMakeCredential, mc(func(p map[int]any) { p[8] = []byte{1}; p[9] = 3 }), ErrInvalidParameter},
		{"mc pinUvAuthParam wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[8] = "x"; p[9] = 2 }), ErrCBORUnexpectedType},
		{"mc zero-length pinUvAuthParam probe", CmdMakeCredential, mc(func(p map[int]any) { p[8] = []byte{}; p[9] = 2 }), ErrPinNotSet},
		{"mc token without PIN", CmdMakeCredential, mc(func(p map[int]any) { p[8] = make([]byte, 32); p[9] = 2 }), ErrPinAuthInvalid},
		{"mc enterprise attestation", CmdMakeCredential, mc(func(p map[int]any) { p[10] = 1 }), ErrInvalidParameter},
		{"ga no params", CmdGetAssertion, nil, ErrMissingParameter},
		{"ga missing rpId", CmdGetAssertion, ga(func(p map[int]any) { delete(p, 1) }), ErrMissingParameter},
		{"ga missing cdh", CmdGetAssertion, ga(func(p map[int]any) { delete(p, 2) }), ErrMissingParameter},
		{"ga rpId wrong type", CmdGetAssertion, ga(func(p map[int]any) { p[1] = []byte("example.com") }), ErrCBORUnexpectedType},
		{"ga cdh long", CmdGetAssertion, ga(func(p map[int]any) { p[2] = make([]byte, 33) }), ErrInvalidLength},
		{"ga allow entry not map", CmdGetAssertion, ga(func(p map[int]any) { p[3] = []any{1} }), ErrCBORUnexpectedType},
		{"ga allow id wrong type", CmdGetAssertion, ga(func(p map[int]any) { p[3] = []any{map[string]any{"type": "public-key", "id": "x"}} }), ErrCBORUnexpectedType},
		{"ga allow without id", CmdGetAssertion, ga(func(p map[int]any) { p[3] = []any{map[string]any{"type": "public-key"}} }), ErrMissingParameter},
		{"ga rk option", CmdGetAssertion, ga(func(p map[int]any) { p[5] = map[string]bool{"rk": true} }), ErrUnsupportedOption},
		{"ga uv option", CmdGetAssertion, ga(func(p map[int]any) { p[5] = map[string]bool{"uv": true} }), ErrInvalidOption},
		{"clientPIN no params", CmdClientPIN, nil, ErrMissingParameter},
		{"clientPIN no subcommand", CmdClientPIN, map[int]any{1: 2}, ErrMissingParameter},
		{"clientPIN unknown subcommand", CmdClientPIN, map[int]any{1: 2, 2: 0x42}, ErrInvalidSubcommand},
		{"clientPIN keyAgreement without protocol", CmdClientPIN, map[int]any{2: 2}, ErrMissingParameter},
		{"clientPIN keyAgreement protocol 3", CmdClientPIN, map[int]any{1: 3, 2: 2}, ErrInvalidParameter},
		{"clientPIN subcommand wrong type", CmdClientPIN, map[int]any{1: 2, 2: "2"}, ErrCBORUnexpectedType},
		{"clientPIN setPIN missing params", CmdClientPIN, map[int]any{1: 2, 2: 3}, ErrMissingParameter},
		{"clientPIN bad key agreement", CmdClientPIN, map[int]any{1: 2, 2: 3, 3: map[int]any{1: 2, 3: -25, -1: 1, -2: make([]byte, 32), -3: make([]byte, 32)}, 4: make([]byte, 32), 5: make([]byte, 80)}, ErrInvalidParameter},
		{"clientPIN getPinToken without PIN", CmdClientPIN, map[int]any{1: 2, 2: 5}, ErrMissingParameter},
		{"clientPIN getUVRetries without built-in UV", CmdClientPIN, map[int]any{1: 2, 2: 7}, ErrInvalidSubcommand},
		{"largeBlobs no params", CmdLargeBlobs, nil, ErrMissingParameter},
		{"largeBlobs no offset", CmdLargeBlobs, map[int]any{1: 10}, ErrInvalidParameter}, // §6.10.2 step 1
		{"largeBlobs get and set", CmdLargeBlobs, map[int]any{1: 10, 2: []byte{1}, 3: 0}, ErrInvalidParameter},
		{"largeBlobs neither", CmdLargeBlobs, map[int]any{3: 0}, ErrInvalidParameter},
		{"largeBlobs get too much", CmdLargeBlobs, map[int]any{1: 8000, 3: 0}, ErrInvalidLength},
		{"largeBlobs get past the end", CmdLargeBlobs, map[int]any{1: 10, 3: 500}, ErrInvalidParameter},
		{"largeBlobs set without length", CmdLargeBlobs, map[int]any{2: []byte{1}, 3: 0}, ErrInvalidParameter},
		{"largeBlobs set too long", CmdLargeBlobs, map[int]any{2: []byte{1}, 3: 0, 4: 5000}, ErrLargeBlobStorageFull},
		{"largeBlobs set out of sequence", CmdLargeBlobs, map[int]any{2: []byte{1}, 3: 7}, ErrInvalidSeq},
		{"largeBlobs offset wrong type", CmdLargeBlobs, map[int]any{1: 1, 3: "0"}, ErrCBORUnexpectedType},
		{"credMgmt no params", CmdCredentialManagement, nil, ErrMissingParameter},
		{"credMgmt no token", CmdCredentialManagement, map[int]any{1: 1}, ErrPUATRequired},
		{"credMgmt next without begin", CmdCredentialManagement, map[int]any{1: 3}, ErrNotAllowed},
		{"credMgmt unknown subcommand", CmdCredentialManagement, map[int]any{1: 0x33}, ErrInvalidSubcommand},
		{"credMgmt begin creds without hash", CmdCredentialManagement, map[int]any{1: 4, 3: 2, 4: make([]byte, 32)}, ErrMissingParameter},
		{"credMgmt params not a map", CmdCredentialManagement, map[int]any{1: 4, 2: 7}, ErrCBORUnexpectedType},
		{"mc hmac-secret wrong type", CmdMakeCredential, mc(func(p map[int]any) { p[6] = map[string]any{"hmac-secret": 1} }), ErrCBORUnexpectedType},
		{"mc largeBlobKey without rk", CmdMakeCredential, mc(func(p map[int]any) { p[6] = map[string]any{"largeBlobKey": true} }), ErrInvalidOption},
		{"mc largeBlobKey false", CmdMakeCredential, mc(func(p map[int]any) { p[6] = map[string]any{"largeBlobKey": false} }), ErrInvalidOption},
		{"ga hmac-secret not a map", CmdGetAssertion, ga(func(p map[int]any) { p[4] = map[string]any{"hmac-secret": true} }), ErrCBORUnexpectedType},
		{"ga hmac-secret empty", CmdGetAssertion, ga(func(p map[int]any) { p[4] = map[string]any{"hmac-secret": map[int]any{}} }), ErrMissingParameter},
		{"config no params", CmdConfig, nil, ErrMissingParameter},
		{"config unknown subcommand", CmdConfig, map[int]any{1: 0x33}, ErrInvalidSubcommand},
		{"config enterprise attestation", CmdConfig, map[int]any{1: 1}, ErrInvalidSubcommand},
		{"config vendor prototype", CmdConfig, map[int]any{1: 0xff}, ErrInvalidSubcommand},
		{"config params wrong type", CmdConfig, map[int]any{1: 3, 2: map[int]any{1: "six"}}, ErrCBORUnexpectedType},
		{"ga pinUvAuthParam without protocol", CmdGetAssertion, ga(func(p map[int]any) { p[6] = []byte{1} }), ErrMissingParameter},
		{"ga zero-length pinUvAuthParam probe", CmdGetAssertion, ga(func(p map[int]any) { p[6] = []byte{}; p[7] = 1 }), ErrPinNotSet},
		{"ga too many allow entries", CmdGetAssertion, ga(func(p map[int]any) {
			l := make([]any, 300)
			for i := range l {
				l[i] = map[string]any{"type": "public-key", "id": []byte{1}}
			}
			p[3] = l
		}), ErrInvalidCBOR},
		{"ga deep nesting", CmdGetAssertion, []byte{0xa1, 0x04, 0xa1, 0x61, 0x61, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x00}, ErrInvalidCBOR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, _ := e.call(t, tc.cmd, tc.params); st != tc.want {
				t.Errorf("status %v, want %v", st, tc.want)
			}
		})
	}
	if resp := e.a.CBOR(context.Background(), nil); !bytes.Equal(resp, []byte{byte(ErrInvalidLength)}) {
		t.Errorf("empty request: % x", resp)
	}
}

func FuzzCBORCommands(f *testing.F) {
	e := newEnv(f)
	for _, seed := range []any{mcParams("example.com", []byte("u"), true), gaParams("example.com"), gaParams("example.com", []byte("id"))} {
		b, _ := cbor.Marshal(seed)
		f.Add(append([]byte{CmdMakeCredential}, b...))
		f.Add(append([]byte{CmdGetAssertion}, b...))
	}
	f.Add([]byte{CmdGetInfo})
	f.Add([]byte{CmdGetNextAssertion})
	f.Fuzz(func(t *testing.T, req []byte) {
		resp := e.a.CBOR(context.Background(), req)
		if len(resp) == 0 {
			t.Fatal("empty response")
		}
		if resp[0] != 0 && len(resp) != 1 {
			t.Fatal("error with a body")
		}
	})
}

func TestStatusError(t *testing.T) {
	if got := ErrNoCredentials.Error(); got != "CTAP2_ERR_NO_CREDENTIALS (0x2E)" {
		t.Errorf("Error() = %q", got)
	}
	var st Status
	if !errors.As(error(ErrPinInvalid), &st) || st != ErrPinInvalid {
		t.Error("errors.As on Status")
	}
}
