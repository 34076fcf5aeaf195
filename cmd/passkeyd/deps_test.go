package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoSimulatorInProduction: without the tpmsim tag, passkeyd does not
// link the reference TPM simulator (cgo, OpenSSL), so --tpm sim cannot
// start a daemon whose keys die with it.
func TestNoSimulatorInProduction(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/google/go-tpm-tools") {
			t.Errorf("passkeyd links %s without -tags tpmsim", dep)
		}
	}
}
