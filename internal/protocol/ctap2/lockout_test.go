package ctap2

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// lockoutTPM is the simulator with a dictionary-attack state the test
// sets. With lockUnseal, UnsealWithPIN answers TPM_RC_LOCKOUT without
// asking the simulator, as a TPM does that locked out after passkeyd read
// its state (another program's wrong passwords in between). It records the
// durable retry counter at each UnsealWithPIN: the value a kill -9 during
// the check would leave.
type lockoutTPM struct {
	*tpm.TPM
	store *keystore.Store

	mu              sync.Mutex
	status          tpm.DAStatus
	statusErr       error
	lockUnseal      bool
	retriesAtUnseal []int
}

func (f *lockoutTPM) DictionaryAttackStatus() (tpm.DAStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.statusErr
}

func (f *lockoutTPM) UnsealWithPIN(blob tpm.KeyBlob, pinAuth []byte) ([]byte, error) {
	f.mu.Lock()
	r, err := f.store.Get(valuePINRetries)
	if err != nil || len(r) != 1 {
		f.retriesAtUnseal = append(f.retriesAtUnseal, -1)
	} else {
		f.retriesAtUnseal = append(f.retriesAtUnseal, int(r[0]))
	}
	lock := f.lockUnseal
	f.mu.Unlock()
	if lock {
		return nil, fmt.Errorf("unseal with PIN: %w", tpm.ErrLockout)
	}
	return f.TPM.UnsealWithPIN(blob, pinAuth)
}

func (f *lockoutTPM) set(st tpm.DAStatus, statusErr error, lockUnseal bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.statusErr, f.lockUnseal = st, statusErr, lockUnseal
}

// unseals returns and forgets the recorded UnsealWithPIN calls.
func (f *lockoutTPM) unseals() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.retriesAtUnseal
	f.retriesAtUnseal = nil
	return r
}

// swtpm's defaults: 3 tries, 1000 s each.
var (
	daClear  = tpm.DAStatus{Counter: 0, MaxTries: 3, RecoveryTime: 1000 * time.Second, LockoutRecovery: 1000 * time.Second}
	daLocked = tpm.DAStatus{Counter: 3, MaxTries: 3, RecoveryTime: 1000 * time.Second, LockoutRecovery: 1000 * time.Second, InLockout: true}
)

// newLockoutEnv is an authenticator on lockoutTPM with the PIN set,
// prompting through pr (e.prompt when nil).
func newLockoutEnv(t *testing.T, pin string, pr prompt.Prompter) (*testEnv, *lockoutTPM) {
	t.Helper()
	e := openEnv(t, t.TempDir())
	f := &lockoutTPM{TPM: tpmsim.TPM(), store: e.store, status: daClear}
	if pr == nil {
		pr = e.prompt
	}
	a, err := New(Config{TPM: f, Store: e.store, Prompt: pr, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	if err := a.pin.installPIN(pin); err != nil {
		t.Fatal(err)
	}
	return e, f
}

// pinCheck sends one clientPIN subcommand that checks pin, as a platform
// does (internal/ctaptest, PIN/UV auth protocol two): getPinToken
// (§6.5.5.7.1), getPinUvAuthTokenUsingPinWithPermissions (§6.5.5.7.2) or
// changePIN to "97531" (§6.5.5.6). It returns the status byte.
func pinCheck(t *testing.T, a *Authenticator, sub int, pin string) Status {
	t.Helper()
	c := ctaptest.NewClient(a, 2)
	var st ctaptest.Status
	switch sub {
	case pinGetPinToken:
		_, st = c.PinToken(t, pin)
	case pinGetPinUvAuthTokenUsingPinWithPermissions:
		_, st = c.PinTokenWithPermissions(t, pin, byte(pinuv.PermMakeCredential|pinuv.PermGetAssertion), "")
	case pinChangePIN:
		st = c.ChangePIN(t, pin, "97531")
	default:
		t.Fatalf("subcommand %d checks no PIN", sub)
	}
	return Status(st)
}

// pinRetries is getPINRetries (§6.5.5.2) and the durable counter.
func pinRetries(t *testing.T, e *testEnv) (reported, stored int) {
	t.Helper()
	resp := rawCall(t, e.a, CmdClientPIN, map[int]any{2: pinGetPINRetries})
	if Status(resp[0]) != StatusOK {
		t.Fatalf("getPINRetries: %v", Status(resp[0]))
	}
	var r struct {
		Retries int `cbor:"3,keyasint"`
	}
	if err := cbor.Unmarshal(resp[1:], &r); err != nil {
		t.Fatal(err)
	}
	v, err := e.store.Get(valuePINRetries)
	if err != nil || len(v) != 1 {
		t.Fatalf("stored PIN retries: %v %v", v, err)
	}
	return r.Retries, int(v[0])
}

var pinCheckingSubcommands = []struct {
	name string
	sub  int
}{
	{"getPinToken", pinGetPinToken},
	{"getPinUvAuthTokenUsingPinWithPermissions", pinGetPinUvAuthTokenUsingPinWithPermissions},
	{"changePIN", pinChangePIN},
}

// TestTPMLockoutDuringCheckRefundsRetry is the race: the TPM was not in
// lockout when asked, the retry was spent durably (so a kill -9 during the
// check still counts it), then the TPM answered TPM_RC_LOCKOUT. It judged
// no PIN, so the answer is CTAP2_ERR_PIN_AUTH_BLOCKED (0x34; CTAP 2.1
// §6.5.5.6 changePIN, §6.5.5.7.1 getPinToken, §6.5.5.7.2
// getPinUvAuthTokenUsingPinWithPermissions) and the retry is given back,
// in getPINRetries (§6.5.5.2) and in the store. More than 8 rounds never
// reach CTAP2_ERR_PIN_BLOCKED (0x32), nor CTAP's own 3-in-a-row block.
func TestTPMLockoutDuringCheckRefundsRetry(t *testing.T) {
	const pin = "2468"
	e, f := newLockoutEnv(t, pin, nil)
	f.set(daClear, nil, true)
	for round := 1; round <= 4; round++ { // 12 checks
		for _, c := range pinCheckingSubcommands {
			if st := pinCheck(t, e.a, c.sub, pin); st != ErrPinAuthBlocked || byte(st) != 0x34 {
				t.Fatalf("round %d %s: status 0x%02x (%v), want 0x34 CTAP2_ERR_PIN_AUTH_BLOCKED", round, c.name, byte(st), st)
			}
			if got := f.unseals(); len(got) != 1 || got[0] != maxPINRetries-1 {
				t.Fatalf("round %d %s: durable retries while the TPM checked: %v, want [7] (decremented before the TPM judged)", round, c.name, got)
			}
			if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
				t.Fatalf("round %d %s: getPINRetries %d, stored %d; want 8 and 8 (the retry given back)", round, c.name, r, s)
			}
		}
	}
	// Management's PIN checks: the same, and a message that says why.
	ctx := context.Background()
	if err := e.a.Reset(ctx, pin); !errors.Is(err, ErrManagementDenied) || !strings.Contains(err.Error(), "dictionary-attack lockout") || !strings.Contains(err.Error(), "no PIN attempt is used") {
		t.Errorf("management reset in lockout: %v", err)
	}
	if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
		t.Errorf("management in lockout: getPINRetries %d, stored %d; want 8", r, s)
	}
	f.unseals()

	// The lockout over, the right PIN works at once: no retry and no
	// consecutive miss was counted.
	f.set(daClear, nil, false)
	if st := pinCheck(t, e.a, pinGetPinUvAuthTokenUsingPinWithPermissions, pin); st != StatusOK {
		t.Fatalf("right PIN after the lockout: %v", st)
	}
	if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
		t.Errorf("after the lockout: getPINRetries %d, stored %d; want 8", r, s)
	}
}

// TestTPMLockoutAskedBeforeRetrySpent: a TPM in lockout (by its own state)
// is not sent the PIN at all and no retry is spent, not even for a moment:
// CTAP2_ERR_PIN_AUTH_BLOCKED (0x34, §6.5.5.7.2 and friends), 8 retries, for
// the right and a wrong PIN alike, many more times than 8. A TPM whose state
// cannot be read is asked as before, and its lockout answer is refunded.
func TestTPMLockoutAskedBeforeRetrySpent(t *testing.T) {
	const pin = "2468"
	e, f := newLockoutEnv(t, pin, nil)
	locked := daLocked
	locked.InLockout = false // the counter alone says lockout
	for _, st := range []tpm.DAStatus{daLocked, locked} {
		f.set(st, nil, true)
		for round := 1; round <= 4; round++ {
			for _, c := range pinCheckingSubcommands {
				for _, p := range []string{pin, "0000"} {
					if st := pinCheck(t, e.a, c.sub, p); st != ErrPinAuthBlocked || byte(st) != 0x34 {
						t.Fatalf("round %d %s: status 0x%02x (%v), want 0x34 CTAP2_ERR_PIN_AUTH_BLOCKED", round, c.name, byte(st), st)
					}
				}
			}
		}
		if got := f.unseals(); len(got) != 0 {
			t.Fatalf("%+v: the PIN went to a TPM in lockout %d times", st, len(got))
		}
		if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
			t.Fatalf("%+v: getPINRetries %d, stored %d; want 8", st, r, s)
		}
	}
	if in := e.a.Info(); in.TPMLockout == nil || !in.TPMLockout.Locked() || in.PINRetries != maxPINRetries {
		t.Errorf("Info in lockout: %+v, retries %d", in.TPMLockout, in.PINRetries)
	}
	err := e.a.DeleteCredentials(context.Background(), nil, pin)
	if !errors.Is(err, ErrManagementDenied) || !strings.Contains(err.Error(), "within 16m40s") {
		t.Errorf("management in lockout: %v, want the lockout and its recovery time", err)
	}
	if len(f.unseals()) != 0 {
		t.Error("management sent the PIN to a TPM in lockout")
	}

	// State unreadable: the TPM is asked; its lockout answer costs nothing.
	f.set(tpm.DAStatus{}, errors.New("GetCapability failed"), true)
	if st := pinCheck(t, e.a, pinGetPinToken, pin); st != ErrPinAuthBlocked {
		t.Fatalf("lockout with the state unreadable: %v, want 0x34", st)
	}
	if got := f.unseals(); len(got) != 1 {
		t.Fatalf("state unreadable: %d PIN checks, want 1", len(got))
	}
	if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
		t.Fatalf("state unreadable: getPINRetries %d, stored %d; want 8", r, s)
	}

	f.set(daClear, nil, false)
	if st := pinCheck(t, e.a, pinGetPinToken, pin); st != StatusOK {
		t.Fatalf("right PIN after the lockout: %v", st)
	}
}

// uvPrompter types pin into every PIN prompt and records what it showed.
type uvPrompter struct {
	testPrompter
	pin     string
	shown   []prompt.Request
	retries []int
}

func (p *uvPrompter) EnterPIN(_ context.Context, req prompt.Request, retries int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shown, p.retries = append(p.shown, req), append(p.retries, retries)
	return p.pin, nil
}

func (p *uvPrompter) last() (prompt.Request, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shown[len(p.shown)-1], p.retries[len(p.retries)-1]
}

// TestTPMLockoutBuiltInUV: built-in UV (getPinUvAuthTokenUsingUvWithPermissions,
// CTAP 2.1 §6.5.5.7.3) on a TPM in lockout. The PIN prompt says that the
// TPM is locked out and when it recovers, shows the 8 retries left, and
// the typed PIN costs none: the answer is CTAP2_ERR_UV_BLOCKED (0x3C, what
// built-in UV answers when it cannot verify now), for a lockout known
// before the prompt and for one that the TPM reports only at the check.
func TestTPMLockoutBuiltInUV(t *testing.T) {
	const pin = "2468"
	p := &uvPrompter{pin: pin}
	e, f := newLockoutEnv(t, pin, p)
	uv := func() Status {
		_, st := ctaptest.NewClient(e.a, 2).UVTokenWithPermissions(t, byte(pinuv.PermGetAssertion), "example.com")
		return Status(st)
	}

	f.set(daLocked, nil, true)
	for i := 1; i <= 10; i++ {
		if st := uv(); st != ErrUVBlocked || byte(st) != 0x3C {
			t.Fatalf("try %d: built-in UV in lockout: status 0x%02x (%v), want 0x3C CTAP2_ERR_UV_BLOCKED", i, byte(st), st)
		}
		req, retries := p.last()
		if !strings.Contains(req.Notice, "dictionary-attack lockout") || !strings.Contains(req.Notice, "until about 12:16 (within 16m40s") || retries != maxPINRetries {
			t.Fatalf("try %d: PIN prompt notice %q, retries %d; want the lockout, its end and 8", i, req.Notice, retries)
		}
	}
	if got := f.unseals(); len(got) != 0 {
		t.Fatalf("built-in UV sent the PIN to a TPM in lockout %d times", len(got))
	}
	if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
		t.Fatalf("built-in UV in lockout: getPINRetries %d, stored %d; want 8", r, s)
	}

	// Locked out only by the time the PIN is checked.
	f.set(daClear, nil, true)
	if st := uv(); st != ErrUVBlocked {
		t.Fatalf("built-in UV, lockout at the check: %v, want 0x3C", st)
	}
	if req, _ := p.last(); req.Notice != "" {
		t.Errorf("notice %q before the TPM was in lockout", req.Notice)
	}
	if got := f.unseals(); len(got) != 1 || got[0] != maxPINRetries-1 {
		t.Fatalf("durable retries while the TPM checked: %v, want [7]", got)
	}
	if r, s := pinRetries(t, e); r != maxPINRetries || s != maxPINRetries {
		t.Fatalf("built-in UV, lockout at the check: getPINRetries %d, stored %d; want 8", r, s)
	}

	f.set(daClear, nil, false)
	if st := uv(); st != StatusOK {
		t.Fatalf("built-in UV after the lockout: %v", st)
	}
}

// TestLockoutText: what the person reads about a lockout.
func TestLockoutText(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		st    tpm.DAStatus
		known bool
		want  string
	}{
		{daLocked, true, "until about 12:16 (within 16m40s of TPM uptime) or until its owner resets it; no PIN attempt is used."},
		{tpm.DAStatus{Counter: 3, MaxTries: 3, RecoveryTime: 24 * time.Hour, InLockout: true}, true, "until about Nov 24 12:00 (within 24h0m0s"},
		{tpm.DAStatus{Counter: 3, MaxTries: 3, InLockout: true}, true, "until its owner resets it (tpm2_dictionarylockout --clear-lockout)"},
		{tpm.DAStatus{}, false, "until it recovers or its owner resets it"},
	} {
		got := lockoutText(c.st, c.known, now)
		if !strings.HasPrefix(got, "The TPM is in dictionary-attack lockout and cannot check the PIN ") || !strings.Contains(got, c.want) {
			t.Errorf("lockoutText(%+v, %v) = %q, want it to contain %q", c.st, c.known, got, c.want)
		}
	}
}
