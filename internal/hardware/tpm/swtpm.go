package tpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// swtpmStartTimeout bounds the wait for the data socket. swtpm is ready
	// in ~10 ms; the first start in a new state directory also manufactures
	// the TPM (EK/SRK seeds), which takes longer on a loaded machine.
	swtpmStartTimeout = 10 * time.Second
	// swtpmStopTimeout is how long Close waits after SIGTERM before SIGKILL.
	swtpmStopTimeout = 5 * time.Second
	// socketCommandTimeout bounds one command over a socket, so a hung
	// emulator cannot block the daemon forever. RSA-2048 key generation in
	// swtpm takes up to ~1 s; this is far above that.
	socketCommandTimeout = 2 * time.Minute
	// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the NUL on Linux.
	maxSocketPath = 107
)

const errSwtpmMissing = "swtpm not found: install it (apt-get install swtpm swtpm-tools) or pass --tpm /dev/tpmrm0"

// swtpmProcess is a private swtpm child: started by Open, stopped by Close.
type swtpmProcess struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
	stderr  *tailBuffer
	tmpDir  string   // set when the socket had to live outside the state dir
	lock    *os.File // flock on the state dir, held while swtpm runs
}

// startSwtpm starts `swtpm socket` with its state in stateDir/swtpm and
// returns the process and a connection to its data socket.
//
// No swtpm_setup run is needed: with --flags not-need-init,startup-clear
// swtpm manufactures a new TPM on first start in an empty directory and sends
// TPM2_Startup itself. (swtpm_setup is only needed when something, e.g.
// qemu, sends CMD_INIT over the control channel, or to create EK certs.)
func startSwtpm(stateDir string) (*swtpmProcess, *streamTPM, error) {
	if stateDir == "" {
		return nil, nil, errors.New("start swtpm: Config.StateDir is empty")
	}
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, nil, errors.New(errSwtpmMissing)
	}
	dir, err := filepath.Abs(filepath.Join(stateDir, "swtpm"))
	if err != nil {
		return nil, nil, fmt.Errorf("start swtpm: state directory: %w", err)
	}
	if strings.Contains(dir, ",") {
		// swtpm splits its option values at commas.
		return nil, nil, fmt.Errorf("start swtpm: state directory %q contains a comma, which swtpm cannot take", dir)
	}
	// The state holds the TPM's seeds: anyone who can read it can use every
	// key blob, so it is private to us.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("start swtpm: create state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("start swtpm: restrict state directory: %w", err)
	}

	p := &swtpmProcess{done: make(chan struct{}), stderr: &tailBuffer{max: 4096}}
	if p.lock, err = lockStateDir(dir); err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(dir, "sock")
	if len(sock) > maxSocketPath {
		// A deep StateDir does not fit in sun_path; the socket then lives
		// in a private temporary directory instead.
		p.tmpDir, err = os.MkdirTemp("", "passkeyd-swtpm-")
		if err != nil {
			p.release()
			return nil, nil, fmt.Errorf("start swtpm: socket directory: %w", err)
		}
		sock = filepath.Join(p.tmpDir, "sock")
	}
	// A socket file left by a crashed run is no problem: swtpm unlinks it
	// before bind().

	p.cmd = exec.Command(bin, "socket",
		"--tpm2",
		"--tpmstate", "dir="+dir+",mode=0600",
		"--server", "type=unixio,path="+sock+",mode=0600",
		"--flags", "not-need-init,startup-clear",
	)
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = swtpmSysProcAttr()
	if err := p.cmd.Start(); err != nil {
		p.release()
		return nil, nil, fmt.Errorf("start swtpm: %w", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	conn, err := p.waitForSocket(sock)
	if err != nil {
		_ = p.stop()
		return nil, nil, err
	}
	return p, &streamTPM{network: "unix", addr: sock, timeout: socketCommandTimeout, conn: conn}, nil
}

// waitForSocket polls until swtpm accepts a connection on sock and returns
// it. It connects rather than stat()ing because the socket file exists before
// listen().
func (p *swtpmProcess) waitForSocket(sock string) (net.Conn, error) {
	deadline := time.Now().Add(swtpmStartTimeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("start swtpm: exited early (%v): %s", p.waitErr, p.stderr.String())
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("start swtpm: socket %s not ready after %v: %s", sock, swtpmStartTimeout, p.stderr.String())
		}
		time.Sleep(delay)
	}
}

// stop terminates swtpm: SIGTERM, then SIGKILL if it does not exit in time.
func (p *swtpmProcess) stop() error {
	defer p.release()
	select {
	case <-p.done:
		return nil // already gone
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop swtpm: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(swtpmStopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("stop swtpm: no exit %v after SIGTERM, killed", swtpmStopTimeout)
}

// release frees what startSwtpm took besides the process.
func (p *swtpmProcess) release() {
	if p.tmpDir != "" {
		_ = os.RemoveAll(p.tmpDir)
		p.tmpDir = ""
	}
	if p.lock != nil {
		_ = p.lock.Close() // drops the flock
		p.lock = nil
	}
}

// lockStateDir takes an exclusive flock on dir/passkeyd.lock. swtpm has its
// own .lock, but (measured, swtpm 0.7.1) a second swtpm that fails to get it
// deletes the socket and the .lock file of the one running on the way out,
// so a third could then run on the same state. Our lock keeps the second
// from starting at all.
func lockStateDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "passkeyd.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start swtpm: lock state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("start swtpm: state directory %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("start swtpm: lock state directory: %w", err)
	}
	return f, nil
}

// tailBuffer keeps the last max bytes written to it: enough of swtpm's output
// to explain a failed start without growing without bound.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b.buf, []byte("?"))))
	if s == "" {
		return "no output"
	}
	return s
}
