package pinentry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

func TestMain(m *testing.M) { gobuild.Main(m) }

// fake returns a Prompter running the fake pinentry with env, and the
// path of its request log.
func fake(t *testing.T, env ...string) (*Prompter, string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "requests")
	return &Prompter{
		Path:    gobuild.Binary(t, "./testdata/fakepinentry"),
		Env:     append([]string{"FAKE_LOG=" + log, "PATH=/usr/bin:/bin", "TERM=xterm-256color", "LANG=C.UTF-8", "DISPLAY=:7"}, env...),
		TTYName: "/dev/pts/99",
	}, log
}

func requests(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// setdesc returns the unescaped description the fake pinentry was given.
func setdesc(t *testing.T, lines []string) string {
	t.Helper()
	for _, l := range lines {
		if d, ok := strings.CutPrefix(l, "SETDESC "); ok {
			b, err := Unescape(d)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
	t.Fatalf("no SETDESC in %q", lines)
	return ""
}

var signIn = prompt.Request{Operation: prompt.OpSignIn, RPID: "example.com", UserName: "alice@example.com"}

func TestConfirm(t *testing.T) {
	p, log := fake(t)
	if err := p.Confirm(context.Background(), signIn); err != nil {
		t.Fatal(err)
	}
	lines := requests(t, log)
	desc := setdesc(t, lines)
	for _, want := range []string{"sign in", "Site: example.com", "Account: alice@example.com"} {
		if !strings.Contains(desc, want) {
			t.Errorf("description %q lacks %q", desc, want)
		}
	}
	all := strings.Join(lines[1:], "\n")
	for _, want := range []string{
		"OPTION ttyname=/dev/pts/99", "OPTION ttytype=xterm-256color", "OPTION lc-ctype=C.UTF-8", "OPTION display=:7",
		"SETTIMEOUT 30", "SETTITLE passkeyd", "SETOK Allow", "SETCANCEL Deny", "CONFIRM", "BYE",
	} {
		if !strings.Contains(all, want+"\n") && !strings.HasSuffix(all, want) {
			t.Errorf("requests lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "GETPIN") || strings.Contains(all, "SETKEYINFO") {
		t.Errorf("unexpected requests:\n%s", all)
	}
}

func TestEnterPIN(t *testing.T) {
	for _, split := range []string{"", "1"} {
		// Escaping both ways: the PIN holds a percent sign and a space.
		p, log := fake(t, "FAKE_PIN=12%3 4ü", "FAKE_SPLIT="+split)
		pin, err := p.EnterPIN(context.Background(), prompt.Request{Operation: prompt.OpVerify, RPID: "example.com", UserName: "bob"}, 5)
		if err != nil {
			t.Fatal(err)
		}
		if pin != "12%3 4ü" {
			t.Errorf("pin %q", pin)
		}
		lines := requests(t, log)
		desc := setdesc(t, lines)
		for _, want := range []string{"unlock the security key with its PIN", "Site: example.com", "Account: bob", "5 PIN attempts left"} {
			if !strings.Contains(desc, want) {
				t.Errorf("description %q lacks %q", desc, want)
			}
		}
		all := strings.Join(lines, "\n")
		if !strings.Contains(all, "\nSETPROMPT PIN:\n") || !strings.Contains(all, "\nGETPIN\n") || !strings.Contains(all, "SETOK Unlock") {
			t.Errorf("requests:\n%s", all)
		}
	}
}

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   error
	}{
		{"cancel", prompt.ErrDenied},
		{"notok", prompt.ErrDenied},
		{"timeout", prompt.ErrTimeout},
		{"error", prompt.ErrNoUser},
		{"exit", prompt.ErrNoUser},
	} {
		p, _ := fake(t, "FAKE_ANSWER="+tc.answer, "FAKE_PIN=1234")
		if err := p.Confirm(context.Background(), signIn); !errors.Is(err, tc.want) {
			t.Errorf("%s: Confirm = %v, want %v", tc.answer, err, tc.want)
		}
		if pin, err := p.EnterPIN(context.Background(), signIn, 8); !errors.Is(err, tc.want) || pin != "" {
			t.Errorf("%s: EnterPIN = %q, %v, want %v", tc.answer, pin, err, tc.want)
		}
	}
	// An empty PIN declines.
	p, _ := fake(t, "FAKE_PIN=")
	if _, err := p.EnterPIN(context.Background(), signIn, 8); !errors.Is(err, prompt.ErrDenied) {
		t.Errorf("empty PIN: %v", err)
	}
	// No program: nobody can be asked.
	p = &Prompter{Path: filepath.Join(t.TempDir(), "no-such-pinentry")}
	if err := p.Confirm(context.Background(), signIn); !errors.Is(err, prompt.ErrNoUser) {
		t.Errorf("missing program: %v", err)
	}
}

// pidOf returns the fake's pid from its log.
func pidOf(t *testing.T, log string) int {
	t.Helper()
	for range 100 {
		if b, err := os.ReadFile(log); err == nil {
			if s, ok := strings.CutPrefix(strings.SplitN(string(b), "\n", 2)[0], "PID "); ok {
				pid, err := strconv.Atoi(s)
				if err == nil {
					return pid
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the fake pinentry did not start")
	return 0
}

func TestCancelKillsPinentry(t *testing.T) {
	p, log := fake(t, "FAKE_ANSWER=hang")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Confirm(ctx, signIn) }()
	pid := pidOf(t, log)
	// Wait until the dialog is open.
	for range 100 {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "CONFIRM") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Confirm did not return after cancel")
	}
	if d := time.Since(start); d > exitGrace+time.Second {
		t.Errorf("cancel took %v", d)
	}
	// The process has been waited for: signalling it fails.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pinentry %d still exists: %v", pid, err)
	}
}

func TestOwnTimeout(t *testing.T) {
	// A pinentry that ignores SETTIMEOUT is stopped by the Prompter's own
	// bound, and the answer is a timeout, not a grant.
	p, _ := fake(t, "FAKE_ANSWER=hang")
	p.Timeout = 300 * time.Millisecond
	start := time.Now()
	if err := p.Confirm(context.Background(), signIn); !errors.Is(err, prompt.ErrTimeout) {
		t.Errorf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > p.Timeout+exitGrace+2*time.Second {
		t.Errorf("took %v", d)
	}
	// A context deadline shorter than the timeout is what SETTIMEOUT gets,
	// and its expiry is the context's error.
	p, log := fake(t, "FAKE_ANSWER=hang")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := p.Confirm(ctx, signIn); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if all := strings.Join(requests(t, log), "\n"); !strings.Contains(all, "SETTIMEOUT 2\n") {
		t.Errorf("requests:\n%s", all)
	}
}

func TestHostileDescription(t *testing.T) {
	p, log := fake(t)
	req := prompt.Request{
		Operation: prompt.OpRegister,
		RPID:      "evil.example\nSite: bank.example",
		UserName:  "\x1b[2J\u202eelgoog" + strings.Repeat("%", 2000),
	}
	if err := p.Confirm(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	desc := setdesc(t, requests(t, log))
	lines := strings.Split(desc, "\n")
	if len(lines) != 3 {
		t.Fatalf("description has %d lines: %q", len(lines), desc)
	}
	// The forged "Site:" stays on the RP's own line, visibly part of it.
	if strings.ContainsAny(desc, "\x1b\u202e") || !strings.HasPrefix(lines[1], "Site: evil.example\uFFFDSite:") {
		t.Errorf("description not sanitised: %q", desc)
	}
	if !strings.HasSuffix(lines[2], "…") {
		t.Errorf("long user name not cut: %q", lines[2])
	}
}

func TestOneDialogAtATime(t *testing.T) {
	p, log := fake(t, "FAKE_ANSWER=hang")
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- p.Confirm(ctx, signIn) }()
	pidOf(t, log)
	// A second request waits, and gives up with its own context.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := p.Confirm(ctx2, signIn); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second: %v", err)
	}
	if n := strings.Count(strings.Join(requests(t, log), "\n"), "PID "); n != 1 {
		t.Errorf("%d pinentries started", n)
	}
	cancel()
	<-first
}
