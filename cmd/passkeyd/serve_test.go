package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

func TestServeRefusesBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		o    serveOptions
		want string
	}{
		{"no transport", serveOptions{stateDir: dir, tpmSpec: "sim", prompt: "deny", logLevel: "info"}, "--transport is required"},
		{"unknown transport", serveOptions{stateDir: dir, tpmSpec: "sim", transport: "usb", prompt: "deny", logLevel: "info"}, `--transport "usb": unknown transport`},
		{"udp without port", serveOptions{stateDir: dir, tpmSpec: "sim", transport: "udp:localhost", prompt: "deny", logLevel: "info"}, "want udp:HOST:PORT"},
		{"bad prompt", serveOptions{stateDir: dir, tpmSpec: "sim", transport: "udp:127.0.0.1:0", prompt: "yes", logLevel: "info"}, `--prompt "yes"`},
		{"bad attestation", serveOptions{stateDir: dir, tpmSpec: "sim", transport: "udp:127.0.0.1:0", prompt: "deny", attestation: "x509", logLevel: "info"}, `--attestation "x509": want self, none or tpm`},
		{"bad log level", serveOptions{stateDir: dir, tpmSpec: "sim", transport: "udp:127.0.0.1:0", prompt: "deny", logLevel: "loud"}, `--log-level "loud"`},
		{"bad tpm", serveOptions{stateDir: dir, tpmSpec: "unix:/nonexistent/sock", transport: "udp:127.0.0.1:0", prompt: "deny", logLevel: "error"}, `open TPM "unix:/nonexistent/sock"`},
	} {
		err := serve(context.Background(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tc.name, err)
		}
	}
}

func TestServeRefusesLockedStateDir(t *testing.T) {
	dir := t.TempDir()
	st, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = serve(context.Background(), serveOptions{stateDir: dir, tpmSpec: "sim", transport: "udp:127.0.0.1:0", prompt: "deny", logLevel: "error"})
	if !errors.Is(err, keystore.ErrLocked) || !strings.Contains(err.Error(), "in use by another passkeyd") {
		t.Fatalf("err = %v, want the locked-store message", err)
	}
}

// noSystemBus points the system bus at a socket that does not exist.
func noSystemBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/no-bus")
}

// TestSeatModeNeedsLogind: users = "seat" without logind stops with one
// line; "auto" falls back to owner mode.
func TestSeatModeNeedsLogind(t *testing.T) {
	noSystemBus(t)
	dir := t.TempDir()
	err := serve(context.Background(), serveOptions{stateDir: dir, tpmSpec: "sim", transport: "uhid", users: "seat", prompt: "deny", logLevel: "error"})
	if err == nil || !strings.Contains(err.Error(), "--users seat: logind") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line saying seat mode needs logind", err)
	}
	tr, err := seatTracker(context.Background(), serveOptions{transport: "uhid", users: "auto"}, slog.New(slog.DiscardHandler))
	if err != nil || tr != nil {
		t.Fatalf("auto without logind = %v, %v; want owner mode", tr, err)
	}
	if tr, err := seatTracker(context.Background(), serveOptions{transport: "udp:127.0.0.1:0", users: "auto"}, nil); err != nil || tr != nil {
		t.Fatalf("auto on the simulation transport = %v, %v; want owner mode", tr, err)
	}
}

// TestPolkitAgentDegrades: without a system bus, polkit+agent is the
// agent alone, with a warning, instead of a failure to start; polkit
// alone still fails.
func TestPolkitAgentDegrades(t *testing.T) {
	noSystemBus(t)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := parsePrompt(serveOptions{prompt: "polkit+agent", control: "/run/x.sock", owner: "1000"}, log, nil)
	if err != nil {
		t.Fatalf("polkit+agent without a bus: %v", err)
	}
	if _, ok := p.(*prompt.Agent); !ok {
		t.Fatalf("polkit+agent without a bus = %T, want the agent alone", p)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "agent only") {
		t.Errorf("no warning: %s", logs.String())
	}
	if _, err := parsePrompt(serveOptions{prompt: "polkit"}, log, nil); err == nil {
		t.Error("polkit alone without a bus started")
	}
}

// TestSeatModeNeedsUHID: seat mode without /dev/uhid stops at start with
// uhid's one line, as owner mode does, instead of running with a key that
// can never be plugged in (and saying so only at each login).
func TestSeatModeNeedsUHID(t *testing.T) {
	bus := dbustest.Start(t)
	dbustest.StartLogind(bus)
	old := newTracker
	newTracker = func(ctx context.Context, o session.Options) (*session.Tracker, error) {
		o.Address = bus.Addr
		return session.New(ctx, o)
	}
	t.Cleanup(func() { newTracker = old })
	missing := filepath.Join(t.TempDir(), "uhid")
	for _, users := range []string{"seat", "auto"} {
		ctx, cancel := context.WithTimeout(context.Background(), dbustest.Wait)
		err := serve(ctx, serveOptions{stateDir: t.TempDir(), tpmSpec: "sim", transport: "uhid:" + missing,
			users: users, prompt: "deny", logLevel: "error"})
		cancel()
		want := "open " + missing + ": no such file or directory: load the uhid kernel module"
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("users = %s without the uhid node: err = %v, want one line containing %q", users, err, want)
		}
	}
}

// TestServeHelp: every flag's help shows its value type (pflag takes the
// first `quoted` word of a usage as the value's name, which printed
// "--attestation passkeyctl attestation ca"), and --owner says what it
// means in each mode, since seat mode is the default.
func TestServeHelp(t *testing.T) {
	cmd := newRootCommand()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"serve", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	serve, _, err := cmd.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	serve.Flags().VisitAll(func(f *pflag.Flag) {
		if name, _ := pflag.UnquoteUsage(f); name != f.Value.Type() && f.Value.Type() != "bool" {
			t.Errorf("--%s shows its value as %q, not %q: a `quoted` word in its usage", f.Name, name, f.Value.Type())
		}
	})
	for _, want := range []string{"--attestation string", "owner mode (see --users): the user", "Seat mode: the user whose passkeys are the device's own namespace"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, help)
		}
	}
}
