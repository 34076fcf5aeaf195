//go:build tpmsim

package polkit

// The authenticator on the TPM simulator with this backend as its prompt,
// polkitd mocked: makeCredential with uv=true and no PIN gets UV from
// polkit, and polkit's answers become the CTAP statuses.

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// The simulator is one per process: opened once, for every test.
func TestMain(m *testing.M) { tpmsim.Main(m) }

func TestAuthenticatorThroughPolkit(t *testing.T) {
	b := startBus(t)
	b.addSession(t, "c2")
	sim := tpmsim.TPM()
	store, err := keystore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	a, err := ctap2.New(ctap2.Config{TPM: sim, Store: store, Prompt: b.backend()})
	if err != nil {
		t.Fatal(err)
	}
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
