package ctap2

// Black-box tests of authenticatorConfig (CTAP 2.1 §6.11) with tokens from
// internal/ctaptest.

import (
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// cfgCall sends authenticatorConfig subcommand sub with params (nil:
// none), authorised by tok (nil: no pinUvAuthParam) over
// 32×0xff || 0x0d || sub || params (§6.11.1).
func cfgCall(t *testing.T, e *testEnv, c *ctaptest.Client, tok []byte, sub byte, params map[int]any) Status {
	t.Helper()
	resp := c.Raw(t, CmdConfig, subcommandRequest(t, c, tok, sub, params, ctaptest.ConfigMessage))
	if len(resp) != 1 {
		t.Fatalf("authenticatorConfig: a %d-byte response, want the status alone", len(resp))
	}
	return Status(resp[0])
}

func alwaysUV(t *testing.T, e *testEnv) bool {
	t.Helper()
	return field[map[string]bool](t, getInfo(t, e), 4)["alwaysUv"]
}

// TestKitToggleAlwaysUv (§6.11.2): without a PIN the toggle needs no
// token until alwaysUv is on; then, and with a PIN, only a token with acfg
// over the right message changes it.
func TestKitToggleAlwaysUv(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := cfgCall(t, e, c, nil, cfgToggleAlwaysUv, nil); st != StatusOK || !alwaysUV(t, e) {
		t.Fatalf("toggle without a PIN: %v, alwaysUv %v", st, alwaysUV(t, e))
	}
	if st := cfgCall(t, e, c, nil, cfgToggleAlwaysUv, nil); st != ErrPUATRequired {
		t.Errorf("toggle under alwaysUv without a token: %v, want PUAT_REQUIRED (0x36)", st)
	}
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	noAcfg := mustToken(t, c, "1234", pinuv.PermGetAssertion, "")
	if st := cfgCall(t, e, c, noAcfg, cfgToggleAlwaysUv, nil); st != ErrPinAuthInvalid {
		t.Errorf("token without acfg: %v, want PIN_AUTH_INVALID", st)
	}
	tok := mustToken(t, c, "1234", pinuv.PermAuthenticatorConfig, "")
	req := map[int]any{1: cfgToggleAlwaysUv, 3: 2, 4: c.Param(tok, ctaptest.ConfigMessage(cfgSetMinPINLength, nil))}
	if got := c.Raw(t, CmdConfig, req); len(got) != 1 || Status(got[0]) != ErrPinAuthInvalid {
		t.Errorf("param over another subcommand: %x, want 33", got)
	}
	req = map[int]any{1: cfgToggleAlwaysUv, 3: 3, 4: c.Param(tok, ctaptest.ConfigMessage(cfgToggleAlwaysUv, nil))}
	if got := c.Raw(t, CmdConfig, req); len(got) != 1 || Status(got[0]) != ErrInvalidParameter {
		t.Errorf("protocol 3: %x, want 02", got)
	}
	if st := cfgCall(t, e, c, tok, cfgToggleAlwaysUv, nil); st != StatusOK || alwaysUV(t, e) {
		t.Errorf("toggle with an acfg token: %v, alwaysUv %v; want OK, off", st, alwaysUV(t, e))
	}
	if st := cfgCall(t, e, c, tok, cfgEnableEnterpriseAttestation, nil); st != ErrInvalidSubcommand {
		t.Errorf("enableEnterpriseAttestation: %v, want INVALID_SUBCOMMAND", st)
	}
	if got := c.Raw(t, CmdConfig, map[int]any{3: 2}); len(got) != 1 || Status(got[0]) != ErrMissingParameter {
		t.Errorf("no subcommand: %x, want 14", got)
	}
	// The setting survives a restart.
	dir := e.dir
	e.store.Close()
	if alwaysUV(t, openEnv(t, dir)) {
		t.Error("alwaysUv after a restart: on, want off")
	}
}

// TestKitSetMinPINLength (§6.11.4): the minimum only grows; a PIN checked
// this power cycle that is now too short forces a change (getInfo
// forcePINChange, getPinToken PIN_POLICY_VIOLATION) that changePIN to a
// long enough PIN clears; the RP list feeds the minPinLength extension
// (§12.4).
func TestKitSetMinPINLength(t *testing.T) {
	e, c := kitEnv(t, 1)
	if st := cfgCall(t, e, c, nil, cfgSetMinPINLength, map[int]any{3: true}); st != ErrPinNotSet {
		t.Errorf("forceChangePin without a PIN: %v, want PIN_NOT_SET", st)
	}
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	if st := cfgCall(t, e, c, nil, cfgSetMinPINLength, map[int]any{1: 6}); st != ErrPUATRequired {
		t.Errorf("with a PIN and no token: %v, want PUAT_REQUIRED", st)
	}
	tok := mustToken(t, c, "1234", pinuv.PermAuthenticatorConfig, "")
	for name, tc := range map[string]struct {
		params map[int]any
		want   Status
	}{
		"newMinPINLength 64":          {map[int]any{1: 64}, ErrPinPolicyViolation},
		"newMinPINLength 3":           {map[int]any{1: 3}, ErrPinPolicyViolation},
		"nine RP IDs":                 {map[int]any{2: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}}, ErrKeyStoreFull},
		"newMinPINLength as a string": {map[int]any{1: "6"}, ErrCBORUnexpectedType},
	} {
		if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, tc.params); st != tc.want {
			t.Errorf("%s: %v, want %v", name, st, tc.want)
		}
	}
	info := getInfo(t, e)
	if field[int](t, info, 0x0D) != 4 || field[bool](t, info, 0x0C) {
		t.Fatalf("refused changes changed minPINLength to %d, forcePINChange %v", field[int](t, info, 0x0D), field[bool](t, info, 0x0C))
	}
	if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, map[int]any{1: 6, 2: []string{"a.example"}}); st != StatusOK {
		t.Fatalf("setMinPINLength 6: %v", st)
	}
	info = getInfo(t, e)
	if field[int](t, info, 0x0D) != 6 || !field[bool](t, info, 0x0C) {
		t.Errorf("getInfo: minPINLength %d, forcePINChange %v; want 6, true (the 4-digit PIN is too short)", field[int](t, info, 0x0D), field[bool](t, info, 0x0C))
	}
	if _, st := c.PinToken(t, "1234"); Status(st) != ErrPinPolicyViolation {
		t.Errorf("getPinToken under forcePINChange: %v, want PIN_POLICY_VIOLATION", Status(st))
	}
	if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, map[int]any{1: 5}); st != ErrPinPolicyViolation {
		t.Errorf("lowering the minimum to 5: %v, want PIN_POLICY_VIOLATION", st)
	}
	wantStatus(t, "changePIN to 5 digits", c.ChangePIN(t, "1234", "12345"), ErrPinPolicyViolation)
	if st := c.ChangePIN(t, "1234", "123456"); st != ctaptest.StatusOK {
		t.Fatalf("changePIN to 6 digits: %v", Status(st))
	}
	if field[bool](t, getInfo(t, e), 0x0C) {
		t.Error("forcePINChange still set after changePIN")
	}

	// minPinLength extension: reported to the listed RP only.
	for rp, want := range map[string]any{"a.example": uint64(6), "b.example": nil} {
		p := mcParams(rp, []byte("u"), false)
		p[6] = map[string]any{"minPinLength": true}
		p[8], p[9] = c.Param(mustToken(t, c, "123456", pinuv.PermMakeCredential, ""), p[1].([]byte)), 1
		st, m := e.call(t, CmdMakeCredential, p)
		if st != StatusOK {
			t.Fatalf("makeCredential %s: %v", rp, st)
		}
		if got := parseAuthData(t, field[[]byte](t, m, 2)).ext["minPinLength"]; got != want {
			t.Errorf("%s: minPinLength output %v, want %v", rp, got, want)
		}
	}

	// forceChangePin alone, with a PIN long enough.
	tok = mustToken(t, c, "123456", pinuv.PermAuthenticatorConfig, "")
	if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, map[int]any{3: true}); st != StatusOK || !field[bool](t, getInfo(t, e), 0x0C) {
		t.Errorf("forceChangePin: %v, forcePINChange %v", st, field[bool](t, getInfo(t, e), 0x0C))
	}
	// Everything survives a restart.
	dir := e.dir
	e.store.Close()
	info = getInfo(t, openEnv(t, dir))
	if field[int](t, info, 0x0D) != 6 || !field[bool](t, info, 0x0C) {
		t.Errorf("after a restart: minPINLength %d, forcePINChange %v", field[int](t, info, 0x0D), field[bool](t, info, 0x0C))
	}
}
