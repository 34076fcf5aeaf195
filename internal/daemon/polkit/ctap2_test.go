//go:build tpmsim

package polkit

// The authenticator on the TPM simulator with this backend as its prompt,
// polkitd mocked: makeCredential with uv=true and no PIN, and
// getPinUvAuthTokenUsingUvWithPermissions, get UV from polkit, and
// polkit's answers (allowed, not verified, dismissed, no agent, cancelled,
// no answer in time) become the CTAP statuses.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// The simulator is one per process: opened once, for every test.
func TestMain(m *testing.M) { tpmsim.Main(m) }

// authenticator is an authenticator on the simulator, with a store of its
// own, that asks polkit on b for UV.
func (b *mockBus) authenticator(t *testing.T) *ctap2.Authenticator {
	t.Helper()
	store, err := keystore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a, err := ctap2.New(ctap2.Config{TPM: tpmsim.TPM(), Store: store, Prompt: b.backend()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAuthenticatorThroughPolkit(t *testing.T) {
	b := startBus(t)
	b.addSession(t, "c2")
	a := b.authenticator(t)
	h := sha256.Sum256([]byte("client data"))
	req, err := cbor.Marshal(map[int]any{
		1: h[:],
		2: map[string]any{"id": "polkit.example", "name": "Example"},
		3: map[string]any{"id": []byte("u"), "name": "alice", "displayName": "Alice"},
		4: []any{map[string]any{"type": "public-key", "alg": -7}},
		7: map[string]any{"rk": true, "uv": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	req = append([]byte{ctap2.CmdMakeCredential}, req...)
	makeCredential := func(ctx context.Context) (ctap2.Status, []byte) {
		resp := a.CBOR(ctx, req)
		return ctap2.Status(resp[0]), resp[1:]
	}

	b.setResult(t, true, false, nil)
	st, body := makeCredential(context.Background())
	if st != ctap2.StatusOK {
		t.Fatalf("authorized: %v", st)
	}
	var resp map[int]cbor.RawMessage
	var authData []byte
	if err := cbor.Unmarshal(body, &resp); err != nil || cbor.Unmarshal(resp[2], &authData) != nil || len(authData) < 37 {
		t.Fatalf("response: %v", err)
	}
	if f := authData[32]; f&0x05 != 0x05 {
		t.Errorf("flags %02x, want UP and UV", f)
	}
	if c := b.calls(t); len(c) != 1 || c[0].Details["rp"] != "polkit.example" || c[0].Details["operation"] != "register a passkey" {
		t.Errorf("calls %+v", c)
	}

	for _, tc := range []struct {
		name                  string
		authorized, challenge bool
		details               map[string]string
		want                  ctap2.Status
	}{
		{"wrong password", false, false, nil, ctap2.ErrUVInvalid},
		{"dismissed", false, false, map[string]string{"polkit.dismissed": "true"}, ctap2.ErrOperationDenied},
		{"no agent", false, true, nil, ctap2.ErrOperationDenied},
	} {
		b.setResult(t, tc.authorized, tc.challenge, tc.details)
		if st, _ := makeCredential(context.Background()); st != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, st, tc.want)
		}
	}

	b.mock("SetHang", true)
	b.calls(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	if st, _ := makeCredential(ctx); st != ctap2.ErrKeepaliveCancel {
		t.Errorf("cancelled: %v, want KEEPALIVE_CANCEL", st)
	}
	if c := b.calls(t); len(c) != 2 || c[1].Method != "CancelCheckAuthorization" {
		t.Errorf("calls after cancel %+v, want CancelCheckAuthorization", c)
	}
}

// awaitCheck waits until the polkitd mock has a CheckAuthorization call
// (false: none came). It may run on any goroutine.
func (b *mockBus) awaitCheck() bool {
	for deadline := time.Now().Add(dbustest.Wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var s string
		if b.Conn.Object(busName, authorityPath).Call(dbustest.MockIface+".Calls", 0).Store(&s) == nil && strings.Contains(s, "CheckAuthorization") {
			return true
		}
	}
	return false
}

// TestUVTokenThroughPolkit: getPinUvAuthTokenUsingUvWithPermissions
// (CTAP 2.1 §6.5.5.7.3) with polkit as the built-in UV method: an
// authorised user gets a token that makeCredential accepts with UV; a
// wrong password is CTAP2_ERR_UV_INVALID (step "uv fails"), a dismissed
// dialog or no authentication agent is CTAP2_ERR_OPERATION_DENIED (the
// user declined, or nobody can verify and there is no PIN to fall back
// on), CTAPHID_CANCEL is CTAP2_ERR_KEEPALIVE_CANCEL, and each refusal
// gives no token.
func TestUVTokenThroughPolkit(t *testing.T) {
	b := startBus(t)
	b.addSession(t, "c4")
	c := ctaptest.NewClient(b.authenticator(t), 2)
	const rp = "polkit.example"

	b.setResult(t, true, false, nil)
	tok, st := c.UVTokenWithPermissions(t, byte(pinuv.PermMakeCredential), rp)
	if st != ctaptest.StatusOK || len(tok) != 32 {
		t.Fatalf("authorised: %v, token of %d bytes", st, len(tok))
	}
	if calls := b.calls(t); len(calls) != 1 || calls[0].Details["rp"] != rp || calls[0].Action != ActionID {
		t.Errorf("polkit calls %+v, want one CheckAuthorization of %s for %s", calls, ActionID, rp)
	}
	cdh := sha256.Sum256([]byte("client data"))
	st, m := c.Call(t, ctaptest.CmdMakeCredential, map[int]any{
		1: cdh[:], 2: map[string]any{"id": rp}, 3: map[string]any{"id": []byte("u"), "name": "alice"},
		4: []map[string]any{{"alg": -7, "type": "public-key"}}, 8: c.Param(tok, cdh[:]), 9: 2,
	})
	if st != ctaptest.StatusOK {
		t.Fatalf("makeCredential with the polkit token: %v", st)
	}
	if ad := ctaptest.Field[[]byte](t, m, 2); ad[32]&0x04 == 0 {
		t.Errorf("makeCredential with the polkit token: flags %02x, want UV", ad[32])
	}

	for _, tc := range []struct {
		name                  string
		authorized, challenge bool
		details               map[string]string
		want                  ctaptest.Status
	}{
		{"wrong password", false, false, nil, ctaptest.Status(ctap2.ErrUVInvalid)},
		{"dismissed", false, false, map[string]string{"polkit.dismissed": "true"}, ctaptest.Status(ctap2.ErrOperationDenied)},
		{"no agent", false, true, nil, ctaptest.Status(ctap2.ErrOperationDenied)},
	} {
		b.setResult(t, tc.authorized, tc.challenge, tc.details)
		if tok, st := c.UVTokenWithPermissions(t, byte(pinuv.PermMakeCredential), rp); st != tc.want || tok != nil {
			t.Errorf("%s: %v (token %x), want %v", tc.name, st, tok, tc.want)
		}
	}

	// The platform cancels while the dialog is up: the dialog is
	// withdrawn at polkitd.
	b.mock("SetHang", true)
	b.calls(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer cancel()
		if !b.awaitCheck() {
			t.Error("no CheckAuthorization call to cancel")
		}
	}()
	c.Ctx = ctx
	if _, st := c.UVTokenWithPermissions(t, byte(pinuv.PermMakeCredential), rp); st != ctaptest.Status(ctap2.ErrKeepaliveCancel) {
		t.Errorf("cancelled: %v, want KEEPALIVE_CANCEL (0x2D)", st)
	}
	if calls := b.calls(t); len(calls) != 2 || calls[1].Method != "CancelCheckAuthorization" {
		t.Errorf("calls after the cancel %+v, want CancelCheckAuthorization", calls)
	}
}

// TestPolkitTimeout: nobody answers the dialog within prompt.Timeout
// (30 s): both makeCredential with uv and
// getPinUvAuthTokenUsingUvWithPermissions answer
// CTAP2_ERR_USER_ACTION_TIMEOUT, and the dialog is withdrawn. Both wait
// at once, on two authenticators, so the test takes one timeout.
func TestPolkitTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits prompt.Timeout (30 s)")
	}
	b := startBus(t)
	b.addSession(t, "c5")
	b.mock("SetHang", true)
	const rp = "polkit.example"
	cdh := sha256.Sum256([]byte("client data"))
	results := make(chan string, 2)
	mc, uv := ctaptest.NewClient(b.authenticator(t), 2), ctaptest.NewClient(b.authenticator(t), 2)
	go func() {
		st, _ := mc.Call(t, ctaptest.CmdMakeCredential, map[int]any{
			1: cdh[:], 2: map[string]any{"id": rp}, 3: map[string]any{"id": []byte("u"), "name": "alice"},
			4: []map[string]any{{"alg": -7, "type": "public-key"}}, 7: map[string]bool{"rk": true, "uv": true},
		})
		results <- fmt.Sprintf("makeCredential with uv: %v", st)
	}()
	go func() {
		_, st := uv.UVTokenWithPermissions(t, byte(pinuv.PermMakeCredential), rp)
		results <- fmt.Sprintf("getPinUvAuthTokenUsingUvWithPermissions: %v", st)
	}()
	want := ctaptest.Status(ctap2.ErrUserActionTimeout).String()
	for range 2 {
		select {
		case r := <-results:
			if !strings.HasSuffix(r, ": "+want) {
				t.Errorf("%s, want USER_ACTION_TIMEOUT (%s)", r, want)
			}
		case <-time.After(prompt.Timeout + dbustest.Wait):
			t.Fatal("no answer after the prompt timeout")
		}
	}
	calls := b.calls(t)
	cancelled := 0
	for _, c := range calls {
		if c.Method == "CancelCheckAuthorization" {
			cancelled++
		}
	}
	if len(calls) != 4 || cancelled != 2 {
		t.Errorf("polkit calls %+v, want two CheckAuthorization, each withdrawn", calls)
	}
}
