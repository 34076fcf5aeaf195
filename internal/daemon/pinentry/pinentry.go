package pinentry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
)

// DefaultProgram is run when Prompter.Path is empty. On Debian it is an
// alternatives link to the flavour installed for the session (gnome3, qt,
// gtk2, curses), and the GUI flavours fall back to curses without a
// display.
const DefaultProgram = "pinentry"

// Prompter is a prompt.PINEntry that starts the pinentry program for each
// request (as gpg-agent does: the program keeps no state between
// requests). Presence is CONFIRM, the PIN is GETPIN; cancelling the
// context (CTAPHID CANCEL) terminates the program. One dialog is shown at
// a time; a second request waits for the first, within its own context.
//
// Errors: the Cancel button (or Escape, or closing the window) is
// prompt.ErrDenied, pinentry's own timeout is prompt.ErrTimeout, a done
// context is the context's error, and anything that kept the dialog from
// being shown (no program, no display and no terminal) wraps
// prompt.ErrNoUser. The PIN is never cached: the SETKEYINFO that would
// let a pinentry offer to store it in a keyring is never sent.
//
// The zero value runs DefaultProgram from PATH with this process's
// environment. Use a *Prompter.
type Prompter struct {
	// Path is the pinentry program; empty means DefaultProgram on PATH.
	Path string
	// Env is the program's environment; nil means this process's. The
	// GUI flavours find the session through DISPLAY, XAUTHORITY,
	// WAYLAND_DISPLAY and DBUS_SESSION_BUS_ADDRESS.
	Env []string
	// TTYName is the terminal the curses and tty flavours draw on (Assuan
	// OPTION ttyname). Empty means $GPG_TTY from Env, else the terminal on
	// this process's standard input, if any.
	TTYName string
	// TTYType is the terminal type (OPTION ttytype); empty means $TERM.
	TTYType string
	// LCCType is the terminal's character set (OPTION lc-ctype); empty
	// means $LC_ALL, $LC_CTYPE or $LANG, the first one set.
	LCCType string
	// Timeout bounds one dialog; zero means prompt.Timeout (30 s).
	Timeout time.Duration

	once sync.Once
	turn chan struct{}
}

// Confirm implements prompt.Prompter.
func (p *Prompter) Confirm(ctx context.Context, req prompt.Request) error {
	_, err := p.run(ctx, req, 0, false)
	return err
}

// EnterPIN implements prompt.PINEntry. An empty PIN declines (ErrDenied):
// no valid PIN is empty, and the OK button on an empty field is more
// likely a slip than an attempt worth a retry.
func (p *Prompter) EnterPIN(ctx context.Context, req prompt.Request, retries int) (string, error) {
	pin, err := p.run(ctx, req, retries, true)
	if err == nil && pin == "" {
		return "", prompt.ErrDenied
	}
	return pin, err
}

// exitGrace is how long pinentry gets to exit after BYE or SIGTERM
// (curses restores the terminal on SIGTERM) before it is killed.
const exitGrace = 2 * time.Second

func (p *Prompter) run(ctx context.Context, req prompt.Request, retries int, pin bool) (string, error) {
	p.once.Do(func() { p.turn = make(chan struct{}, 1) })
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-p.turn }()

	timeout := p.Timeout
	if timeout <= 0 {
		timeout = prompt.Timeout
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return "", ctx.Err()
	}
	// pinentry enforces the timeout itself (and says so, ERR 62); this
	// bound, a little later, covers one that does not.
	rctx, cancel := context.WithTimeout(ctx, timeout+exitGrace)
	defer cancel()

	path := p.Path
	if path == "" {
		path = DefaultProgram
	}
	env := p.Env
	if env == nil {
		env = os.Environ()
	}
	cmd := exec.CommandContext(rctx, path)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitGrace
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", fmt.Errorf("%w: pinentry: %v", prompt.ErrNoUser, err)
	}
	// An os.Pipe, not StdoutPipe: closing our end unblocks a read at once
	// when the context ends, without waiting for the program to exit.
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("%w: pinentry: %v", prompt.ErrNoUser, err)
	}
	defer pr.Close()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		stdin.Close()
		return "", fmt.Errorf("%w: start pinentry %q: %v", prompt.ErrNoUser, path, err)
	}
	pw.Close()
	waited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(waited)
	}()
	stopRead := context.AfterFunc(rctx, func() { pr.Close() })
	defer stopRead()

	c := NewConn(pr, stdin)
	out, err := p.converse(c, env, req, retries, pin, timeout)
	// Let the program exit on its own (BYE), else terminate it.
	_ = c.writeLine("BYE")
	stdin.Close()
	select {
	case <-waited:
	case <-time.After(exitGrace):
		cancel()
		<-waited
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		if rctx.Err() != nil {
			return "", prompt.ErrTimeout
		}
		return "", classify(err)
	}
	return out, nil
}

// classify maps pinentry's answer onto the prompt errors.
func classify(err error) error {
	var ae *Error
	if errors.As(err, &ae) {
		switch ae.ErrCode() {
		case codeCanceled, codeNotConfirmed, codeFullyCanceled:
			return prompt.ErrDenied
		case codeTimeout:
			return prompt.ErrTimeout
		}
	}
	return fmt.Errorf("%w: pinentry: %v", prompt.ErrNoUser, err)
}

// converse sets up the dialog and runs it. Options a flavour does not know
// are refused with ERR, which is no reason not to ask.
func (p *Prompter) converse(c *Conn, env []string, req prompt.Request, retries int, pin bool, timeout time.Duration) (string, error) {
	if err := c.Hello(); err != nil {
		return "", err
	}
	for _, o := range p.options(env) {
		if _, err := c.Transact("OPTION", o, nil); err != nil && !isERR(err) {
			return "", err
		}
	}
	secs := int(math.Ceil(timeout.Seconds()))
	okLabel := "Allow"
	if pin {
		okLabel = "Unlock"
	}
	setup := [][2]string{
		{"SETTIMEOUT", strconv.Itoa(secs)},
		{"SETTITLE", "passkeyd"},
		{"SETDESC", description(req, retries, pin)},
		{"SETOK", okLabel},
		{"SETCANCEL", "Deny"},
	}
	if pin {
		setup = append(setup, [2]string{"SETPROMPT", "PIN:"})
	}
	for _, s := range setup {
		if _, err := c.Transact(s[0], s[1], nil); err != nil && !(isERR(err) && s[0] != "SETDESC") {
			return "", err
		}
	}
	if !pin {
		_, err := c.Transact("CONFIRM", "", nil)
		return "", err
	}
	resp, err := c.Transact("GETPIN", "", nil)
	if err != nil {
		return "", err
	}
	return string(resp.Data), nil
}

func isERR(err error) bool {
	var ae *Error
	return errors.As(err, &ae)
}

// description is the dialog's text: what is asked and for whom, fitted to
// Assuan's line limit by cutting the fields shorter when a hostile RP ID
// or user name is very long.
func description(req prompt.Request, retries int, pin bool) string {
	for max := prompt.DisplayMax; ; max /= 2 {
		lines := req.Describe(max)
		if pin {
			lines = append(lines, "", "Enter the security key's PIN.")
			if r := prompt.RetriesLine(retries); r != "" {
				lines = append(lines, r)
			}
		}
		d := strings.Join(lines, "\n")
		if len("SETDESC "+Escape(d))+1 <= MaxLine || max < 16 {
			return d
		}
	}
}

// options returns the Assuan options for the terminal flavours and the
// display, from the Prompter's fields or the environment.
func (p *Prompter) options(env []string) []string {
	get := func(k string) string {
		for i := len(env) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(env[i], k+"="); ok {
				return v
			}
		}
		return ""
	}
	tty := p.TTYName
	if tty == "" {
		tty = get("GPG_TTY")
	}
	if tty == "" {
		tty = stdinTTY()
	}
	ttyType := p.TTYType
	if ttyType == "" {
		ttyType = get("TERM")
	}
	lc := p.LCCType
	for _, k := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if lc == "" {
			lc = get(k)
		}
	}
	var opts []string
	add := func(name, v string) {
		if v != "" {
			opts = append(opts, name+"="+v)
		}
	}
	add("ttyname", tty)
	add("ttytype", ttyType)
	add("lc-ctype", lc)
	add("display", get("DISPLAY"))
	return opts
}

// stdinTTY names the terminal on standard input, or "" when there is none.
func stdinTTY() string {
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		return ""
	}
	name, err := os.Readlink("/proc/self/fd/0")
	if err != nil || !strings.HasPrefix(name, "/dev/") {
		return ""
	}
	return name
}
