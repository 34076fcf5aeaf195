package ctap2

// Conformance review: behaviour the public conformance suites do not reach,
// each test asserting the exact rule of the CTAP 2.1 section it names.

import (
	"bytes"
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

// offCurveKey is a keyAgreement that decapsulate refuses: a P-256 "point"
// that is not on the curve.
var offCurveKey = ctaptest.COSEKey{Kty: 2, Alg: -25, Crv: 1, X: bytes.Repeat([]byte{1}, 32), Y: bytes.Repeat([]byte{2}, 32)}

// blockPIN spends every PIN retry with wrong PINs, power-cycling after each
// third consecutive miss.
func blockPIN(t *testing.T, e *testEnv, c *ctaptest.Client) {
	t.Helper()
	for i := 0; i < maxPINRetries; i++ {
		if i%maxConsecutiveMisses == 0 {
			e.a.PowerCycle()
		}
		c.PinToken(t, "0000")
	}
	wantRetries(t, c, 0, false)
}

// TestReviewPINBlockedBeforeKeyAgreement: with pinRetries at 0 the PIN
// commands answer PIN_BLOCKED before they decapsulate the platform's key
// (CTAP 2.1 §6.5.5.6 step 3 before step 4; §6.5.5.7.1 and §6.5.5.7.2:
// "If the pinRetries counter is 0, return CTAP2_ERR_PIN_BLOCKED" before
// decapsulate's CTAP1_ERR_INVALID_PARAMETER).
func TestReviewPINBlockedBeforeKeyAgreement(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	blockPIN(t, e, c)
	for _, tc := range []struct {
		name string
		req  map[int]any
	}{
		{"changePIN", map[int]any{1: 2, 2: pinChangePIN, 3: offCurveKey, 4: make([]byte, 32), 5: make([]byte, 80), 6: make([]byte, 32)}},
		{"getPinToken", map[int]any{1: 2, 2: pinGetPinToken, 3: offCurveKey, 6: make([]byte, 32)}},
		{"getPinUvAuthTokenUsingPinWithPermissions", map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: offCurveKey, 6: make([]byte, 32), 9: 0x02, 10: "a.example"}},
	} {
		if st, _ := e.call(t, CmdClientPIN, tc.req); st != ErrPinBlocked {
			t.Errorf("%s with pinRetries 0 and an off-curve keyAgreement: %v, want PIN_BLOCKED", tc.name, st)
		}
	}
}

// TestReviewSetPINOrder: setPIN with a PIN already set is PIN_AUTH_INVALID
// whatever keyAgreement came (CTAP 2.1 §6.5.5.5 step 3 before step 4); a
// newPinEnc that authenticates but does not decrypt is PIN_AUTH_INVALID
// (step 6), one that decrypts to other than 64 bytes INVALID_PARAMETER
// (step 7).
func TestReviewSetPINOrder(t *testing.T) {
	for _, version := range []int{1, 2} {
		e, c := kitEnv(t, version)
		s, _ := c.KeyAgreement(t)
		for _, tc := range []struct {
			name   string
			newPIN []byte
			want   Status
		}{
			{"newPinEnc of 65 bytes (no whole AES block)", make([]byte, 65), ErrPinAuthInvalid},
			{"newPinEnc decrypting to 48 bytes", s.MustEncrypt(t, append([]byte("123456"), make([]byte, 42)...)), ErrInvalidParameter},
		} {
			st, _ := e.call(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: s.PublicKey, 4: s.Authenticate(s.HMACKey(), tc.newPIN), 5: tc.newPIN})
			if st != tc.want {
				t.Errorf("protocol %d setPIN, %s: %v, want %v", version, tc.name, st, tc.want)
			}
		}
		if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
			t.Fatal(Status(st))
		}
		st, _ := e.call(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: offCurveKey, 4: make([]byte, 32), 5: make([]byte, 64)})
		if st != ErrPinAuthInvalid {
			t.Errorf("protocol %d setPIN with a PIN set and an off-curve keyAgreement: %v, want PIN_AUTH_INVALID", version, st)
		}
	}
}

// TestReviewChangePINNewPinEncUndecryptable: changePIN whose newPinEnc
// authenticates but does not decrypt is PIN_AUTH_INVALID (CTAP 2.1
// §6.5.5.6 step 9), after the current PIN checked out (steps 6-8: the
// retries are back at the maximum).
func TestReviewChangePINNewPinEncUndecryptable(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	s, _ := c.KeyAgreement(t)
	newPinEnc := make([]byte, 65)
	pinHashEnc := s.MustEncrypt(t, ctaptest.PINHash("1234"))
	msg := append(append([]byte{}, newPinEnc...), pinHashEnc...)
	st, _ := e.call(t, CmdClientPIN, map[int]any{1: 2, 2: pinChangePIN, 3: s.PublicKey, 4: s.Authenticate(s.HMACKey(), msg), 5: newPinEnc, 6: pinHashEnc})
	if st != ErrPinAuthInvalid {
		t.Errorf("changePIN with an undecryptable newPinEnc: %v, want PIN_AUTH_INVALID", st)
	}
	wantRetries(t, c, maxPINRetries, false)
}

// TestReviewMalformedPinHashEncIsAMismatch: a pinHashEnc that does not
// decrypt, or decrypts to other than a 16-byte PIN hash, is handled as a
// wrong PIN: the retry was spent (step "decrements the pinRetries counter
// by 1" comes first), the key agreement key is regenerated, and the answer
// is PIN_INVALID (CTAP 2.1 §6.5.5.7.2 steps 8-9: "If an error results, or
// a mismatch is detected"; §6.5.5.7.1 and §6.5.5.6 step 7 likewise).
func TestReviewMalformedPinHashEncIsAMismatch(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	keyAgreement := func() []byte {
		st, m := e.call(t, CmdClientPIN, map[int]any{1: 2, 2: pinGetKeyAgreement})
		if st != StatusOK {
			t.Fatal(st)
		}
		return field[ctaptest.COSEKey](t, m, 1).X
	}
	retries := maxPINRetries
	for _, tc := range []struct {
		name       string
		pinHashEnc func(s *ctaptest.Session) []byte
	}{
		{"15 bytes", func(*ctaptest.Session) []byte { return make([]byte, 15) }},
		{"decrypting to 32 bytes", func(s *ctaptest.Session) []byte { return s.MustEncrypt(t, make([]byte, 32)) }},
	} {
		s, _ := c.KeyAgreement(t)
		before := keyAgreement()
		st, _ := e.call(t, CmdClientPIN, map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: tc.pinHashEnc(s), 9: 0x02, 10: "a.example"})
		retries--
		if st != ErrPinInvalid {
			t.Errorf("pinHashEnc %s: %v, want PIN_INVALID", tc.name, st)
		}
		wantRetries(t, c, retries, false)
		if bytes.Equal(keyAgreement(), before) {
			t.Errorf("pinHashEnc %s: the key agreement key was not regenerated", tc.name)
		}
	}
}

// TestReviewTokenRequestOrder: the token requests check their mandatory
// parameters (step 1), then the protocol (step 2), then the permissions
// value (step 3) and which permissions are authorised (step 4) (CTAP 2.1
// §6.5.5.7.2; §6.5.5.7.3 and §6.5.5.7.1 alike). The retries are untouched.
func TestReviewTokenRequestOrder(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	s, _ := c.KeyAgreement(t)
	hashEnc := s.MustEncrypt(t, ctaptest.PINHash("1234"))
	be := int(pinuv.PermBioEnrollment)
	for _, tc := range []struct {
		name string
		req  map[int]any
		want Status
	}{
		{"0x09 without pinUvAuthProtocol, permissions 0", map[int]any{2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc, 9: 0}, ErrMissingParameter},
		{"0x09 with protocol 3, permissions be", map[int]any{1: 3, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc, 9: be}, ErrInvalidParameter},
		{"0x09 with protocol 3, no permissions", map[int]any{1: 3, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc}, ErrMissingParameter},
		{"0x06 without pinUvAuthProtocol, permissions 0", map[int]any{2: pinGetPinUvAuthTokenUsingUvWithPermissions, 3: s.PublicKey, 9: 0}, ErrMissingParameter},
		{"0x06 with protocol 3, permissions be", map[int]any{1: 3, 2: pinGetPinUvAuthTokenUsingUvWithPermissions, 3: s.PublicKey, 9: be}, ErrInvalidParameter},
		{"0x05 without pinUvAuthProtocol, with permissions", map[int]any{2: pinGetPinToken, 3: s.PublicKey, 6: hashEnc, 9: 2}, ErrMissingParameter},
	} {
		if st, _ := e.call(t, CmdClientPIN, tc.req); st != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, st, tc.want)
		}
	}
	wantRetries(t, c, maxPINRetries, false)
}

// TestReviewUndefinedPermissionsIgnored: "Undefined permissions present in
// the permissions parameter are ignored" and the token gets the requested
// permissions "ignoring any undefined permissions" (CTAP 2.1 §6.5.5.7.2
// steps 3 and 15, §6.5.5.7.3 likewise): 0x80 and 0x100 beside ga give a
// token that signs in; 0x80 alone is not 0, so a token (with no
// permission) is issued.
func TestReviewUndefinedPermissionsIgnored(t *testing.T) {
	p := &pinPrompter{pin: "271828"}
	e, c := kitEnvPrompt(t, 2, p)
	e.prompt = &p.testPrompter
	if st := c.SetPIN(t, p.pin); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	cred := makeCred(t, e, "a.example", []byte("u"), false)
	for _, perms := range []int{0x80 | 0x02, 0x100 | 0x02, 0x80} {
		for _, via := range []byte{pinGetPinUvAuthTokenUsingPinWithPermissions, pinGetPinUvAuthTokenUsingUvWithPermissions} {
			s, _ := c.KeyAgreement(t)
			req := map[int]any{1: 2, 2: via, 3: s.PublicKey, 9: perms, 10: "a.example"}
			if via == pinGetPinUvAuthTokenUsingPinWithPermissions {
				req[6] = s.MustEncrypt(t, ctaptest.PINHash(p.pin))
			}
			st, m := e.call(t, CmdClientPIN, req)
			if st != StatusOK {
				t.Errorf("subcommand %#x, permissions %#x: %v, want OK", via, perms, st)
				continue
			}
			tok := s.MustDecrypt(t, field[[]byte](t, m, 2))
			want := ErrPinAuthInvalid
			if perms&0x02 != 0 {
				want = StatusOK
			}
			if st, _ := assertWithToken(t, e, c, "a.example", cred, tok); st != want {
				t.Errorf("subcommand %#x, permissions %#x: getAssertion with the token: %v, want %v", via, perms, st, want)
			}
		}
	}
}

// TestReviewUVTokenAcfg: getPinUvAuthTokenUsingUvWithPermissions refuses
// acfg with UNAUTHORIZED_PERMISSION when uvAcfg is false or absent (CTAP
// 2.1 §6.5.5.7.3 step 4): an authenticator that grants it must say uvAcfg
// in getInfo (§6.4), and then the token configures it.
func TestReviewUVTokenAcfg(t *testing.T) {
	p := &pinPrompter{pin: "271828"}
	e, c := kitEnvPrompt(t, 2, p)
	e.prompt = &p.testPrompter
	if st := c.SetPIN(t, p.pin); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	uvAcfg := field[map[string]bool](t, getInfo(t, e), 4)["uvAcfg"]
	tok, st := c.UVTokenWithPermissions(t, byte(pinuv.PermAuthenticatorConfig), "")
	switch {
	case !uvAcfg && Status(st) != ErrUnauthorizedPermission:
		t.Errorf("acfg through built-in UV without uvAcfg in getInfo: %v, want UNAUTHORIZED_PERMISSION", Status(st))
	case uvAcfg && st != ctaptest.StatusOK:
		t.Errorf("acfg through built-in UV with uvAcfg in getInfo: %v, want OK", Status(st))
	case uvAcfg:
		if st := cfgCall(t, e, c, tok, cfgToggleAlwaysUv, nil); st != StatusOK {
			t.Errorf("toggleAlwaysUv with the UV token: %v", st)
		}
	}
}

// TestReviewForcedChangeNeedsANewPIN: while forcePINChange is true, changePIN
// to the current PIN is PIN_POLICY_VIOLATION ("If the forcePINChange member
// of the authenticatorGetInfo response is true and LEFT(SHA-256(newPin),
// 16) is equal to its internal stored LEFT(SHA-256(curPin), 16)", CTAP 2.1
// §6.5.5.6 step 13); the current PIN checked out (step 8: retries at the
// maximum) and the flag stays until a different PIN is set (step 16).
func TestReviewForcedChangeNeedsANewPIN(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	tok := mustToken(t, c, "1234", pinuv.PermAuthenticatorConfig, "")
	if st := cfgCall(t, e, c, tok, cfgSetMinPINLength, map[int]any{3: true}); st != StatusOK {
		t.Fatalf("setMinPINLength forceChangePin: %v", st)
	}
	forced := func() bool { return field[bool](t, getInfo(t, e), 12) }
	if !forced() {
		t.Fatal("forcePINChange not set")
	}
	wantStatus(t, "changePIN to the same PIN", c.ChangePIN(t, "1234", "1234"), ErrPinPolicyViolation)
	wantRetries(t, c, maxPINRetries, false)
	if !forced() {
		t.Error("forcePINChange cleared by a refused change")
	}
	wantStatus(t, "changePIN to a new PIN", c.ChangePIN(t, "1234", "5678"), StatusOK)
	if forced() {
		t.Error("forcePINChange still set after a new PIN")
	}
}

// TestReviewUVOptionNotConfigured: the uv option with built-in UV that "has
// not yet been enabled" (the PIN prompt before a PIN exists; getInfo uv
// false) is CTAP2_ERR_INVALID_OPTION, as is the uv option without built-in
// UV at all (CTAP 2.1 §6.1.2 step 5.3, §6.2.2 step 4.3).
func TestReviewUVOptionNotConfigured(t *testing.T) {
	e, _ := kitEnvPrompt(t, 2, &pinPrompter{pin: "4321"})
	if field[map[string]bool](t, getInfo(t, e), 4)["uv"] {
		t.Fatal("getInfo: uv true before a PIN exists")
	}
	mc := mcParams("a.example", []byte("u"), false)
	mc[7] = map[string]any{"uv": true}
	if st, _ := e.call(t, CmdMakeCredential, mc); st != ErrInvalidOption {
		t.Errorf("makeCredential uv=true, built-in UV not enabled: %v, want INVALID_OPTION", st)
	}
	ga := gaParams("a.example")
	ga[5] = map[string]any{"uv": true}
	if st, _ := e.call(t, CmdGetAssertion, ga); st != ErrInvalidOption {
		t.Errorf("getAssertion uv=true, built-in UV not enabled: %v, want INVALID_OPTION", st)
	}
}

// TestReviewEnumerateCredentialsRPBoundToken: a cm token bound to one RP
// asking enumerateCredentialsBegin for another RP ID hash is
// PIN_AUTH_INVALID whether or not that RP has credentials (CTAP 2.1 §6.8.4:
// the permissions RP ID check precedes "If no discoverable credentials for
// this RP ID hash exist on this authenticator, return
// CTAP2_ERR_NO_CREDENTIALS"), so such a token cannot probe which RPs the
// key holds.
func TestReviewEnumerateCredentialsRPBoundToken(t *testing.T) {
	e, c := kitEnv(t, 2)
	makeRK(t, e, "a.example", []byte("u-ann"), "ann", nil)
	makeRK(t, e, "b.example", []byte("u-bob"), "bob", nil)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	for _, rp := range []string{"a.example", "none.example"} {
		tok := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "b.example")
		if st, _ := cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh(rp)}); st != ErrPinAuthInvalid {
			t.Errorf("token bound to b.example enumerating %s: %v, want PIN_AUTH_INVALID", rp, st)
		}
	}
	tok := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "b.example")
	if st, _ := cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh("b.example")}); st != StatusOK {
		t.Errorf("token bound to b.example enumerating b.example: %v, want OK", st)
	}
}

// TestReviewPinUvAuthParamStepsFirst: steps 1 (a zero-length pinUvAuthParam
// is a PIN probe) and 2 (the pinUvAuthProtocol of a pinUvAuthParam:
// absent MISSING_PARAMETER, unsupported INVALID_PARAMETER) come before the
// algorithm (§6.1.2 step 3) and the options (§6.1.2 step 5, §6.2.2 step 4)
// in makeCredential and getAssertion (CTAP 2.1 §6.1.2, §6.2.2).
func TestReviewPinUvAuthParamStepsFirst(t *testing.T) {
	e := newEnv(t)
	eddsaOnly := []any{map[string]any{"type": "public-key", "alg": -8}}
	for _, tc := range []struct {
		name string
		cmd  byte
		p    map[int]any
		want Status
	}{
		{"mc probe, no supported algorithm", CmdMakeCredential, func() map[int]any {
			p := mcParams("a.example", []byte("u"), false)
			p[4], p[8], p[9] = eddsaOnly, []byte{}, 2
			return p
		}(), ErrPinNotSet},
		{"mc protocol 3, no supported algorithm", CmdMakeCredential, func() map[int]any {
			p := mcParams("a.example", []byte("u"), false)
			p[4], p[8], p[9] = eddsaOnly, make([]byte, 32), 3
			return p
		}(), ErrInvalidParameter},
		{"mc no protocol, up=false", CmdMakeCredential, func() map[int]any {
			p := mcParams("a.example", []byte("u"), false)
			p[7], p[8] = map[string]any{"up": false}, make([]byte, 32)
			return p
		}(), ErrMissingParameter},
		{"ga probe, rk option", CmdGetAssertion, func() map[int]any {
			p := gaParams("a.example")
			p[5], p[6], p[7] = map[string]any{"rk": true}, []byte{}, 2
			return p
		}(), ErrPinNotSet},
		{"ga protocol 3, rk option", CmdGetAssertion, func() map[int]any {
			p := gaParams("a.example")
			p[5], p[6], p[7] = map[string]any{"rk": true}, make([]byte, 32), 3
			return p
		}(), ErrInvalidParameter},
	} {
		if st, _ := e.call(t, tc.cmd, tc.p); st != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, st, tc.want)
		}
	}
}

// TestReviewUVRetriesZeroIsUVBlocked: built-in UV that is the device PIN
// typed into the prompt counts on pinRetries (getUVRetries reports them);
// with the counter at 0, getPinUvAuthTokenUsingUvWithPermissions answers
// "If the uvRetries counter is 0, return CTAP2_ERR_UV_BLOCKED" (CTAP 2.1
// §6.5.5.7.3 step 7) without asking for the PIN, and so does the uv option
// of getAssertion, as a failed check at 0 already did.
func TestReviewUVRetriesZeroIsUVBlocked(t *testing.T) {
	p := &pinPrompter{pin: "271828"}
	e, c := kitEnvPrompt(t, 2, p)
	e.prompt = &p.testPrompter
	if st := c.SetPIN(t, p.pin); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	blockPIN(t, e, c)
	if n, st := c.UVRetries(t); st != ctaptest.StatusOK || n != 0 {
		t.Fatalf("getUVRetries: %d (%v), want 0", n, Status(st))
	}
	asked := len(p.entered)
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "a.example"); Status(st) != ErrUVBlocked {
		t.Errorf("UV token with uvRetries 0: %v, want UV_BLOCKED", Status(st))
	}
	ga := gaParams("a.example")
	ga[5] = map[string]any{"uv": true}
	if st, _ := e.call(t, CmdGetAssertion, ga); st != ErrUVBlocked {
		t.Errorf("getAssertion uv=true with uvRetries 0: %v, want UV_BLOCKED", st)
	}
	if len(p.entered) != asked {
		t.Errorf("the PIN prompt was shown %d times with uvRetries 0", len(p.entered)-asked)
	}
}
