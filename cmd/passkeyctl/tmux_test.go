package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

// requireTools finds the programs the test needs, installing them with
// apt when running as root; otherwise the test is skipped, or fails in CI.
func requireTools(t *testing.T, pkgs map[string]string) map[string]string {
	t.Helper()
	paths := make(map[string]string)
	var missing []string
	for prog, pkg := range pkgs {
		if p, err := exec.LookPath(prog); err == nil {
			paths[prog] = p
		} else {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return paths
	}
	if os.Getuid() == 0 {
		if _, err := exec.LookPath("apt-get"); err == nil {
			cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, out)
			}
			return requireToolsNoInstall(t, pkgs)
		}
	}
	return requireToolsNoInstall(t, pkgs)
}

func requireToolsNoInstall(t *testing.T, pkgs map[string]string) map[string]string {
	t.Helper()
	paths := make(map[string]string)
	for prog, pkg := range pkgs {
		p, err := exec.LookPath(prog)
		if err != nil {
			msg := fmt.Sprintf("%s not found (apt-get install %s)", prog, pkg)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		paths[prog] = p
	}
	return paths
}

// tmuxSession is a private tmux server (its own socket name), so that the
// test neither sees nor disturbs anyone's sessions.
type tmuxSession struct {
	t     *testing.T
	tmux  string
	label string
}

func (s *tmuxSession) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command(s.tmux, append([]string{"-L", s.label}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *tmuxSession) screen() string { return s.run("capture-pane", "-p", "-t", "pk") }

// waitScreen waits until the pane shows every one of want.
func (s *tmuxSession) waitScreen(want ...string) string {
	s.t.Helper()
	var screen string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		screen = s.screen()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(screen, w)
		}
		if ok {
			return screen
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("the pane never showed %q; it shows:\n%s", want, screen)
	return ""
}

func TestAgentRealPinentryCursesInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	tools := requireTools(t, map[string]string{"tmux": "tmux", "pinentry-curses": "pinentry-curses"})
	bin := gobuild.Binary(t, "github.com/passkeyd/passkeyd/cmd/passkeyctl")
	path := socketPath(t)
	d := startDaemon(t, path, control.OwnerOrRoot(control.NoOwner))

	s := &tmuxSession{t: t, tmux: tools["tmux"], label: fmt.Sprintf("passkeyd-test-%d", os.Getpid())}
	agentLog := filepath.Join(t.TempDir(), "agent.log")
	cmdline := fmt.Sprintf("exec %s --control %s agent --pinentry %s 2>%s", bin, path, tools["pinentry-curses"], agentLog)
	s.run("-f", "/dev/null", "new-session", "-d", "-s", "pk", "-x", "100", "-y", "30", "-e", "LANG=C.UTF-8", cmdline)
	t.Cleanup(func() { _ = exec.Command(s.tmux, "-L", s.label, "kill-server").Run() })
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(agentLog)
			t.Logf("agent log:\n%s", b)
		}
	}()
	waitFor(t, "the agent in tmux", func() bool { return d.agent.Agents() == 1 })

	// The PIN: the description names operation, site and account; the
	// digits typed into pinentry-curses arrive at the daemon.
	type result struct {
		pin string
		err error
	}
	pinc := make(chan result, 1)
	go func() {
		pin, err := d.agent.EnterPIN(context.Background(), prompt.Request{Operation: prompt.OpVerify, RPID: "tmux.example.org", UserName: "frank@example.org"}, 6)
		pinc <- result{pin, err}
	}()
	screen := s.waitScreen("unlock the security key with its PIN", "Site: tmux.example.org", "Account: frank@example.org", "6 PIN attempts left", "PIN:")
	t.Logf("pinentry-curses in tmux shows:\n%s", screen)
	if strings.Contains(screen, "2468") {
		t.Fatal("the PIN is on the screen before it was typed")
	}
	s.run("send-keys", "-t", "pk", "2468")
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(s.screen(), "2468") {
		t.Error("pinentry echoes the PIN")
	}
	s.run("send-keys", "-t", "pk", "Enter")
	select {
	case r := <-pinc:
		if r.err != nil || r.pin != "2468" {
			t.Fatalf("EnterPIN = %q, %v", r.pin, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no PIN; the pane shows:\n%s", s.screen())
	}

	// Presence: Enter on the default button approves; Tab, Enter (Deny)
	// declines.
	confirm := func(ctx context.Context) chan error {
		c := make(chan error, 1)
		go func() {
			c <- d.agent.Confirm(ctx, prompt.Request{Operation: prompt.OpRegister, RPID: "tmux.example.org", UserName: "frank@example.org"})
		}()
		return c
	}
	wait := func(c chan error) error {
		select {
		case err := <-c:
			return err
		case <-time.After(15 * time.Second):
			t.Fatalf("no answer; the pane shows:\n%s", s.screen())
			return nil
		}
	}
	c := confirm(context.Background())
	s.waitScreen("register a passkey", "Allow", "Deny")
	s.run("send-keys", "-t", "pk", "Enter")
	if err := wait(c); err != nil {
		t.Errorf("Confirm with Enter = %v", err)
	}
	c = confirm(context.Background())
	s.waitScreen("register a passkey", "Deny")
	s.run("send-keys", "-t", "pk", "Tab", "Enter")
	if err := wait(c); !errors.Is(err, prompt.ErrDenied) {
		t.Errorf("Confirm with Deny = %v, want ErrDenied", err)
	}

	// CTAPHID CANCEL closes the dialog and gives the terminal back.
	ctx, cancel := context.WithCancel(context.Background())
	c = confirm(ctx)
	s.waitScreen("register a passkey")
	cancel()
	if err := wait(c); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Confirm = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(s.screen(), "register a passkey") {
		if time.Now().After(deadline) {
			t.Fatalf("the dialog stayed after the cancel:\n%s", s.screen())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The agent is still there for the next request.
	c = confirm(context.Background())
	s.waitScreen("register a passkey")
	s.run("send-keys", "-t", "pk", "Enter")
	if err := wait(c); err != nil {
		t.Errorf("Confirm after the cancel = %v", err)
	}
}
