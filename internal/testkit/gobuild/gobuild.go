// Package gobuild builds the programs that tests run (passkeyd,
// passkeyctl, a fake pinentry), each once per test binary.
//
// The executables go to one directory per process, mode 0755, so that a
// test may run them as other users (syscall.Credential). A TestMain that
// is gobuild.Main, or calls RemoveAll after m.Run, leaves nothing behind.
//
// Layer: tests only; it imports nothing of passkeyd.
package gobuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu     sync.Mutex
	dir    string
	n      int // builds started: each has its own subdirectory
	builds = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Binary builds pkg (an import path, or a path relative to the test's
// package directory) with `go build` once per process, and returns the
// executable. A failed build fails tb, and every later test asking for it.
func Binary(tb testing.TB, pkg string) string {
	tb.Helper()
	mu.Lock()
	b, ok := builds[pkg]
	if !ok {
		b = &build{}
		builds[pkg] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(pkg) })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

func goBuild(pkg string) (string, error) {
	mu.Lock()
	if dir == "" {
		d, err := os.MkdirTemp("", "gobuild-")
		if err == nil {
			err = os.Chmod(d, 0o755) // others may run what is in it
		}
		if err != nil {
			mu.Unlock()
			return "", fmt.Errorf("gobuild: %w", err)
		}
		dir = d
	}
	n++
	sub := filepath.Join(dir, fmt.Sprint(n))
	mu.Unlock()
	// The executable keeps the package's name (a test may look for it).
	if err := os.Mkdir(sub, 0o755); err != nil {
		return "", fmt.Errorf("gobuild: %w", err)
	}
	out := filepath.Join(sub, filepath.Base(pkg))
	if msg, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out, nil
}

// Main is a TestMain that removes the executables after the tests.
func Main(m *testing.M) {
	code := m.Run()
	RemoveAll()
	os.Exit(code)
}

// RemoveAll removes every executable built; a TestMain that does more
// than Main calls it after m.Run.
func RemoveAll() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
}
