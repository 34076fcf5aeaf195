package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestPutCredentialReplacesInOneCommit: the replacement of makeCredential
// step 18 is one write transaction (one commit, one set of syncs), and
// leaves the new credential, not the replaced ones.
func TestPutCredentialReplacesInOneCommit(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	mustPut(t, s, cred("old1", "rp", true), cred("old2", "rp", true), cred("other", "rp", true))
	before := s.Commits()
	// "gone" is not stored: skipped; the new credential's own ID too.
	if err := s.PutCredential(cred("new", "rp", true), []byte("old1"), []byte("old2"), []byte("gone"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	if n := s.Commits() - before; n != 1 {
		t.Errorf("replacement took %d commits, want 1", n)
	}
	for _, id := range []string{"old1", "old2"} {
		if _, err := s.Credential([]byte(id)); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after replacement: %v, want ErrNotFound", id, err)
		}
	}
	got, err := s.CredentialsByRP("rp")
	if err != nil || len(got) != 2 || string(got[0].ID) != "new" || string(got[1].ID) != "other" {
		t.Fatalf("RP's credentials after replacement: %v, %v", ids(got), err)
	}
	if n := s.CountCredentials(); n != 2 {
		t.Errorf("CountCredentials = %d, want 2", n)
	}
}

// copyDB is what a crash would leave: the file as the committed
// transactions wrote it, without anything the store still holds in
// memory. It opens the copy read-only.
func copyDB(t *testing.T, s *Store) *bolt.DB {
	t.Helper()
	b, err := os.ReadFile(s.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), dbName)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(p, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func deviceValue(t *testing.T, db *bolt.DB, name string) []byte {
	t.Helper()
	var out []byte
	if err := db.View(func(tx *bolt.Tx) error {
		out = bytes.Clone(tx.Bucket(bucketDevice).Get([]byte(name)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPutEventually: the value is seen at once and costs no commit on the
// caller's path; until the flusher writes it, the disk keeps the previous
// value (what a crash would leave); the flush writes it; a later Put
// supersedes it, whichever runs first.
func TestPutEventually(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Put("retries", []byte{7}); err != nil {
		t.Fatal(err)
	}
	before := s.Commits()
	s.PutEventually("retries", []byte{8})
	if n := s.Commits() - before; n != 0 {
		t.Errorf("PutEventually committed %d times on the caller's path", n)
	}
	if v, err := s.Get("retries"); err != nil || !bytes.Equal(v, []byte{8}) {
		t.Fatalf("Get after PutEventually = %v, %v; want [8]", v, err)
	}
	if v := deviceValue(t, copyDB(t, s), "retries"); !bytes.Equal(v, []byte{7}) {
		t.Fatalf("on disk before the flush: %v, want the previous [7]", v)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if v := deviceValue(t, copyDB(t, s), "retries"); !bytes.Equal(v, []byte{8}) {
		t.Fatalf("on disk after the flush: %v, want [8]", v)
	}

	// A durable Put after a pending value wins over it at the flush.
	s.PutEventually("retries", []byte{8})
	if err := s.Put("retries", []byte{6}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get("retries"); !bytes.Equal(v, []byte{6}) {
		t.Errorf("Get after Put = %v, want [6]", v)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if v := deviceValue(t, copyDB(t, s), "retries"); !bytes.Equal(v, []byte{6}) {
		t.Errorf("on disk after Put and a flush: %v, want [6]", v)
	}

	// Close writes what is pending; Wipe keeps a pending value it is told to keep.
	s.PutEventually("kept", []byte("k"))
	s.PutEventually("retries", []byte{8})
	mustClose(t, s)
	s = openStore(t, dir)
	if v, err := s.Get("retries"); err != nil || !bytes.Equal(v, []byte{8}) {
		t.Errorf("after Close and reopen: %v, %v; want [8]", v, err)
	}
	s.PutEventually("kept", []byte("k2"))
	s.PutEventually("dropped", []byte("d"))
	if err := s.Wipe("kept"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("kept"); err != nil || string(v) != "k2" {
		t.Errorf("kept value after Wipe: %q, %v", v, err)
	}
	if _, err := s.Get("dropped"); !errors.Is(err, ErrNotFound) {
		t.Errorf("pending value after Wipe: %v, want ErrNotFound", err)
	}
	mustClose(t, s)
}

// TestFlusherWritesPendingValues: the background flusher, not only Close,
// writes a PutEventually value.
func TestFlusherWritesPendingValues(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	s.PutEventually("v", []byte("x"))
	deadline := time.Now().Add(5 * touchFlushInterval)
	for !bytes.Equal(deviceValue(t, copyDB(t, s), "v"), []byte("x")) {
		if time.Now().After(deadline) {
			t.Fatalf("not flushed after %v", 5*touchFlushInterval)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestForEachCredential: the walk sees every credential once, across
// several batches; fn runs outside the store's transactions and locks
// (Unlock, a writer of the store's lock, completes inside fn); a
// credential deleted during the walk leaves the others seen once; ErrSkipAll
// ends the walk without an error; fn's own error ends it with that error.
func TestForEachCredential(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const n = 3*iterBatch + 5
	want := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		mustPut(t, s, cred(id, "rp", true))
		want[id] = true
	}
	seen := map[string]int{}
	var deleted string
	err := s.ForEachCredential(func(c *Credential) error {
		seen[string(c.ID)]++
		if len(seen) == 1 {
			done := make(chan error, 1)
			go func() { done <- s.Unlock(testKey(1)) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Unlock inside fn: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("fn runs while the walk holds the store's lock")
			}
		}
		if len(seen) == iterBatch+1 {
			// Delete one not seen yet.
			for id := range want {
				if seen[id] == 0 {
					deleted = id
					break
				}
			}
			if err := s.DeleteCredential([]byte(deleted)); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The deleted one may have been read with the current batch already.
	if seen[deleted] > 1 {
		t.Errorf("deleted credential %s seen %d times", deleted, seen[deleted])
	}
	delete(want, deleted)
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s seen %d times, want once", id, seen[id])
		}
	}

	calls := 0
	if err := s.ForEachCredential(func(*Credential) error { calls++; return ErrSkipAll }); err != nil || calls != 1 {
		t.Errorf("ErrSkipAll: %d calls, %v; want 1 call, nil", calls, err)
	}
	boom := errors.New("boom")
	if err := s.ForEachCredential(func(*Credential) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error: %v", err)
	}
}

// mappedKB is how much of the store file this process has resident
// through its mappings (/proc/self/smaps), in kB.
func mappedKB(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	kb, in := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			in = len(f) == 6 && f[5] == path
		case in && len(f) == 3 && f[0] == "Rss:":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			kb += n
		}
	}
	return kb
}

// TestWalksLeaveTheFileUnresident: opening the store (which counts every
// record) and walking every credential read every page of the file; both
// let go of the pages, so the process's resident memory does not grow
// with the store (the pages stay in the page cache).
func TestWalksLeaveTheFileUnresident(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for i := range 200 {
		c := cred(fmt.Sprintf("c%03d", i), "rp", true)
		c.KeyBlob = bytes.Repeat([]byte{byte(i)}, 3000) // a page per record
		mustPut(t, s, c)
	}
	mustClose(t, s)
	path := filepath.Join(dir, dbName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	// Open itself maps the meta pages, the freelist and the buckets' roots.
	limit := int(fi.Size() / 1024 / 4)
	if kb := mappedKB(t, path); kb > limit {
		t.Errorf("after Open: %d kB of the %d kB file resident, want at most %d", kb, fi.Size()/1024, limit)
	}
	n := 0
	if err := s.ForEachCredential(func(*Credential) error { n++; return nil }); err != nil || n != 200 {
		t.Fatalf("walk: %d credentials, %v", n, err)
	}
	if kb := mappedKB(t, path); kb > limit {
		t.Errorf("after a walk: %d kB of the %d kB file resident, want at most %d", kb, fi.Size()/1024, limit)
	}
	// Without the release the walk leaves the file resident: the check
	// above can fail.
	var total int
	if err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCred).ForEach(func(k, v []byte) error { total += len(v); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if kb := mappedKB(t, path); kb < total/1024/2 {
		t.Errorf("reading every record without a release left %d kB resident: the measure does not work", kb)
	}
}
