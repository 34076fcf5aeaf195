package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoDaemonDependencies: passkeyctl is a client. It links the wire
// types (mgmtapi) and the socket (control), never the TPM, the store or
// CTAP: those would bring go-tpm, bbolt and, in a test build, the cgo
// TPM simulator into a binary that has no use for them.
func TestNoDaemonDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	// The production build: no build tags, no cgo.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/google/go-tpm", // and go-tpm-tools
		"go.etcd.io/bbolt",
		"github.com/passkeyd/passkeyd/internal/protocol/",
		"github.com/passkeyd/passkeyd/internal/hardware/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("passkeyctl links %s", dep)
			}
		}
		if dep == "github.com/passkeyd/passkeyd/internal/daemon/mgmt" {
			t.Errorf("passkeyctl links the management server %s: import mgmtapi", dep)
		}
	}
}
