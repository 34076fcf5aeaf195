package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmt"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
)

const (
	scaleTotal  = 10000 // credentials
	scaleRPs    = 1000  // relying parties
	scaleTarget = 50    // accounts of big.example
	scalePIN    = "271828"
)

// The scale fixture: a state dir holding scaleTotal credentials, filled
// once per process (a benchmark function runs more than once) and
// removed by TestMain. PASSKEYD_BENCH_SCALE_DIR=DIR keeps it in DIR
// instead, and a later run reuses it (filling takes about a minute: one
// commit per credential).
var (
	scaleOnce sync.Once
	scaleDir  string
	scaleKeep bool
	scaleErr  error
)

// scaleComplete marks a filled fixture dir.
const scaleComplete = "scale-fixture-complete"

func TestMain(m *testing.M) {
	code := m.Run()
	if scaleDir != "" && !scaleKeep {
		os.RemoveAll(scaleDir)
	}
	os.Exit(code)
}

// scaleFixture fills a state dir with scaleTotal discoverable credentials
// over scaleRPs RPs (big.example with scaleTarget of them) and sets the
// PIN. Populated straight into the store: 10,000 TPM key creations would
// measure the TPM, not the scale. Every record has a real key blob.
func scaleFixture(b *testing.B) string {
	scaleOnce.Do(func() {
		if scaleDir = os.Getenv("PASSKEYD_BENCH_SCALE_DIR"); scaleDir != "" {
			scaleKeep = true
			if _, err := os.Stat(filepath.Join(scaleDir, scaleComplete)); err == nil {
				return
			}
		} else if scaleDir, scaleErr = os.MkdirTemp("", "passkeyd-scale-"); scaleErr != nil {
			return
		}
		r := openRig(b, scaleDir, ctap2.AttestationSelf)
		defer r.close()
		blob, _, err := r.tpm.CreateKey(tpm.ES256)
		if err != nil {
			scaleErr = err
			return
		}
		start := time.Now()
		for i := 0; i < scaleTotal; i++ {
			rp := fmt.Sprintf("rp%03d.example", i%(scaleRPs-1)+1)
			if i < scaleTarget {
				rp = "big.example"
			}
			err := r.store.PutCredential(&keystore.Credential{
				ID: []byte(fmt.Sprintf("cred-%05d", i)), RPID: rp, RPName: rp,
				UserID: []byte(fmt.Sprintf("user-%05d", i)), UserName: fmt.Sprintf("user%05d@%s", i, rp), UserDisplayName: "User",
				Algorithm: int(tpm.ES256), KeyBlob: blob, Discoverable: true, CreatedAt: time.Now(),
			})
			if err != nil {
				scaleErr = err
				return
			}
		}
		b.Logf("populated %d credentials in %v", scaleTotal, time.Since(start).Round(time.Millisecond))
		if st := r.kit.SetPIN(b, scalePIN); st != ctaptest.StatusOK {
			scaleErr = fmt.Errorf("setPIN: %v", st)
			return
		}
		scaleErr = os.WriteFile(filepath.Join(scaleDir, scaleComplete), nil, 0o600)
	})
	if scaleErr != nil {
		b.Fatalf("scale fixture: %v", scaleErr)
	}
	return scaleDir
}

// BenchmarkScale10k runs on scaleTotal discoverable credentials over
// scaleRPs RPs (one with scaleTarget accounts). In process, through
// CTAPHID:
//
//	ga50-ms      getAssertion without an allow list for the 50-account RP
//	enumRPs-ms   credential management: token, enumerateRPsBegin and every
//	             enumerateRPsGetNextRP (1,000 RPs)
//	list-ms      passkeyctl list's operation on the control socket: all
//	             10,000 credentials decrypted, encoded and received
//	heap-MB      live heap of the whole authenticator after a GC
//
// Then in a real passkeyd process on the same state dir (the production
// binary, its own swtpm), measured from /proc/PID/status: process memory,
// not Go heap, and its high-water mark, so a transient peak counts:
//
//	rss-start-MB  VmHWM after start-up and one info call
//	rss-list-MB   VmHWM after every iteration listed all 10,000
//	              credentials on the control socket (OpList)
//	rss-enum-MB   VmHWM after every iteration also ran the CTAP
//	              enumerations over CTAPHID (UDP): every RP, and every
//	              credential of big.example
func BenchmarkScale10k(b *testing.B) {
	dir := scaleFixture(b)
	r := openRig(b, dir, ctap2.AttestationSelf)
	h := sha256.Sum256([]byte("client data"))
	sock := filepath.Join(b.TempDir(), "control.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	csrv := control.NewServer(nil)
	mgmt.Service{Auth: r.auth}.Register(csrv, control.Anyone)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { csrv.Serve(ctx, ln); close(served) }()
	var ga, enum, list []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m := r.cbor(b, ctap2.CmdGetAssertion, map[int]any{1: "big.example", 2: h[:]})
		ga = append(ga, time.Since(t0))
		var n int
		cbor.Unmarshal(m[5], &n)
		if n != scaleTarget {
			b.Fatalf("numberOfCredentials = %d, want %d", n, scaleTarget)
		}

		t0 = time.Now()
		enumerateRPs(b, r.kit)
		enum = append(enum, time.Since(t0))

		t0 = time.Now()
		listAll(b, sock)
		list = append(list, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(ga)
	slices.Sort(enum)
	slices.Sort(list)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ga[len(ga)/2].Microseconds())/1000, "ga50-ms")
	b.ReportMetric(float64(enum[len(enum)/2].Microseconds())/1000, "enumRPs-ms")
	b.ReportMetric(float64(list[len(list)/2].Microseconds())/1000, "list-ms")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
	cancel()
	<-served
	r.close()

	// The same state dir in a passkeyd process.
	d := startPasskeyd(b, dir)
	cl, err := control.Dial(d.sock)
	if err != nil {
		b.Fatal(err)
	}
	var info mgmtapi.Info
	if err := cl.Call(mgmtapi.OpInfo, nil, &info); err != nil || info.Credentials != scaleTotal {
		b.Fatalf("info: %d credentials, %v", info.Credentials, err)
	}
	cl.Close()
	b.ReportMetric(d.hwm(b), "rss-start-MB")
	for i := 0; i < b.N; i++ {
		listAll(b, d.sock)
	}
	b.ReportMetric(d.hwm(b), "rss-list-MB")
	kit := d.ctap(b)
	for i := 0; i < b.N; i++ {
		enumerateRPs(b, kit)
		enumerateCredentials(b, kit, "big.example", scaleTarget)
	}
	b.ReportMetric(d.hwm(b), "rss-enum-MB")
	d.stop(b)
}

// enumerateRPs gets a credential management token and walks every RP
// (enumerateRPsBegin, enumerateRPsGetNextRP), checking the count.
func enumerateRPs(b *testing.B, kit *ctaptest.Client) {
	b.Helper()
	tok, st := kit.PinTokenWithPermissions(b, scalePIN, 0x04, "")
	if st != ctaptest.StatusOK {
		b.Fatalf("token: %v", st)
	}
	st, m := kit.Call(b, ctap2.CmdCredentialManagement, map[int]any{1: 2, 3: 2, 4: authenticate(tok, []byte{0x02})})
	if st != ctaptest.StatusOK {
		b.Fatalf("enumerateRPsBegin: %v", st)
	}
	var total int
	cbor.Unmarshal(m[5], &total)
	if total != scaleRPs {
		b.Fatalf("totalRPs = %d, want %d", total, scaleRPs)
	}
	for j := 1; j < total; j++ {
		if st, _ := kit.Call(b, ctap2.CmdCredentialManagement, map[int]any{1: 3}); st != ctaptest.StatusOK {
			b.Fatalf("enumerateRPsGetNextRP %d: %v", j, st)
		}
	}
}

// enumerateCredentials walks rpID's credentials with credential
// management (enumerateCredentialsBegin, ...GetNextCredential).
func enumerateCredentials(b *testing.B, kit *ctaptest.Client, rpID string, want int) {
	b.Helper()
	tok, st := kit.PinTokenWithPermissions(b, scalePIN, 0x04, "")
	if st != ctaptest.StatusOK {
		b.Fatalf("token: %v", st)
	}
	h := sha256.Sum256([]byte(rpID))
	params, err := cbor.Marshal(map[int]any{1: h[:]})
	if err != nil {
		b.Fatal(err)
	}
	st, m := kit.Call(b, ctap2.CmdCredentialManagement, map[int]any{1: 4, 2: cbor.RawMessage(params), 3: 2,
		4: authenticate(tok, append([]byte{0x04}, params...))})
	if st != ctaptest.StatusOK {
		b.Fatalf("enumerateCredentialsBegin: %v", st)
	}
	var total int
	cbor.Unmarshal(m[9], &total)
	if total != want {
		b.Fatalf("totalCredentials = %d, want %d", total, want)
	}
	for j := 1; j < total; j++ {
		if st, _ := kit.Call(b, ctap2.CmdCredentialManagement, map[int]any{1: 5}); st != ctaptest.StatusOK {
			b.Fatalf("enumerateCredentialsGetNextCredential %d: %v", j, st)
		}
	}
}

// listAll receives passkeyctl list's stream on the control socket at
// sock and checks it holds every credential.
func listAll(b *testing.B, sock string) {
	b.Helper()
	cl, err := control.Dial(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	st, err := cl.Stream(mgmtapi.OpList, nil)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		var m mgmtapi.ListMessage
		if err := st.Recv(&m); err != nil {
			b.Fatalf("list: after %d: %v", n, err)
		}
		if m.Credential != nil {
			n++
			continue
		}
		if !m.End || m.Count != scaleTotal || n != scaleTotal {
			b.Fatalf("list: %d credentials, end %+v", n, m)
		}
		return
	}
}

// passkeyd is a passkeyd process of a benchmark.
type passkeyd struct {
	cmd  *exec.Cmd
	sock string
	port int
	done chan error
}

var buildPasskeyd = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("PASSKEYD_BIN"); bin != "" {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "passkeyd-bench-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "passkeyd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/passkeyd")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/passkeyd: %v\n%s", err, out)
	}
	return bin, nil
})

// startPasskeyd runs the production binary (as the interop tests do) on
// stateDir with its own swtpm, the UDP transport and a control socket,
// and waits for the socket.
func startPasskeyd(b *testing.B, stateDir string) *passkeyd {
	b.Helper()
	bin, err := buildPasskeyd()
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	d := &passkeyd{sock: filepath.Join(b.TempDir(), "control.sock"), port: port, done: make(chan error, 1)}
	d.cmd = exec.Command(bin, "serve", "--state-dir", stateDir, "--tpm", "swtpm",
		"--transport", fmt.Sprintf("udp:127.0.0.1:%d", port), "--prompt", "approve-all",
		"--control", d.sock, "--log-level", "warn")
	// Its log is kept, not printed: it would split the benchmark's line.
	var log ctaptest.SyncBuffer
	d.cmd.Stdout, d.cmd.Stderr = &log, &log
	b.Cleanup(func() {
		if b.Failed() {
			b.Logf("passkeyd's log:\n%s", log.String())
		}
	})
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its swtpm goes with it
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	b.Cleanup(func() { d.kill() })
	for deadline := time.Now().Add(30 * time.Second); ; {
		if cl, err := control.Dial(d.sock); err == nil {
			cl.Close()
			return d
		}
		select {
		case err := <-d.done:
			b.Fatalf("passkeyd exited before it was ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatal("passkeyd's control socket did not appear")
		}
	}
}

// hwm is the process's VmHWM (peak resident set size) in MB.
func (d *passkeyd) hwm(b *testing.B) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatalf("VmHWM %q: %v", v, err)
			}
			return float64(kb) / 1000
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// ctap is a CTAPHID platform on the process's UDP transport: a Pipe whose
// host end the bridge carries over UDP, one datagram per report.
func (d *passkeyd) ctap(b *testing.B) *ctaptest.Client {
	b.Helper()
	conn, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: d.port})
	if err != nil {
		b.Fatal(err)
	}
	p := ctaptest.NewPipe()
	b.Cleanup(func() { p.Close(); conn.Close() })
	go func() { // host to device
		for {
			r, err := p.ReadReport()
			if err != nil {
				return
			}
			if _, err := conn.Write(r); err != nil {
				return
			}
		}
	}()
	go func() { // device to host
		buf := make([]byte, 65)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if n == ctaptest.HIDReportSize && p.WriteReport(buf[:n]) != nil {
				return
			}
		}
	}()
	c, err := ctaptest.OpenHID(p)
	if err != nil {
		b.Fatal(err)
	}
	return ctaptest.NewClient(c, 2)
}

// stop ends the process with SIGTERM and waits for it.
func (d *passkeyd) stop(b *testing.B) {
	b.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			b.Errorf("passkeyd: %v", err)
		}
	case <-time.After(10 * time.Second):
		b.Error("passkeyd did not stop within 10 s of SIGTERM")
	}
}

// kill ends the process group if it still runs.
func (d *passkeyd) kill() {
	select {
	case err := <-d.done:
		d.done <- err
	default:
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}
