package test

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestTPMClearedIsRefused: when the TPM that sealed the device secrets is
// gone (here: the private swtpm's state removed, as after a TPM clear),
// the daemon refuses to start with a clear message instead of creating a
// new, empty identity over the old store, and the store is left as it was.
func TestTPMClearedIsRefused(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	d := startDaemon(t, bin, stateDir, freeUDPPort(t))
	if got := pinutil(t, d.port, "set", "1234"); got != "OK" {
		t.Fatalf("set PIN: %s", got)
	}
	d.stop()
	db := filepath.Join(stateDir, "passkeyd.db")
	before := dumpDB(t, db)
	// "Clear" the TPM: its state (seeds included) is gone.
	if err := os.RemoveAll(filepath.Join(stateDir, "swtpm")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--state-dir", stateDir, "--tpm", "swtpm",
		"--transport", "udp:127.0.0.1:0", "--prompt", "deny", "--control", "", "--log-level", "error")
	done := make(chan struct{})
	var (
		out []byte
		err error
	)
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("passkeyd started on a store whose TPM is gone")
	}
	if err == nil {
		t.Fatalf("passkeyd exited 0 on a store whose TPM is gone:\n%s", out)
	}
	msg := strings.TrimSpace(string(out))
	if !strings.Contains(msg, "TPM was cleared or is not the one this state dir was created with") {
		t.Errorf("message does not say what happened: %q", msg)
	}
	if n := strings.Count(msg, "\n"); n > 0 {
		t.Errorf("message is %d lines, want one: %q", n+1, msg)
	}
	after := dumpDB(t, db)
	if len(before) < 4 || !maps.Equal(before, after) {
		t.Errorf("the store changed although the daemon refused to start (%d records before, %d after)", len(before), len(after))
	}
	t.Logf("refused as it should: %s", msg)
}

// dumpDB reads every bucket's records (read-only), keyed bucket/key.
func dumpDB(t *testing.T, path string) map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
