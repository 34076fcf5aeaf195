package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

// ctl runs the passkeyctl binary; it returns stdout+stderr and the exit code.
func ctl(t *testing.T, bin, socket, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--control", socket}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("passkeyctl %v: %v", args, err)
	}
	return out.String(), 0
}

// buildCtl is passkeyctl, built once.
func buildCtl(t *testing.T) string {
	return gobuild.Binary(t, "github.com/passkeyd/passkeyd/cmd/passkeyctl")
}

// TestPasskeyctl drives the CLI against a running daemon: table and JSON
// output, filters, ID prefixes, deletion with and without a PIN, PIN
// management, reset, and the errors scripts rely on.
func TestPasskeyctl(t *testing.T) {
	requirePrereqs(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	dir, err := os.MkdirTemp("", "pkctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the not-allowed check connects as nobody
	sock := filepath.Join(dir, "control.sock")
	d := startDaemonArgs(t, bin, newStateDir(t), freeUDPPort(t), "swtpm", "--control", sock)
	out, err := runPython(t, d.port, "register.py", "example.com", "alice", "example.com", "bob", "github.com", "carol")
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	ids := strings.Fields(out)
	if len(ids) != 3 {
		t.Fatalf("registered %q", out)
	}

	// Table.
	out, code := ctl(t, ctlBin, sock, "", "list")
	if code != 0 || !strings.Contains(out, "SITE") || strings.Count(out, "\n") != 4 || !strings.Contains(out, "never") {
		t.Fatalf("list (%d):\n%s", code, out)
	}
	// JSON with the documented fields.
	out, code = ctl(t, ctlBin, sock, "", "list", "--json", "--sort", "rp")
	var creds []mgmtapi.Credential
	if code != 0 || json.Unmarshal([]byte(out), &creds) != nil || len(creds) != 3 {
		t.Fatalf("list --json (%d): %s", code, out)
	}
	var raw []map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"credentialId", "rpId", "rpName", "userId", "userName", "userDisplayName", "createdAt", "lastUsedAt", "algorithm", "credProtect", "discoverable"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if creds[0].RPID != "example.com" || creds[2].RPID != "github.com" || creds[0].LastUsedAt != nil || creds[0].Algorithm != -7 || strings.Contains(creds[0].CredentialID, "=") {
		t.Errorf("JSON content: %+v", creds[0])
	}
	// --sort none --json streams the same array, in the daemon's order.
	out, code = ctl(t, ctlBin, sock, "", "list", "--json", "--sort", "none")
	var unsorted []mgmtapi.Credential
	if code != 0 || json.Unmarshal([]byte(out), &unsorted) != nil || len(unsorted) != 3 {
		t.Fatalf("list --json --sort none (%d): %s", code, out)
	}
	slices.SortFunc(unsorted, func(a, b mgmtapi.Credential) int { return strings.Compare(a.RPID+a.UserName, b.RPID+b.UserName) })
	if !reflect.DeepEqual(unsorted, creds) {
		t.Errorf("--sort none: %+v\nwant the credentials of --sort rp: %+v", unsorted, creds)
	}
	sorted, _ := ctl(t, ctlBin, sock, "", "list", "--json", "--rp", "github.com")
	if streamed, _ := ctl(t, ctlBin, sock, "", "list", "--json", "--sort", "none", "--rp", "github.com"); streamed != sorted {
		t.Errorf("one credential: --sort none prints\n%s\nwhere --sort created prints\n%s", streamed, sorted)
	}
	if out, _ := ctl(t, ctlBin, sock, "", "list", "--json", "--sort", "none", "--rp", "nothing.example"); out != "[]\n" {
		t.Errorf("--sort none without a match: %q, want []", out)
	}
	// Filters.
	if out, _ := ctl(t, ctlBin, sock, "", "list", "--filter", "BOB", "--json"); strings.Count(out, `"credentialId"`) != 1 || !strings.Contains(out, `"bob"`) {
		t.Errorf("--filter BOB: %s", out)
	}
	if out, _ := ctl(t, ctlBin, sock, "", "list", "--rp", "github.com", "--json"); strings.Count(out, `"credentialId"`) != 1 {
		t.Errorf("--rp github.com: %s", out)
	}
	if _, code := ctl(t, ctlBin, sock, "", "list", "--sort", "size"); code != 2 {
		t.Errorf("bad --sort: exit %d", code)
	}

	// A non-discoverable credential (pam-u2f's and ssh-keygen's default)
	// is not stored: delete cannot find it and says why and what revokes it.
	out, err = runPython(t, d.port, "register.py", "--non-discoverable", "ssh:", "alice")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("register a non-discoverable credential: %v: %s", err, out)
	}
	nd := strings.TrimSpace(out)
	for _, args := range [][]string{{"delete", "--yes", nd}, {"delete", "--yes", "--rp", "ssh:"}} {
		out, code := ctl(t, ctlBin, sock, "", args...)
		if code != 5 {
			t.Errorf("%v: exit %d, want 5 (not found): %s", args[:2], code, out)
		}
		for _, want := range []string{"no passkey matches", "non-discoverable", "is not stored", "pam-u2f", "authorized_keys", "u2f_keys", "passkeyctl reset"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: the message lacks %q:\n%s", args[:2], want, out)
			}
		}
		if strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%v: want one line, got:\n%s", args[:2], out)
		}
	}
	if out, _ := ctl(t, ctlBin, sock, "", "list", "--json"); strings.Count(out, `"credentialId"`) != 3 {
		t.Errorf("list after registering a non-discoverable credential: %s", out)
	}

	// Delete by a unique prefix, no PIN set.
	out, code = ctl(t, ctlBin, sock, "", "delete", "--yes", ids[2][:20])
	if code != 0 || !strings.Contains(out, "Deleted the passkey for carol on github.com") {
		t.Fatalf("delete by prefix (%d): %s", code, out)
	}
	if _, code := ctl(t, ctlBin, sock, "", "delete", "--yes", ids[2][:20]); code != 5 {
		t.Errorf("deleting it again: exit %d, want 5", code)
	}
	if out, code := ctl(t, ctlBin, sock, "", "delete", "--yes", ids[0][:4]); code != 5 || !strings.Contains(out, "matches 2 passkeys") {
		t.Errorf("ambiguous prefix (%d): %s", code, out)
	}
	if _, code := ctl(t, ctlBin, sock, "", "delete"); code != 2 {
		t.Errorf("delete without a target: exit %d, want 2", code)
	}
	// Without --yes and without a terminal the answer comes from stdin.
	if out, code := ctl(t, ctlBin, sock, "n\n", "delete", "--stdin", "--rp", "example.com", "--user", "bob"); code != 4 || !strings.Contains(out, "not deleted") {
		t.Errorf("declined delete (%d): %s", code, out)
	}

	// Info, PIN, deletion with the PIN.
	out, code = ctl(t, ctlBin, sock, "", "info")
	if code != 0 || !strings.Contains(out, "PIN:") || !strings.Contains(out, "not set") || !strings.Contains(out, "Passkeys:") || !strings.Contains(out, "ES256") {
		t.Fatalf("info (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "2468\n1357\n", "pin", "set", "--stdin"); code != 2 || !strings.Contains(out, "differ") {
		t.Errorf("mismatched PINs (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "2468\n2468\n", "pin", "set", "--stdin"); code != 0 || !strings.Contains(out, "PIN set.") {
		t.Fatalf("pin set (%d): %s", code, out)
	}
	var info mgmtapi.Info
	out, _ = ctl(t, ctlBin, sock, "", "info", "--json")
	if json.Unmarshal([]byte(out), &info) != nil || !info.PINSet || info.PINRetries != 8 || info.Credentials != 2 {
		t.Fatalf("info --json after pin set: %s", out)
	}
	if out, code := ctl(t, ctlBin, sock, "0000\n", "delete", "--yes", "--stdin", "--rp", "example.com", "--user", "bob"); code != 4 || !strings.Contains(out, "wrong PIN (7 tries left)") {
		t.Errorf("delete with a wrong PIN (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "2468\n", "delete", "--yes", "--stdin", "--rp", "example.com", "--user", "bob"); code != 0 || !strings.Contains(out, "Deleted the passkey for bob") {
		t.Errorf("delete with the PIN (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "2468\n8642\n8642\n", "pin", "change", "--stdin"); code != 0 {
		t.Errorf("pin change (%d): %s", code, out)
	}

	// Not allowed: another user is refused by peer credentials.
	pub := filepath.Join(dir, "passkeyctl") // where nobody may execute it
	if b, err := os.ReadFile(ctlBin); err != nil || os.WriteFile(pub, b, 0o755) != nil {
		t.Fatalf("copy passkeyctl: %v", err)
	}
	cmd := exec.Command(pub, "--control", sock, "list")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out2, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(out2), "not allowed") {
		t.Errorf("list as nobody: %v: %s", err, out2)
	}

	// Reset with the PIN, then nothing is left.
	if out, code := ctl(t, ctlBin, sock, "8642\n", "reset", "--yes", "--stdin"); code != 0 || !strings.Contains(out, "Reset") {
		t.Fatalf("reset (%d): %s", code, out)
	}
	if out, _ := ctl(t, ctlBin, sock, "", "list"); !strings.Contains(out, "No passkeys.") {
		t.Errorf("list after reset: %s", out)
	}
	d.stop()

	// Not running.
	if out, code := ctl(t, ctlBin, sock, "", "list"); code != 3 || !strings.Contains(out, "passkeyd is not running") {
		t.Errorf("daemon stopped (%d): %s", code, out)
	}
}
