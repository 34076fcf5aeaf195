package test

// PIN tests that need more than a client: a daemon killed during a
// wrong-PIN check, and a search of the state dir for anything derived
// from the PIN.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pinutil runs interop/pinutil.py and returns its one-line answer.
func pinutil(t *testing.T, port int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := pythonCmd(ctx, t, port, append([]string{"pinutil.py"}, args...)...)
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// tpmCCUnseal is TPM2_Unseal's command code: the PIN check.
const tpmCCUnseal = 0x0000015E

// stallingProxy forwards raw TPM commands between the daemon and swtpm
// and, once armed, holds back the first TPM2_Unseal: the moment the daemon
// is waiting for the TPM to judge a PIN.
type stallingProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	armed    bool
	stalled  chan struct{}
}

func newStallingProxy(t *testing.T, path, upstream string) *stallingProxy {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, upstream: upstream, stalled: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *stallingProxy) arm() { p.mu.Lock(); p.armed = true; p.mu.Unlock() }

func (p *stallingProxy) serve(down net.Conn) {
	defer down.Close()
	up, err := net.Dial("unix", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	go io.Copy(down, up) // responses
	for {
		hdr := make([]byte, 10)
		if _, err := io.ReadFull(down, hdr); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > 1<<16 {
			return
		}
		body := make([]byte, size-10)
		if _, err := io.ReadFull(down, body); err != nil {
			return
		}
		p.mu.Lock()
		stall := p.armed && binary.BigEndian.Uint32(hdr[6:10]) == tpmCCUnseal
		if stall {
			p.armed = false
		}
		p.mu.Unlock()
		if stall {
			close(p.stalled)
			io.Copy(io.Discard, down) // hold it until the daemon dies
			return
		}
		if _, err := up.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

func startSwtpm(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "swtpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl"),
		"--flags", "not-need-init,startup-clear")
	cmd.Stderr = newLineLogger(t, "swtpm: ")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("swtpm socket did not appear")
	return ""
}

// TestPINAttemptCountedWhenKilledDuringCheck: the retry counter is
// decremented durably before the TPM sees the guess, so killing the
// daemon while the TPM is judging a wrong PIN refunds nothing.
func TestPINAttemptCountedWhenKilledDuringCheck(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	tpmDir, err := os.MkdirTemp("", "pk-tpm-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tpmDir) })
	sock := startSwtpm(t, tpmDir)
	proxy := newStallingProxy(t, filepath.Join(tpmDir, "proxy.sock"), sock)
	stateDir := newStateDir(t)
	spec := "unix:" + filepath.Join(tpmDir, "proxy.sock")

	d := startDaemonTPM(t, bin, stateDir, freeUDPPort(t), spec)
	if got := pinutil(t, d.port, "set", "1234"); got != "OK" {
		t.Fatalf("set PIN: %s", got)
	}
	if got := pinutil(t, d.port, "retries"); got != "8" {
		t.Fatalf("retries after set: %s", got)
	}
	proxy.arm()
	done := make(chan string, 1)
	go func() { done <- pinutil(t, d.port, "token", "0000") }()
	select {
	case <-proxy.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the PIN check never reached the TPM")
	}
	d.kill()
	t.Logf("killed passkeyd while the TPM held the wrong PIN; client saw %q", <-done)

	d = startDaemonTPM(t, bin, stateDir, freeUDPPort(t), spec)
	if got := pinutil(t, d.port, "retries"); got != "7" {
		t.Fatalf("retries after a kill during the check: %s, want 7 (the attempt counted)", got)
	}
	if got := pinutil(t, d.port, "token", "1234"); got != "OK" {
		t.Fatalf("right PIN after restart: %s", got)
	}
	if got := pinutil(t, d.port, "retries"); got != "8" {
		t.Fatalf("retries after the right PIN: %s", got)
	}
	d.stop()
}

// TestStateDirHoldsNoPINDerivedValue searches every file of the state dir
// (the store and the private swtpm's state) for the PINs and the values a
// PIN can be tested against offline.
func TestStateDirHoldsNoPINDerivedValue(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	d := startDaemon(t, bin, stateDir, freeUDPPort(t))
	pins := []string{"271828", "314159265"}
	steps := [][]string{{"set", pins[0]}, {"token", pins[0]}, {"change", pins[0], pins[1]}, {"token", pins[1]}}
	for _, s := range steps {
		if got := pinutil(t, d.port, s...); got != "OK" {
			t.Fatalf("%v: %s", s, got)
		}
	}
	d.stop()

	var needles [][]byte
	for _, pin := range pins {
		h := sha256.Sum256([]byte(pin))
		for _, v := range [][]byte{[]byte(pin), h[:], h[:16]} {
			needles = append(needles, v,
				[]byte(hex.EncodeToString(v)), []byte(strings.ToUpper(hex.EncodeToString(v))),
				[]byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v)))
		}
	}
	var files int
	sawControl := false
	err := filepath.Walk(stateDir, func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		// Control: the search does see clear text that is there (bbolt's
		// bucket names), so a clean result means something.
		if bytes.Contains(b, []byte("device")) {
			sawControl = true
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s contains a PIN-derived value (%q...)", path, n[:min(4, len(n))])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 || !sawControl {
		t.Fatalf("searched %d files, control string seen: %v", files, sawControl)
	}
	t.Logf("searched %d files for %d PIN-derived values: none found", files, len(needles))
}
