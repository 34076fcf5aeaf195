package session

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// The logind tests run the tracker against a real dbus-daemon on a private
// bus, with python3-dbusmock's logind template as logind. The booted-Debian
// VM test runs the same code against the real logind.

const waitLong = 20 * time.Second // the machines running the tests are loaded

// python is Debian's python3, which has python3-dbusmock (a python3 on
// PATH may be another one, such as pyenv's).
var python = "/usr/bin/python3"

var (
	toolsOnce    sync.Once
	toolsMissing []string
	daemonExe    string
)

// requireBusTools finds dbus-daemon and dbusmock: without them the test is
// skipped loudly, or fails in CI (CI=true).
func requireBusTools(t *testing.T) string {
	t.Helper()
	toolsOnce.Do(func() {
		var err error
		if daemonExe, err = exec.LookPath("dbus-daemon"); err != nil {
			toolsMissing = append(toolsMissing, "dbus-daemon")
		}
		if _, err := os.Stat(python); err != nil {
			python = "python3"
		}
		if exec.Command(python, "-c", "import dbusmock").Run() != nil {
			toolsMissing = append(toolsMissing, "python3-dbusmock")
		}
	})
	if missing := toolsMissing; len(missing) > 0 {
		msg := fmt.Sprintf("%s missing (test/deps.sh, or apt-get install %s)",
			strings.Join(missing, ", "), strings.Join(missing, " "))
		if os.Getenv("CI") == "true" {
			t.Fatal("the logind tests need " + msg)
		}
		msg = "SKIPPING the logind tests: " + msg
		fmt.Fprintln(os.Stderr, "session: "+msg)
		t.Skip(msg)
	}
	return daemonExe
}

// testBus is a private dbus-daemon with a control connection, and the
// dbusmock logind on it when started.
type testBus struct {
	t      *testing.T
	exe    string
	dir    string
	addr   string
	daemon *exec.Cmd
	ctl    *dbus.Conn
	mock   *exec.Cmd
}

func newBus(t *testing.T) *testBus {
	t.Helper()
	exe := requireBusTools(t)
	// Unix socket paths are short: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "session-bus-")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBus{t: t, exe: exe, dir: dir, addr: "unix:path=" + filepath.Join(dir, "bus")}
	t.Cleanup(func() {
		b.stopLogind()
		b.stopBus()
		os.RemoveAll(dir)
	})
	b.startBus()
	return b
}

func (b *testBus) startBus() {
	t := b.t
	t.Helper()
	os.Remove(filepath.Join(b.dir, "bus"))
	cmd := exec.Command(b.exe, "--session", "--nofork", "--nopidfile", "--address="+b.addr, "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(b.dir, "dbus-daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf // "Failed to set fd limit" and the like
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.daemon = cmd
	ready := make(chan error, 1)
	go func() {
		r := bufio.NewReader(out)
		_, err := r.ReadString('\n')
		ready <- err
		_, _ = io.Copy(io.Discard, r) // keep the pipe drained
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("dbus-daemon: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("dbus-daemon did not start")
	}
	b.ctl, err = dbus.Connect(b.addr)
	if err != nil {
		t.Fatalf("connecting to the test bus: %v", err)
	}
}

func (b *testBus) stopBus() {
	if b.ctl != nil {
		b.ctl.Close()
		b.ctl = nil
	}
	if b.daemon != nil {
		_ = b.daemon.Process.Signal(syscall.SIGTERM)
		_ = b.daemon.Wait()
		b.daemon = nil
	}
}

// startLogind starts dbusmock's logind template and waits for its name.
func (b *testBus) startLogind() {
	t := b.t
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(b.dir, "dbusmock.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(python, "-m", "dbusmock", "--template", "logind")
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+b.addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.mock = cmd
	deadline := time.Now().Add(waitLong)
	for {
		var has bool
		if err := b.ctl.BusObject().Call(busName+".NameHasOwner", 0, logindName).Store(&has); err != nil {
			t.Fatal(err)
		}
		if has {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(b.dir, "dbusmock.log"))
			t.Fatalf("dbusmock's logind did not appear on the bus:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *testBus) stopLogind() {
	if b.mock != nil {
		_ = b.mock.Process.Signal(syscall.SIGTERM)
		_ = b.mock.Wait()
		b.mock = nil
	}
}

func sessionPath(id string) dbus.ObjectPath { return sessionRoot + dbus.ObjectPath("/"+id) }

func (b *testBus) call(path dbus.ObjectPath, method string, args ...any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := b.ctl.Object(logindName, path).CallWithContext(ctx, method, 0, args...).Err; err != nil {
		b.t.Fatalf("%s on %s: %v", method, path, err)
	}
}

// addSession adds a local session on seat0 with the given type (dbusmock's
// default, "test", is not a seat session) and makes it the foreground one.
func (b *testBus) addSession(id string, uid uint32, name, typ string) {
	b.t.Helper()
	b.call("/org/freedesktop/login1", "org.freedesktop.DBus.Mock.AddSession", id, seatID, uid, name, true)
	b.update(sessionPath(id), sessionIface, map[string]any{"Type": typ})
}

// update changes properties on a mock object and emits PropertiesChanged.
func (b *testBus) update(path dbus.ObjectPath, iface string, props map[string]any) {
	b.t.Helper()
	m := make(map[string]dbus.Variant, len(props))
	for k, v := range props {
		m[k] = dbus.MakeVariant(v)
	}
	b.call(path, "org.freedesktop.DBus.Mock.UpdateProperties", iface, m)
}

// set is Properties.Set: the mock stores any type and emits PropertiesChanged.
func (b *testBus) set(path dbus.ObjectPath, iface, prop string, v any) {
	b.t.Helper()
	b.call(path, propsIface+".Set", iface, prop, dbus.MakeVariant(v))
}

type soRef struct {
	ID   string
	Path dbus.ObjectPath
}

type uoRef struct {
	UID  uint32
	Path dbus.ObjectPath
}

// foreground makes session id seat0's active one, as logind does on a VT
// switch: the sessions' Active and State first, then the seat.
func (b *testBus) foreground(id string, others ...string) {
	b.t.Helper()
	for _, o := range others {
		b.update(sessionPath(o), sessionIface, map[string]any{"Active": false, "State": "online"})
	}
	ref := soRef{"", "/"}
	if id != "" {
		b.update(sessionPath(id), sessionIface, map[string]any{"Active": true, "State": "active"})
		ref = soRef{id, sessionPath(id)}
	}
	// Set, not UpdateProperties: dbusmock cannot wrap a struct in the latter.
	b.set(seatPath, seatIface, "ActiveSession", ref)
}

// watcher consumes a tracker's States, checking that no State repeats.
type watcher struct {
	t  *testing.T
	tr *Tracker
	ch <-chan State

	mu     sync.Mutex
	traced []State // every State published, before coalescing
	last   *State
}

func (b *testBus) track() *watcher {
	b.t.Helper()
	w := &watcher{t: b.t}
	// ctx ends as soon as New returns: the tracker must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tr, err := New(ctx, Options{Address: b.addr, retryMin: 20 * time.Millisecond, trace: w.record})
	if err != nil {
		b.t.Fatalf("New: %v", err)
	}
	w.tr, w.ch = tr, tr.States()
	b.t.Cleanup(func() { tr.Close() })
	return w
}

func (w *watcher) record(s State) {
	w.mu.Lock()
	w.traced = append(w.traced, s)
	w.mu.Unlock()
}

func (w *watcher) tracedSince(n int) []State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]State(nil), w.traced[n:]...)
}

func (w *watcher) tracedLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.traced)
}

// next is the next State on the stream.
func (w *watcher) next() State {
	w.t.Helper()
	select {
	case s, ok := <-w.ch:
		if !ok {
			w.t.Fatal("States closed")
		}
		if w.last != nil && *w.last == s {
			w.t.Errorf("the same State twice in a row: %+v", s)
		}
		w.last = &s
		return s
	case <-time.After(waitLong):
		w.t.Fatalf("no State within %v (last %+v)", waitLong, w.last)
	}
	panic("unreachable")
}

// await reads States until one satisfies ok.
func (w *watcher) await(what string, ok func(State) bool) State {
	w.t.Helper()
	deadline := time.After(waitLong)
	var seen []State
	for {
		select {
		case s, open := <-w.ch:
			if !open {
				w.t.Fatalf("States closed waiting for %s; saw %+v", what, seen)
			}
			if w.last != nil && *w.last == s {
				w.t.Errorf("the same State twice in a row: %+v", s)
			}
			w.last = &s
			seen = append(seen, s)
			if ok(s) {
				return s
			}
		case <-deadline:
			w.t.Fatalf("no State with %s within %v; saw %+v", what, waitLong, seen)
		}
	}
}

func (w *watcher) awaitUser(uid uint32) State {
	w.t.Helper()
	return w.await(fmt.Sprintf("user %d active", uid), func(s State) bool { return s.Active && s.UID == uid })
}

func (w *watcher) awaitNoUser(reason string) State {
	w.t.Helper()
	s := w.await("no user ("+reason+")", func(s State) bool {
		return !s.Active && strings.Contains(s.Reason, reason)
	})
	if s.UID != 0 || s.UserName != "" {
		w.t.Errorf("no user, but the State names one: %+v", s)
	}
	return s
}
