package users

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/u2f"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// holdingPrompter keeps every prompt open until its context ends.
type holdingPrompter struct {
	asked     chan struct{}
	withdrawn chan error
}

func (p *holdingPrompter) Confirm(ctx context.Context, _ prompt.Request) error {
	p.asked <- struct{}{}
	<-ctx.Done()
	p.withdrawn <- ctx.Err()
	return ctx.Err()
}

// TestUnplugWithdrawsTheLeavingUsersPrompt: a switch of user and a
// Deactivate power-cycle the namespace that stops being served (its key
// is unplugged), so a U2F touch prompt it opened (U2F clients poll, and
// the prompt runs on its own) is withdrawn instead of waiting on the next
// user's screen until its timeout.
func TestUnplugWithdrawsTheLeavingUsersPrompt(t *testing.T) {
	simMu.Lock()
	t.Cleanup(simMu.Unlock)
	dir := t.TempDir()
	dev, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	p := &holdingPrompter{asked: make(chan struct{}, 4), withdrawn: make(chan error, 4)}
	u, err := Open(Config{StateDir: dir, Device: dev, Auth: ctap2.Config{TPM: tpmsim.TPM(), Prompt: p}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })

	// REGISTER: challenge and application parameter, extended length.
	register := append([]byte{0, u2f.InsRegister, 0, 0, 0, 0, 64}, make([]byte, 64)...)
	register = append(register, 0, 0)
	for _, unplug := range []struct {
		name string
		do   func()
	}{
		{"a switch to bob", func() {
			if _, err := u.Activate(bob.UID, bob.Name); err != nil {
				t.Fatal(err)
			}
		}},
		{"Deactivate", u.Deactivate},
	} {
		a, err := u.Activate(alice.UID, alice.Name)
		if err != nil {
			t.Fatal(err)
		}
		if resp := a.MSG(context.Background(), register); !bytes.Equal(resp, []byte{0x69, 0x85}) {
			t.Fatalf("%s: alice's REGISTER: % x, want 69 85 (the prompt started)", unplug.name, resp)
		}
		select {
		case <-p.asked:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: alice's REGISTER asked nobody", unplug.name)
		}
		unplug.do()
		select {
		case err := <-p.withdrawn:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: alice's prompt ended with %v, want it withdrawn", unplug.name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: alice's U2F prompt is still open", unplug.name)
		}
	}
}
