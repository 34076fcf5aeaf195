package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Shared TPMs: the simulator is a process-wide singleton, and one swtpm for
// the generic suite keeps the run short. Tests that need a fresh TPM (restart,
// persistence) start their own swtpm.
var (
	simOnce      sync.Once
	sharedSimTPM *TPM
	simErr       error

	swOnce sync.Once
	swTPM  *TPM
	swDir  string
	swErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedSimTPM != nil {
		if err := sharedSimTPM.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close simulator:", err)
			code = 1
		}
	}
	if swTPM != nil {
		if err := swTPM.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close swtpm:", err)
			code = 1
		}
	}
	if swDir != "" {
		_ = os.RemoveAll(swDir)
	}
	os.Exit(code)
}

func inCI() bool { return os.Getenv("CI") == "true" }

// testLogger sends the package's logs to the test log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sharedSim returns the process's simulator TPM, skipping (or failing in CI)
// when it cannot run, e.g. without cgo. A build without the tpmsim tag
// fails: skipping would silently drop every simulator test.
func sharedSim(tb testing.TB) *TPM {
	tb.Helper()
	simOnce.Do(func() { sharedSimTPM, simErr = Open(Config{Spec: "sim"}) })
	if simErr != nil {
		if inCI() || errors.Is(simErr, ErrNoSimulator) {
			tb.Fatalf("simulator: %v", simErr)
		}
		tb.Skipf("simulator unavailable: %v", simErr)
	}
	return sharedSimTPM
}

var swtpmInstall sync.Once

// needSwtpm makes sure swtpm is installed: apt-get install as root, else
// skip, except in CI, where a missing swtpm fails the run.
func needSwtpm(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("swtpm"); err == nil {
		return
	}
	if os.Geteuid() == 0 {
		swtpmInstall.Do(func() {
			install := func() error {
				cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "swtpm", "swtpm-tools")
				cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
				out, err := cmd.CombinedOutput()
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			}
			if err := install(); err != nil {
				_ = exec.Command("apt-get", "update").Run()
				if err := install(); err != nil {
					tb.Logf("apt-get install swtpm: %v", err)
				}
			}
		})
		if _, err := exec.LookPath("swtpm"); err == nil {
			return
		}
	}
	if inCI() {
		tb.Fatal("swtpm is not installed (CI=true)")
	}
	tb.Skip("swtpm is not installed; apt-get install swtpm swtpm-tools")
}

// sharedSwtpm returns one swtpm-backed TPM for the generic suite.
func sharedSwtpm(tb testing.TB) *TPM {
	tb.Helper()
	needSwtpm(tb)
	swOnce.Do(func() {
		swDir, swErr = os.MkdirTemp("", "passkeyd-tpm-test-")
		if swErr == nil {
			swTPM, swErr = Open(Config{Spec: "swtpm", StateDir: swDir})
		}
	})
	if swErr != nil {
		tb.Fatalf("open swtpm: %v", swErr)
	}
	return swTPM
}

// openSwtpm starts a private swtpm with state in dir, closed at cleanup.
func openTestSwtpm(tb testing.TB, dir string) *TPM {
	tb.Helper()
	return openTestSwtpmSRK(tb, dir, "")
}

// openTestSwtpmSRK is openTestSwtpm with a Config.SRK.
func openTestSwtpmSRK(tb testing.TB, dir, srk string) *TPM {
	tb.Helper()
	needSwtpm(tb)
	tp, err := Open(Config{Spec: "swtpm", StateDir: dir, Logger: testLogger(tb), SRK: srk})
	if err != nil {
		tb.Fatalf("open swtpm: %v", err)
	}
	tb.Cleanup(func() {
		if err := tp.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return tp
}

// forEachBackend runs f against the simulator and a real swtpm process.
func forEachBackend(t *testing.T, f func(t *testing.T, tp *TPM)) {
	t.Run("sim", func(t *testing.T) { f(t, sharedSim(t)) })
	t.Run("swtpm", func(t *testing.T) { f(t, sharedSwtpm(t)) })
}

func digestOf(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// transientHandles lists the loaded transient objects.
func transientHandles(tb testing.TB, tp *TPM) []tpm2.TPMHandle {
	tb.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	hs, err := tp.handles(tpm2.TPMHTTransient)
	if err != nil {
		tb.Fatalf("list transient handles: %v", err)
	}
	return hs
}

func TestOpenInfo(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		info := tp.Info()
		t.Logf("info: %+v, algorithms: %v", info, tp.Algorithms())
		if len(info.Manufacturer) != 4 {
			t.Errorf("Manufacturer = %q, want 4 characters", info.Manufacturer)
		}
		if info.FirmwareVersion == "" {
			t.Error("FirmwareVersion is empty")
		}
		switch info.Kind {
		case "simulator":
		case "swtpm":
			if info.Manufacturer != "IBM " {
				t.Errorf("swtpm Manufacturer = %q, want %q", info.Manufacturer, "IBM ")
			}
		default:
			t.Errorf("Kind = %q", info.Kind)
		}
		algs := tp.Algorithms()
		if len(algs) == 0 || algs[0] != ES256 {
			t.Errorf("Algorithms() = %v, want ES256 first", algs)
		}
		algs[0] = 0 // the cache must not be shared with callers
		if tp.Algorithms()[0] != ES256 {
			t.Error("Algorithms() returned its cache")
		}
	})
}

func TestES256(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		blob, pub, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		t.Logf("ES256 blob: %d bytes", len(blob))
		// U2F key handles are at most 255 bytes, ~30 of them wrapping.
		if len(blob) > 225 {
			t.Errorf("ES256 blob is %d bytes, want <= 225", len(blob))
		}
		ecPub, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			t.Fatalf("public key is %T, want *ecdsa.PublicKey", pub)
		}
		parsed, alg, err := PublicKey(blob)
		if err != nil || alg != ES256 {
			t.Fatalf("PublicKey = %v, %v", alg, err)
		}
		if !ecPub.Equal(parsed) {
			t.Error("PublicKey(blob) differs from CreateKey's key")
		}
		d := digestOf("authData || clientDataHash")
		sig, err := tp.Sign(blob, d)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if !ecdsa.VerifyASN1(ecPub, d, sig) {
			t.Error("ecdsa.VerifyASN1 rejected the signature")
		}
		if ecdsa.VerifyASN1(ecPub, digestOf("other"), sig) {
			t.Error("signature verified for another digest")
		}
		if _, err := tp.Sign(blob, d[:20]); err == nil {
			t.Error("Sign accepted a 20-byte digest")
		}
	})
}

func TestRS256(t *testing.T) {
	// One key per backend: swtpm's RSA-2048 keygen takes 0.1-1 s.
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		start := time.Now()
		blob, pub, err := tp.CreateKey(RS256)
		if err != nil {
			t.Fatalf("CreateKey(RS256): %v", err)
		}
		t.Logf("RS256 keygen %v, blob %d bytes", time.Since(start), len(blob))
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok || rsaPub.N.BitLen() != 2048 || rsaPub.E != 65537 {
			t.Fatalf("public key = %T %v", pub, pub)
		}
		parsed, alg, err := PublicKey(blob)
		if err != nil || alg != RS256 || !rsaPub.Equal(parsed) {
			t.Fatalf("PublicKey = %v, %v", alg, err)
		}
		d := digestOf("rs256")
		sig, err := tp.Sign(blob, d)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if len(sig) != 256 {
			t.Errorf("signature is %d bytes, want 256", len(sig))
		}
		if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, d, sig); err != nil {
			t.Errorf("VerifyPKCS1v15: %v", err)
		}
	})
}

func TestSealUnseal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		blob, err := tp.Seal(secret)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		t.Logf("sealed blob (32-byte secret): %d bytes", len(blob))
		got, err := tp.Unseal(blob)
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatal("Unseal returned different bytes")
		}

		// Tampering with the private part (the encrypted sensitive area) or
		// with the public unique field (the object's Name) must both make
		// the TPM refuse the blob.
		for _, off := range []int{len(blob) - 1, len(blob) / 2, 2 + 12} {
			bad := bytes.Clone(blob)
			bad[off] ^= 0x01
			_, err := tp.Unseal(bad)
			if err == nil {
				t.Errorf("Unseal accepted a blob with byte %d flipped", off)
			} else if !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("tampered byte %d: error %v does not wrap ErrInvalidBlob", off, err)
			} else if bytes.Contains([]byte(err.Error()), secret) {
				t.Error("error message contains the secret")
			}
		}

		max := bytes.Repeat([]byte{0xA5}, 128)
		blob, err = tp.Seal(max)
		if err != nil {
			t.Fatalf("Seal(128 bytes): %v", err)
		}
		if got, err := tp.Unseal(blob); err != nil || !bytes.Equal(got, max) {
			t.Errorf("Unseal(128 bytes) = %v", err)
		}
		if _, err := tp.Seal(make([]byte, 129)); err == nil {
			t.Error("Seal accepted 129 bytes")
		}
		if _, err := tp.Seal(nil); err == nil {
			t.Error("Seal accepted an empty secret")
		}

		// Kinds do not mix.
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Unseal(key); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Unseal(key blob) = %v, want ErrInvalidBlob", err)
		}
		if _, err := tp.Sign(blob, digestOf("x")); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Sign(sealed blob) = %v, want ErrInvalidBlob", err)
		}
		if _, _, err := PublicKey(blob); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("PublicKey(sealed blob) = %v, want ErrInvalidBlob", err)
		}
	})
}

func TestSignerSelfSignedCertificate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		blob, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tp.Signer(blob)
		if err != nil {
			t.Fatalf("Signer: %v", err)
		}
		blob[len(blob)-1] ^= 0xff // the signer keeps its own copy
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "passkeyd test"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(time.Hour),
			BasicConstraintsValid: true,
			IsCA:                  true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
		if err != nil {
			t.Fatalf("CreateCertificate: %v", err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			t.Errorf("self-signed certificate does not verify: %v", err)
		}
		if _, err := s.Sign(rand.Reader, digestOf("x"), crypto.SHA384); err == nil {
			t.Error("Signer accepted SHA-384 opts")
		}
	})
}

func TestSignerRSA(t *testing.T) {
	tp := sharedSim(t) // RSA keygen is fast only on the simulator
	blob, _, err := tp.CreateKey(RS256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tp.Signer(blob)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatalf("CreateCertificate(RSA): %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("RSA self-signed certificate does not verify: %v", err)
	}
	if _, err := s.Sign(rand.Reader, digestOf("x"), &rsa.PSSOptions{Hash: crypto.SHA256}); err == nil {
		t.Error("Signer accepted PSS options")
	}
}

func TestHandlesFlushed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		blob, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if _, err := tp.Sign(blob, digestOf(fmt.Sprint(i))); err != nil {
				t.Fatalf("Sign %d: %v", i, err)
			}
		}
		sealed, err := tp.Seal([]byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Unseal(sealed); err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(blob)
		bad[len(bad)-1] ^= 1
		if _, err := tp.Sign(bad, digestOf("x")); err == nil {
			t.Fatal("tampered blob signed")
		}
		// Nothing at all: the SRK is persistent (provisioned at Open).
		if hs := transientHandles(t, tp); len(hs) != 0 || !tp.srkPersistent {
			t.Errorf("transient handles after 10 signs = %x (SRK persistent: %v), want none", hs, tp.srkPersistent)
		}
	})
}

func TestConcurrentSign(t *testing.T) {
	// More goroutines than the 3 transient slots: without the mutex held
	// across Load..Flush this fails with TPM_RC_OBJECT_MEMORY.
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		blob, pub, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		concurrently(t, 8, func(g int) error {
			for i := range 5 {
				d := digestOf(fmt.Sprint(g, i))
				sig, err := tp.Sign(blob, d)
				if err != nil {
					return err
				}
				if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
					return errors.New("bad signature")
				}
			}
			return nil
		})
	})
}

// concurrently runs f(0..n-1) in n goroutines and reports every error.
func concurrently(t *testing.T, n int, f func(g int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range n {
		wg.Go(func() {
			if err := f(g); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMalformedBlobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		good, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		random := make([]byte, 218)
		_, _ = rand.Read(random)
		cases := map[string][]byte{
			"nil":            nil,
			"empty":          {},
			"one byte":       {0},
			"size only":      {0, 10},
			"truncated":      good[:len(good)-1],
			"public only":    good[:2+int(binary.BigEndian.Uint16(good))],
			"trailing bytes": append(bytes.Clone(good), 0),
			"random":         random,
			"huge size":      {0xff, 0xff, 1, 2, 3},
			"zero public":    append([]byte{0, 0}, good[2+int(binary.BigEndian.Uint16(good)):]...),
		}
		for name, blob := range cases {
			if _, _, err := PublicKey(blob); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: PublicKey error = %v, want ErrInvalidBlob", name, err)
			}
			if _, err := tp.Sign(blob, digestOf("x")); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: Sign error = %v, want ErrInvalidBlob", name, err)
			}
			if _, err := tp.Unseal(blob); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: Unseal error = %v, want ErrInvalidBlob", name, err)
			}
			if _, err := tp.Signer(blob); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: Signer error = %v, want ErrInvalidBlob", name, err)
			}
		}
		if _, _, err := tp.CreateKey(Algorithm(-8)); err == nil {
			t.Error("CreateKey(EdDSA) succeeded")
		}
	})
}

// TestForeignBlob: a blob made by one TPM is refused by another.
func TestForeignBlob(t *testing.T) {
	sim, sw := sharedSim(t), sharedSwtpm(t)
	blob, _, err := sim.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Sign(blob, digestOf("x")); !errors.Is(err, ErrInvalidBlob) {
		t.Errorf("swtpm signing with a simulator blob: %v, want ErrInvalidBlob", err)
	}
}

func TestSimulatorSingleton(t *testing.T) {
	sharedSim(t)
	done := make(chan error, 1)
	go func() {
		_, err := Open(Config{Spec: "sim"})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errSimInUse) {
			t.Errorf("second Open(sim) = %v, want errSimInUse", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Open(sim) blocked")
	}
}

// TestSwtpmRestart: Close stops swtpm; a new swtpm on the same state dir
// derives the same SRK, so blobs made before still work.
func TestSwtpmRestart(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	tp, err := Open(Config{Spec: "swtpm", StateDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	blob, pub, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := tp.Seal([]byte("device secret"))
	if err != nil {
		t.Fatal(err)
	}
	srkName := tp.srk.Name.Buffer
	if err := tp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tp.Sign(blob, digestOf("x")); !errors.Is(err, errClosed) {
		t.Errorf("Sign after Close = %v, want errClosed", err)
	}
	select {
	case <-tp.proc.done:
	default:
		t.Error("swtpm still running after Close")
	}
	fi, err := os.Stat(filepath.Join(dir, "swtpm"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, want 0700", fi.Mode().Perm())
	}

	tp2 := openTestSwtpm(t, dir)
	if !bytes.Equal(tp2.srk.Name.Buffer, srkName) {
		t.Error("SRK Name changed across restart")
	}
	d := digestOf("after restart")
	sig, err := tp2.Sign(blob, d)
	if err != nil {
		t.Fatalf("Sign after restart: %v", err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
		t.Error("signature after restart does not verify")
	}
	if got, err := tp2.Unseal(sealed); err != nil || string(got) != "device secret" {
		t.Errorf("Unseal after restart = %q, %v", got, err)
	}
	// Orderly shutdown at Close kept the dictionary-attack counter at 0.
	if n := property(t, tp2, tpm2.TPMPTLockoutCounter); n != 0 {
		t.Errorf("lockout counter after clean restart = %d, want 0", n)
	}
}

// TestSwtpmStateDirInUse: a second Open on the same state dir fails and
// leaves the first swtpm working.
func TestSwtpmStateDirInUse(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpm(t, dir)
	blob, _, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	if tp2, err := Open(Config{Spec: "swtpm", StateDir: dir}); err == nil {
		_ = tp2.Close()
		t.Fatal("second Open on the same state dir succeeded")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: %v, want an \"in use\" error", err)
	}
	if _, err := tp.Sign(blob, digestOf("x")); err != nil {
		t.Errorf("first TPM after a failed second Open: %v", err)
	}
}

// TestSwtpmLongStateDir: a StateDir too deep for sun_path still works (the
// socket moves to a private temporary directory).
func TestSwtpmLongStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	tp := openTestSwtpm(t, dir)
	if tp.proc.tmpDir == "" {
		t.Error("expected the socket outside the state dir")
	}
	tmp := tp.proc.tmpDir
	if _, _, err := tp.CreateKey(ES256); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory %s not removed: %v", tmp, err)
	}
}

// persistSRKAndReopen persists tp's SRK (transient: tp was opened with
// Config.SRK "transient") at 0x81000001, as a provisioning tool would,
// closes tp and opens the swtpm state in dir again.
func persistSRKAndReopen(t *testing.T, tp *TPM, dir string) *TPM {
	t.Helper()
	if tp.srkPersistent {
		t.Fatal("persistSRKAndReopen: the SRK is persistent already")
	}
	tp.mu.Lock()
	_, err := tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     tp.srk,
		PersistentHandle: persistentSRK,
	}.Execute(tp.tpm)
	tp.mu.Unlock()
	if err != nil {
		t.Fatalf("EvictControl: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	return openTestSwtpm(t, dir)
}

// TestPersistentSRK: a TCG ECC SRK persisted at 0x81000001 is used instead
// of CreatePrimary, and it is the same key, so old blobs still load.
func TestPersistentSRK(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpmSRK(t, dir, SRKConfigTransient)
	blob, _, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	tp2 := persistSRKAndReopen(t, tp, dir)
	if !tp2.srkPersistent || tp2.srk.Handle != persistentSRK || tp2.Info().SRK != SRKPersistent {
		t.Fatalf("SRK = %x (persistent %v, %q), want 0x81000001", tp2.srk.Handle, tp2.srkPersistent, tp2.Info().SRK)
	}
	if _, err := tp2.Sign(blob, digestOf("x")); err != nil {
		t.Errorf("Sign under persistent SRK: %v", err)
	}
	if hs := transientHandles(t, tp2); len(hs) != 0 {
		t.Errorf("transient handles = %x, want none", hs)
	}
}

// TestUnixStaleHandles: over "unix:" (someone else's swtpm) a crashed
// client's objects are flushed at Open.
func TestUnixStaleHandles(t *testing.T) {
	needSwtpm(t)
	proc, conn, err := startSwtpm(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.stop() })
	sock := conn.addr
	_ = conn.Close()

	// A transient SRK (as every passkeyd before the persistent one): the
	// leftovers then fill the TPM's 3 slots.
	spec := "unix:" + sock
	tp, err := Open(Config{Spec: spec, Logger: testLogger(t), SRK: SRKConfigTransient})
	if err != nil {
		t.Fatal(err)
	}
	if tp.Info().Kind != spec {
		t.Errorf("Kind = %q, want %q", tp.Info().Kind, spec)
	}
	blob, _, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	// "Crash": two objects loaded and never flushed, connection dropped.
	tp.mu.Lock()
	for range 2 {
		if _, err := tp.load(o); err != nil {
			t.Fatal(err)
		}
	}
	_ = tp.conn.Close()
	tp.mu.Unlock()

	// With SRK + 2 leftovers the 3 slots are full: without the stale flush,
	// this Open's CreatePrimary fails with TPM_RC_OBJECT_MEMORY.
	tp2, err := Open(Config{Spec: spec, Logger: testLogger(t), SRK: SRKConfigTransient})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer tp2.Close()
	if hs := transientHandles(t, tp2); len(hs) != 1 {
		t.Errorf("transient handles after reopen = %x, want only the SRK", hs)
	}
	if _, err := tp2.Sign(blob, digestOf("x")); err != nil {
		t.Errorf("Sign after reopen: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	cases := map[string]Config{
		"missing device":      {Spec: filepath.Join(t.TempDir(), "tpmrm9")},
		"not a device":        {Spec: "/etc/hostname"},
		"unix without path":   {Spec: "unix:"},
		"unix no socket":      {Spec: "unix:" + filepath.Join(t.TempDir(), "nosock")},
		"swtpm no state dir":  {Spec: "swtpm"},
		"auto no state dir":   {Spec: "auto"},
		"fallback no state":   {Spec: "device-or-swtpm"},
		"device is directory": {Spec: t.TempDir()},
	}
	for name, cfg := range cases {
		if tp, err := Open(cfg); err == nil {
			_ = tp.Close()
			t.Errorf("%s: Open succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestSwtpmMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Open(Config{Spec: "swtpm", StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), errSwtpmMissing) {
		t.Errorf("Open without swtpm = %v, want %q", err, errSwtpmMissing)
	}
}

// TestAutoNeverFallsBackToSwtpm: without a TPM device, "auto" fails with
// an error that names the opt-in, and starts no swtpm (no state is made).
func TestAutoNeverFallsBackToSwtpm(t *testing.T) {
	if _, err := os.Stat(defaultDevice); err == nil {
		t.Skipf("%s exists: auto picks it", defaultDevice)
	}
	needSwtpm(t)
	dir := t.TempDir()
	tp, err := Open(Config{Spec: "auto", StateDir: dir, Logger: testLogger(t)})
	if err == nil {
		tp.Close()
		t.Fatalf("auto without %s opened %s", defaultDevice, tp.Info().Kind)
	}
	for _, want := range []string{defaultDevice, "never falls back to a software TPM", "--tpm device-or-swtpm"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "swtpm")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("auto left swtpm state behind: %v", err)
	}
}

// TestDeviceOrSwtpmFallsBack: the opt-in falls back to a private swtpm,
// says so at WARN, and marks the TPM as software.
func TestDeviceOrSwtpmFallsBack(t *testing.T) {
	if _, err := os.Stat(defaultDevice); err == nil {
		t.Skipf("%s exists: device-or-swtpm picks it", defaultDevice)
	}
	needSwtpm(t)
	var logs bytes.Buffer
	tp, err := Open(Config{Spec: "device-or-swtpm", StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if in := tp.Info(); in.Kind != "swtpm" || !in.Software {
		t.Errorf("Info = %+v, want kind swtpm, software", in)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="TPM device unavailable, using a private swtpm (--tpm device-or-swtpm)"`) {
		t.Errorf("no WARN about the fallback in:\n%s", logs.String())
	}
}

// TestSoftwareOnlyForPrivateSwtpm: Info.Software is set for a private
// swtpm (state in the state dir) and not for the simulator.
func TestSoftwareOnlyForPrivateSwtpm(t *testing.T) {
	if !openTestSwtpm(t, t.TempDir()).Info().Software {
		t.Error("private swtpm: Software = false")
	}
	if sharedSim(t).Info().Software {
		t.Error("simulator: Software = true")
	}
}

// property reads one TPM_PT_* value.
func property(tb testing.TB, tp *TPM, pt tpm2.TPMPT) uint32 {
	tb.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	v, err := tp.property(pt)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// TestSwtpmCrashNoLockout: when we die, swtpm gets SIGTERM and exits without
// TPM2_Shutdown, which counts as a dictionary attack once a DA-protected
// object (the PIN object; keys are noDA) was used; after 3 such exits a
// default swtpm would refuse the PIN with TPM_RC_LOCKOUT. Open resets the
// counter of its private swtpm.
func TestSwtpmCrashNoLockout(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	var blob, pinBlob KeyBlob
	pin := digestOf("PIN")[:16]
	for round := range 5 {
		tp, err := Open(Config{Spec: "swtpm", StateDir: dir, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if blob == nil {
			if blob, _, err = tp.CreateKey(ES256); err != nil {
				t.Fatal(err)
			}
			if pinBlob, err = tp.CreatePINObject(pin, []byte("s")); err != nil {
				t.Fatal(err)
			}
		}
		if n := property(t, tp, tpm2.TPMPTLockoutCounter); n != 0 {
			t.Errorf("round %d: lockout counter %d after Open", round, n)
		}
		if _, err := tp.Sign(blob, digestOf("x")); err != nil {
			t.Fatalf("round %d: Sign: %v", round, err)
		}
		if _, err := tp.UnsealWithPIN(pinBlob, pin); err != nil {
			t.Fatalf("round %d: UnsealWithPIN: %v", round, err)
		}
		// Crash: swtpm is terminated without TPM2_Shutdown.
		tp.mu.Lock()
		_ = tp.conn.Close()
		_ = tp.proc.stop()
		tp.tpm = nil
		tp.mu.Unlock()
	}
}

// fakeTPM answers with canned response codes, for the retry wrapper.
type fakeTPM struct {
	codes []tpm2.TPMRC
	calls int
}

func (f *fakeTPM) Send([]byte) ([]byte, error) {
	rc := f.codes[min(f.calls, len(f.codes)-1)]
	f.calls++
	rsp := make([]byte, headerSize)
	binary.BigEndian.PutUint16(rsp, uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(rsp[2:], headerSize)
	binary.BigEndian.PutUint32(rsp[6:], uint32(rc))
	return rsp, nil
}

func TestRetryTPM(t *testing.T) {
	for _, tc := range []struct {
		name      string
		codes     []tpm2.TPMRC
		wantCalls int
		wantRC    tpm2.TPMRC
	}{
		{"success", []tpm2.TPMRC{tpm2.TPMRCSuccess}, 1, tpm2.TPMRCSuccess},
		{"retry then ok", []tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting, tpm2.TPMRCSuccess}, 4, tpm2.TPMRCSuccess},
		{"gives up", []tpm2.TPMRC{tpm2.TPMRCRetry}, retryAttempts, tpm2.TPMRCRetry},
		{"other warning", []tpm2.TPMRC{tpm2.TPMRCObjectMemory}, 1, tpm2.TPMRCObjectMemory},
		{"error", []tpm2.TPMRC{tpm2.TPMRCHandle + 0x100}, 1, tpm2.TPMRCHandle + 0x100},
	} {
		f := &fakeTPM{codes: tc.codes}
		var slept time.Duration
		r := &retryTPM{next: f, log: testLogger(t), sleep: func(d time.Duration) { slept += d }}
		rsp, err := r.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if f.calls != tc.wantCalls {
			t.Errorf("%s: %d calls, want %d", tc.name, f.calls, tc.wantCalls)
		}
		if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:])); rc != tc.wantRC {
			t.Errorf("%s: rc 0x%x, want 0x%x", tc.name, uint32(rc), uint32(tc.wantRC))
		}
		if slept > time.Second {
			t.Errorf("%s: slept %v", tc.name, slept)
		}
	}
}

// Seed blobs for the fuzzer, made on swtpm (ES256, RS256, sealed). Only
// usable with that long-gone TPM's seeds.
var fuzzSeeds = []string{
	"00580023000b00040472000000100018000b0003001000209f1ec0cd73f49150" +
		"a55a30cdccac2ca7970e2fa8a61cd022eb0128f539a99dad002016daaed47e85" +
		"0a52af3fea55702012525eb976f223e210a042159f364ba30fba007e0020fca0" +
		"73f487d23cde3337f555e3004eca59d4d4ab5d6c51b08166b916386c974a0010" +
		"f4d296ae5b162870fd8804acde8c61d256ac01de48212c9cf6db3a31477a8e49" +
		"6573312fe14e5f20ec4b470ad807434168f2e59af9a25591585ca00265fe1a61" +
		"e400a9718ed7e4498bb7879e221a8ae7647099af6bf0e0817464",
	"01180001000b00040472000000100014000b080000000000010097c724f87eb3" +
		"0fe8c2d70f5c6c5f14fce85253d1689a3db612507471c01951d83150f784c93a" +
		"c5e8fec4848bff00180adbef3b08ef7f1b7b32fe4ef96e4917c0f7c06cdce28b" +
		"b80fa7b727ceab6db6a91f53b0620aa21bf60db7db9e05b80007eb40f35dc013" +
		"4cba3917ab0b029595b8dc408593c0c60d9e8bceeee27796474b9fcd47cd7393" +
		"a379831c23b4b4ce094e95dab046b43d679634e4deec59f19f504229f227e4ec" +
		"8e842c4b403a048d1fc8cbf7e3cc0275c76fb70c5d9aec44484ad6f91a74b47d" +
		"a42a9781b4eb11df652cd1f691226278bc4ddd88a262859a885e088c5882bac3" +
		"9cb5bf6f499cc9a39b2ee7b0a3c491a08054551f1076ad4df8d100de0020b699" +
		"b6f0308ced34fa31b2f2f2a1c95b5438061c210054c95eb285d6b4c3a07a0010" +
		"e1ff6785fb901b501ccbfad395067442cdd80809f2a34b76aaa12d05438b4a7a" +
		"49dc81ab8d8333237f5933af05b1e681a3a97350def10f585762a827800d0978" +
		"8241656342404eba53bd756878187cb7377876c6b2f8b4a8f148e1703eff73fa" +
		"907794e719cd8c7ec00e24255870ca3fc972e3cad50c610664a1097b026658e2" +
		"0b8a2f1335970c7c0161168351a6cd020937a5171199e8032c2e68aef8172e81" +
		"3d0a5b488532fcfad228487046f9a856fe3f71c583362a5a0f4f",
	"002e0008000b000004520000001000206755d649ba00c4923599cadcb0d3e41c" +
		"ab7ae19e5aee4a99f06d26fe2c4899e0009e0020a0530509f5c15daa6e1bbbd4" +
		"32a651b70ed4ab8281e2bf4bc169066e744794360010bb23e3bb2c4018e20ffc" +
		"409000801dd0b739c2b0f00feb02962dc4485291e7ecd81e27b5211b256a0049" +
		"3058e5245f9414f64a6eed20b594e0fa2f5e791f49837e5d974aa0986009a1af" +
		"2ff192b146220103d787c63b27aa5510531e9e0cbd54c68cff9a03664ecb33d3" +
		"70148c7ad7343df1313b774e229bc743",
}

func FuzzPublicKey(f *testing.F) {
	for _, s := range fuzzSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, blob []byte) {
		pub, alg, err := PublicKey(blob)
		if err != nil {
			if !errors.Is(err, ErrInvalidBlob) {
				t.Fatalf("error %v does not wrap ErrInvalidBlob", err)
			}
			return
		}
		switch alg {
		case ES256:
			k, ok := pub.(*ecdsa.PublicKey)
			if !ok {
				t.Fatalf("ES256 key is %T", pub)
			}
			raw, err := k.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
				t.Fatalf("ES256 key not on P-256: %v", err)
			}
		case RS256:
			if k, ok := pub.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
				t.Fatalf("RS256 key %T", pub)
			}
		default:
			t.Fatalf("algorithm %v", alg)
		}
		// Whatever parses must be canonical: re-encoding gives the input.
		o, err := parseBlob(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encodeBlob(o.public, o.private), blob) {
			t.Fatal("parsed blob does not re-encode to the input")
		}
	})
}

// TestUnsealTellsMalformedFromRefused: a truncated or malformed sealed blob
// is ErrInvalidBlob without ErrBlobRefused (the bytes are broken, whatever
// the TPM); one that another TPM sealed (as after a TPM clear) is
// ErrBlobRefused. Callers tell "the store is damaged" from "the TPM was
// cleared" by this.
func TestUnsealTellsMalformedFromRefused(t *testing.T) {
	a := openTestSwtpm(t, t.TempDir())
	b := openTestSwtpm(t, t.TempDir())
	blob, err := a.Seal(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(blob)
	flipped[len(flipped)-1] ^= 1
	for name, tc := range map[string]struct {
		tp      *TPM
		blob    []byte
		refused bool
	}{
		"truncated":         {a, blob[:len(blob)-10], false},
		"trailing bytes":    {a, append(bytes.Clone(blob), 0), false},
		"empty":             {a, nil, false},
		"public area bytes": {a, append(append([]byte{}, blob[:4]...), bytes.Repeat([]byte{0xff}, len(blob)-4)...), false},
		"another TPM":       {b, blob, true},
		"private altered":   {a, flipped, true},
	} {
		_, err := tc.tp.Unseal(tc.blob)
		if !errors.Is(err, ErrInvalidBlob) || errors.Is(err, ErrBlobRefused) != tc.refused {
			t.Errorf("%s: Unseal = %v, want ErrInvalidBlob with refused=%v", name, err, tc.refused)
		}
	}
}
