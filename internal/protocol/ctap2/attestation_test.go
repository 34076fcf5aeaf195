package ctap2

import (
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestNoneAttestation(t *testing.T) {
	st, err := keystore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(Config{TPM: tpmsim.TPM(), Store: st, Prompt: &testPrompter{}, Attestation: AttestationNone})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{a: a, store: st}
	st2, m := e.call(t, CmdMakeCredential, mcParams("example.com", []byte("u"), false))
	if st2 != StatusOK {
		t.Fatal(st2)
	}
	if f := field[string](t, m, 1); f != "none" {
		t.Errorf("fmt = %q", f)
	}
	if stmt := field[map[string]any](t, m, 3); len(stmt) != 0 {
		t.Errorf("attStmt = %v, want empty", stmt)
	}
	if _, err := New(Config{TPM: tpmsim.TPM(), Store: st, Attestation: AttestationTPM}); err == nil {
		t.Error("tpm attestation without an Attester accepted")
	}
	if _, err := New(Config{TPM: tpmsim.TPM(), Store: st, Attestation: "basic"}); err == nil {
		t.Error("unknown attestation mode accepted")
	}
}
