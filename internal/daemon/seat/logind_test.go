package seat

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

// The loop end to end with the real session.Tracker following
// python3-dbusmock's logind on a private bus, the namespaces on the TPM
// simulator, and a pipe for a device, spoken to in CTAP over CTAPHID.

// await reads the applied States until one satisfies ok.
func (h *harness) await(what string, ok func(session.State) bool) session.State {
	h.t.Helper()
	deadline := time.After(dbustest.Wait)
	var seen []session.State
	for {
		select {
		case st := <-h.switched:
			seen = append(seen, st)
			if ok(st) {
				return st
			}
		case <-deadline:
			h.t.Fatalf("no State with %s applied within %v; applied %+v", what, dbustest.Wait, seen)
		}
	}
}

func (h *harness) awaitUser(uid uint32) {
	h.t.Helper()
	h.await(fmt.Sprintf("uid %d active", uid), func(st session.State) bool { return st.Active && st.UID == uid })
}

func (h *harness) awaitNoUser(reason string) {
	h.t.Helper()
	h.await("no user ("+reason+")", func(st session.State) bool { return !st.Active && strings.Contains(st.Reason, reason) })
}

// clientPINOption is getInfo's options.clientPin: whether the served
// namespace has a PIN (§6.4).
func clientPINOption(t *testing.T, c *ctaptest.Client) bool {
	t.Helper()
	st, m := c.Call(t, ctaptest.CmdGetInfo, nil)
	if st != ctaptest.StatusOK {
		t.Fatalf("getInfo: %v", st)
	}
	opts := ctaptest.Field[map[string]bool](t, m, 4)
	set, ok := opts["clientPin"]
	if !ok {
		t.Fatal("getInfo without options.clientPin")
	}
	return set
}

// TestSeatFollowsLogind: alice registers, the seat switches to bob (the
// old device is gone, a new one serves bob's namespace: none of alice's
// credentials, his own PIN and retries), nobody, a locked screen and the
// greeter have no device, alice's credentials sign again when she is back, and logind
// leaving the bus unplugs the key.
func TestSeatFollowsLogind(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("3", 1001, "bob", "wayland")
	l.AddSession("2", 1000, "alice", "wayland")
	l.Foreground("2", "3")
	ctx, cancel := context.WithTimeout(context.Background(), dbustest.Wait)
	tr, err := session.New(ctx, session.Options{Address: b.Addr})
	cancel()
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	h := runHarness(t, tr.States())

	h.awaitUser(1000)
	h.expectOpen(1)
	a := h.client()
	rk := a.MakeES256(t, cdh, "example.com", "alice", true)
	nr := a.MakeES256(t, cdh, "example.com", "alice", false)
	if st := a.SetPIN(t, "alice-pin-1"); st != ctaptest.StatusOK {
		t.Fatalf("alice's setPIN: %v", st)
	}
	_, _, devA := h.opener.snapshot()

	l.Foreground("3", "2")
	h.awaitUser(1001)
	h.expectOpen(1)
	ev, _, _ := h.opener.snapshot()
	if want := "open 1,close 1,open 2"; strings.Join(ev, ",") != want {
		t.Fatalf("events %v, want %s (alice's device closed before bob's opened)", ev, want)
	}
	// A descriptor alice held across the switch reaches nothing.
	if err := devA.Pipe.Send(ctaptest.HIDFrames(0xffffffff, 0x86, make([]byte, 8))[0]); err == nil {
		t.Error("writing to alice's device after the switch succeeded")
	}
	if _, err := devA.Pipe.Recv(); err == nil {
		t.Error("reading from alice's device after the switch succeeded")
	}
	bc := h.client()
	if st := bc.GetAssertion(t, cdh, "example.com").Status; st != errNoCredentials {
		t.Errorf("bob's getAssertion (discoverable) = %v, want NO_CREDENTIALS (0x2E)", st)
	}
	for name, id := range map[string][]byte{"discoverable": rk.ID, "non-discoverable": nr.ID} {
		if st := bc.GetAssertion(t, cdh, "example.com", id).Status; st != errNoCredentials {
			t.Errorf("alice's %s credential ID in bob's allowList = %v, want NO_CREDENTIALS (0x2E)", name, st)
		}
	}
	// Bob's PIN is his own: none yet, so alice's PIN is nothing here.
	if clientPINOption(t, bc) {
		t.Error("bob's namespace reports a PIN: alice's")
	}
	if _, st := bc.PinToken(t, "alice-pin-1"); st != ctaptest.ErrPinNotSet {
		t.Errorf("alice's PIN on bob's key = %v, want PIN_NOT_SET (0x35)", st)
	}
	if st := bc.SetPIN(t, "bob-pin-22"); st != ctaptest.StatusOK {
		t.Fatalf("bob's setPIN: %v", st)
	}
	if _, st := bc.PinToken(t, "alice-pin-1"); st != ctaptest.ErrPinInvalid {
		t.Errorf("alice's PIN as bob's = %v, want PIN_INVALID (0x31)", st)
	}
	if r, _, st := bc.Retries(t); st != ctaptest.StatusOK || r != 7 {
		t.Errorf("bob's getPINRetries after a wrong PIN = %d %v, want 7", r, st)
	}

	// The login screen: no session in the foreground.
	l.Foreground("", "3")
	h.awaitNoUser("no session on seat0")
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active with nobody at the seat")
	}
	// alice back, then her screen locks.
	l.Foreground("2")
	h.awaitUser(1000)
	l.Call(dbustest.SessionPath("2"), dbustest.SessionIface+".SetLockedHint", true)
	h.awaitNoUser("locked")
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active on a locked screen")
	}
	// The login screen's greeter in the foreground (a user switch
	// through the display manager).
	l.Control(dbustest.LogindPath, "AddSession", "c1", "seat0", uint32(120), "gdm", false)
	l.Update(dbustest.SessionPath("c1"), dbustest.SessionIface, map[string]any{"Class": "greeter", "Type": "wayland"})
	l.Foreground("c1", "2")
	h.awaitNoUser("greeter")
	h.expectOpen(0)
	l.Call(dbustest.SessionPath("2"), dbustest.SessionIface+".SetLockedHint", false)
	l.Foreground("2", "c1")
	h.awaitUser(1000)
	h.expectOpen(1)

	a = h.client()
	if r, _, st := a.Retries(t); st != ctaptest.StatusOK || r != 8 {
		t.Errorf("alice's getPINRetries = %d %v, want 8 (bob's wrong PIN is his)", r, st)
	}
	if !clientPINOption(t, a) {
		t.Error("alice's PIN is gone")
	}
	for name, tc := range map[string]struct {
		cred  ctaptest.Registered
		allow [][]byte
	}{"discoverable": {rk, nil}, "non-discoverable": {nr, [][]byte{nr.ID}}} {
		as := a.GetAssertion(t, cdh, "example.com", tc.allow...)
		if ok := as.Verifies(tc.cred.PublicKey, cdh); as.Status != ctaptest.StatusOK || !bytes.Equal(as.ID, tc.cred.ID) || !ok {
			t.Errorf("alice's %s credential = %v %x (signature verifies: %v), want %x signing", name, as.Status, as.ID, ok, tc.cred.ID)
		}
	}

	// logind leaves the bus: nobody is known to be at the seat.
	l.Stop()
	h.awaitNoUser("logind")
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active without logind")
	}
}
