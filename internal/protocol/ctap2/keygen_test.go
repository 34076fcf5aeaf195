package ctap2

import (
	"context"
	"crypto"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// signallingTPM reports when key generation starts.
type signallingTPM struct {
	*tpm.TPM
	armed   atomic.Bool // set after provisioning, which creates keys too
	once    sync.Once
	started chan struct{}
}

func (s *signallingTPM) CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error) {
	if s.armed.Load() {
		s.once.Do(func() { close(s.started) })
	}
	return s.TPM.CreateKey(alg)
}

// waitForKeygen approves only once key generation is under way.
type waitForKeygen struct{ started chan struct{} }

func (w waitForKeygen) Confirm(ctx context.Context, _ prompt.Request) error {
	select {
	case <-w.started:
		return nil
	case <-time.After(5 * time.Second):
		return prompt.ErrDenied
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestKeyGeneratedWhilePrompting: the credential key (seconds for RSA on
// a real TPM) is generated while the person answers the prompt, not after.
func TestKeyGeneratedWhilePrompting(t *testing.T) {
	st, err := keystore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	started := make(chan struct{})
	sig := &signallingTPM{TPM: tpmsim.TPM(), started: started}
	a, err := New(Config{TPM: sig, Store: st, Prompt: waitForKeygen{started}})
	if err != nil {
		t.Fatal(err)
	}
	sig.armed.Store(true)
	e := &testEnv{a: a, store: st}
	p := mcParams("example.com", []byte("u"), false)
	p[4] = []any{map[string]any{"type": "public-key", "alg": -257}}
	if st, _ := e.call(t, CmdMakeCredential, p); st != StatusOK {
		t.Fatalf("makeCredential: %v (the prompt waited for a key generation that had not started)", st)
	}
}
