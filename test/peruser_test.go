package test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
)

// ctlAsNobody runs passkeyctl as uid 65534; it returns the output and the
// exit code.
func ctlAsNobody(t *testing.T, pub, socket string, args ...string) (string, int) {
	t.Helper()
	return ctlAs(t, 65534, pub, socket, args...)
}

// ctlAs runs passkeyctl as uid (and gid) uid.
func ctlAs(t *testing.T, uid uint32, pub, socket string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(pub, append([]string{"--control", socket}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("passkeyctl %v as nobody: %v", args, err)
	}
	return string(out), 0
}

// TestPasskeyctlPerUser: the daemon serves the account "daemon"'s own
// namespace (--serve-user), and root lists, exports and removes it with
// passkeyctl --user; the owner (nobody) sees only its own namespace and
// is refused every --user; the namespace's directory name is an HMAC.
func TestPasskeyctlPerUser(t *testing.T) {
	requirePrereqs(t)
	if os.Getuid() != 0 {
		t.Skip("needs root: passkeyctl --user is root's, and the test plays another uid")
	}
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	dir, err := os.MkdirTemp("", "pkctl-users-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // nobody connects to the socket and runs the copy below
	pub := filepath.Join(dir, "passkeyctl")
	if b, err := os.ReadFile(ctlBin); err != nil || os.WriteFile(pub, b, 0o755) != nil {
		t.Fatalf("copy passkeyctl: %v", err)
	}
	sock := filepath.Join(dir, "control.sock")
	state := newStateDir(t)
	d := startDaemonArgs(t, bin, state, freeUDPPort(t), "swtpm", "--control", sock, "--owner", "nobody", "--serve-user", "daemon")
	if out, err := runPython(t, d.port, "register.py", "example.com", "dana", "github.com", "dana"); err != nil || len(strings.Fields(out)) != 2 {
		t.Fatalf("register as daemon's namespace: %v %q", err, out)
	}

	// The device's own namespace (the owner's) has none of them.
	if out, code := ctl(t, ctlBin, sock, "", "list"); code != 0 || strings.TrimSpace(out) != "No passkeys." {
		t.Fatalf("root's list of the device's namespace (%d): %s", code, out)
	}
	if out, code := ctlAsNobody(t, pub, sock, "list"); code != 0 || strings.TrimSpace(out) != "No passkeys." {
		t.Fatalf("the owner's own list (%d): %s", code, out)
	}
	// Root names the user.
	out, code := ctl(t, ctlBin, sock, "", "list", "--user", "daemon", "--json", "--sort", "rp")
	var creds []mgmtapi.Credential
	if code != 0 || json.Unmarshal([]byte(out), &creds) != nil || len(creds) != 2 ||
		creds[0].RPID != "example.com" || creds[1].RPID != "github.com" || creds[0].UserName != "dana" {
		t.Fatalf("list --user daemon (%d): %s", code, out)
	}
	out, code = ctl(t, ctlBin, sock, "", "export", "--user", "daemon")
	var exp mgmtapi.Export
	if code != 0 || json.Unmarshal([]byte(out), &exp) != nil {
		t.Fatalf("export --user daemon (%d): %s", code, out)
	}
	if !exp.Exists || exp.User != "daemon" || exp.UID == nil || *exp.UID != 1 || exp.PINSet || exp.PINRetries != 8 ||
		exp.MinPINLength != 4 || exp.AlwaysUV || len(exp.Credentials) != 2 {
		t.Fatalf("export --user daemon: %+v", exp)
	}
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(filepath.Join(state, "users")) + `/[0-9a-f]{64}$`).MatchString(exp.Directory) {
		t.Fatalf("export's directory %q: want %s/users/<64 hex digits>", exp.Directory, state)
	}
	// Exactly the documented fields: no key material can be in it.
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	top := slices.Sorted(func(yield func(string) bool) {
		for k := range raw {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"alwaysUv", "credentials", "directory", "exists", "minPinLength", "pinRetries", "pinSet", "uid", "user"}; !slices.Equal(top, want) {
		t.Fatalf("export's fields %v, want %v", top, want)
	}
	var credKeys []string
	for k := range raw["credentials"].([]any)[0].(map[string]any) {
		credKeys = append(credKeys, k)
	}
	slices.Sort(credKeys)
	if want := []string{"algorithm", "createdAt", "credProtect", "credentialId", "discoverable", "lastUsedAt", "rpId", "rpName", "userDisplayName", "userId", "userName"}; !slices.Equal(credKeys, want) {
		t.Fatalf("export's credential fields %v, want %v", credKeys, want)
	}
	// A user without a namespace: nothing listed, nothing created.
	if out, code := ctl(t, ctlBin, sock, "", "list", "--user", "sys"); code != 0 || strings.TrimSpace(out) != "No passkeys." {
		t.Fatalf("list --user sys (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "", "export", "--user", "sys"); code != 0 || !strings.Contains(out, `"exists": false`) || !strings.Contains(out, `"credentials": []`) {
		t.Fatalf("export --user sys (%d): %s", code, out)
	}
	if entries, err := os.ReadDir(filepath.Join(state, "users")); err != nil || len(entries) != 1 {
		t.Fatalf("users dir: %d entries (%v), want daemon's alone", len(entries), err)
	}
	if out, code := ctl(t, ctlBin, sock, "", "list", "--user", "no-such-user-here"); code != 1 || !strings.Contains(out, `no user "no-such-user-here" in the user database`) {
		t.Fatalf("list --user of an unknown account (%d): %s", code, out)
	}
	// The served namespace cannot be removed under its user.
	if out, code := ctl(t, ctlBin, sock, "", "reset", "--user", "daemon", "--yes"); code != 1 || !strings.Contains(out, `user "daemon" is being served now`) {
		t.Fatalf("reset --user of the served user (%d): %s", code, out)
	}

	// Non-root callers: the owner is refused every --user, others
	// everything.
	for _, args := range [][]string{{"list", "--user", "daemon"}, {"export", "--user", "daemon"}} {
		if out, code := ctlAsNobody(t, pub, sock, args...); code != 4 || !strings.Contains(out, "refused: only root may name a user (--user)") {
			t.Errorf("%v as the owner (%d): %s", args, code, out)
		}
	}
	if out, code := ctlAsNobody(t, pub, sock, "reset", "--user", "daemon", "--yes"); code != 4 || !strings.Contains(out, "refused: only root may name a user (--user)") {
		t.Errorf("reset --user as the owner (%d): %s", code, out)
	}
	// uid 2 (bin) is neither root nor the owner: the socket refuses it
	// every operation, its own list included.
	for _, args := range [][]string{{"list"}, {"export"}, {"list", "--user", "daemon"}, {"reset", "--user", "daemon", "--yes"}} {
		if out, code := ctlAs(t, 2, pub, sock, args...); code != 4 || !strings.Contains(out, "not allowed") {
			t.Errorf("%v as uid 2 (%d): %s", args, code, out)
		}
	}
	d.stop()

	// Restarted serving the device's namespace: daemon's persists, and
	// root removes it, after confirmation.
	d = startDaemonArgs(t, bin, state, freeUDPPort(t), "swtpm", "--control", sock, "--owner", "nobody")
	defer d.stop()
	if out, code := ctl(t, ctlBin, sock, "", "list", "--user", "daemon", "--json"); code != 0 || json.Unmarshal([]byte(out), &creds) != nil || len(creds) != 2 {
		t.Fatalf("list --user daemon after a restart (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "n\n", "reset", "--user", "daemon", "--stdin"); code != 4 || !strings.Contains(out, "Remove the passkey namespace of daemon: all 2 passkeys, the PIN and the settings?") || !strings.Contains(out, "not removed") {
		t.Fatalf("reset --user answered no (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "y\n", "reset", "--user", "daemon", "--stdin"); code != 0 || !strings.Contains(out, "Removed the passkey namespace of daemon.") {
		t.Fatalf("reset --user daemon (%d): %s", code, out)
	}
	if entries, err := os.ReadDir(filepath.Join(state, "users")); err != nil || len(entries) != 0 {
		t.Fatalf("users dir after the removal: %d entries (%v)", len(entries), err)
	}
	if out, code := ctl(t, ctlBin, sock, "", "list", "--user", "daemon"); code != 0 || strings.TrimSpace(out) != "No passkeys." {
		t.Fatalf("list --user daemon after the removal (%d): %s", code, out)
	}
	if out, code := ctl(t, ctlBin, sock, "", "reset", "--user", "daemon", "--yes"); code != 5 || !strings.Contains(out, `user "daemon" has no passkey namespace`) {
		t.Fatalf("second reset --user daemon (%d): %s", code, out)
	}
	// The owner's namespace is the device's own: not removable this way.
	if out, code := ctl(t, ctlBin, sock, "", "reset", "--user", "nobody", "--yes"); code != 1 || !strings.Contains(out, `user "nobody" owns this device`) {
		t.Fatalf("reset --user of the owner (%d): %s", code, out)
	}
}
