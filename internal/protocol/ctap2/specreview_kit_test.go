package ctap2

// Conformance review: behaviour the public conformance suites do not reach,
// each test asserting the exact rule of the CTAP 2.1 section it names.

import (
	"context"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// TestReviewGetAssertionSpendsTokenPermissions: after getAssertion collects
// user presence with a pinUvAuthToken it calls clearUserPresentFlag(),
// clearUserVerifiedFlag() and clearPinUvAuthTokenPermissionsExceptLbw()
// (CTAP 2.1 §6.2.2 step 9.4), exactly as makeCredential does (§6.1.2 step
// 14.4): the token's cm permission is gone, its lbw permission stays.
func TestReviewGetAssertionSpendsTokenPermissions(t *testing.T) {
	e, c := kitEnv(t, 2)
	id := makeRK(t, e, "a.example", []byte("u-ann"), "ann", nil)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	tok := mustToken(t, c, "1234", pinuv.PermGetAssertion|pinuv.PermCredentialManagement|pinuv.PermLargeBlobWrite, "a.example")
	enumerate := func() Status {
		st, _ := cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh("a.example")})
		return st
	}
	if st := enumerate(); st != StatusOK {
		t.Fatalf("enumerateCredentialsBegin before getAssertion: %v", st)
	}
	if st := assertWithTokenParam(t, e, c, gaParams("a.example", id), tok); st != StatusOK {
		t.Fatalf("getAssertion with the token: %v", st)
	}
	if st := enumerate(); st != ErrPinAuthInvalid {
		t.Errorf("enumerateCredentialsBegin after getAssertion spent the token: %v, want PIN_AUTH_INVALID (cm cleared, §6.2.2 step 9.4)", st)
	}
	if sts := lbWrite(t, c, tok, serializedLargeBlobArray(t, 8), 1024); !allOK(sts) {
		t.Errorf("large-blob write after getAssertion: %v, want OK (lbw survives, §6.2.2 step 9.4)", sts)
	}
}

// assertWithTokenParam sends getAssertion p with a pinUvAuthParam made
// with tok over its clientDataHash and returns the status.
func assertWithTokenParam(t *testing.T, e *testEnv, c *ctaptest.Client, p map[int]any, tok []byte) Status {
	t.Helper()
	p[6], p[7] = c.Param(tok, p[2].([]byte)), c.Version
	st, _ := e.call(t, CmdGetAssertion, p)
	return st
}

// TestReviewGetNextAssertionTimerRestarts: the 30-second limit runs "since
// the last call to authenticatorGetAssertion/authenticatorGetNextAssertion"
// and each getNextAssertion resets the timer (CTAP 2.1 §6.3 steps 3 and 7):
// a platform reading one account every 20 s reaches all of them; 30 s of
// silence ends the state with NOT_ALLOWED.
func TestReviewGetNextAssertionTimerRestarts(t *testing.T) {
	e := newEnv(t)
	for _, u := range []string{"ann", "bob", "cy", "dee"} {
		makeRK(t, e, "a.example", []byte("u-"+u), u, nil)
	}
	if st, m := e.call(t, CmdGetAssertion, gaParams("a.example")); st != StatusOK || field[int](t, m, 5) != 4 {
		t.Fatalf("getAssertion: %v", st)
	}
	for i := 2; i <= 3; i++ {
		e.clock.Advance(20 * time.Second)
		if st, _ := e.call(t, CmdGetNextAssertion, nil); st != StatusOK {
			t.Fatalf("getNextAssertion %d, 20 s after the previous call: %v, want OK (§6.3 step 7 resets the timer)", i, st)
		}
	}
	e.clock.Advance(30*time.Second + time.Millisecond)
	if st, _ := e.call(t, CmdGetNextAssertion, nil); st != ErrNotAllowed {
		t.Errorf("getNextAssertion 30 s after the previous call: %v, want NOT_ALLOWED (§6.3 step 3)", st)
	}
}

// TestReviewPINProbeTimeout: a zero-length pinUvAuthParam asks for evidence
// of user interaction; "If the user declines permission, or the operation
// times out, then end the operation by returning
// CTAP2_ERR_OPERATION_DENIED" (CTAP 2.1 §6.1.2 step 1.2, §6.2.2 step 1.2),
// not USER_ACTION_TIMEOUT.
func TestReviewPINProbeTimeout(t *testing.T) {
	e := newEnv(t)
	for _, answer := range []error{prompt.ErrTimeout, context.DeadlineExceeded, prompt.ErrDenied} {
		e.prompt.answer = answer
		mc := mcParams("a.example", []byte("u"), false)
		mc[8], mc[9] = []byte{}, 2
		if st, _ := e.call(t, CmdMakeCredential, mc); st != ErrOperationDenied {
			t.Errorf("makeCredential probe, prompt %v: %v, want OPERATION_DENIED", answer, st)
		}
		ga := gaParams("a.example")
		ga[6], ga[7] = []byte{}, 2
		if st, _ := e.call(t, CmdGetAssertion, ga); st != ErrOperationDenied {
			t.Errorf("getAssertion probe, prompt %v: %v, want OPERATION_DENIED", answer, st)
		}
	}
}
