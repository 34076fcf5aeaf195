package ctap2

import (
	"bytes"
	"context"
	"sort"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// pinPrompter is testPrompter that also does built-in UV: EnterPIN
// records the request and types pin.
type pinPrompter struct {
	testPrompter
	pin     string
	entered []prompt.Request
}

func (p *pinPrompter) EnterPIN(_ context.Context, req prompt.Request, _ int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entered = append(p.entered, req)
	return p.pin, nil
}

// rawCall sends cmd with CBOR params and returns the whole response,
// status byte first.
func rawCall(t *testing.T, a *Authenticator, cmd byte, params any) []byte {
	t.Helper()
	b, err := cbor.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	return a.CBOR(context.Background(), append([]byte{cmd}, b...))
}

// assertionKeys decodes a successful getAssertion response and returns
// its map keys in order and the map.
func assertionKeys(t *testing.T, resp []byte) ([]int, map[int]cbor.RawMessage) {
	t.Helper()
	if len(resp) < 2 || Status(resp[0]) != StatusOK {
		t.Fatalf("getAssertion failed: % x", resp[:min(len(resp), 8)])
	}
	assertCanonical(t, resp[1:])
	var m map[int]cbor.RawMessage
	if err := cbor.Unmarshal(resp[1:], &m); err != nil {
		t.Fatal(err)
	}
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys, m
}

// wantUserSelected checks the exact encoding: a 5-entry map (credential,
// authData, signature, user, userSelected) whose last pair is 06 f5
// (userSelected: true), and no numberOfCredentials.
func wantUserSelected(t *testing.T, what string, resp []byte) map[int]cbor.RawMessage {
	t.Helper()
	keys, m := assertionKeys(t, resp)
	if resp[1] != 0xa5 || !bytes.HasSuffix(resp, []byte{0x06, 0xf5}) || !equalInts(keys, []int{1, 2, 3, 4, 6}) {
		t.Errorf("%s: keys %v, map header %02x, ends % x: want keys [1 2 3 4 6] ending 06 f5 (userSelected true)", what, keys, resp[1], resp[len(resp)-2:])
	}
	return m
}

// wantNotSelected checks that userSelected (0x06) is absent and the keys
// are exactly want.
func wantNotSelected(t *testing.T, what string, resp []byte, want ...int) map[int]cbor.RawMessage {
	t.Helper()
	keys, m := assertionKeys(t, resp)
	if !equalInts(keys, want) {
		t.Errorf("%s: keys %v, want %v (no userSelected)", what, keys, want)
	}
	return m
}

func equalInts(a, b []int) bool {
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

func makeRK(t *testing.T, e *testEnv, rpID string, userID []byte, name string, opts map[string]any) []byte {
	t.Helper()
	p := mcParams(rpID, userID, true)
	p[3] = map[string]any{"id": userID, "name": name, "displayName": "D " + name}
	if opts != nil {
		p[7] = opts
	}
	st, m := e.call(t, CmdMakeCredential, p)
	if st != StatusOK {
		t.Fatalf("makeCredential %s: %v", name, st)
	}
	return parseAuthData(t, field[[]byte](t, m, 2)).credID
}

// TestUserSelectedPresencePrompt: with one discoverable credential the
// presence prompt names the account, and the person approving it chose
// that account: userSelected. Several accounts, an allow list, a silent
// request or getNextAssertion: never.
func TestUserSelectedPresencePrompt(t *testing.T) {
	e := newEnv(t)
	id := makeRK(t, e, "one.example", []byte("u-alice"), "alice@one.example", nil)
	n := e.prompt.count()
	resp := rawCall(t, e.a, CmdGetAssertion, gaParams("one.example"))
	m := wantUserSelected(t, "one discoverable credential", resp)
	if got := field[map[string]any](t, m, 1)["id"].([]byte); !bytes.Equal(got, id) {
		t.Error("wrong credential")
	}
	if e.prompt.count() != n+1 || e.prompt.asked[n].UserName != "alice@one.example" || e.prompt.asked[n].RPID != "one.example" {
		t.Errorf("prompt %+v: want one naming alice@one.example on one.example", e.prompt.asked[n:])
	}

	wantNotSelected(t, "allow list", rawCall(t, e.a, CmdGetAssertion, gaParams("one.example", id)), 1, 2, 3, 4)
	silent := gaParams("one.example")
	silent[5] = map[string]any{"up": false}
	wantNotSelected(t, "up=false", rawCall(t, e.a, CmdGetAssertion, silent), 1, 2, 3, 4)

	makeRK(t, e, "two.example", []byte("u-bob"), "bob@two.example", nil)
	makeRK(t, e, "two.example", []byte("u-carol"), "carol@two.example", nil)
	n = e.prompt.count()
	m = wantNotSelected(t, "two credentials", rawCall(t, e.a, CmdGetAssertion, gaParams("two.example")), 1, 2, 3, 4, 5)
	if field[uint64](t, m, 5) != 2 {
		t.Errorf("numberOfCredentials = %d", field[uint64](t, m, 5))
	}
	if e.prompt.asked[n].UserName != "" {
		t.Errorf("the prompt named %q with two accounts", e.prompt.asked[n].UserName)
	}
	wantNotSelected(t, "getNextAssertion", e.a.CBOR(context.Background(), []byte{CmdGetNextAssertion}), 1, 2, 3, 4)
}

// TestUserSelectedApproveAll: approve-all asks nobody, so nothing it
// approves is a choice.
func TestUserSelectedApproveAll(t *testing.T) {
	e := newEnv(t)
	makeRK(t, e, "one.example", []byte("u-alice"), "alice@one.example", nil)
	a, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Prompt: prompt.ApproveAll{}, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	wantNotSelected(t, "approve-all", rawCall(t, a, CmdGetAssertion, gaParams("one.example")), 1, 2, 3, 4)
}

// uvToken runs getPinUvAuthTokenUsingUvWithPermissions (protocol two) as a
// platform would (internal/ctaptest) and returns the token.
func uvToken(t *testing.T, a *Authenticator, perms pinuv.Permission, rpID string) []byte {
	t.Helper()
	tok, st := ctaptest.NewClient(a, 2).UVTokenWithPermissions(t, byte(perms), rpID)
	if st != ctaptest.StatusOK {
		t.Fatalf("getPinUvAuthTokenUsingUvWithPermissions: %v", Status(st))
	}
	return tok
}

// TestUserSelectedBuiltInUV is Chromium's sign-in with a discoverable
// credential on a key with built-in UV: a token from
// getPinUvAuthTokenUsingUvWithPermissions (ga, rpId), then getAssertion
// with it. When the RP has one passkey the PIN prompt names it, so typing
// the PIN chooses it: userSelected. With two it names none: not set.
func TestUserSelectedBuiltInUV(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir)
	p := &pinPrompter{pin: "271828"}
	a, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Prompt: p, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.a, e.prompt = a, &p.testPrompter
	if err := a.pin.installPIN(p.pin); err != nil {
		t.Fatal(err)
	}
	id := makeRK(t, e, "localhost", []byte("u-carol"), "carol@e2e.example", map[string]any{"rk": true, "uv": true})

	getWithToken := func(tok []byte) []byte {
		h := cdh("ga-localhost")
		pr, _ := pinuv.NewProtocolTwo()
		return rawCall(t, a, CmdGetAssertion, map[int]any{1: "localhost", 2: h, 6: pr.Authenticate(tok, h), 7: 2})
	}

	n := len(p.entered)
	tok := uvToken(t, a, pinuv.PermGetAssertion, "localhost")
	if len(p.entered) != n+1 || p.entered[n].UserName != "carol@e2e.example" || p.entered[n].RPID != "localhost" {
		t.Fatalf("PIN prompt %+v: want one naming carol@e2e.example on localhost", p.entered[n:])
	}
	asked := p.count()
	m := wantUserSelected(t, "token after a PIN prompt naming the account", getWithToken(tok))
	if p.count() != asked {
		t.Error("a second prompt after the PIN prompt")
	}
	if got := field[map[string]any](t, m, 1)["id"].([]byte); !bytes.Equal(got, id) {
		t.Error("wrong credential")
	}
	ad := parseAuthData(t, field[[]byte](t, m, 2))
	if ad.flags&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("flags %02x, want UP and UV", ad.flags)
	}
	if u := field[map[string]any](t, m, 4); u["name"] != "carol@e2e.example" || u["displayName"] != "D carol@e2e.example" {
		t.Errorf("user %v: want the names after UV", u)
	}

	// A token for registration and sign-in does not name an account.
	n = len(p.entered)
	tok = uvToken(t, a, pinuv.PermGetAssertion|pinuv.PermMakeCredential, "localhost")
	if p.entered[n].UserName != "" {
		t.Errorf("mc+ga token prompt named %q", p.entered[n].UserName)
	}
	wantNotSelected(t, "mc+ga token", getWithToken(tok), 1, 2, 3, 4)

	// Two passkeys for the RP: the PIN prompt names neither; the platform
	// must let the person pick.
	makeRK(t, e, "localhost", []byte("u-dave"), "dave@e2e.example", map[string]any{"rk": true, "uv": true})
	n = len(p.entered)
	tok = uvToken(t, a, pinuv.PermGetAssertion, "localhost")
	if p.entered[n].UserName != "" {
		t.Errorf("PIN prompt named %q with two accounts", p.entered[n].UserName)
	}
	m = wantNotSelected(t, "two accounts", getWithToken(tok), 1, 2, 3, 4, 5)
	if field[uint64](t, m, 5) != 2 {
		t.Errorf("numberOfCredentials = %d", field[uint64](t, m, 5))
	}

	// getAssertion's own uv option (no token) on an RP with one passkey:
	// the UV prompt names it.
	makeRK(t, e, "uv.example", []byte("u-erin"), "erin@uv.example", map[string]any{"rk": true, "uv": true})
	n = len(p.entered)
	opt := gaParams("uv.example")
	opt[5] = map[string]any{"uv": true}
	wantUserSelected(t, "uv option", rawCall(t, a, CmdGetAssertion, opt))
	if len(p.entered) != n+1 || p.entered[n].UserName != "erin@uv.example" {
		t.Errorf("UV prompt %+v: want one naming erin@uv.example", p.entered[n:])
	}
}
