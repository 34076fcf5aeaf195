package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipStatus is run.sh's exit status when prerequisites are missing and
// cannot be installed (never in CI, where that is a failure).
const skipStatus = 77

var summary = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)

// TestVM runs run.sh and fails unless every check in the VM passed.
func TestVM(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the VM end-to-end test (about 2-4 minutes)")
	}
	runScript(t, "./run.sh")
}

// runScript runs a VM script (run.sh, system.sh) bounded by the go test
// deadline, logs its output line by line and fails unless it printed a
// clean "N passed, 0 failed". Exit status 77 is a skip.
func runScript(t *testing.T, script string) {
	t.Helper()
	ctx := context.Background()
	env := os.Environ()
	if dl, ok := t.Deadline(); ok {
		// Leave run.sh time to report a VM timeout itself rather than
		// being killed by go test's own deadline.
		left := time.Until(dl) - 30*time.Second
		if left < time.Minute {
			t.Skipf("only %v left before the go test deadline; the VM run needs minutes", time.Until(dl))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left)
		defer cancel()
		if os.Getenv("PASSKEYD_VM_TIMEOUT") == "" {
			env = append(env, fmt.Sprintf("PASSKEYD_VM_TIMEOUT=%d", int((left-20*time.Second).Seconds())))
		}
	}

	cmd := exec.CommandContext(ctx, script)
	cmd.Env = env
	// run.sh starts swtpm and qemu: on cancellation, end the whole process
	// group it leads, not just the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw

	var output strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			t.Log(sc.Text())
			output.WriteString(sc.Text() + "\n")
		}
		io.Copy(io.Discard, pr)
	}()
	start := time.Now()
	err := cmd.Run()
	pw.Close()
	<-done
	t.Logf("%s took %v", script, time.Since(start).Round(time.Second))

	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == skipStatus:
		t.Skipf("%s: prerequisites missing (see the log above)", script)
	case ctx.Err() != nil:
		t.Fatalf("%s did not finish before the go test deadline: %v", script, err)
	case err != nil:
		t.Fatalf("%s: %v (the failed checks are above)", script, err)
	}
	m := summary.FindStringSubmatch(output.String())
	if m == nil || m[2] != "0" || m[1] == "0" {
		t.Fatalf("%s exited 0 without a clean summary line: %q", script, m)
	}
}
