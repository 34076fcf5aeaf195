package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/ctap2/control"
	"github.com/passkeyd/passkeyd/ctap2/prompt"
	"github.com/passkeyd/passkeyd/ctap2/prompt/pinentry"
)

// binDir holds the binaries the tests build once: the fake pinentry, and
// passkeyctl itself for the tmux test.
var binDir string

func TestMain(m *testing.M) {
	if path := os.Getenv("PASSKEYCTL_TEST_DAEMON"); path != "" {
		serveForeignDaemon(path)
		return
	}
	d, err := os.MkdirTemp("", "passkeyctl-test")
	if err != nil {
		panic(err)
	}
	binDir = d
	minBackoff, maxBackoff = 50*time.Millisecond, 200*time.Millisecond
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

var buildOnce sync.Map // package path -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// build compiles pkg (relative to this directory) into binDir once.
func build(t *testing.T, pkg string) string {
	t.Helper()
	v, _ := buildOnce.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		b.path = filepath.Join(binDir, filepath.Base(pkg))
		out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func fakePinentry(t *testing.T) string {
	return build(t, "../../ctap2/prompt/pinentry/testdata/fakepinentry")
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

// syncBuffer collects log output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs the agent loop in-process, as `passkeyctl agent` does.
func startAgent(t *testing.T, path string, ui prompt.PINEntry) (logs *syncBuffer, result chan error, stop func()) {
	t.Helper()
	logs = &syncBuffer{}
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
	out := &syncBuffer{}
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

// stubUsers makes lookupUser see only the accounts in users (name -> uid)
// for the rest of the test.
func stubUsers(t *testing.T, users map[string]string) {
	t.Helper()
	old := lookupUser
	lookupUser = func(name string) (*user.User, error) {
		if uid, ok := users[name]; ok {
			return &user.User{Username: name, Uid: uid}, nil
		}
		return nil, user.UnknownUserError(name)
	}
	t.Cleanup(func() { lookupUser = old })
}

// TestServerTrust is the agent's decision whom to show prompts for: root,
// itself, the passkeyd service account when it exists, --daemon-user;
// anyone else is refused (a socket that could be phishing for the PIN).
func TestServerTrust(t *testing.T) {
	self := uint32(os.Getuid())
	for _, tc := range []struct {
		name       string
		users      map[string]string
		daemonUser string
		trusted    []uint32
		refused    []uint32
		wantErr    string // from newServerTrust
	}{
		// The shipped layout: the unit's User=passkeyd, found in passwd.
		{name: "service account", users: map[string]string{"passkeyd": "990"}, trusted: []uint32{0, self, 990}, refused: []uint32{991, 65534, 1000}},
		// No passkeyd account: only root and the agent's own user.
		{name: "no service account", trusted: []uint32{0, self}, refused: []uint32{990, 65534}},
		{name: "--daemon-user uid", daemonUser: "4242", trusted: []uint32{0, self, 4242}, refused: []uint32{990, 4243}},
		{name: "--daemon-user name", users: map[string]string{"fido": "777"}, daemonUser: "fido", trusted: []uint32{0, self, 777}, refused: []uint32{990}},
		{name: "--daemon-user and the service account", users: map[string]string{"passkeyd": "990"}, daemonUser: "991", trusted: []uint32{990, 991}, refused: []uint32{992}},
		{name: "--daemon-user unknown", daemonUser: "nosuchuser", wantErr: `--daemon-user: no user "nosuchuser"`},
		{name: "--daemon-user with a non-numeric uid", users: map[string]string{"odd": "S-1-5"}, daemonUser: "odd", wantErr: `--daemon-user: user "odd" has a non-numeric uid "S-1-5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stubUsers(t, tc.users)
			trust, err := newServerTrust(tc.daemonUser)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("newServerTrust(%q) = %v, want %q", tc.daemonUser, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, uid := range tc.trusted {
				if err := trust.check("/run/passkeyd/control.sock", uid); err != nil {
					t.Errorf("uid %d refused: %v", uid, err)
				}
			}
			for _, uid := range tc.refused {
				if uid == self {
					continue
				}
				err := trust.check("/run/passkeyd/control.sock", uid)
				if !errors.Is(err, errUntrusted) {
					t.Errorf("uid %d: %v, want errUntrusted", uid, err)
					continue
				}
				if want := fmt.Sprintf("untrusted control socket: /run/passkeyd/control.sock is served by uid %d; trusted are root, you (uid %d)", uid, self); !strings.HasPrefix(err.Error(), want) {
					t.Errorf("uid %d: message %q, want it to start %q", uid, err, want)
				}
			}
		})
	}
	// The message names each trusted account, so that whoever reads the
	// journal knows what to pass.
	stubUsers(t, map[string]string{"passkeyd": "990"})
	trust, err := newServerTrust("4242")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("untrusted control socket: /s is served by uid 12345; trusted are root, you (uid %d), the passkeyd service user (uid 990), --daemon-user 4242 (uid 4242): refusing to show its prompts (if passkeyd really runs as that user, pass --daemon-user)", self)
	if self != 12345 {
		if err := trust.check("/s", 12345); err == nil || err.Error() != want {
			t.Errorf("check = %v\nwant %s", err, want)
		}
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

// TestAgentForeignDaemon runs a control socket as another uid (this test
// binary re-executed as uid 64123, which needs root): the agent refuses it
// and `passkeyctl agent` exits 78 without showing anything, unless
// --daemon-user names that uid.
func TestAgentForeignDaemon(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the daemon side as another uid (TestServerTrust covers the decision)")
	}
	const foreign = 64123
	stubUsers(t, nil)
	path := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(filepath.Dir(path)), filepath.Dir(path)} {
		if err := os.Chown(d, foreign, foreign); err != nil {
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
	cmd.Env = append(os.Environ(), "PASSKEYCTL_TEST_DAEMON="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: foreign, Gid: foreign}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line := make([]byte, len("listening\n"))
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "listening\n" {
		t.Fatalf("the foreign daemon did not start: %q, %v; stderr: %s", line, err, stderr.String())
	}

	ui, log := fakeUI(t, "FAKE_PIN=0000")
	var out syncBuffer
	root := newRootCommand()
	root.SetArgs([]string{"--control", path, "agent", "--pinentry", ui.Path})
	root.SetOut(&out)
	root.SetErr(&out)
	err = root.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitConfig || !errors.Is(err, errUntrusted) ||
		!strings.Contains(err.Error(), fmt.Sprintf("is served by uid %d; trusted are root", foreign)) {
		t.Errorf("passkeyctl agent against uid %d = %v, want errUntrusted and exit status %d", foreign, err, exitConfig)
	}
	if _, err := os.Stat(log); err == nil {
		t.Errorf("the pinentry ran for an untrusted daemon:\n%s", readLog(t, log))
	}

	// Named with --daemon-user, the same daemon gets the agent.
	trust, err := newServerTrust(strconv.Itoa(foreign))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	go runAgentTrusting(ctx, path, ui, slog.New(slog.NewTextHandler(logs, nil)), trust)
	waitFor(t, "the agent to connect", func() bool { return strings.Contains(logs.String(), "connected to passkeyd") })
}
