package test

// Interop tests: build bin/passkeyd, run it on a UDP CTAPHID transport with a
// private swtpm, and drive it with Debian's python3-fido2 0.9.1 (test/interop/*.py).
//
//	go test ./test/ -run Interop -v
//
// Prerequisites: /usr/bin/python3 with the fido2 module, swtpm and swtpm_setup.
// When they are missing and the test runs as root, it installs them with
// apt-get (python3-fido2 swtpm swtpm-tools); otherwise the tests skip, except
// with CI=true, where a missing prerequisite is a failure.
//
// Environment:
//
//	PASSKEYD_BIN     use this daemon binary instead of building ./cmd/passkeyd
//	PASSKEYD_KEEP=1  keep the state directories of the runs (logged)

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

const (
	python         = "/usr/bin/python3"
	readyTimeout   = 10 * time.Second
	stopTimeout    = 15 * time.Second
	pythonTimeout  = 5 * time.Minute
	ctaphidInitCmd = 0x86
)

var (
	prereqOnce sync.Once
	prereqMsg  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.RemoveAll()
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// Prerequisites and build

func missingPrereqs() []string {
	var missing []string
	if _, err := os.Stat(python); err != nil {
		missing = append(missing, python)
	} else if out, err := exec.Command(python, "-c", "import fido2").CombinedOutput(); err != nil {
		missing = append(missing, "python3-fido2 ("+strings.TrimSpace(lastLine(string(out)))+")")
	}
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

func installPrereqs() string {
	missing := missingPrereqs()
	if len(missing) == 0 {
		return ""
	}
	if os.Geteuid() != 0 {
		return fmt.Sprintf("missing %s and not root: install python3-fido2 swtpm swtpm-tools",
			strings.Join(missing, ", "))
	}
	apt := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 20))
		}
		return nil
	}
	install := []string{"install", "-y", "--no-install-recommends", "python3-fido2", "swtpm", "swtpm-tools"}
	if err := apt(install...); err != nil {
		if err := apt("update"); err != nil {
			return err.Error()
		}
		if err := apt(install...); err != nil {
			return err.Error()
		}
	}
	if missing := missingPrereqs(); len(missing) > 0 {
		return "still missing after apt-get install: " + strings.Join(missing, ", ")
	}
	return ""
}

func requirePrereqs(t *testing.T) {
	t.Helper()
	prereqOnce.Do(func() { prereqMsg = installPrereqs() })
	if prereqMsg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("interop prerequisites: " + prereqMsg)
		}
		t.Skip("interop prerequisites: " + prereqMsg)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root %s has no go.mod: %v", root, err)
	}
	return root
}

// daemonBinary builds passkeyd as shipped, without the tpmsim tag: these
// tests drive real TPMs (swtpm) and should run the production binary. A
// test that passes --tpm sim gets ErrNoSimulator's message, not a skip.
func daemonBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PASSKEYD_BIN"); bin != "" {
		return bin
	}
	return gobuild.Binary(t, "github.com/passkeyd/passkeyd/cmd/passkeyd")
}

// ---------------------------------------------------------------------------
// Streaming output into t.Log

// lineLogger writes every complete line to t.Log with a prefix, and keeps a
// copy. After close() it only keeps the copy (t.Log after a test ends panics).
type lineLogger struct {
	t      *testing.T
	prefix string

	mu      sync.Mutex
	partial []byte
	all     bytes.Buffer
	closed  bool
}

func newLineLogger(t *testing.T, prefix string) *lineLogger {
	return &lineLogger{t: t, prefix: prefix}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		if !l.closed {
			l.t.Log(l.prefix + line)
		}
	}
	return len(p), nil
}

func (l *lineLogger) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 && !l.closed {
		l.t.Log(l.prefix + string(l.partial))
	}
	l.partial = nil
	l.closed = true
}

func (l *lineLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// ---------------------------------------------------------------------------
// The daemon

type daemon struct {
	t        *testing.T
	bin      string
	stateDir string
	port     int
	cmd      *exec.Cmd
	log      *lineLogger
	done     chan struct{}
	waitErr  error
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func newStateDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("PASSKEYD_KEEP") == "1" {
		dir, err := os.MkdirTemp("", "passkeyd-interop-state-")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("state dir kept: %s", dir)
		return dir
	}
	return t.TempDir()
}

// startDaemon starts passkeyd and waits until it answers CTAPHID INIT.
func startDaemon(t *testing.T, bin, stateDir string, port int) *daemon {
	t.Helper()
	return startDaemonTPM(t, bin, stateDir, port, "swtpm")
}

// startDaemonTPM is startDaemon with a chosen --tpm.
func startDaemonTPM(t *testing.T, bin, stateDir string, port int, tpmSpec string) *daemon {
	t.Helper()
	return startDaemonArgs(t, bin, stateDir, port, tpmSpec, "--control", "")
}

// startDaemonArgs is startDaemon with a chosen --tpm and extra flags.
func startDaemonArgs(t *testing.T, bin, stateDir string, port int, tpmSpec string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: bin, stateDir: stateDir, port: port, done: make(chan struct{})}
	d.log = newLineLogger(t, "passkeyd: ")
	args := append([]string{"serve",
		"--state-dir", stateDir,
		"--tpm", tpmSpec,
		"--transport", fmt.Sprintf("udp:127.0.0.1:%d", port),
		"--prompt", "approve-all",
		"--log-level", "info"}, extra...)
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	// Own process group, so anything the daemon leaves behind can be found.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start passkeyd: %v", err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		d.log.close()
		close(d.done)
	}()
	t.Cleanup(d.cleanup)

	start := time.Now()
	for {
		select {
		case <-d.done:
			t.Fatalf("passkeyd exited before it was ready: %v\n%s", d.waitErr, tail(d.log.String(), 40))
		default:
		}
		if ctaphidInit(port, 200*time.Millisecond) == nil {
			t.Logf("passkeyd pid %d ready on udp 127.0.0.1:%d after %v",
				d.cmd.Process.Pid, port, time.Since(start).Round(time.Millisecond))
			return d
		}
		if time.Since(start) > readyTimeout {
			t.Fatalf("passkeyd did not answer CTAPHID INIT on udp port %d within %v", port, readyTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and requires a clean exit (status 0) with no leftovers.
func (d *daemon) stop() {
	t := d.t
	t.Helper()
	if d.exited() {
		t.Errorf("passkeyd had already exited: %v", d.waitErr)
		return
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Errorf("passkeyd did not exit within %v of SIGTERM; killing it", stopTimeout)
		syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	if d.waitErr != nil || d.cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("passkeyd did not exit cleanly after SIGTERM: %v (state %v)", d.waitErr, d.cmd.ProcessState)
	} else {
		t.Logf("passkeyd exited 0 after SIGTERM")
	}
	if left := d.leftovers(2 * time.Second); len(left) > 0 {
		t.Errorf("processes left behind after passkeyd stopped: %s", strings.Join(left, "; "))
		d.killLeftovers()
	}
}

// kill sends SIGKILL to the daemon only (not its children) and waits for it.
func (d *daemon) kill() {
	if d.exited() {
		return
	}
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
}

func (d *daemon) cleanup() {
	if !d.exited() {
		syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	d.killLeftovers()
}

// leftovers lists live processes in the daemon's process group or whose
// command line names its state directory, waiting up to grace for them to go.
func (d *daemon) leftovers(grace time.Duration) []string {
	deadline := time.Now().Add(grace)
	for {
		left := d.findLeftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			var s []string
			for pid, cmdline := range left {
				s = append(s, fmt.Sprintf("pid %d: %s", pid, cmdline))
			}
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemon) findLeftovers() map[int]string {
	left := map[int]string{}
	pgid := d.cmd.Process.Pid
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a zombie
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			left[pid] = cmdline
			continue
		}
		if strings.Contains(cmdline, d.stateDir) {
			left[pid] = cmdline
		}
	}
	return left
}

func (d *daemon) killLeftovers() {
	for pid := range d.findLeftovers() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// ctaphidInit sends one CTAPHID INIT on the broadcast channel and waits for
// the matching reply.
func ctaphidInit(port int, timeout time.Duration) error {
	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return err
	}
	defer conn.Close()
	nonce := make([]byte, 8)
	rand.Read(nonce)
	pkt := make([]byte, 64)
	copy(pkt, []byte{0xff, 0xff, 0xff, 0xff, ctaphidInitCmd, 0, 8})
	copy(pkt[7:], nonce)
	if _, err := conn.Write(pkt); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		if n >= 15 && buf[4] == ctaphidInitCmd && bytes.Equal(buf[7:15], nonce) {
			return nil
		}
	}
}

// ---------------------------------------------------------------------------
// Running the python side

func interopDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "test", "interop")
}

func pythonCmd(ctx context.Context, t *testing.T, port int, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = interopDir(t)
	cmd.Env = append(os.Environ(),
		"PASSKEYD_UDP_PORT="+strconv.Itoa(port),
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
	)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runPython runs a python command, streaming its output into t.Log.
func runPython(t *testing.T, port int, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pythonTimeout)
	defer cancel()
	out := newLineLogger(t, "py: ")
	defer out.close()
	cmd := pythonCmd(ctx, t, port, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", pythonTimeout, err)
	}
	return out.String(), err
}

func runUnittestModule(t *testing.T, module string) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	d := startDaemon(t, bin, newStateDir(t), freeUDPPort(t))
	out, err := runPython(t, d.port, "-m", "unittest", "-v", module)
	if err != nil {
		t.Errorf("python -m unittest %s: %v\n%s", module, err, unittestSummary(out))
	}
	if d.exited() {
		t.Fatalf("passkeyd died during the tests: %v", d.waitErr)
	}
	d.stop()
}

// unittestSummary extracts the failing test names and the final tally.
func unittestSummary(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "FAIL:") || strings.HasPrefix(l, "ERROR:") ||
			strings.HasPrefix(l, "FAILED") || strings.HasPrefix(l, "Ran ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// Tests

func TestInteropCTAP2(t *testing.T) { runUnittestModule(t, "test_ctap2") }

func TestInteropU2F(t *testing.T) { runUnittestModule(t, "test_u2f") }

func TestInteropCTAPHID(t *testing.T) { runUnittestModule(t, "test_ctaphid") }

// TestInteropCrashDurability SIGKILLs the daemon the moment a makeCredential
// (discoverable) has been acknowledged, restarts it on the same state
// directory, and requires that the credentials still authenticate.
func TestInteropCrashDurability(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	port := freeUDPPort(t)
	credFile := filepath.Join(t.TempDir(), "creds.json")

	d := startDaemon(t, bin, stateDir, port)

	ctx, cancel := context.WithTimeout(context.Background(), pythonTimeout)
	defer cancel()
	reg := pythonCmd(ctx, t, port, "crashcheck.py", "register", credFile)
	pyLog := newLineLogger(t, "py: ")
	defer pyLog.close()
	reg.Stderr = pyLog
	stdout, err := reg.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "REGISTERED" && !killed {
			d.kill()
			killed = true
			t.Logf("makeCredential acknowledged: passkeyd (pid %d) SIGKILLed", d.cmd.Process.Pid)
		}
		pyLog.Write([]byte(line + "\n"))
	}
	io.Copy(io.Discard, stdout)
	if err := reg.Wait(); err != nil {
		t.Fatalf("crashcheck.py register: %v", err)
	}
	if !killed {
		t.Fatal("crashcheck.py register never printed REGISTERED")
	}

	// A daemon that dies must not leave its swtpm running (a restarted daemon
	// could not lock the TPM state then). Report it, then clear it away so the
	// durability check below still means something.
	if left := d.leftovers(2 * time.Second); len(left) > 0 {
		t.Errorf("after SIGKILL of passkeyd, its children survived: %s", strings.Join(left, "; "))
		d.killLeftovers()
	}

	d2 := startDaemon(t, bin, stateDir, port)
	if _, err := runPython(t, port, "crashcheck.py", "authenticate", credFile); err != nil {
		t.Errorf("credentials did not survive kill -9: %v", err)
	}
	d2.stop()
}

// ---------------------------------------------------------------------------

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestInteropPIN(t *testing.T) { runUnittestModule(t, "test_pin") }

func TestInteropCredentialManagement(t *testing.T) { runUnittestModule(t, "test_credman") }

func TestInteropExtensions(t *testing.T) { runUnittestModule(t, "test_extensions") }
