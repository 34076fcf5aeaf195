package session

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

// TestInitialState: the first State is the current one, a user's
// graphical session in the foreground.
func TestInitialState(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	s := w.next()
	want := State{Active: true, UID: 1000, UserName: "alice", SessionID: "2", SessionPath: dbustest.SessionPath("2")}
	if s != want {
		t.Fatalf("first State %+v, want %+v", s, want)
	}
	if c := w.tr.Current(); c != want {
		t.Errorf("Current %+v, want %+v", c, want)
	}
}

// TestSwitchUser: another user's session comes to the foreground (seat0's
// ActiveSession changes) and back.
func TestSwitchUser(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("3", 1001, "bob", "x11")
	l.AddSession("2", 1000, "alice", "wayland")
	l.Foreground("2", "3")
	w := track(t, b)
	w.awaitUser(1000)
	l.Foreground("3", "2")
	s := w.awaitUser(1001)
	if s.UserName != "bob" || s.SessionID != "3" || s.SessionPath != dbustest.SessionPath("3") {
		t.Errorf("after the switch: %+v", s)
	}
	l.Foreground("2", "3")
	w.awaitUser(1000)
}

// TestGreeterIsNoUser: the login screen's greeter session is not a user,
// and neither is a lock-screen session.
func TestGreeterIsNoUser(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("c1", 120, "gdm", "wayland")
	l.Update(dbustest.SessionPath("c1"), sessionIface, map[string]any{"Class": "greeter"})
	w := track(t, b)
	s := w.next()
	if s.Active || !strings.Contains(s.Reason, "greeter") || s.SessionID != "c1" {
		t.Fatalf("greeter in the foreground: %+v", s)
	}
	l.AddSession("2", 1000, "alice", "wayland")
	l.Foreground("2", "c1")
	w.awaitUser(1000)
	l.Foreground("c1", "2")
	w.awaitNoUser("greeter")
	l.Update(dbustest.SessionPath("c1"), sessionIface, map[string]any{"Class": "lock-screen"})
	w.awaitNoUser("lock-screen")
}

// TestNoSession: seat0 with no session, and no seat0 at all, are no user;
// a session's removal from the foreground is no user.
func TestNoSession(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	w := track(t, b)
	s := w.next()
	if s.Active || !strings.Contains(s.Reason, "seat0") {
		t.Fatalf("no seat0: %+v", s)
	}
	l.Control(dbustest.LogindPath, "AddSeat", seatID)
	// The seat's object appears without a signal: the tracker retries
	// a failed read on its own.
	w.awaitNoUser("no session on seat0")
	l.AddSession("2", 1000, "alice", "tty")
	w.awaitUser(1000)
	l.Foreground("", "2")
	w.awaitNoUser("no session on seat0")
}

// TestLocked: a locked screen is no user (LockedHint, or a Lock signal not
// yet answered), and unlocking brings the user back.
func TestLocked(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	w.awaitUser(1000)
	p := dbustest.SessionPath("2")

	l.Call(p, sessionIface+".SetLockedHint", true)
	s := w.awaitNoUser("locked")
	if !s.Locked || s.SessionID != "2" {
		t.Errorf("LockedHint true: %+v", s)
	}
	l.Call(p, sessionIface+".SetLockedHint", false)
	w.awaitUser(1000)

	// Lock signal (loginctl lock-session), then Unlock.
	l.Call(p, sessionIface+".Lock")
	if s := w.awaitNoUser("locked"); !s.Locked {
		t.Errorf("after Lock: %+v", s)
	}
	l.Call(p, sessionIface+".Unlock")
	w.awaitUser(1000)

	// Lock, the locker sets the hint, the user unlocks at the locker (the
	// hint goes false, no Unlock signal): the user is back.
	l.Call(p, sessionIface+".Lock")
	w.awaitNoUser("locked")
	l.Call(p, sessionIface+".SetLockedHint", true)
	l.Call(p, sessionIface+".SetLockedHint", false)
	w.awaitUser(1000)

	// A pending Lock belongs to its session: switching away and back to
	// a session without a locker does not keep it.
	l.AddSession("3", 1001, "bob", "wayland")
	l.Foreground("3", "2")
	w.awaitUser(1001)
	l.Call(dbustest.SessionPath("3"), sessionIface+".Lock")
	w.awaitNoUser("locked")
	l.Foreground("2", "3")
	w.awaitUser(1000)
}

// TestRemoteIsNoUser: a remote session is never seat0's user, even in
// the foreground and unlocked.
func TestRemoteIsNoUser(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("5", 1000, "alice", "x11")
	l.Update(dbustest.SessionPath("5"), sessionIface, map[string]any{"Remote": true})
	w := track(t, b)
	if s := w.next(); s.Active || s.Reason != "remote session" {
		t.Fatalf("remote session: %+v", s)
	}
	l.Update(dbustest.SessionPath("5"), sessionIface, map[string]any{"Remote": false})
	w.awaitUser(1000)
	l.Update(dbustest.SessionPath("5"), sessionIface, map[string]any{"Remote": true})
	w.awaitNoUser("remote")
}

// TestSessionTypes: only a screen or a console is a person at seat0;
// another seat's session is not seat0's user; a closing session is not.
func TestSessionTypes(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "test")
	w := track(t, b)
	w.awaitNoUser("type test")
	for _, typ := range []string{"x11", "wayland", "mir", "tty"} {
		l.Update(dbustest.SessionPath("2"), sessionIface, map[string]any{"Type": typ})
		w.awaitUser(1000)
		l.Update(dbustest.SessionPath("2"), sessionIface, map[string]any{"Type": "unspecified"})
		w.awaitNoUser("type unspecified")
	}
	l.Update(dbustest.SessionPath("2"), sessionIface, map[string]any{"Type": "tty", "State": "closing"})
	w.awaitNoUser("closing")
	l.Update(dbustest.SessionPath("2"), sessionIface, map[string]any{"State": "active"})
	w.awaitUser(1000)
	l.Set(dbustest.SessionPath("2"), sessionIface, "Seat", soRef{"seat1", "/org/freedesktop/login1/seat/seat1"})
	w.awaitNoUser("not on seat0")
}

// TestNoLogind: a bus without logind, and no bus at all, are ErrNoLogind.
func TestNoLogind(t *testing.T) {
	b := dbustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tr, err := New(ctx, Options{Address: b.Addr})
	if !errors.Is(err, ErrNoLogind) {
		if tr != nil {
			tr.Close()
		}
		t.Fatalf("New on a bus without logind: %v, want ErrNoLogind", err)
	}
	_, err = New(ctx, Options{Address: "unix:path=" + filepath.Join(b.Dir, "nothing-here")})
	if !errors.Is(err, ErrNoLogind) {
		t.Fatalf("New without a bus socket: %v, want ErrNoLogind", err)
	}
	// No system bus at all (a container, an initramfs): the well-known
	// socket is missing. godbus's own ConnectSystemBus said only "system
	// bus not found" there, which users = "auto" took for a failure.
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	if got := systemBusAddress(); got != defaultSystemBus {
		t.Fatalf("systemBusAddress without DBUS_SYSTEM_BUS_ADDRESS = %q, want %q", got, defaultSystemBus)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(b.Dir, "no-system-bus"))
	_, err = New(ctx, Options{})
	if !errors.Is(err, ErrNoLogind) {
		t.Fatalf("New on the system bus without its socket: %v, want ErrNoLogind", err)
	}
	// A bus that refuses the connection is transient, not "no logind".
	_, err = New(ctx, Options{Address: "tcp:host=127.0.0.1,port=1"})
	if err == nil || errors.Is(err, ErrNoLogind) {
		t.Fatalf("New on a refused address: %v, want a transient error", err)
	}
}

// TestLogindRestart: logind leaving the bus is no user; when it comes back
// the tracker re-reads.
func TestLogindRestart(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	w.awaitUser(1000)
	l.Stop()
	w.awaitNoUser("logind is not on the bus")
	l.Restart()
	l.AddSession("7", 1002, "carol", "wayland")
	w.awaitUser(1002)
}

// TestBusRestart: the bus going away is no user; the tracker reconnects
// to the new bus and re-reads.
func TestBusRestart(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	w.awaitUser(1000)
	l.Stop()
	b.Stop()
	w.await("no user", func(s State) bool { return !s.Active })
	b.Restart()
	l.Restart()
	l.AddSession("4", 1000, "alice", "wayland")
	s := w.awaitUser(1000)
	if s.SessionID != "4" {
		t.Errorf("after the bus restart: %+v", s)
	}
}

// TestHostileLogind: logind's answers with the wrong types or values are
// no user (never a panic), and a good answer afterwards is believed again.
func TestHostileLogind(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	w.awaitUser(1000)
	p := dbustest.SessionPath("2")
	good := soRef{"2", p}
	seatCases := []any{
		uint32(7),
		"2",
		soRef{"2", "/org/freedesktop/login1/user/1000"},
		soRef{"../2", p},
		soRef{strings.Repeat("9", 100), p},
		struct {
			ID   string
			Path dbus.ObjectPath
			More uint32
		}{"2", p, 1},
		[]string{"2"},
	}
	for _, v := range seatCases {
		l.Set(seatPath, seatIface, "ActiveSession", v)
		w.awaitNoUser("malformed")
		l.Set(seatPath, seatIface, "ActiveSession", good)
		w.awaitUser(1000)
	}
	sessionCases := []struct {
		prop string
		v    any
	}{
		{"User", "root"},
		{"User", uint32(0)},
		{"User", struct {
			UID  int32
			Path dbus.ObjectPath
		}{0, "/"}},
		{"User", soRef{"0", "/"}},
		{"User", uoRef{0xFFFFFFFF, "/"}},
		{"User", uoRef{0xFFFF, "/"}},
		{"Name", strings.Repeat("a", 300)},
		{"Name", "alice\nroot"},
		{"Name", ""},
		{"Name", "../../etc"},
		{"Name", uint32(1000)},
		{"Id", "3"},
		{"Id", "2 3"},
		{"Class", "User"},
		{"Class", strings.Repeat("u", 100)},
		{"Class", true},
		{"Remote", "false"},
		{"LockedHint", uint32(0)},
		{"Active", "yes"},
		{"Seat", "seat0"},
		{"Type", dbus.MakeVariant("wayland")},
	}
	for _, c := range sessionCases {
		old := map[string]any{
			"User": uoRef{1000, "/org/freedesktop/login1/user/1000"},
			"Name": "alice", "Id": "2", "Class": "user", "Remote": false, "LockedHint": false,
			"Active": true, "Seat": soRef{"seat0", seatPath}, "Type": "wayland",
		}[c.prop]
		l.Set(p, sessionIface, c.prop, c.v)
		s := w.await(c.prop+" rejected", func(s State) bool { return !s.Active })
		if s.UID != 0 || s.UserName != "" {
			t.Errorf("%s = %v: %+v", c.prop, c.v, s)
		}
		l.Set(p, sessionIface, c.prop, old)
		w.awaitUser(1000)
	}
}

// TestForgedSignals: any peer on the system bus can send the tracker a
// unicast signal with logind's paths and interfaces. None of them may
// change the State: not a Lock, not a fake "logind left", not a fake
// switch.
func TestForgedSignals(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	l.AddSession("3", 1001, "bob", "wayland")
	l.Foreground("2", "3")
	w := track(t, b)
	w.awaitUser(1000)
	// Let the tracker settle: the trace must be quiet from here on.
	time.Sleep(200 * time.Millisecond)
	mark := w.tracedLen()

	w.tr.mu.Lock()
	victim := w.tr.conn.Names()[0]
	w.tr.mu.Unlock()
	var owner string
	if err := b.Conn.BusObject().Call(busName+".GetNameOwner", 0, logindName).Store(&owner); err != nil {
		t.Fatal(err)
	}
	emit := func(path dbus.ObjectPath, name string, body ...any) {
		t.Helper()
		msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(path),
			dbus.FieldInterface:   dbus.MakeVariant(name[:strings.LastIndex(name, ".")]),
			dbus.FieldMember:      dbus.MakeVariant(name[strings.LastIndex(name, ".")+1:]),
			dbus.FieldDestination: dbus.MakeVariant(victim),
		}, Body: body}
		if len(body) > 0 {
			msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(body...))
		}
		if call := b.Conn.Send(msg, nil); call.Err != nil {
			t.Fatal(call.Err)
		}
	}
	emit(dbustest.SessionPath("2"), lockSignal)
	emit("/org/freedesktop/DBus", nameOwnerChanged, logindName, owner, "")
	emit(dbustest.SessionPath("2"), propsChanged, sessionIface,
		map[string]dbus.Variant{"LockedHint": dbus.MakeVariant(true)}, []string{})
	emit(seatPath, propsChanged, seatIface,
		map[string]dbus.Variant{"ActiveSession": dbus.MakeVariant(soRef{"3", dbustest.SessionPath("3")})}, []string{})
	emit(dbustest.SessionPath("2"), lockSignal, "extra", uint32(1))
	// A real change after the forgeries, from the same connection, so the
	// bus delivers it after them: the next State must be this one.
	l.Foreground("3", "2")
	w.awaitUser(1001)
	for _, s := range w.tracedSince(mark) {
		if s.Locked || (s.Active && s.UID != 1001) || strings.Contains(s.Reason, "not on the bus") {
			t.Errorf("a forged signal changed the State: %+v (trace %+v)", s, w.tracedSince(mark))
		}
	}
}

// TestClose: Close ends the stream, twice is fine, and a tracker whose
// consumer never reads does not block Close.
func TestClose(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	w := track(t, b)
	l.Call(dbustest.SessionPath("2"), sessionIface+".Lock")
	l.Call(dbustest.SessionPath("2"), sessionIface+".Unlock")
	done := make(chan struct{})
	go func() {
		w.tr.Close()
		w.tr.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("Close blocked")
	}
	deadline := time.After(waitLong)
	for {
		select {
		case _, ok := <-w.ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("States not closed after Close")
		}
	}
}

// TestRejectedNameNotLogged: a session whose user name the tracker
// refuses (a space, as an AD account through SSSD may have) is no user,
// and neither the log nor the State's Reason (which the seat loop logs)
// holds the name: user names never reach the journal.
func TestRejectedNameNotLogged(t *testing.T) {
	b := dbustest.Start(t)
	l := dbustest.StartLogind(b)
	l.AddSession("2", 1000, "alice", "wayland")
	var logs ctaptest.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tr, err := New(ctx, Options{Address: b.Addr, retryMin: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	w := &watcher{t: t, tr: tr, ch: tr.States()}
	w.awaitUser(1000)
	p := dbustest.SessionPath("2")
	for _, name := range []string{"ann secretlee", "ann:secretlee", "ann/secretlee"} {
		l.Set(p, sessionIface, "Name", name)
		s := w.await("the name "+name+" rejected", func(s State) bool { return !s.Active })
		if strings.Contains(s.Reason, "secretlee") {
			t.Errorf("the State's Reason names the user: %q", s.Reason)
		}
		l.Set(p, sessionIface, "Name", "alice")
		w.awaitUser(1000)
	}
	if out := logs.String(); strings.Contains(out, "secretlee") {
		t.Errorf("the log names the user:\n%s", out)
	}
}
