package ctap2

import (
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
)

// TestKitUVOptionAndAlwaysUv: the uv option and alwaysUv without a
// pinUvAuthParam (CTAP 2.1 §6.1.2 steps 5-6, §6.2.2 steps 5-6, §7.2.2
// alwaysUv) with built-in UV (the device PIN typed into the prompt):
// uv=true before a PIN exists is INVALID_OPTION (0x2C: built-in UV "has
// not yet been enabled", §6.1.2 step 5.3.2); with a PIN it verifies at the prompt and sets UV; under
// alwaysUv a request without uv verifies the same way, and without
// built-in UV it needs a token (PUAT_REQUIRED, 0x36).
func TestKitUVOptionAndAlwaysUv(t *testing.T) {
	p := &pinPrompter{pin: "4321"}
	e, c := kitEnvPrompt(t, 2, p)
	mc := func(opts map[string]any) map[int]any {
		m := mcParams("uvopt.example", []byte("u"), false)
		if opts != nil {
			m[7] = opts
		}
		return m
	}
	if st, _ := e.call(t, CmdMakeCredential, mc(map[string]any{"uv": true})); st != ErrInvalidOption {
		t.Errorf("uv=true without a PIN: %v, want INVALID_OPTION (0x2C)", st)
	}
	if st := c.SetPIN(t, p.pin); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	asked := len(p.entered)
	st, m := e.call(t, CmdMakeCredential, mc(map[string]any{"uv": true}))
	if st != StatusOK {
		t.Fatalf("uv=true with a PIN: %v", st)
	}
	if ad := parseAuthData(t, field[[]byte](t, m, 2)); ad.flags&(flagUP|flagUV) != flagUP|flagUV || len(p.entered) != asked+1 {
		t.Errorf("uv=true: flags %02x, PIN prompts %d; want UP|UV after one PIN prompt", ad.flags, len(p.entered)-asked)
	}
	// alwaysUv: a plain request is verified at the prompt.
	tok := mustToken(t, c, p.pin, 0x20, "") // acfg
	if st := cfgCall(t, e, c, tok, cfgToggleAlwaysUv, nil); st != StatusOK {
		t.Fatalf("toggleAlwaysUv: %v", st)
	}
	asked = len(p.entered)
	st, m = e.call(t, CmdMakeCredential, mc(nil))
	if st != StatusOK {
		t.Fatalf("alwaysUv, no uv option: %v", st)
	}
	if ad := parseAuthData(t, field[[]byte](t, m, 2)); ad.flags&flagUV == 0 || len(p.entered) != asked+1 {
		t.Errorf("alwaysUv: flags %02x, PIN prompts %d; want UV after one PIN prompt", ad.flags, len(p.entered)-asked)
	}
	// The same store under a prompter without PIN entry: a token is needed.
	dir := e.dir
	e.store.Close()
	e2 := openEnv(t, dir)
	if st, _ := e2.call(t, CmdGetAssertion, gaParams("uvopt.example")); st != ErrPUATRequired {
		t.Errorf("alwaysUv without built-in UV: %v, want PUAT_REQUIRED (0x36)", st)
	}
	if st, _ := e2.call(t, CmdGetAssertion, func() map[int]any { g := gaParams("uvopt.example"); g[5] = map[string]bool{"uv": true}; return g }()); st != ErrInvalidOption {
		t.Errorf("uv=true without built-in UV: %v, want INVALID_OPTION (0x2C)", st)
	}
}
