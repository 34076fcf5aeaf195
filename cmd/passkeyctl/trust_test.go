package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

// serveRecorder is the child process of TestCommandsRefuseUntrustedServer:
// a socket at path that never answers and, for each connection, prints
// what it received (up to the first newline: one request), quoted on one
// line, then hangs up. It runs until its standard input closes.
func serveRecorder(path string) {
	ln, err := control.Listen(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Println("listening")
	var mu sync.Mutex
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, _ := bufio.NewReader(c).ReadBytes('\n')
			mu.Lock()
			defer mu.Unlock()
			fmt.Printf("%q\n", got)
		}()
	}
}

// TestCommandsRefuseUntrustedServer runs every passkeyctl command that
// talks to the daemon against a socket served by another uid (foreignUID,
// trusted by nobody here): each refuses with one line and exit status 4
// before sending anything. The recorder sees each connection, and no
// byte on any of them: no request, no PIN.
func TestCommandsRefuseUntrustedServer(t *testing.T) {
	path, recorded := startForeign(t, "PASSKEYCTL_TEST_RECORDER")
	bin := gobuild.Binary(t, "github.com/passkeyd/passkeyd/cmd/passkeyctl")
	const pin = "271828"
	for _, tc := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"ping"}, ""},
		{[]string{"list"}, ""},
		{[]string{"list", "--json"}, ""},
		{[]string{"info"}, ""},
		{[]string{"attestation", "ca"}, ""},
		{[]string{"delete", "--yes", "--stdin", "--rp", "example.com"}, pin + "\n"},
		{[]string{"pin", "set", "--stdin"}, pin + "\n" + pin + "\n"},
		{[]string{"pin", "change", "--stdin"}, pin + "\n" + pin + "1\n" + pin + "1\n"},
		{[]string{"reset", "--yes", "--stdin"}, pin + "\n"},
	} {
		name := strings.Join(tc.args, " ")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, append([]string{"--control", path}, tc.args...)...)
		cmd.Stdin = strings.NewReader(tc.stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitNotAllowed {
			t.Errorf("%s: %v, want exit status %d", name, err, exitNotAllowed)
		}
		want := fmt.Sprintf("passkeyctl: refusing to talk to %s: served by uid %d, not the passkeyd service; trusted are root", path, foreignUID)
		if e := stderr.String(); !strings.HasPrefix(e, want) || strings.Count(e, "\n") != 1 || !strings.HasSuffix(e, "; if passkeyd really runs as that user, pass --daemon-user\n") {
			t.Errorf("%s: stderr %q, want one line starting %q", name, e, want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%s: stdout %q", name, stdout.String())
		}
		// One connection per command, and nothing on it.
		line, err := readLine(recorded, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: the recorder saw no connection: %v", name, err)
		}
		if line != `""` {
			t.Errorf("%s: the untrusted server received %s", name, line)
		}
	}
}

// readLine reads one line of r within d.
func readLine(r *bufio.Reader, d time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- result{strings.TrimSuffix(s, "\n"), err}
	}()
	select {
	case res := <-ch:
		return res.s, res.err
	case <-time.After(d):
		return "", errors.New("timed out")
	}
}
