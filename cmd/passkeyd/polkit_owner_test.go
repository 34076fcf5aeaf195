package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

// TestOwnerModePolkitAsksOnlyTheOwner: in owner mode the passkeys are the
// owner's, so polkit's user verification must be the owner's. The key's
// hidraw node goes to whoever is at the seat (uaccess); when that is
// another user, polkit is not asked about their session (they would
// verify with their own password and get UV on the owner's passkeys):
// the answer is ErrNoVerifier, which "polkit+agent" turns into the
// owner's FIDO PIN through the agent, and "polkit" into
// OPERATION_DENIED. With the owner at the seat, polkit asks them.
func TestOwnerModePolkitAsksOnlyTheOwner(t *testing.T) {
	bus := dbustest.Start(t)
	template, err := filepath.Abs("../../internal/daemon/polkit/testdata/polkitd.py")
	if err != nil {
		t.Fatal(err)
	}
	polkitd := bus.StartMock(template, polkitName)
	logind := dbustest.StartLogind(bus)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Addr)
	const authority = dbus.ObjectPath("/org/freedesktop/PolicyKit1/Authority")
	polkitd.Control(authority, "SetResult", true, false, map[string]string{})
	calls := func() []map[string]any {
		t.Helper()
		var s string
		if err := polkitd.Control(authority, "Calls").Store(&s); err != nil {
			t.Fatal(err)
		}
		var r []map[string]any
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			t.Fatal(err)
		}
		polkitd.Control(authority, "Reset")
		return r
	}

	p, err := parsePrompt(serveOptions{prompt: "polkit", owner: "1000"}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := p.(prompt.Verifier)
	if !ok {
		t.Fatalf("--prompt polkit is %T, not a Verifier", p)
	}
	req := prompt.Request{Operation: prompt.OpSignIn, RPID: "example.com", UserName: "alice@example.com"}

	// bob, not the owner, is at the seat.
	logind.AddSession("3", 1001, "bob", "wayland")
	logind.Foreground("3")
	if err := v.VerifyUser(context.Background(), req); !errors.Is(err, prompt.ErrNoVerifier) {
		t.Errorf("VerifyUser with another user at the seat = %v, want ErrNoVerifier", err)
	}
	if err := v.Confirm(context.Background(), req); !errors.Is(err, prompt.ErrNoUser) {
		t.Errorf("Confirm with another user at the seat = %v, want ErrNoUser", err)
	}
	if c := calls(); len(c) != 0 {
		t.Errorf("polkit was asked about another user's session: %v", c)
	}

	// The owner at the seat: polkit asks about their session.
	logind.AddSession("2", 1000, "alice", "wayland")
	logind.Foreground("2", "3")
	if err := v.VerifyUser(context.Background(), req); err != nil {
		t.Errorf("VerifyUser with the owner at the seat = %v", err)
	}
	c := calls()
	if len(c) != 1 {
		t.Fatalf("polkit calls %v, want one", c)
	}
	if subject, _ := c[0]["subject"].(map[string]any); subject["uid"] != float64(1000) {
		t.Errorf("polkit asked about %v, want the owner's (uid 1000) session", c[0]["subject"])
	}
}
