package ctap2

// Built-in UV through the system (a prompt.Verifier: polkit): getInfo,
// tokens and makeCredential/getAssertion without a PIN, the statuses of a
// failed verification, the fallback to the device PIN, and that a
// PINEntry prompt is unchanged.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// fakeVerifier is a prompt.Verifier answering VerifyUser with verify (or
// blocking until ctx ends when block) and Confirm with confirm.
type fakeVerifier struct {
	mu       sync.Mutex
	verify   error
	confirm  error
	block    bool
	verified []prompt.Request
	asked    []prompt.Request
}

func (v *fakeVerifier) Confirm(_ context.Context, req prompt.Request) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.asked = append(v.asked, req)
	return v.confirm
}

func (v *fakeVerifier) VerifyUser(ctx context.Context, req prompt.Request) error {
	v.mu.Lock()
	v.verified = append(v.verified, req)
	answer, block := v.verify, v.block
	v.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return answer
}

func (v *fakeVerifier) verifications() []prompt.Request {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]prompt.Request(nil), v.verified...)
}

// fakeAgent is a PINEntry typing pin.
type fakeAgent struct {
	testPrompter
	pin     string
	entered int
}

func (p *fakeAgent) EnterPIN(context.Context, prompt.Request, int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entered++
	return p.pin, nil
}

func mcUV(rpID string, userID []byte, rk bool) map[int]any {
	p := mcParams(rpID, userID, false)
	p[7] = map[string]any{"rk": rk, "uv": true}
	return p
}

// TestVerifierGetInfo: a Verifier is built-in UV without a PIN: uv true,
// uvModality passcode external | fingerprint internal, one platform
// attempt; clientPin stays false until a PIN is set.
func TestVerifierGetInfo(t *testing.T) {
	e, _ := kitEnvPrompt(t, 2, &fakeVerifier{})
	info := getInfo(t, e)
	opts := field[map[string]bool](t, info, 4)
	if !opts["uv"] || opts["clientPin"] {
		t.Errorf("options uv=%v clientPin=%v, want true, false", opts["uv"], opts["clientPin"])
	}
	if m := field[int](t, info, 0x12); m != 0x802 {
		t.Errorf("uvModality %#x, want 0x802", m)
	}
	if n := field[int](t, info, 0x11); n != 1 {
		t.Errorf("preferredPlatformUvAttempts %d, want 1", n)
	}
}

// TestVerifierUVToken: getPinUvAuthTokenUsingUvWithPermissions works
// through the Verifier with no PIN set, and the token signs in with UV;
// getUVRetries reports the system's count as full.
func TestVerifierUVToken(t *testing.T) {
	v := &fakeVerifier{}
	e, c := kitEnvPrompt(t, 2, v)
	cred := makeCred(t, e, "uv.example", []byte("u"), false)
	tok, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "uv.example")
	if st != ctaptest.StatusOK {
		t.Fatalf("UV token without a PIN: %v", Status(st))
	}
	if got := v.verifications(); len(got) != 1 || got[0].Operation != prompt.OpUnlock || got[0].RPID != "uv.example" {
		t.Errorf("verifier asked %+v, want one %q for uv.example", got, prompt.OpUnlock)
	}
	if st, ad := assertWithToken(t, e, c, "uv.example", cred, tok); st != StatusOK || ad.flags&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("getAssertion with the UV token: %v, flags %02x", st, ad.flags)
	}
	if n, st := c.UVRetries(t); st != ctaptest.StatusOK || n != systemUVRetries {
		t.Errorf("getUVRetries: %d (%v), want %d", n, Status(st), systemUVRetries)
	}
	if e.a.pin.IsSet() {
		t.Error("a PIN appeared")
	}
}

// TestVerifierMakeCredentialUV: makeCredential and getAssertion with
// uv=true and no PIN go through the Verifier and set UV; a discoverable
// credential without UV is PUAT_REQUIRED (the authenticator is protected
// by UV now, §6.1.2 makeCredUvNotRqd), a non-discoverable one is made
// with presence only.
func TestVerifierMakeCredentialUV(t *testing.T) {
	v := &fakeVerifier{}
	e, _ := kitEnvPrompt(t, 2, v)
	st, m := e.call(t, CmdMakeCredential, mcUV("mc.example", []byte("u1"), true))
	if st != StatusOK {
		t.Fatalf("makeCredential uv=true rk=true: %v", st)
	}
	ad := parseAuthData(t, field[[]byte](t, m, 2))
	if ad.flags&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("makeCredential flags %02x, want UP|UV", ad.flags)
	}
	if got := v.verifications(); len(got) != 1 || got[0].Operation != prompt.OpRegister || got[0].RPID != "mc.example" {
		t.Errorf("verifier asked %+v", got)
	}
	ga := gaParams("mc.example")
	ga[5] = map[string]any{"uv": true}
	st, m = e.call(t, CmdGetAssertion, ga)
	if st != StatusOK {
		t.Fatalf("getAssertion uv=true: %v", st)
	}
	if f := parseAuthData(t, field[[]byte](t, m, 2)).flags; f&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("getAssertion flags %02x, want UP|UV", f)
	}
	if st, _ := e.call(t, CmdMakeCredential, mcParams("mc.example", []byte("u2"), true)); st != ErrPUATRequired {
		t.Errorf("rk without UV: %v, want PUAT_REQUIRED", st)
	}
	st, m = e.call(t, CmdMakeCredential, mcParams("mc.example", []byte("u3"), false))
	if st != StatusOK {
		t.Fatalf("non-discoverable without UV: %v", st)
	}
	if f := parseAuthData(t, field[[]byte](t, m, 2)).flags; f&flagUV != 0 || f&flagUP == 0 {
		t.Errorf("non-discoverable without UV: flags %02x, want UP only", f)
	}
}

// TestVerifierStatuses: a failed verification is UV_INVALID, a dismissed
// or declined dialog OPERATION_DENIED, nobody to ask OPERATION_DENIED, no
// answer in time USER_ACTION_TIMEOUT, CTAPHID_CANCEL KEEPALIVE_CANCEL;
// none of them costs a PIN retry.
func TestVerifierStatuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Status
	}{
		{"not verified", prompt.ErrNotVerified, ErrUVInvalid},
		{"dismissed", prompt.ErrDenied, ErrOperationDenied},
		{"no agent", prompt.ErrNoVerifier, ErrOperationDenied},
		{"nobody", prompt.ErrNoUser, ErrOperationDenied},
		{"timeout", prompt.ErrTimeout, ErrUserActionTimeout},
		{"deadline", context.DeadlineExceeded, ErrUserActionTimeout},
		{"bus error", errors.New("polkit: org.freedesktop.DBus.Error.NoReply"), ErrOperationDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &fakeVerifier{verify: tc.err}
			e, c := kitEnvPrompt(t, 2, v)
			_, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "")
			wantStatus(t, "UV token", st, tc.want)
			if st, _ := e.call(t, CmdMakeCredential, mcUV("s.example", []byte("u"), true)); st != tc.want {
				t.Errorf("makeCredential uv=true: %v, want %v", st, tc.want)
			}
			wantRetries(t, c, maxPINRetries, false)
		})
	}
	t.Run("cancel", func(t *testing.T) {
		v := &fakeVerifier{block: true}
		e, _ := kitEnvPrompt(t, 2, v)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for len(v.verifications()) == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		if st, _ := e.callCtx(ctx, t, CmdMakeCredential, mcUV("c.example", []byte("u"), true)); st != ErrKeepaliveCancel {
			t.Errorf("cancelled: %v, want KEEPALIVE_CANCEL", st)
		}
	})
}

// TestVerifierWithPIN: with a PIN set, clientPIN tokens work as before,
// and built-in UV still goes through the system, not the PIN.
func TestVerifierWithPIN(t *testing.T) {
	v := &fakeVerifier{verify: prompt.ErrNotVerified}
	e, c := kitEnvPrompt(t, 2, v)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	cred := makeCred(t, e, "pin.example", []byte("u"), false)
	tok := mustToken(t, c, "1234", pinuv.PermGetAssertion, "pin.example")
	if st, ad := assertWithToken(t, e, c, "pin.example", cred, tok); st != StatusOK || ad.flags&flagUV == 0 {
		t.Errorf("getAssertion with a PIN token: %v, flags %02x", st, ad.flags)
	}
	if _, st := c.PinTokenWithPermissions(t, "9999", byte(pinuv.PermGetAssertion), ""); Status(st) != ErrPinInvalid {
		t.Errorf("wrong PIN: %v, want PIN_INVALID", Status(st))
	}
	wantRetries(t, c, maxPINRetries-1, false)
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); Status(st) != ErrUVInvalid {
		t.Errorf("UV token, system says no: %v, want UV_INVALID", Status(st))
	}
	wantRetries(t, c, maxPINRetries-1, false) // the system's failure costs no PIN retry
}

// TestVerifierFallbackToPIN ("polkit+agent"): when the system has nobody
// to ask, built-in UV asks the agent for the device PIN (TPM-checked);
// without a PIN it is OPERATION_DENIED.
func TestVerifierFallbackToPIN(t *testing.T) {
	v := &fakeVerifier{verify: prompt.ErrNoVerifier}
	agent := &fakeAgent{pin: "4321"}
	both := prompt.Both{Verifier: v, Fallback: agent}
	_, c := kitEnvPrompt(t, 2, both)
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); Status(st) != ErrOperationDenied {
		t.Errorf("no agent, no PIN: %v, want OPERATION_DENIED", Status(st))
	}
	if st := c.SetPIN(t, "4321"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); st != ctaptest.StatusOK {
		t.Errorf("no agent, PIN through the session agent: %v", Status(st))
	}
	if agent.entered != 1 {
		t.Errorf("PIN asked %d times, want 1", agent.entered)
	}
	agent.pin = "0000"
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); Status(st) != ErrUVInvalid {
		t.Errorf("wrong PIN through the fallback: %v, want UV_INVALID", Status(st))
	}
	// The system answers again: no PIN asked.
	v.mu.Lock()
	v.verify = nil
	v.mu.Unlock()
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); st != ctaptest.StatusOK {
		t.Errorf("system verifies: %v", Status(st))
	}
	if agent.entered != 2 {
		t.Errorf("PIN asked %d times, want 2", agent.entered)
	}
}

// TestBothPresence: "polkit+agent" asks presence through the agent, and
// through the Verifier only when no agent is connected.
func TestBothPresence(t *testing.T) {
	v := &fakeVerifier{}
	agent := &fakeAgent{}
	both := prompt.Both{Verifier: v, Fallback: agent}
	if err := both.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn}); err != nil || agent.count() != 1 || len(v.asked) != 0 {
		t.Fatalf("presence: %v, agent %d, polkit %d", err, agent.count(), len(v.asked))
	}
	agent.answer = prompt.ErrDenied
	if err := both.Confirm(context.Background(), prompt.Request{}); !errors.Is(err, prompt.ErrDenied) || len(v.asked) != 0 {
		t.Errorf("declined at the agent: %v, polkit asked %d", err, len(v.asked))
	}
	agent.answer = prompt.ErrNoUser
	if err := both.Confirm(context.Background(), prompt.Request{}); err != nil || len(v.asked) != 1 {
		t.Errorf("no agent: %v, polkit asked %d", err, len(v.asked))
	}
}

// TestPINEntryUnchanged: with a PINEntry prompt, getInfo is as before: uv
// false until a PIN is set, uvModality passcode internal.
func TestPINEntryUnchanged(t *testing.T) {
	e, c := kitEnvPrompt(t, 2, &fakeAgent{pin: "1234"})
	info := getInfo(t, e)
	if opts := field[map[string]bool](t, info, 4); opts["uv"] {
		t.Error("uv true with a PIN prompt and no PIN")
	}
	if m := field[int](t, info, 0x12); m != uvModalityPasscodeInternal {
		t.Errorf("uvModality %#x, want %#x", m, uvModalityPasscodeInternal)
	}
	if st, _ := e.call(t, CmdMakeCredential, mcParams("p.example", []byte("u"), true)); st != StatusOK {
		t.Errorf("rk without a PIN: %v, want OK (not protected)", st)
	}
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	if !field[map[string]bool](t, getInfo(t, e), 4)["uv"] {
		t.Error("uv false with a PIN set")
	}
}
