package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
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
