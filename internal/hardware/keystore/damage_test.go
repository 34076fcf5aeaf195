package keystore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storeWithData makes a closed store holding a few credentials and device
// values, and returns its dir, file bytes and bbolt page size and high-water
// mark (pages in use), read from the newest meta page.
func storeWithData(t *testing.T) (dir string, data []byte, pageSize, pages int64) {
	t.Helper()
	dir = t.TempDir()
	s := openStore(t, dir)
	for i := range 20 {
		mustPut(t, s, cred(strings.Repeat(string(rune('a'+i)), 40), "example.com", i%2 == 0))
	}
	if err := s.Put("sealed", bytes.Repeat([]byte{7}, 300)); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	data, err := os.ReadFile(filepath.Join(dir, dbName))
	if err != nil {
		t.Fatal(err)
	}
	m0, ok0 := parseMeta(bytes.NewReader(data), 0)
	if !ok0 {
		t.Fatal("meta 0 of a fresh store is invalid")
	}
	m1, ok1 := parseMeta(bytes.NewReader(data), int64(m0.pageSize))
	m := m0
	if ok1 && m1.txid > m0.txid {
		m = m1
	}
	if m.hi < 6 {
		t.Fatalf("only %d pages in use: the test wants data pages past the first four", m.hi)
	}
	return dir, data, int64(m.pageSize), int64(m.hi)
}

// TestOpenRefusesDamagedFile: a truncated or empty store file is refused
// with ErrDamaged and a one-line message naming the file and what to do;
// Open neither panics, faults (SIGBUS from the mapping), nor changes a byte
// of the file. Before the check, 0 bytes became a new empty store and a
// cut inside the data pages killed the process with SIGBUS.
func TestOpenRefusesDamagedFile(t *testing.T) {
	_, data, ps, pages := storeWithData(t)
	garbage := bytes.Clone(data[:2*ps])
	copy(garbage[boltPageHeader:], "not a meta")
	copy(garbage[ps+boltPageHeader:], "not a meta")
	cases := map[string][]byte{
		"empty":                 {},
		"mid first meta":        data[:50],
		"mid second meta":       data[:ps+100],
		"after the metas":       data[:2*ps],
		"mid data":              data[:(pages-1)*ps+ps/2],
		"one page short":        data[:(pages-1)*ps],
		"no valid meta page":    garbage,
		"only second meta left": append(make([]byte, ps), data[ps:(pages-1)*ps]...),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, dbName)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded on a damaged file")
			}
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("err = %v, want ErrDamaged", err)
			}
			msg := err.Error()
			for _, want := range []string{"store " + path + " is damaged (", "left it unchanged", "restore a backup of it to " + path, "mv " + path + " " + path + ".damaged"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q: %s", want, msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, content) {
				t.Errorf("the damaged file changed: %d bytes before, %d after", len(content), len(after))
			}
			t.Log(msg)
		})
	}
}

// TestOpenAcceptsCutBeyondHighWaterMark: bbolt grows its file ahead of use;
// bytes past the pages in use hold nothing, so losing them is no damage.
func TestOpenAcceptsCutBeyondHighWaterMark(t *testing.T) {
	dir, data, ps, pages := storeWithData(t)
	if int64(len(data)) == pages*ps {
		t.Skip("the file has no spare pages to cut")
	}
	if err := os.Truncate(filepath.Join(dir, dbName), pages*ps); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	defer mustClose(t, s)
	if v, err := s.Get("sealed"); err != nil || len(v) != 300 {
		t.Errorf("Get after the cut: %d bytes, %v", len(v), err)
	}
}

// TestOpenCreatesCompleteFile: a new store appears only as a complete bbolt
// file (never empty), and no temporary file is left behind.
func TestOpenCreatesCompleteFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != dbName {
		t.Errorf("state dir holds %v, want only %s", entries, dbName)
	}
	data, err := os.ReadFile(filepath.Join(dir, dbName))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 4*minPageSize || binary.NativeEndian.Uint32(data[boltPageHeader:]) != boltMagic {
		t.Errorf("new store file is %d bytes without the bbolt magic", len(data))
	}
	if reason := checkFile(bytes.NewReader(data), int64(len(data))); reason != "" {
		t.Errorf("checkFile on a new store: %s", reason)
	}
}

// TestFileShrunkWhileOpenIsAnError: a fault on the mapped file (here it is
// cut under an open store) fails the read with ErrCorrupt instead of
// killing the process with SIGBUS.
func TestFileShrunkWhileOpenIsAnError(t *testing.T) {
	dir, _, ps, _ := storeWithData(t)
	s := openStore(t, dir)
	defer s.Close()
	if err := os.Truncate(filepath.Join(dir, dbName), 2*ps); err != nil {
		t.Fatal(err)
	}
	_, err := s.Credentials()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Credentials on a cut file = %v, want ErrCorrupt", err)
	}
	t.Log(err)
}
