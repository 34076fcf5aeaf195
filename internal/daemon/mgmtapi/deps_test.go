package mgmtapi

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestStandardLibraryOnly: the wire types are shared with passkeyctl, so
// they may not drag anything in (see the package comment).
func TestStandardLibraryOnly(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/passkeyd/passkeyd/internal/daemon/mgmtapi" {
			t.Errorf("mgmtapi imports %s", dep)
		}
	}
}
