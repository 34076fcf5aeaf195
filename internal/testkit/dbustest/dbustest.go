// Package dbustest runs a private dbus-daemon with python3-dbusmock
// templates on it, for tests of code that talks to system services
// (logind, polkitd) over D-Bus.
//
// The bus is a session-type dbus-daemon on a socket of its own; the mocks
// find it through DBUS_SYSTEM_BUS_ADDRESS, and the code under test is
// given Bus.Addr. Without dbus-daemon or python3-dbusmock (Debian
// packages, installed by test/deps.sh) Start skips the test loudly, and
// fails it under CI=true, so that CI never loses these tests silently.
//
// Layer: tests only; it imports nothing of passkeyd.
package dbustest

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

// Wait bounds every wait for the bus and the mocks: the machines running
// the tests are loaded.
const Wait = 20 * time.Second

// MockIface is dbusmock's control interface on every mocked object.
const MockIface = "org.freedesktop.DBus.Mock"

var (
	toolsOnce    sync.Once
	toolsMissing []string
	daemonExe    string
	// python is Debian's python3, which has python3-dbusmock (a python3
	// on PATH may be another one, such as pyenv's).
	python = "/usr/bin/python3"
)

// requireTools finds dbus-daemon and dbusmock, or skips (fails in CI).
func requireTools(tb testing.TB) {
	tb.Helper()
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
	if len(toolsMissing) > 0 {
		msg := fmt.Sprintf("%s missing (test/deps.sh, or apt-get install %s)",
			strings.Join(toolsMissing, ", "), strings.Join(toolsMissing, " "))
		if os.Getenv("CI") == "true" {
			tb.Fatal("the D-Bus tests need " + msg)
		}
		fmt.Fprintln(os.Stderr, "dbustest: SKIPPING: "+msg)
		tb.Skip("SKIPPING: " + msg)
	}
}

// Bus is a private dbus-daemon and a connection to it for the test's own
// calls to the mocks.
type Bus struct {
	tb testing.TB
	// Addr is the bus's address, for the code under test.
	Addr string
	// Dir holds the socket and the daemons' logs.
	Dir string
	// Conn is the test's connection (nil while the bus is stopped).
	Conn   *dbus.Conn
	daemon *exec.Cmd
	mocks  []*Mock
}

// Start starts a bus that the test's cleanup stops, with every mock on it.
func Start(tb testing.TB) *Bus {
	tb.Helper()
	requireTools(tb)
	// Unix socket paths are short: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "dbustest-")
	if err != nil {
		tb.Fatal(err)
	}
	b := &Bus{tb: tb, Dir: dir, Addr: "unix:path=" + filepath.Join(dir, "bus")}
	tb.Cleanup(func() {
		for _, m := range b.mocks {
			m.Stop()
		}
		b.Stop()
		os.RemoveAll(dir)
	})
	b.Restart()
	return b
}

// Restart starts the bus again, on the same address, after Stop.
func (b *Bus) Restart() {
	tb := b.tb
	tb.Helper()
	os.Remove(filepath.Join(b.Dir, "bus"))
	cmd := exec.Command(daemonExe, "--session", "--nofork", "--nopidfile", "--address="+b.Addr, "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	logf := b.logFile("dbus-daemon.log")
	defer logf.Close()
	cmd.Stderr = logf // "Failed to set fd limit" and the like
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
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
			tb.Fatalf("dbus-daemon: %v", err)
		}
	case <-time.After(Wait):
		tb.Fatal("dbus-daemon did not start")
	}
	if b.Conn, err = dbus.Connect(b.Addr); err != nil {
		tb.Fatalf("connecting to the test bus: %v", err)
	}
}

// Stop stops the bus (the mocks lose it; stop them first).
func (b *Bus) Stop() {
	if b.Conn != nil {
		b.Conn.Close()
		b.Conn = nil
	}
	if b.daemon != nil {
		_ = b.daemon.Process.Signal(syscall.SIGTERM)
		_ = b.daemon.Wait()
		b.daemon = nil
	}
}

func (b *Bus) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(b.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.tb.Fatal(err)
	}
	return f
}

// HasOwner reports whether name is owned on the bus.
func (b *Bus) HasOwner(name string) bool {
	b.tb.Helper()
	var has bool
	if err := b.Conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
		b.tb.Fatal(err)
	}
	return has
}

// Call calls method on the object at path of the service name, and fails
// the test on an error.
func (b *Bus) Call(name string, path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	c := b.Conn.Object(name, path).CallWithContext(ctx, method, 0, args...)
	if c.Err != nil {
		b.tb.Fatalf("%s on %s %s: %v", method, name, path, c.Err)
	}
	return c
}

// Mock is a python3-dbusmock template serving one bus name.
type Mock struct {
	b        *Bus
	template string
	name     string
	cmd      *exec.Cmd
}

// StartMock starts dbusmock with template (a template's name, such as
// "logind", or the path of a template file) and waits until it owns
// name. The test's cleanup stops it.
func (b *Bus) StartMock(template, name string) *Mock {
	b.tb.Helper()
	m := &Mock{b: b, template: template, name: name}
	b.mocks = append(b.mocks, m)
	m.Restart()
	return m
}

// Restart starts the mock again after Stop (a fresh one: its state is the
// template's initial one).
func (m *Mock) Restart() {
	tb := m.b.tb
	tb.Helper()
	logName := "dbusmock-" + strings.TrimSuffix(filepath.Base(m.template), ".py") + ".log"
	logf := m.b.logFile(logName)
	defer logf.Close()
	cmd := exec.Command(python, "-m", "dbusmock", "--system", "--template", m.template)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+m.b.Addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	m.cmd = cmd
	for deadline := time.Now().Add(Wait); !m.b.HasOwner(m.name); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(m.b.Dir, logName))
			tb.Fatalf("dbusmock's %s did not appear on the bus as %s:\n%s", m.template, m.name, log)
		}
	}
}

// Stop stops the mock: its name leaves the bus.
func (m *Mock) Stop() {
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		_ = m.cmd.Wait()
		m.cmd = nil
	}
}

// Control calls one of dbusmock's control methods (MockIface) on the
// mock's object at path.
func (m *Mock) Control(path dbus.ObjectPath, method string, args ...any) *dbus.Call {
	m.b.tb.Helper()
	return m.b.Call(m.name, path, MockIface+"."+method, args...)
}
