package ctap2

import (
	"bytes"
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// policyEnv reopens dir's store as an authenticator under the
// administrator's policy p, with a platform over PIN/UV protocol two.
func policyEnv(t *testing.T, dir string, p AdminPolicy) (*testEnv, *ctaptest.Client) {
	t.Helper()
	e := openEnv(t, dir)
	a, err := New(Config{TPM: &kitPINTPM{TPM: tpmsim.TPM(), auth: sharedKitPINs}, Store: e.store, Prompt: e.prompt, Now: e.clock.Now, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e, ctaptest.NewClient(a, 2)
}

// sharedKitPINs lets kitPINTPM recognise a PIN object across reopenings.
var sharedKitPINs = map[string][]byte{}

// TestAdminPolicy: the configuration file's floors under the PIN policy of
// authenticatorConfig (CTAP 2.1 §6.11). alwaysUv is on and cannot be
// toggled off (OPERATION_DENIED, §6.11.2); the minimum PIN length is
// raised, never lowered, and forces a change of a PIN set before it; the
// administrator's RPs read minPinLength (§12.4); a reset keeps all of it.
func TestAdminPolicy(t *testing.T) {
	dir := t.TempDir()
	e, c := policyEnv(t, dir, AdminPolicy{})
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	e.store.Close()

	floor := AdminPolicy{AlwaysUV: true, MinPINLength: 8, MinPINLengthRPs: []string{"sso.example"}}
	e, c = policyEnv(t, dir, floor)
	info := getInfo(t, e)
	if !alwaysUV(t, e) || field[int](t, info, 0x0D) != 8 || !field[bool](t, info, 0x0C) {
		t.Fatalf("getInfo under the floor: alwaysUv %v, minPINLength %d, forcePINChange %v; want true, 8, true",
			alwaysUV(t, e), field[int](t, info, 0x0D), field[bool](t, info, 0x0C))
	}
	// The 4-digit PIN must change first (§6.5.5.7: PIN_POLICY_VIOLATION).
	if _, st := c.PinToken(t, "1234"); Status(st) != ErrPinPolicyViolation {
		t.Errorf("token with the old short PIN: %v, want PIN_POLICY_VIOLATION", Status(st))
	}
	wantStatus(t, "changePIN to 7 digits", c.ChangePIN(t, "1234", "1234567"), ErrPinPolicyViolation)
	if st := c.ChangePIN(t, "1234", "12345678"); st != ctaptest.StatusOK {
		t.Fatalf("changePIN to 8 digits: %v", Status(st))
	}
	tok := mustToken(t, c, "12345678", pinuv.PermAuthenticatorConfig, "")
	if st := cfgCall(t, e, c, tok, cfgToggleAlwaysUv, nil); st != ErrOperationDenied || !alwaysUV(t, e) {
		t.Errorf("toggleAlwaysUv under the floor: %v, alwaysUv %v; want OPERATION_DENIED (0x27), still on", st, alwaysUV(t, e))
	}
	// minPinLength: the administrator's RP reads it, another does not.
	for rp, want := range map[string]any{"sso.example": uint64(8), "other.example": nil} {
		p := mcParams(rp, []byte("u"), false)
		p[6] = map[string]any{"minPinLength": true}
		p[8], p[9] = c.Param(mustToken(t, c, "12345678", pinuv.PermMakeCredential, ""), p[1].([]byte)), 2
		st, m := e.call(t, CmdMakeCredential, p)
		if st != StatusOK {
			t.Fatalf("makeCredential %s: %v", rp, st)
		}
		if got := parseAuthData(t, field[[]byte](t, m, 2)).ext["minPinLength"]; got != want {
			t.Errorf("%s: minPinLength %v, want %v", rp, got, want)
		}
	}
	// A reset restores CTAP's defaults, then the floor again.
	if st, _ := e.call(t, CmdReset, nil); st != StatusOK {
		t.Fatalf("reset: %v", st)
	}
	info = getInfo(t, e)
	if !alwaysUV(t, e) || field[int](t, info, 0x0D) != 8 {
		t.Errorf("after reset: alwaysUv %v, minPINLength %d; want true, 8", alwaysUV(t, e), field[int](t, info, 0x0D))
	}
	e.store.Close()

	// Without the floor the stored policy stays as it was left: lifting
	// the administrator's rule does not lower what was applied.
	e, _ = policyEnv(t, dir, AdminPolicy{})
	if !alwaysUV(t, e) || field[int](t, getInfo(t, e), 0x0D) != 8 {
		t.Error("lifting the floor lowered the stored policy")
	}
}

func TestAdminPolicyChecked(t *testing.T) {
	e := openEnv(t, t.TempDir())
	for _, p := range []AdminPolicy{{MinPINLength: 3}, {MinPINLength: 64}, {MinPINLengthRPs: make([]string, 33)}} {
		if _, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Policy: p}); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

// TestInfoOfNew: what a namespace created now would report, whatever this
// one's owner changed (toggleAlwaysUv, setMinPINLength, §6.11): no PIN,
// no passkeys, the PIN policy at the administrator's floor (CTAP's minimum
// of 4 without one).
func TestInfoOfNew(t *testing.T) {
	for _, tc := range []struct {
		name     string
		floor    AdminPolicy
		alwaysUV bool
		minPIN   int
	}{
		{"no floor", AdminPolicy{}, false, 4},
		{"the administrator's floor", AdminPolicy{MinPINLength: 6}, false, 6},
	} {
		e, c := policyEnv(t, t.TempDir(), tc.floor)
		c.MakeES256(t, bytes.Repeat([]byte{1}, 32), "a.example", "alice", true)
		if st := cfgCall(t, e, c, nil, cfgToggleAlwaysUv, nil); st != StatusOK {
			t.Fatalf("%s: toggleAlwaysUv: %v", tc.name, st)
		}
		if st := c.SetPIN(t, "12345678"); st != ctaptest.StatusOK {
			t.Fatalf("%s: setPIN: %v", tc.name, Status(st))
		}
		tok := mustToken(t, c, "12345678", pinuv.PermAuthenticatorConfig, "")
		if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, map[int]any{1: 8}); st != StatusOK {
			t.Fatalf("%s: setMinPINLength 8: %v", tc.name, st)
		}
		if in := e.a.Info(); !in.AlwaysUV || in.MinPINLength != 8 || !in.PINSet || in.Credentials != 1 {
			t.Fatalf("%s: Info after the changes: %+v", tc.name, in)
		}
		in := e.a.InfoOfNew()
		if in.AlwaysUV != tc.alwaysUV || in.MinPINLength != tc.minPIN || in.PINSet || in.PINRetries != 0 || in.Credentials != 0 {
			t.Errorf("%s: InfoOfNew = alwaysUv %v, minimum PIN %d, PIN set %v (%d retries), %d passkeys; want alwaysUv %v, minimum %d, no PIN, none",
				tc.name, in.AlwaysUV, in.MinPINLength, in.PINSet, in.PINRetries, in.Credentials, tc.alwaysUV, tc.minPIN)
		}
	}
}
