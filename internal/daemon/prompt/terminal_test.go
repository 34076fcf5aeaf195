package prompt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
)

func newTerm(t *testing.T) (*Terminal, *io.PipeWriter, *ctaptest.SyncBuffer) {
	r, w := io.Pipe()
	out := &ctaptest.SyncBuffer{}
	t.Cleanup(func() { w.Close() })
	return &Terminal{In: r, Out: out}, w, out
}

// typeAnswer types line once the terminal shows the n-th question ending
// in suffix.
func typeAnswer(t *testing.T, w io.Writer, out *ctaptest.SyncBuffer, suffix string, n int, line string) {
	t.Helper()
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(out.String(), suffix) < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		io.WriteString(w, line)
	}()
}

func TestTerminalConfirm(t *testing.T) {
	term, w, out := newTerm(t)
	for i, tc := range []struct {
		line string
		want error
	}{
		{"y\n", nil},
		{"YES\r\n", nil},
		{"n\n", ErrDenied},
		{"\n", ErrDenied},
		{"yes please\n", ErrDenied},
	} {
		typeAnswer(t, w, out, "Allow? [y/N] ", i+1, tc.line)
		if err := term.Confirm(context.Background(), req); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("%q: Confirm = %v, want %v", tc.line, err, tc.want)
		}
	}
	for _, want := range []string{"passkeyd asks you to sign in.", "Site: example.com", "Account: alice"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// End of input: nobody can be asked any more.
	w.Close()
	if err := term.Confirm(context.Background(), req); !errors.Is(err, ErrNoUser) {
		t.Errorf("after EOF: %v", err)
	}
}

func TestTerminalPIN(t *testing.T) {
	term, w, out := newTerm(t)
	typeAnswer(t, w, out, "PIN (empty to decline): ", 1, "12%3 4ü\n")
	pin, err := term.EnterPIN(context.Background(), Request{Operation: OpVerify, RPID: "example.com"}, 4)
	if err != nil || pin != "12%3 4ü" {
		t.Fatalf("EnterPIN = %q, %v", pin, err)
	}
	if !strings.Contains(out.String(), "4 PIN attempts left.") {
		t.Errorf("output:\n%s", out.String())
	}
	typeAnswer(t, w, out, "PIN (empty to decline): ", 2, "\n")
	if _, err := term.EnterPIN(context.Background(), req, 4); !errors.Is(err, ErrDenied) {
		t.Errorf("empty PIN: %v", err)
	}
}

func TestTerminalTypeAheadIgnored(t *testing.T) {
	term, w, out := newTerm(t)
	typeAnswer(t, w, out, "Allow? [y/N] ", 1, "n\n")
	if err := term.Confirm(context.Background(), req); !errors.Is(err, ErrDenied) {
		t.Fatal(err)
	}
	// A "y" typed while nothing is asked must not approve the next
	// request.
	io.WriteString(w, "y\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := term.Confirm(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Confirm = %v: type-ahead was taken as the answer", err)
	}
}

func TestTerminalCancel(t *testing.T) {
	term, _, out := newTerm(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for !strings.Contains(out.String(), "Allow?") {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if err := term.Confirm(ctx, req); !errors.Is(err, context.Canceled) {
		t.Errorf("Confirm = %v", err)
	}
	if !strings.Contains(out.String(), "(cancelled)") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestTerminalSanitises(t *testing.T) {
	term, w, out := newTerm(t)
	typeAnswer(t, w, out, "Allow? [y/N] ", 1, "n\n")
	_ = term.Confirm(context.Background(), Request{Operation: OpRegister, RPID: "a.example\x1b]0;owned\x07", UserName: "bob\nSite: bank.example"})
	if strings.ContainsAny(out.String(), "\x1b\x07") || strings.Contains(out.String(), "\nSite: bank") {
		t.Errorf("hostile text reached the terminal: %q", out.String())
	}
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func echoOn(t *testing.T, f *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

func TestTerminalPINEchoOff(t *testing.T) {
	master, slave := openPTY(t)
	if !echoOn(t, slave) {
		t.Fatal("a new pty has echo off")
	}
	// Everything the terminal shows arrives on the master side.
	var shown ctaptest.SyncBuffer
	go io.Copy(&shown, master)
	term := &Terminal{In: slave, Out: slave}
	type result struct {
		pin string
		err error
	}
	done := make(chan result, 1)
	go func() {
		pin, err := term.EnterPIN(context.Background(), req, 8)
		done <- result{pin, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(shown.String(), "PIN (empty to decline): ") {
		if time.Now().After(deadline) {
			t.Fatalf("no PIN question; shown %q", shown.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if echoOn(t, slave) {
		t.Error("echo is on while the PIN is typed")
	}
	io.WriteString(master, "9876\n")
	r := <-done
	if r.err != nil || r.pin != "9876" {
		t.Fatalf("EnterPIN = %q, %v", r.pin, r.err)
	}
	if !echoOn(t, slave) {
		t.Error("echo was not restored")
	}
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(shown.String(), "9876") {
		t.Errorf("the PIN was echoed: %q", shown.String())
	}
}
