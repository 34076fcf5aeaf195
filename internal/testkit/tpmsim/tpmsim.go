// Package tpmsim gives a test binary the in-process TPM simulator.
//
// The simulator is a process-wide singleton, freshly manufactured on each
// open (tpm.Config Spec "sim"), so a test binary opens it once, in
// TestMain, and every test shares it:
//
//	func TestMain(m *testing.M) { tpmsim.Main(m) }
//
// and tpmsim.TPM() in the tests. It exists only in binaries built with
// -tags tpmsim (and cgo); without them Main fails the binary at once
// rather than lose every simulator test silently.
//
// Layer: tests only. It imports the TPM package and nothing of the daemon.
package tpmsim

import (
	"fmt"
	"os"
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

var shared *tpm.TPM

// Main is a TestMain: it opens the simulator, runs the tests, closes the
// simulator and exits with the tests' status (1 when either fails).
func Main(m *testing.M) {
	t, err := tpm.Open(tpm.Config{Spec: "sim"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open the TPM simulator (go test -tags tpmsim, with cgo):", err)
		os.Exit(1)
	}
	shared = t
	code := m.Run()
	if err := t.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close the TPM simulator:", err)
		code = 1
	}
	os.Exit(code)
}

// TPM is the simulator Main opened. Calling it in a binary whose TestMain
// is not Main is a programming error: it panics.
func TPM() *tpm.TPM {
	if shared == nil {
		panic("tpmsim: no simulator open: the package's TestMain must call tpmsim.Main")
	}
	return shared
}
