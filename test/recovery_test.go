package test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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

// runServeOnce runs `passkeyd serve` on stateDir (private swtpm, UDP on a
// free port, nobody to ask, no control socket, info logs) and expects it to
// refuse to start. It returns stderr and the exit code; a daemon still
// running after a minute is killed and fails the test. extra flags follow.
func runServeOnce(t *testing.T, bin, stateDir string, tpmSpec string, extra ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--state-dir", stateDir, "--tpm", tpmSpec,
		"--transport", "udp:127.0.0.1:0", "--prompt", "deny", "--control", ""}, extra...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("passkeyd kept running instead of refusing to start:\n%s", tail(stderr.String(), 10))
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stderr.String(), 0
	case errors.As(err, &ee):
		return stderr.String(), ee.ExitCode()
	}
	t.Fatalf("run passkeyd: %v", err)
	return "", 0
}

// noRuntimeFault fails the test when out shows a Go panic or runtime fault.
func noRuntimeFault(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{"panic:", "fatal error:", "SIGBUS", "SIGSEGV", "goroutine "} {
		if strings.Contains(out, s) {
			t.Errorf("output shows a Go runtime fault (%q):\n%s", s, tail(out, 20))
		}
	}
}

// boltLayout returns a bbolt file's page size and pages in use, from the
// valid meta page with the higher txid (offsets per go.etcd.io/bbolt
// internal/common/meta.go: 16-byte page header, then magic, version,
// pageSize, flags, root{pgid, seq}, freelist, pgid, txid, checksum).
func boltLayout(t *testing.T, data []byte) (pageSize, pages int64) {
	t.Helper()
	le := binary.LittleEndian
	meta := func(off int) (ps, hi, txid uint64, ok bool) {
		if len(data) < off+16+64 || le.Uint32(data[off+16:]) != 0xED0CDAED {
			return 0, 0, 0, false
		}
		return uint64(le.Uint32(data[off+24:])), le.Uint64(data[off+56:]), le.Uint64(data[off+64:]), true
	}
	ps0, hi0, tx0, ok := meta(0)
	if !ok {
		t.Fatal("store has no bbolt meta page")
	}
	_, hi1, tx1, ok1 := meta(int(ps0))
	if ok1 && tx1 > tx0 {
		hi0 = hi1
	}
	return int64(ps0), int64(hi0)
}

// TestDamagedStoreExitsWithOneLine: a store file cut short (empty, inside
// either meta page, right after them, inside the data pages) makes the
// daemon exit 1 with one line that says the store is damaged, names the
// file and says what to do, without a Go runtime fault (a cut in the data
// pages used to kill it with SIGBUS, so systemd restarted it forever; an
// empty file used to become a new, empty store), and leaves every byte of
// the file as it was.
func TestDamagedStoreExitsWithOneLine(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	d := startDaemon(t, bin, stateDir, freeUDPPort(t))
	if got := pinutil(t, d.port, "set", "1234"); got != "OK" {
		t.Fatalf("set PIN: %s", got)
	}
	d.stop()
	db := filepath.Join(stateDir, "passkeyd.db")
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	ps, pages := boltLayout(t, good)
	if pages < 5 {
		t.Fatalf("store uses %d pages: no data page past the first four to cut", pages)
	}
	for _, size := range []int64{0, 50, ps + 100, 2 * ps, (pages-1)*ps + ps/2} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			cut := good[:size]
			if err := os.WriteFile(db, cut, 0o600); err != nil {
				t.Fatal(err)
			}
			out, code := runServeOnce(t, bin, stateDir, "swtpm")
			noRuntimeFault(t, out)
			if code != 1 {
				t.Errorf("exit code %d, want 1:\n%s", code, tail(out, 10))
			}
			line := strings.TrimSuffix(out, "\n")
			if strings.Contains(line, "\n") {
				t.Errorf("stderr is %d lines, want one:\n%s", strings.Count(out, "\n"), out)
			}
			for _, want := range []string{"passkeyd: store " + db + " is damaged (", "left it unchanged",
				"restore a backup of it to " + db, "mv " + db + " " + db + ".damaged"} {
				if !strings.Contains(line, want) {
					t.Errorf("message lacks %q: %s", want, line)
				}
			}
			if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, cut) {
				t.Errorf("the damaged file changed (%d bytes before, %d after, %v)", len(cut), len(after), err)
			}
			t.Logf("refused: %s", line)
		})
	}
}

// TestDamagedSealedSecretIsNotTPMCleared: a device secret's sealed blob cut
// short inside an intact store makes the daemon exit 1 with one line that
// blames the store, not the TPM ("the TPM was cleared" would send the admin
// after a TPM that is fine), and changes nothing in the store.
func TestDamagedSealedSecretIsNotTPMCleared(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	startDaemon(t, bin, stateDir, freeUDPPort(t)).stop()
	db := filepath.Join(stateDir, "passkeyd.db")
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("device"))
		v := b.Get([]byte("wrap-key.sealed"))
		if len(v) < 100 {
			return fmt.Errorf("wrap-key.sealed is %d bytes", len(v))
		}
		return b.Put([]byte("wrap-key.sealed"), bytes.Clone(v[:len(v)-40]))
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	before := dumpDB(t, db)
	out, code := runServeOnce(t, bin, stateDir, "swtpm")
	noRuntimeFault(t, out)
	if code != 1 {
		t.Errorf("exit code %d, want 1:\n%s", code, tail(out, 10))
	}
	// The last line: the TPM's start-up logs come first at info level.
	line := lastLine(out)
	if strings.Contains(out, "TPM was cleared") || !strings.Contains(line, `device secret "wrap-key.sealed" in the store is damaged, not the TPM`) {
		t.Errorf("message does not blame the store: %s", line)
	}
	if !strings.HasPrefix(line, "passkeyd: ") || strings.Count(out, "passkeyd: ") != 1 {
		t.Errorf("want one error line, got:\n%s", out)
	}
	if after := dumpDB(t, db); !maps.Equal(before, after) {
		t.Error("the store changed although the daemon refused to start")
	}
	t.Logf("refused: %s", line)
}
