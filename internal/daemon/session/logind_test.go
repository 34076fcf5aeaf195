package session

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// TestInitialState: the first State is the current one, a user's
// graphical session in the foreground.
func TestInitialState(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	s := w.next()
	want := State{Active: true, UID: 1000, UserName: "alice", SessionID: "2", SessionPath: sessionPath("2")}
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
	b := newBus(t)
	b.startLogind()
	b.addSession("3", 1001, "bob", "x11")
	b.addSession("2", 1000, "alice", "wayland")
	b.foreground("2", "3")
	w := b.track()
	w.awaitUser(1000)
	b.foreground("3", "2")
	s := w.awaitUser(1001)
	if s.UserName != "bob" || s.SessionID != "3" || s.SessionPath != sessionPath("3") {
		t.Errorf("after the switch: %+v", s)
	}
	b.foreground("2", "3")
	w.awaitUser(1000)
}

// TestGreeterIsNoUser: the login screen's greeter session is not a user,
// and neither is a lock-screen session.
func TestGreeterIsNoUser(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("c1", 120, "gdm", "wayland")
	b.update(sessionPath("c1"), sessionIface, map[string]any{"Class": "greeter"})
	w := b.track()
	s := w.next()
	if s.Active || !strings.Contains(s.Reason, "greeter") || s.SessionID != "c1" {
		t.Fatalf("greeter in the foreground: %+v", s)
	}
	b.addSession("2", 1000, "alice", "wayland")
	b.foreground("2", "c1")
	w.awaitUser(1000)
	b.foreground("c1", "2")
	w.awaitNoUser("greeter")
	b.update(sessionPath("c1"), sessionIface, map[string]any{"Class": "lock-screen"})
	w.awaitNoUser("lock-screen")
}

// TestNoSession: seat0 with no session, and no seat0 at all, are no user;
// a session's removal from the foreground is no user.
func TestNoSession(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	w := b.track()
	s := w.next()
	if s.Active || !strings.Contains(s.Reason, "seat0") {
		t.Fatalf("no seat0: %+v", s)
	}
	b.call("/org/freedesktop/login1", "org.freedesktop.DBus.Mock.AddSeat", seatID)
	// The seat's object appears without a signal: the tracker retries
	// a failed read on its own.
	w.awaitNoUser("no session on seat0")
	b.addSession("2", 1000, "alice", "tty")
	w.awaitUser(1000)
	b.foreground("", "2")
	w.awaitNoUser("no session on seat0")
}

// TestLocked: a locked screen is no user (LockedHint, or a Lock signal not
// yet answered), and unlocking brings the user back.
func TestLocked(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	w.awaitUser(1000)
	p := sessionPath("2")

	b.call(p, sessionIface+".SetLockedHint", true)
	s := w.awaitNoUser("locked")
	if !s.Locked || s.SessionID != "2" {
		t.Errorf("LockedHint true: %+v", s)
	}
	b.call(p, sessionIface+".SetLockedHint", false)
	w.awaitUser(1000)

	// Lock signal (loginctl lock-session), then Unlock.
	b.call(p, sessionIface+".Lock")
	if s := w.awaitNoUser("locked"); !s.Locked {
		t.Errorf("after Lock: %+v", s)
	}
	b.call(p, sessionIface+".Unlock")
	w.awaitUser(1000)

	// Lock, the locker sets the hint, the user unlocks at the locker (the
	// hint goes false, no Unlock signal): the user is back.
	b.call(p, sessionIface+".Lock")
	w.awaitNoUser("locked")
	b.call(p, sessionIface+".SetLockedHint", true)
	b.call(p, sessionIface+".SetLockedHint", false)
	w.awaitUser(1000)

	// A pending Lock belongs to its session: switching away and back to
	// a session without a locker does not keep it.
	b.addSession("3", 1001, "bob", "wayland")
	b.foreground("3", "2")
	w.awaitUser(1001)
	b.call(sessionPath("3"), sessionIface+".Lock")
	w.awaitNoUser("locked")
	b.foreground("2", "3")
	w.awaitUser(1000)
}

// TestRemoteIsNoUser: a remote session is never seat0's user, even in
// the foreground and unlocked.
func TestRemoteIsNoUser(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("5", 1000, "alice", "x11")
	b.update(sessionPath("5"), sessionIface, map[string]any{"Remote": true})
	w := b.track()
	if s := w.next(); s.Active || s.Reason != "remote session" {
		t.Fatalf("remote session: %+v", s)
	}
	b.update(sessionPath("5"), sessionIface, map[string]any{"Remote": false})
	w.awaitUser(1000)
	b.update(sessionPath("5"), sessionIface, map[string]any{"Remote": true})
	w.awaitNoUser("remote")
}

// TestSessionTypes: only a screen or a console is a person at seat0;
// another seat's session is not seat0's user; a closing session is not.
func TestSessionTypes(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "test")
	w := b.track()
	w.awaitNoUser("type test")
	for _, typ := range []string{"x11", "wayland", "mir", "tty"} {
		b.update(sessionPath("2"), sessionIface, map[string]any{"Type": typ})
		w.awaitUser(1000)
		b.update(sessionPath("2"), sessionIface, map[string]any{"Type": "unspecified"})
		w.awaitNoUser("type unspecified")
	}
	b.update(sessionPath("2"), sessionIface, map[string]any{"Type": "tty", "State": "closing"})
	w.awaitNoUser("closing")
	b.update(sessionPath("2"), sessionIface, map[string]any{"State": "active"})
	w.awaitUser(1000)
	b.set(sessionPath("2"), sessionIface, "Seat", soRef{"seat1", "/org/freedesktop/login1/seat/seat1"})
	w.awaitNoUser("not on seat0")
}

// TestNoLogind: a bus without logind, and no bus at all, are ErrNoLogind.
func TestNoLogind(t *testing.T) {
	b := newBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tr, err := New(ctx, Options{Address: b.addr})
	if !errors.Is(err, ErrNoLogind) {
		if tr != nil {
			tr.Close()
		}
		t.Fatalf("New on a bus without logind: %v, want ErrNoLogind", err)
	}
	_, err = New(ctx, Options{Address: "unix:path=" + filepath.Join(b.dir, "nothing-here")})
	if !errors.Is(err, ErrNoLogind) {
		t.Fatalf("New without a bus socket: %v, want ErrNoLogind", err)
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
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	w.awaitUser(1000)
	b.stopLogind()
	w.awaitNoUser("logind is not on the bus")
	b.startLogind()
	b.addSession("7", 1002, "carol", "wayland")
	w.awaitUser(1002)
}

// TestBusRestart: the bus going away is no user; the tracker reconnects
// to the new bus and re-reads.
func TestBusRestart(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	w.awaitUser(1000)
	b.stopLogind()
	b.stopBus()
	w.await("no user", func(s State) bool { return !s.Active })
	b.startBus()
	b.startLogind()
	b.addSession("4", 1000, "alice", "wayland")
	s := w.awaitUser(1000)
	if s.SessionID != "4" {
		t.Errorf("after the bus restart: %+v", s)
	}
}

// TestHostileLogind: logind's answers with the wrong types or values are
// no user (never a panic), and a good answer afterwards is believed again.
func TestHostileLogind(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	w.awaitUser(1000)
	p := sessionPath("2")
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
		b.set(seatPath, seatIface, "ActiveSession", v)
		w.awaitNoUser("malformed")
		b.set(seatPath, seatIface, "ActiveSession", good)
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
		b.set(p, sessionIface, c.prop, c.v)
		s := w.await(c.prop+" rejected", func(s State) bool { return !s.Active })
		if s.UID != 0 || s.UserName != "" {
			t.Errorf("%s = %v: %+v", c.prop, c.v, s)
		}
		b.set(p, sessionIface, c.prop, old)
		w.awaitUser(1000)
	}
}

// TestForgedSignals: any peer on the system bus can send the tracker a
// unicast signal with logind's paths and interfaces. None of them may
// change the State: not a Lock, not a fake "logind left", not a fake
// switch.
func TestForgedSignals(t *testing.T) {
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	b.addSession("3", 1001, "bob", "wayland")
	b.foreground("2", "3")
	w := b.track()
	w.awaitUser(1000)
	// Let the tracker settle: the trace must be quiet from here on.
	time.Sleep(200 * time.Millisecond)
	mark := w.tracedLen()

	w.tr.mu.Lock()
	victim := w.tr.conn.Names()[0]
	w.tr.mu.Unlock()
	var owner string
	if err := b.ctl.BusObject().Call(busName+".GetNameOwner", 0, logindName).Store(&owner); err != nil {
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
		if call := b.ctl.Send(msg, nil); call.Err != nil {
			t.Fatal(call.Err)
		}
	}
	emit(sessionPath("2"), lockSignal)
	emit("/org/freedesktop/DBus", nameOwnerChanged, logindName, owner, "")
	emit(sessionPath("2"), propsChanged, sessionIface,
		map[string]dbus.Variant{"LockedHint": dbus.MakeVariant(true)}, []string{})
	emit(seatPath, propsChanged, seatIface,
		map[string]dbus.Variant{"ActiveSession": dbus.MakeVariant(soRef{"3", sessionPath("3")})}, []string{})
	emit(sessionPath("2"), lockSignal, "extra", uint32(1))
	// A real change after the forgeries, from the same connection, so the
	// bus delivers it after them: the next State must be this one.
	b.foreground("3", "2")
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
	b := newBus(t)
	b.startLogind()
	b.addSession("2", 1000, "alice", "wayland")
	w := b.track()
	b.call(sessionPath("2"), sessionIface+".Lock")
	b.call(sessionPath("2"), sessionIface+".Unlock")
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
