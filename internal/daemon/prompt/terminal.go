package prompt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Terminal asks on a text terminal: it prints the request to Out and reads
// the answer from In, y/N for presence and the PIN with echo off when In
// is a terminal. It serves `passkeyctl agent --terminal`.
//
// Reading cannot be interrupted portably, so one goroutine reads lines
// from In for the Terminal's lifetime; a line typed while no prompt is
// open is discarded when the next prompt opens, so type-ahead never
// approves a request the person has not seen. Prompts are shown one at a
// time. Use a *Terminal; In and Out must not change once it is used.
type Terminal struct {
	In  io.Reader
	Out io.Writer

	once  sync.Once
	turn  chan struct{}
	lines chan string
	eof   chan struct{} // closed when In has ended
}

// maxTermLine bounds one line read from the terminal; a PIN is at most 63
// bytes, and the rest of an overlong line is dropped.
const maxTermLine = 1024

func (t *Terminal) start() {
	t.once.Do(func() {
		t.turn = make(chan struct{}, 1)
		t.lines = make(chan string, 1)
		t.eof = make(chan struct{})
		go t.read()
	})
}

func (t *Terminal) read() {
	defer close(t.eof)
	r := bufio.NewReaderSize(t.In, maxTermLine)
	for {
		var line []byte
		for {
			chunk, more, err := r.ReadLine()
			if len(line) < maxTermLine {
				line = append(line, chunk[:min(len(chunk), maxTermLine-len(line))]...)
			}
			if err != nil {
				return
			}
			if !more {
				break
			}
		}
		// Keep only the newest line: a prompt wants what was typed
		// after it opened, and older lines are dropped anyway.
		select {
		case <-t.lines:
		default:
		}
		t.lines <- strings.TrimSuffix(string(line), "\r")
	}
}

// Confirm implements Prompter: "y" or "yes" approves, anything else
// declines.
func (t *Terminal) Confirm(ctx context.Context, req Request) error {
	line, err := t.ask(ctx, req, "", "Allow? [y/N] ", false)
	if err != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return ErrDenied
}

// EnterPIN implements PINEntry. An empty line declines: no valid PIN is
// empty.
func (t *Terminal) EnterPIN(ctx context.Context, req Request, retries int) (string, error) {
	pin, err := t.ask(ctx, req, RetriesLine(retries), "PIN (empty to decline): ", true)
	if err != nil {
		return "", err
	}
	if pin == "" {
		return "", ErrDenied
	}
	return pin, nil
}

func (t *Terminal) ask(ctx context.Context, req Request, extra, question string, secret bool) (string, error) {
	t.start()
	select {
	case t.turn <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-t.turn }()

	select {
	case <-t.lines: // type-ahead from before the prompt
	default:
	}
	var b strings.Builder
	b.WriteString("\n")
	for _, l := range req.Describe(DisplayMax) {
		b.WriteString(l + "\n")
	}
	if extra != "" {
		b.WriteString(extra + "\n")
	}
	b.WriteString(question)
	// Echo off before the question shows: the person may start typing
	// the moment it does.
	if secret {
		restore, err := noEcho(t.In)
		if err != nil {
			return "", fmt.Errorf("%w: terminal: cannot turn echo off: %v", ErrNoUser, err)
		}
		defer restore()
	}
	if _, err := io.WriteString(t.Out, b.String()); err != nil {
		return "", fmt.Errorf("%w: terminal: %v", ErrNoUser, err)
	}
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case line := <-t.lines:
		return line, nil
	case <-t.eof:
		// Lines already read are delivered before the end.
		select {
		case line := <-t.lines:
			return line, nil
		default:
		}
		fmt.Fprintln(t.Out)
		return "", ErrNoUser
	case <-timer.C:
		fmt.Fprintln(t.Out, "\n(no answer in time)")
		return "", ErrTimeout
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintln(t.Out, "\n(no answer in time)")
		} else {
			fmt.Fprintln(t.Out, "\n(cancelled)")
		}
		return "", ctx.Err()
	}
}

// noEcho turns echo off on r when r is a terminal (keeping the newline
// echoed, so the cursor moves on after Enter) and returns the function
// that restores it. On anything else it does nothing: a pipe has no echo.
func noEcho(r io.Reader) (func(), error) {
	f, ok := r.(interface{ Fd() uintptr })
	if !ok {
		return func() {}, nil
	}
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}, nil // not a terminal
	}
	t := *old
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// ReadSecret writes question to out and reads one line from in, with echo
// off when in is a terminal (passkeyctl reads PINs this way: never from
// argv). The line is returned without its newline.
func ReadSecret(in io.Reader, out io.Writer, question string) (string, error) {
	fmt.Fprint(out, question)
	restore, err := noEcho(in)
	if err != nil {
		return "", fmt.Errorf("turn off echo: %w", err)
	}
	defer restore()
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := in.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			if len(line) > 1024 {
				return "", errors.New("input line too long")
			}
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				break
			}
			return "", err
		}
	}
	return strings.TrimSuffix(string(line), "\r"), nil
}
