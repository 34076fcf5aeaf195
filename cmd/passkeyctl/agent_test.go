package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/pinentry"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

func TestMain(m *testing.M) {
	if path := os.Getenv("PASSKEYCTL_TEST_DAEMON"); path != "" {
		serveForeignDaemon(path)
		return
	}
	if path := os.Getenv("PASSKEYCTL_TEST_RECORDER"); path != "" {
		serveRecorder(path)
		return
	}
	minBackoff, maxBackoff = 50*time.Millisecond, 200*time.Millisecond
	code := m.Run()
	gobuild.RemoveAll()
	os.Exit(code)
}

func fakePinentry(t *testing.T) string {
	return gobuild.Binary(t, "../../internal/daemon/pinentry/testdata/fakepinentry")
}

// daemon is the daemon's side as serve wires it: a control server with
// the "version" and "agent" operations, the agent op behind policy.
type daemon struct {
	path   string
	agent  *prompt.Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func startDaemon(t *testing.T, path string, policy func(control.Peer) bool) *daemon {
	t.Helper()
	srv := control.NewServer(nil)
	a := &prompt.Agent{}
	srv.Handle("version", control.Anyone, func(context.Context, control.Peer, json.RawMessage) (any, error) {
		return map[string]string{"version": "test"}, nil
	})
	srv.HandleStream("agent", policy, func(ctx context.Context, _ control.Peer, _ json.RawMessage, s *control.Stream) error {
		return a.Attach(ctx, s)
	})
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{path: path, agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) stop() {
	d.cancel()
	<-d.done
}

func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pkctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "control.sock")
}

// startAgent runs the agent loop in-process, as `passkeyctl agent` does.
func startAgent(t *testing.T, path string, ui prompt.PINEntry) (logs *ctaptest.SyncBuffer, result chan error, stop func()) {
	t.Helper()
	logs = &ctaptest.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	result = make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		result <- runAgent(ctx, path, ui, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("the agent did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return logs, result, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeUI returns a pinentry backend running the fake with env, and its
// request log.
func fakeUI(t *testing.T, env ...string) (*pinentry.Prompter, string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "pinentry.log")
	return &pinentry.Prompter{
		Path: fakePinentry(t),
		Env:  append([]string{"FAKE_LOG=" + log, "PATH=/usr/bin:/bin"}, env...),
	}, log
}

func readLog(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func setdesc(t *testing.T, log string) string {
	t.Helper()
	var descs []string
	for _, l := range strings.Split(readLog(t, log), "\n") {
		if d, ok := strings.CutPrefix(l, "SETDESC "); ok {
			b, err := pinentry.Unescape(d)
			if err != nil {
				t.Fatal(err)
			}
			descs = append(descs, string(b))
		}
	}
	return strings.Join(descs, "\n---\n")
}

func TestAgentEndToEnd(t *testing.T) {
	d := startDaemon(t, socketPath(t), control.OwnerOrRoot(control.NoOwner))
	ui, log := fakeUI(t, "FAKE_PIN=4711%x")
	logs, _, _ := startAgent(t, d.path, ui)
	waitFor(t, "the agent", func() bool { return d.agent.Agents() == 1 })

	ctx := context.Background()
	pin, err := d.agent.EnterPIN(ctx, prompt.Request{Operation: prompt.OpVerify, RPID: "login.example.org", UserName: "carol@example.org"}, 7)
	if err != nil || pin != "4711%x" {
		t.Fatalf("EnterPIN = %q, %v", pin, err)
	}
	if err := d.agent.Confirm(ctx, prompt.Request{Operation: prompt.OpRegister, RPID: "example.net", UserName: "dave"}); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	desc := setdesc(t, log)
	for _, want := range []string{
		"unlock the security key with its PIN", "Site: login.example.org", "Account: carol@example.org", "7 PIN attempts left",
		"register a passkey", "Site: example.net", "Account: dave",
	} {
		if !strings.Contains(desc, want) {
			t.Errorf("pinentry descriptions lack %q:\n%s", want, desc)
		}
	}
	if r := readLog(t, log); !strings.Contains(r, "\nGETPIN\n") || !strings.Contains(r, "\nCONFIRM\n") {
		t.Errorf("pinentry requests:\n%s", r)
	}
	// The agent's log names neither the PIN nor the user.
	for _, secret := range []string{"4711", "carol", "dave"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("agent log contains %q:\n%s", secret, logs.String())
		}
	}
}

func TestAgentAnswers(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   error
	}{
		{"cancel", prompt.ErrDenied},
		{"timeout", prompt.ErrTimeout},
		{"error", prompt.ErrNoUser},
	} {
		d := startDaemon(t, socketPath(t), control.OwnerOrRoot(control.NoOwner))
		ui, _ := fakeUI(t, "FAKE_ANSWER="+tc.answer)
		_, _, stop := startAgent(t, d.path, ui)
		waitFor(t, "the agent", func() bool { return d.agent.Agents() == 1 })
		if err := d.agent.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn, RPID: "a.example"}); !errors.Is(err, tc.want) {
			t.Errorf("%s: Confirm = %v, want %v", tc.answer, err, tc.want)
		}
		if pin, err := d.agent.EnterPIN(context.Background(), prompt.Request{Operation: prompt.OpVerify}, 8); !errors.Is(err, tc.want) || pin != "" {
			t.Errorf("%s: EnterPIN = %q, %v, want %v", tc.answer, pin, err, tc.want)
		}
		stop()
	}
}

func pidFromLog(t *testing.T, log string) int {
	t.Helper()
	var pid int
	waitFor(t, "the pinentry", func() bool {
		b, _ := os.ReadFile(log)
		s, ok := strings.CutPrefix(strings.SplitN(string(b), "\n", 2)[0], "PID ")
		if !ok || !strings.Contains(string(b), "CONFIRM") {
			return false
		}
		pid, _ = strconv.Atoi(s)
		return pid > 0
	})
	return pid
}

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

func TestAgentCancelAndTimeout(t *testing.T) {
	d := startDaemon(t, socketPath(t), control.OwnerOrRoot(control.NoOwner))
	ui, log := fakeUI(t, "FAKE_ANSWER=hang")
	startAgent(t, d.path, ui)
	waitFor(t, "the agent", func() bool { return d.agent.Agents() == 1 })

	// CTAPHID CANCEL: the daemon's context ends; the pinentry goes away.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.agent.Confirm(ctx, prompt.Request{Operation: prompt.OpSignIn}) }()
	pid := pidFromLog(t, log)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Confirm = %v, want context.Canceled", err)
	}
	waitFor(t, "the cancelled pinentry to exit", func() bool { return gone(pid) })

	// The daemon's own timeout: a timeout answer, and the pinentry goes.
	os.Remove(log)
	d.agent.Timeout = 300 * time.Millisecond
	go func() { done <- d.agent.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn}) }()
	pid = pidFromLog(t, log)
	if err := <-done; !errors.Is(err, prompt.ErrTimeout) {
		t.Errorf("Confirm = %v, want ErrTimeout", err)
	}
	waitFor(t, "the timed-out pinentry to exit", func() bool { return gone(pid) })
}

func TestAgentAbsent(t *testing.T) {
	d := startDaemon(t, socketPath(t), control.OwnerOrRoot(control.NoOwner))
	if err := d.agent.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn}); !errors.Is(err, prompt.ErrNoUser) {
		t.Errorf("Confirm without an agent = %v", err)
	}
	if _, err := d.agent.EnterPIN(context.Background(), prompt.Request{Operation: prompt.OpVerify}, 8); !errors.Is(err, prompt.ErrNoUser) {
		t.Errorf("EnterPIN without an agent = %v", err)
	}
}

func TestAgentNotAllowed(t *testing.T) {
	// A daemon whose owner is someone else: this (root) test process is
	// refused, the agent stops at once with a clear message, and the
	// command exits 78 so that systemd does not restart it.
	path := socketPath(t)
	d := startDaemon(t, path, func(control.Peer) bool { return false })
	ui, _ := fakeUI(t)
	_, result, _ := startAgent(t, path, ui)
	select {
	case err := <-result:
		if !errors.Is(err, control.ErrNotAllowed) || !strings.HasPrefix(err.Error(), "not allowed: uid ") {
			t.Errorf("runAgent = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused agent kept going")
	}
	if d.agent.Agents() != 0 {
		t.Error("a refused agent is attached")
	}
	root := newRootCommand()
	root.SetArgs([]string{"--control", path, "agent", "--pinentry", fakePinentry(t)})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	err := root.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitConfig {
		t.Errorf("passkeyctl agent = %v, want exit status %d", err, exitConfig)
	}
}

func TestAgentReconnects(t *testing.T) {
	path := socketPath(t)
	ui, _ := fakeUI(t, "FAKE_PIN=1357")
	logs, _, _ := startAgent(t, path, ui)
	// Not running yet: the agent waits and says why, once.
	waitFor(t, "the not-running message", func() bool {
		return strings.Contains(logs.String(), "passkeyd is not running (no control socket at "+path+")")
	})
	d := startDaemon(t, path, control.OwnerOrRoot(control.NoOwner))
	waitFor(t, "the agent", func() bool { return d.agent.Agents() == 1 })
	if pin, err := d.agent.EnterPIN(context.Background(), prompt.Request{Operation: prompt.OpVerify}, 8); err != nil || pin != "1357" {
		t.Fatalf("EnterPIN = %q, %v", pin, err)
	}
	// The daemon restarts: the agent comes back.
	d.stop()
	d = startDaemon(t, path, control.OwnerOrRoot(control.NoOwner))
	waitFor(t, "the agent to reconnect", func() bool { return d.agent.Agents() == 1 })
	if err := d.agent.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn}); err != nil {
		t.Fatalf("Confirm after restart: %v", err)
	}
	if n := strings.Count(logs.String(), "passkeyd is not running"); n != 1 {
		t.Errorf("the not-running message was logged %d times:\n%s", n, logs.String())
	}
}

func TestAgentTerminal(t *testing.T) {
	d := startDaemon(t, socketPath(t), control.OwnerOrRoot(control.NoOwner))
	in, typed := io.Pipe()
	defer typed.Close()
	out := &ctaptest.SyncBuffer{}
	startAgent(t, d.path, &prompt.Terminal{In: in, Out: out})
	waitFor(t, "the agent", func() bool { return d.agent.Agents() == 1 })
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if strings.Contains(out.String(), "Allow? [y/N]") {
				break
			}
		}
		io.WriteString(typed, "y\n")
	}()
	if err := d.agent.Confirm(context.Background(), prompt.Request{Operation: prompt.OpSignIn, RPID: "term.example", UserName: "erin"}); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	if !strings.Contains(out.String(), "Site: term.example") || !strings.Contains(out.String(), "Account: erin") {
		t.Errorf("terminal shows:\n%s", out.String())
	}
}

func TestPing(t *testing.T) {
	path := socketPath(t)
	run := func() (string, error) {
		var out bytes.Buffer
		root := newRootCommand()
		root.SetArgs([]string{"--control", path, "ping"})
		root.SetOut(&out)
		err := root.Execute()
		return out.String(), err
	}
	if _, err := run(); err == nil || err.Error() != "passkeyd is not running (no control socket at "+path+")" {
		t.Errorf("ping without a daemon: %v", err)
	}
	startDaemon(t, path, control.RootOnly)
	if out, err := run(); err != nil || out != "passkeyd test is running ("+path+")\n" {
		t.Errorf("ping = %q, %v", out, err)
	}
}

func TestAgentFlags(t *testing.T) {
	root := newRootCommand()
	root.SetArgs([]string{"agent", "--terminal", "--pinentry", "/bin/true"})
	root.SetErr(io.Discard)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Errorf("--terminal with --pinentry: %v", err)
	}
}

// serveForeignDaemon is the child process of TestAgentForeignDaemon: a
// control server with the agent operation at path, running as whatever
// uid the parent gave it, until its standard input closes.
func serveForeignDaemon(path string) {
	srv := control.NewServer(nil)
	a := &prompt.Agent{}
	srv.HandleStream("agent", control.Anyone, func(ctx context.Context, _ control.Peer, _ json.RawMessage, s *control.Stream) error {
		return a.Attach(ctx, s)
	})
	ln, err := control.Listen(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Println("listening")
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// foreignUID is the uid the foreign daemons of the tests run as.
const foreignUID = 64123

// startForeign runs this test binary again as foreignUID with env (a
// PASSKEYCTL_TEST_* variable naming the socket, which it serves until its
// standard input closes) and returns the socket's path and the child's
// standard output after its "listening" line. It needs root.
func startForeign(t *testing.T, env string) (string, *bufio.Reader) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to run the daemon side as another uid")
	}
	path := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(path)} {
		if err := os.Chown(d, foreignUID, foreignUID); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary's directory is root's alone: run a copy.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(filepath.Dir(path), "passkeyctl.test")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: foreignUID, Gid: foreignUID}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &ctaptest.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("the foreign daemon did not start: %q, %v; stderr: %s", line, err, stderr.String())
	}
	return path, out
}

// TestAgentForeignDaemon runs a control socket as another uid (this test
// binary re-executed as foreignUID, which needs root): the agent refuses
// it and `passkeyctl agent` exits 78 without showing anything, unless
// --daemon-user names that uid.
func TestAgentForeignDaemon(t *testing.T) {
	const foreign = foreignUID
	path, _ := startForeign(t, "PASSKEYCTL_TEST_DAEMON")

	ui, log := fakeUI(t, "FAKE_PIN=0000")
	var out ctaptest.SyncBuffer
	root := newRootCommand()
	root.SetArgs([]string{"--control", path, "agent", "--pinentry", ui.Path})
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitConfig || !errors.Is(err, control.ErrUntrusted) ||
		!strings.HasPrefix(err.Error(), fmt.Sprintf("refusing to talk to %s: served by uid %d, not the passkeyd service; trusted are root", path, foreign)) ||
		!strings.HasSuffix(err.Error(), "; if passkeyd really runs as that user, pass --daemon-user") {
		t.Errorf("passkeyctl agent against uid %d = %v, want ErrUntrusted and exit status %d", foreign, err, exitConfig)
	}
	if _, err := os.Stat(log); err == nil {
		t.Errorf("the pinentry ran for an untrusted daemon:\n%s", readLog(t, log))
	}

	// Named with --daemon-user, the same daemon gets the agent.
	trust := control.DefaultTrust()
	if err := trust.Add(strconv.Itoa(foreign)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &ctaptest.SyncBuffer{}
	go runAgentTrusting(ctx, path, ui, slog.New(slog.NewTextHandler(logs, nil)), trust)
	waitFor(t, "the agent to connect", func() bool { return strings.Contains(logs.String(), "connected to passkeyd") })
}
