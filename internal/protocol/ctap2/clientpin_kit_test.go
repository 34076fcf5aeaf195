package ctap2

// Black-box tests of authenticatorClientPIN (CTAP 2.1 §6.5) through CBOR
// bytes, with the platform side of internal/ctaptest.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// kitPINTPM is the shared simulator with wrong PINs refused in front of it:
// UnsealWithPIN answers tpm.ErrPINMismatch itself for a pinAuth other than
// the one the PIN object was created with, as the TPM would, so that
// these tests' wrong PINs do not run up the simulator's dictionary-attack
// counter (a process-wide lockout for every other test). The right PIN
// goes to the TPM. internal/hardware/tpm tests the TPM's own check.
type kitPINTPM struct {
	*tpm.TPM
	mu   sync.Mutex
	auth map[string][]byte // PIN object blob → its pinAuth
}

func (f *kitPINTPM) CreatePINObject(pinAuth, secret []byte) (tpm.KeyBlob, error) {
	blob, err := f.TPM.CreatePINObject(pinAuth, secret)
	if err == nil {
		f.mu.Lock()
		f.auth[string(blob)] = bytes.Clone(pinAuth)
		f.mu.Unlock()
	}
	return blob, err
}

func (f *kitPINTPM) UnsealWithPIN(blob tpm.KeyBlob, pinAuth []byte) ([]byte, error) {
	f.mu.Lock()
	want, ok := f.auth[string(blob)]
	f.mu.Unlock()
	if !ok {
		return nil, errors.New("kitPINTPM: a PIN object it did not create")
	}
	if !bytes.Equal(want, pinAuth) {
		return nil, fmt.Errorf("unseal with PIN: %w", tpm.ErrPINMismatch)
	}
	return f.TPM.UnsealWithPIN(blob, pinAuth)
}

// kitEnvPrompt is a fresh authenticator on kitPINTPM prompting through pr
// (a testPrompter when nil) and a platform on it over PIN/UV auth
// protocol version.
func kitEnvPrompt(t *testing.T, version int, pr prompt.Prompter) (*testEnv, *ctaptest.Client) {
	t.Helper()
	e := openEnv(t, t.TempDir())
	if pr == nil {
		pr = e.prompt
	}
	a, err := New(Config{TPM: &kitPINTPM{TPM: tpmsim.TPM(), auth: map[string][]byte{}}, Store: e.store, Prompt: pr, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e, ctaptest.NewClient(a, version)
}

// kitEnv is kitEnvPrompt with a testPrompter.
func kitEnv(t *testing.T, version int) (*testEnv, *ctaptest.Client) {
	t.Helper()
	return kitEnvPrompt(t, version, nil)
}

// wantStatus fails unless st is want, naming both.
func wantStatus(t *testing.T, what string, st ctaptest.Status, want Status) {
	t.Helper()
	if Status(st) != want {
		t.Errorf("%s: status 0x%02x (%v), want 0x%02x (%v)", what, byte(st), Status(st), byte(want), want)
	}
}

// mustToken is a pinUvAuthToken for pin with perms (bound to rpID unless
// empty), failing the test otherwise.
func mustToken(t *testing.T, c *ctaptest.Client, pin string, perms pinuv.Permission, rpID string) []byte {
	t.Helper()
	tok, st := c.PinTokenWithPermissions(t, pin, byte(perms), rpID)
	if st != ctaptest.StatusOK {
		t.Fatalf("getPinUvAuthTokenUsingPinWithPermissions(%02x, %q): %v", byte(perms), rpID, Status(st))
	}
	return tok
}

func wantRetries(t *testing.T, c *ctaptest.Client, want int, wantPowerCycle bool) {
	t.Helper()
	n, pc, st := c.Retries(t)
	if st != ctaptest.StatusOK || n != want || pc != wantPowerCycle {
		t.Errorf("getPINRetries: %d, powerCycleState %v (%v); want %d, %v", n, pc, Status(st), want, wantPowerCycle)
	}
}

// assertWithToken runs getAssertion for rpID's credential id with a
// pinUvAuthParam made with tok over the clientDataHash, and returns the
// status and, on success, the authData after checking the signature.
func assertWithToken(t *testing.T, e *testEnv, c *ctaptest.Client, rpID string, cred parsedAuthData, tok []byte) (Status, parsedAuthData) {
	t.Helper()
	p := gaParams(rpID, cred.credID)
	h := p[2].([]byte)
	p[6], p[7] = c.Param(tok, h), c.Version
	st, m := e.call(t, CmdGetAssertion, p)
	if st != StatusOK {
		return st, parsedAuthData{}
	}
	raw := field[[]byte](t, m, 2)
	verifySig(t, cred.pub, raw, h, field[[]byte](t, m, 3))
	return st, parseAuthData(t, raw)
}

// TestKitSetPIN: setPIN (§6.5.5.5) over both protocols: the policy
// (minimum 4 code points, at most 63 bytes, a 64-byte padded block), the
// pinUvAuthParam over newPinEnc, and the response, exactly 00.
func TestKitSetPIN(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprint("protocol", version), func(t *testing.T) {
			e, c := kitEnv(t, version)
			wantStatus(t, "too short (3 code points)", c.SetPIN(t, "123"), ErrPinPolicyViolation)
			wantStatus(t, "64 bytes, no terminating zero", c.SetPINPadded(t, bytes.Repeat([]byte{'7'}, 64)), ErrPinPolicyViolation)
			wantStatus(t, "a 32-byte padded PIN", c.SetPINPadded(t, ctaptest.PadPIN("1234")[:32]), ErrInvalidParameter)
			wantStatus(t, "not UTF-8", c.SetPINPadded(t, ctaptest.PadPIN("\xff\xfe\xfd\xfc")), ErrPinPolicyViolation)
			// Four code points in eight bytes meet a minimum of 4.
			s, _ := c.KeyAgreement(t)
			enc := s.MustEncrypt(t, ctaptest.PadPIN("1234"))
			bad := s.Authenticate(s.HMACKey(), enc)
			bad[0] ^= 1
			wantStatus(t, "wrong pinUvAuthParam", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: s.PublicKey, 4: bad, 5: enc})[0]), ErrPinAuthInvalid)
			wantStatus(t, "no newPinEnc", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: s.PublicKey, 4: bad})[0]), ErrMissingParameter)
			wantStatus(t, "protocol 3", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: 3, 2: pinSetPIN, 3: s.PublicKey, 4: bad, 5: enc})[0]), ErrInvalidParameter)
			offCurve := s.PublicKey
			offCurve.Y = bytes.Repeat([]byte{1}, 32)
			wantStatus(t, "key agreement key off the curve", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: offCurve, 4: bad, 5: enc})[0]), ErrInvalidParameter)
			if e.a.pin.IsSet() {
				t.Fatal("a refused setPIN set a PIN")
			}

			s, _ = c.KeyAgreement(t)
			enc = s.MustEncrypt(t, ctaptest.PadPIN("ÿÿÿÿ"))
			if got := c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinSetPIN, 3: s.PublicKey, 4: s.Authenticate(s.HMACKey(), enc), 5: enc}); !bytes.Equal(got, []byte{0x00}) {
				t.Fatalf("setPIN: response %x, want 00", got)
			}
			wantRetries(t, c, maxPINRetries, false)
			if _, st := c.PinToken(t, "ÿÿÿÿ"); st != ctaptest.StatusOK {
				t.Errorf("getPinToken with the new PIN: %v", Status(st))
			}
			info := getInfo(t, e)
			if !field[map[string]bool](t, info, 4)["clientPin"] {
				t.Error("getInfo: clientPin false after setPIN")
			}
		})
	}
}

func getInfo(t *testing.T, e *testEnv) map[int]cbor.RawMessage {
	t.Helper()
	st, m := e.call(t, CmdGetInfo, nil)
	if st != StatusOK {
		t.Fatalf("getInfo: %v", st)
	}
	return m
}

// TestKitChangePIN: changePIN (§6.5.5.6): PIN_NOT_SET without a PIN,
// PIN_INVALID for a wrong current PIN (a retry spent), the policy on the
// new PIN, PIN_AUTH_INVALID for a bad pinUvAuthParam; a change makes the
// old PIN fail and the new one work, and ends the old token.
func TestKitChangePIN(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprint("protocol", version), func(t *testing.T) {
			e, c := kitEnv(t, version)
			wantStatus(t, "no PIN set", c.ChangePIN(t, "1234", "5678"), ErrPinNotSet)
			if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
				t.Fatalf("setPIN: %v", Status(st))
			}
			old := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "")
			wantStatus(t, "wrong current PIN", c.ChangePIN(t, "4321", "5678"), ErrPinInvalid)
			wantRetries(t, c, maxPINRetries-1, false)
			wantStatus(t, "new PIN too short", c.ChangePIN(t, "1234", "567"), ErrPinPolicyViolation)
			wantRetries(t, c, maxPINRetries, false) // the current PIN was right
			wantStatus(t, "new PIN of 64 bytes", c.ChangePINPadded(t, "1234", bytes.Repeat([]byte{'5'}, 64)), ErrPinPolicyViolation)

			s, _ := c.KeyAgreement(t)
			newPinEnc := s.MustEncrypt(t, ctaptest.PadPIN("5678"))
			pinHashEnc := s.MustEncrypt(t, ctaptest.PINHash("1234"))
			onlyNew := s.Authenticate(s.HMACKey(), newPinEnc) // not over pinHashEnc too
			wantStatus(t, "pinUvAuthParam over newPinEnc only", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinChangePIN, 3: s.PublicKey, 4: onlyNew, 5: newPinEnc, 6: pinHashEnc})[0]), ErrPinAuthInvalid)
			wantStatus(t, "no pinHashEnc", ctaptest.Status(c.Raw(t, CmdClientPIN, map[int]any{1: version, 2: pinChangePIN, 3: s.PublicKey, 4: onlyNew, 5: newPinEnc})[0]), ErrMissingParameter)

			if got := c.ChangePIN(t, "1234", "5678"); got != ctaptest.StatusOK {
				t.Fatalf("changePIN: %v", Status(got))
			}
			if _, st := c.PinToken(t, "1234"); Status(st) != ErrPinInvalid {
				t.Errorf("old PIN after the change: %v, want PIN_INVALID", Status(st))
			}
			if _, st := c.PinToken(t, "5678"); st != ctaptest.StatusOK {
				t.Errorf("new PIN: %v", Status(st))
			}
			// The token from before the change is gone (its replacement
			// too: getPinToken issued another): credential management
			// refuses it with PIN_AUTH_INVALID.
			st, _ := e.call(t, CmdCredentialManagement, map[int]any{1: cmGetCredsMetadata, 3: version, 4: c.Param(old, []byte{cmGetCredsMetadata})})
			if st != ErrPinAuthInvalid {
				t.Errorf("token from before changePIN: %v, want PIN_AUTH_INVALID", st)
			}
		})
	}
}

// TestKitPinTokenRetriesAndBlocks (§6.5.5.7.1, §6.5.5.7.2, §6.5.1): three
// wrong PINs in a row give PIN_INVALID, PIN_INVALID, PIN_AUTH_BLOCKED, and
// then even the right PIN is PIN_AUTH_BLOCKED until a power cycle; eight in
// all give PIN_BLOCKED for good. getPINRetries follows every step.
func TestKitPinTokenRetriesAndBlocks(t *testing.T) {
	e, c := kitEnv(t, 2)
	if _, st := c.PinToken(t, "1234"); Status(st) != ErrPinNotSet {
		t.Errorf("getPinToken without a PIN: %v, want PIN_NOT_SET", Status(st))
	}
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	for i, want := range []Status{ErrPinInvalid, ErrPinInvalid, ErrPinAuthBlocked} {
		_, st := c.PinToken(t, "0000")
		wantStatus(t, fmt.Sprintf("wrong PIN %d", i+1), st, want)
	}
	wantRetries(t, c, 5, true)
	_, st := c.PinTokenWithPermissions(t, "1234", byte(pinuv.PermGetAssertion), "")
	wantStatus(t, "right PIN before the power cycle", st, ErrPinAuthBlocked)
	e.a.PowerCycle()
	wantRetries(t, c, 5, false)
	if _, st := c.PinToken(t, "1234"); st != ctaptest.StatusOK {
		t.Fatalf("right PIN after the power cycle: %v", Status(st))
	}
	wantRetries(t, c, 8, false)
	for i := 1; i <= 8; i++ {
		_, st := c.PinToken(t, "0000")
		want := ErrPinInvalid
		switch {
		case i == 8:
			want = ErrPinBlocked
		case i%3 == 0:
			want = ErrPinAuthBlocked
		}
		wantStatus(t, fmt.Sprintf("wrong PIN %d of 8", i), st, want)
		if i%3 == 0 {
			e.a.PowerCycle()
		}
	}
	wantRetries(t, c, 0, false)
	_, st = c.PinToken(t, "1234")
	wantStatus(t, "right PIN when blocked", st, ErrPinBlocked)
	wantStatus(t, "changePIN when blocked", c.ChangePIN(t, "1234", "5678"), ErrPinBlocked)
}

// TestKitPinTokenPermissions: the parameters of the token subcommands
// (§6.5.5.7.1-2) and what the token then allows: getAssertion with UV and
// a signature that verifies, only for the RP it is bound to, over either
// protocol.
func TestKitPinTokenPermissions(t *testing.T) {
	e, c := kitEnv(t, 2)
	cred := makeCred(t, e, "a.example", []byte("u-a"), false)
	credB := makeCred(t, e, "b.example", []byte("u-b"), false)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	s, _ := c.KeyAgreement(t)
	hashEnc := s.MustEncrypt(t, ctaptest.PINHash("1234"))
	for name, tc := range map[string]struct {
		params map[int]any
		want   Status
	}{
		"getPinToken with permissions":      {map[int]any{1: 2, 2: pinGetPinToken, 3: s.PublicKey, 6: hashEnc, 9: 2}, ErrInvalidParameter},
		"getPinToken with rpId":             {map[int]any{1: 2, 2: pinGetPinToken, 3: s.PublicKey, 6: hashEnc, 10: "a.example"}, ErrInvalidParameter},
		"no permissions":                    {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc}, ErrMissingParameter},
		"permissions 0":                     {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc, 9: 0}, ErrInvalidParameter},
		"permissions 0x100 | be":            {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc, 9: 0x100 | int(pinuv.PermBioEnrollment)}, ErrUnauthorizedPermission},
		"bio enrollment (be) not supported": {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingPinWithPermissions, 3: s.PublicKey, 6: hashEnc, 9: int(pinuv.PermBioEnrollment)}, ErrUnauthorizedPermission},
		"no pinHashEnc":                     {map[int]any{1: 2, 2: pinGetPinToken, 3: s.PublicKey}, ErrMissingParameter},
		"pinHashEnc of 32 bytes":            {map[int]any{1: 2, 2: pinGetPinToken, 3: s.PublicKey, 6: s.MustEncrypt(t, make([]byte, 32))}, ErrPinInvalid},
		"no keyAgreement":                   {map[int]any{1: 2, 2: pinGetPinToken, 6: hashEnc}, ErrMissingParameter},
		"no subcommand":                     {map[int]any{1: 2}, ErrMissingParameter},
		"subcommand 0x08":                   {map[int]any{1: 2, 2: 8}, ErrInvalidSubcommand},
		"getKeyAgreement, protocol 3":       {map[int]any{1: 3, 2: pinGetKeyAgreement}, ErrInvalidParameter},
		"getKeyAgreement, no protocol":      {map[int]any{2: pinGetKeyAgreement}, ErrMissingParameter},
		"getUVRetries without built-in UV":  {map[int]any{1: 2, 2: pinGetUVRetries}, ErrInvalidSubcommand},
		"UV token without built-in UV":      {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingUvWithPermissions, 3: s.PublicKey, 9: 2}, ErrInvalidSubcommand},
		"UV token, permissions 0":           {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingUvWithPermissions, 3: s.PublicKey, 9: 0}, ErrInvalidParameter},
		"UV token, no permissions":          {map[int]any{1: 2, 2: pinGetPinUvAuthTokenUsingUvWithPermissions, 3: s.PublicKey}, ErrMissingParameter},
	} {
		if got := c.Raw(t, CmdClientPIN, tc.params); !bytes.Equal(got, []byte{byte(tc.want)}) {
			t.Errorf("%s: %x, want %02x", name, got, byte(tc.want))
		}
	}
	// No PIN was spent on any of those (§6.5.5.7: parameters first) but
	// the 32-byte pinHashEnc: "If an error results, or a mismatch is
	// detected" after the decrement (§6.5.5.7.1), a PIN_INVALID that the
	// TPM need not judge.
	wantRetries(t, c, maxPINRetries-1, false)

	for _, version := range []int{1, 2} {
		c := ctaptest.NewClient(e.a, version)
		tok, st := c.PinToken(t, "1234")
		if st != ctaptest.StatusOK {
			t.Fatalf("protocol %d: getPinToken: %v", version, Status(st))
		}
		st2, ad := assertWithToken(t, e, c, "a.example", cred, tok)
		if st2 != StatusOK || ad.flags&(flagUP|flagUV) != flagUP|flagUV {
			t.Errorf("protocol %d: getAssertion with the token: %v, flags %02x; want UP|UV", version, st2, ad.flags)
		}
		bad := append([]byte{}, tok...)
		bad[0] ^= 1
		if st, _ := assertWithToken(t, e, c, "a.example", cred, bad); st != ErrPinAuthInvalid {
			t.Errorf("protocol %d: a param from another token: %v, want PIN_AUTH_INVALID", version, st)
		}
	}
	// A token bound to a.example: not for b.example (§6.5.5.7.2 rpId).
	tok := mustToken(t, c, "1234", pinuv.PermGetAssertion, "a.example")
	if st, _ := assertWithToken(t, e, c, "b.example", credB, tok); st != ErrPinAuthInvalid {
		t.Errorf("RP-bound token on another RP: %v, want PIN_AUTH_INVALID", st)
	}
	tok = mustToken(t, c, "1234", pinuv.PermGetAssertion, "a.example")
	if st, ad := assertWithToken(t, e, c, "a.example", cred, tok); st != StatusOK || ad.flags&flagUV == 0 {
		t.Errorf("RP-bound token on its RP: %v, flags %02x", st, ad.flags)
	}
	// A token without ga does not sign in.
	tok = mustToken(t, c, "1234", pinuv.PermMakeCredential, "")
	if st, _ := assertWithToken(t, e, c, "a.example", cred, tok); st != ErrPinAuthInvalid {
		t.Errorf("mc-only token for getAssertion: %v, want PIN_AUTH_INVALID", st)
	}
}

// TestKitUVToken: getPinUvAuthTokenUsingUvWithPermissions and getUVRetries
// (§6.5.5.7.3, §6.5.5.3) with built-in UV: NOT_ALLOWED before a PIN
// exists; after, 8 UV retries and a token that signs in with UV.
func TestKitUVToken(t *testing.T) {
	p := &pinPrompter{pin: "271828"}
	e, c := kitEnvPrompt(t, 2, p)
	e.prompt = &p.testPrompter
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); Status(st) != ErrNotAllowed {
		t.Errorf("UV token without a PIN: %v, want NOT_ALLOWED", Status(st))
	}
	if st := c.SetPIN(t, p.pin); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	if n, st := c.UVRetries(t); st != ctaptest.StatusOK || n != maxPINRetries {
		t.Errorf("getUVRetries: %d (%v), want 8", n, Status(st))
	}
	cred := makeCred(t, e, "uv.example", []byte("u"), false)
	tok, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "uv.example")
	if st != ctaptest.StatusOK {
		t.Fatalf("UV token: %v", Status(st))
	}
	if st, ad := assertWithToken(t, e, c, "uv.example", cred, tok); st != StatusOK || ad.flags&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("getAssertion with the UV token: %v, flags %02x", st, ad.flags)
	}
	p.pin = "000000"
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), ""); Status(st) != ErrUVInvalid {
		t.Errorf("wrong PIN typed into the prompt: %v, want UV_INVALID", Status(st))
	}
	if n, _ := c.UVRetries(t); n != maxPINRetries-1 {
		t.Errorf("UV retries after a miss: %d, want 7", n)
	}
	if !strings.Contains(fmt.Sprint(field[map[string]bool](t, getInfo(t, e), 4)), "uv:true") {
		t.Error("getInfo: uv option not true with built-in UV and a PIN")
	}
}

// failingUV is built-in UV whose PIN entry fails with err.
type failingUV struct {
	testPrompter
	err error
}

func (p *failingUV) EnterPIN(context.Context, prompt.Request, int) (string, error) { return "", p.err }

// TestKitUVPromptOutcomes (§6.5.5.7.3): a refused PIN prompt is
// OPERATION_DENIED, a timed-out one USER_ACTION_TIMEOUT; neither spends a
// retry.
func TestKitUVPromptOutcomes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Status
	}{
		{errors.New("refused"), ErrOperationDenied},
		{prompt.ErrTimeout, ErrUserActionTimeout},
	} {
		p := &failingUV{err: tc.err}
		_, c := kitEnvPrompt(t, 2, p)
		if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
			t.Fatal(Status(st))
		}
		_, st := c.UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "")
		wantStatus(t, tc.err.Error(), st, tc.want)
		wantRetries(t, c, maxPINRetries, false)
	}
}
