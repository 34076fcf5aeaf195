package ctap2

import (
	"bytes"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// TestCredMgmtLargeBlobKey: enumerateCredentials returns each credential's
// largeBlobKey (0x0B), the one makeCredential returned, and none for a
// credential made without the extension. libfido2 finds a credential's
// large blob this way (fido2-token -S/-G/-D -b -n RPID).
func TestCredMgmtLargeBlobKey(t *testing.T) {
	e := openEnv(t, t.TempDir())
	p := &pinPrompter{pin: "271828"}
	a, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Prompt: p, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.a, e.prompt = a, &p.testPrompter
	if err := a.pin.installPIN(p.pin); err != nil {
		t.Fatal(err)
	}
	mc := mcParams("lb.example", []byte("u-ivy"), true)
	mc[6] = map[string]any{"largeBlobKey": true}
	mc[7] = map[string]any{"rk": true, "uv": true}
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatalf("makeCredential: %v", st)
	}
	key := field[[]byte](t, m, 5)
	if len(key) != 32 {
		t.Fatalf("largeBlobKey of %d bytes", len(key))
	}
	makeRK(t, e, "plain.example", []byte("u-jay"), "jay", map[string]any{"rk": true, "uv": true})

	enumerate := func(rpID string) map[int]cbor.RawMessage {
		t.Helper()
		tok := uvToken(t, a, pinuv.PermCredentialManagement, "")
		rpHash := cdh(rpID)
		params, err := cbor.Marshal(map[int]any{1: rpHash})
		if err != nil {
			t.Fatal(err)
		}
		pr, _ := pinuv.NewProtocolTwo()
		param := pr.Authenticate(tok, append([]byte{cmEnumerateCredentialsBegin}, params...))
		st, m := e.call(t, CmdCredentialManagement, map[int]any{1: cmEnumerateCredentialsBegin, 2: cbor.RawMessage(params), 3: 2, 4: param})
		if st != StatusOK {
			t.Fatalf("enumerateCredentialsBegin %s: %v", rpID, st)
		}
		return m
	}
	if got := field[[]byte](t, enumerate("lb.example"), 11); !bytes.Equal(got, key) {
		t.Errorf("enumerated largeBlobKey %x, want makeCredential's %x", got, key)
	}
	if _, ok := enumerate("plain.example")[11]; ok {
		t.Error("a largeBlobKey for a credential made without the extension")
	}
}
