package tpm

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

// pinOf is what CTAP sends: LEFT(SHA-256(pin), 16).
func pinOf(pin string) []byte { return digestOf(pin)[:16] }

func daStatus(tb testing.TB, tp *TPM) DAStatus {
	tb.Helper()
	st, err := tp.DictionaryAttackStatus()
	if err != nil {
		tb.Fatalf("DictionaryAttackStatus: %v", err)
	}
	return st
}

// daSandbox gives a test the TPM's dictionary-attack counter: maxTries
// tries, a recovery time long enough that nothing is forgiven during the
// test, and a counter of 0. Cleanup resets the counter and restores the
// parameters, so that a lockout cannot leak into other tests (credential
// keys are DA-protected too).
func daSandbox(t *testing.T, tp *TPM, maxTries uint32) {
	t.Helper()
	before := daStatus(t, tp)
	set := func(maxTries uint32, recovery, lockoutRecovery time.Duration) error {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		if err := tp.dictionaryAttackParameters(maxTries, recovery, lockoutRecovery); err != nil {
			return err
		}
		return tp.dictionaryAttackLockReset()
	}
	if err := set(maxTries, 1000*time.Second, before.LockoutRecovery); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := set(before.MaxTries, before.RecoveryTime, before.LockoutRecovery); err != nil {
			t.Errorf("restore DA parameters: %v", err)
		}
	})
}

// assertNoLeftovers checks that only the SRK is loaded: no transient object
// (0x80), loaded session (0x02) or saved session (0x03) is left.
func assertNoLeftovers(tb testing.TB, tp *TPM) {
	tb.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		hs, err := tp.handles(ht)
		if err != nil {
			tb.Fatal(err)
		}
		if ht == tpm2.TPMHTTransient && !tp.srkPersistent && len(hs) == 1 && hs[0] == tp.srk.Handle {
			continue
		}
		if len(hs) != 0 {
			tb.Errorf("handles of type 0x%02x left: %x", uint8(ht), hs)
		}
	}
}

// sniffTPM records every command and response, as a bus sniffer would.
type sniffTPM struct {
	next transport.TPM
	mu   sync.Mutex
	cmds [][]byte
	rsps [][]byte
}

func (s *sniffTPM) Send(cmd []byte) ([]byte, error) {
	// Copy the command before sending it: the in-process simulator
	// decrypts parameters in place, in the caller's buffer.
	c := bytes.Clone(cmd)
	rsp, err := s.next.Send(cmd)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, c)
	s.rsps = append(s.rsps, bytes.Clone(rsp))
	return rsp, err
}

// sniff puts a sniffer between tp and its TPM until the test ends.
func sniff(t *testing.T, tp *TPM) *sniffTPM {
	t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	orig := tp.tpm
	s := &sniffTPM{next: orig}
	tp.tpm = s
	t.Cleanup(func() {
		tp.mu.Lock()
		tp.tpm = orig
		tp.mu.Unlock()
	})
	return s
}

// reset forgets what was recorded.
func (s *sniffTPM) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds, s.rsps = nil, nil
}

// seen reports whether secret occurs in any recorded command or response.
func (s *sniffTPM) seen(secret []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range append(append([][]byte(nil), s.cmds...), s.rsps...) {
		if bytes.Contains(b, secret) {
			return true
		}
	}
	return false
}

// command returns the first recorded command with code cc.
func (s *sniffTPM) command(cc tpm2.TPMCC) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cmds {
		if len(c) >= headerSize && tpm2.TPMCC(binary.BigEndian.Uint32(c[6:10])) == cc {
			return c
		}
	}
	return nil
}

// firstSession parses the first TPMS_AUTH_COMMAND of a command with
// nHandles handles: its session handle and attributes.
func firstSession(tb testing.TB, cmd []byte, nHandles int) (tpm2.TPMHandle, byte) {
	tb.Helper()
	off := headerSize + 4*nHandles + 4 // handles, authorizationSize
	if len(cmd) < off+6 {
		tb.Fatalf("command too short for a session: % x", cmd)
	}
	h := tpm2.TPMHandle(binary.BigEndian.Uint32(cmd[off:]))
	nonce := int(binary.BigEndian.Uint16(cmd[off+4:]))
	return h, cmd[off+6+nonce]
}

const (
	sessionDecrypt = 0x20 // TPMA_SESSION.decrypt: first command parameter encrypted
	sessionEncrypt = 0x40 // TPMA_SESSION.encrypt: first response parameter encrypted
)

func TestPINObject(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		pin, wrong := pinOf("1234"), pinOf("1235")
		secret := randomBytes(t, 32)
		start := time.Now()
		blob, err := tp.CreatePINObject(pin, secret)
		if err != nil {
			t.Fatalf("CreatePINObject: %v", err)
		}
		t.Logf("CreatePINObject %v, blob %d bytes", time.Since(start), len(blob))
		assertNoLeftovers(t, tp)
		for what, b := range map[string][]byte{"pinAuth": pin, "authValue": pinAuthValue(pin), "secret": secret} {
			if bytes.Contains(blob, b) {
				t.Errorf("blob contains the %s", what)
			}
		}

		start = time.Now()
		got, err := tp.UnsealWithPIN(blob, pin)
		if err != nil {
			t.Fatalf("UnsealWithPIN(right PIN): %v", err)
		}
		t.Logf("UnsealWithPIN %v", time.Since(start))
		if !bytes.Equal(got, secret) {
			t.Fatal("UnsealWithPIN returned different bytes")
		}
		assertNoLeftovers(t, tp)
		if st := daStatus(t, tp); st.Counter != 0 || st.InLockout {
			t.Errorf("after the right PIN: %+v", st)
		}

		for i := uint32(1); i <= 3; i++ {
			_, err = tp.UnsealWithPIN(blob, wrong)
			if !errors.Is(err, ErrPINMismatch) {
				t.Fatalf("wrong PIN %d: %v, want ErrPINMismatch", i, err)
			}
			if !errors.Is(err, tpm2.TPMRCAuthFail) {
				t.Errorf("wrong PIN %d: %v, want TPM_RC_AUTH_FAIL (a DA-counted failure)", i, err)
			}
			if st := daStatus(t, tp); st.Counter != i || st.InLockout {
				t.Errorf("after %d wrong PINs: %+v, want counter %d", i, st, i)
			}
			assertNoLeftovers(t, tp)
		}
		t.Logf("wrong PIN error: %v", err)

		// The TPM does not forgive on success, unlike CTAP's counter.
		if got, err := tp.UnsealWithPIN(blob, pin); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("right PIN after wrong ones: %v", err)
		}
		if st := daStatus(t, tp); st.Counter != 3 {
			t.Errorf("counter after a right PIN = %d, want still 3", st.Counter)
		}
		assertNoLeftovers(t, tp)
	})
}

// TestPINLockout: MaxTries wrong PINs lock the TPM out; then even the right
// PIN is refused until the lockout is reset, while credential keys (noDA)
// keep signing. On
// the simulator the test sets the DA parameters itself; the swtpm is a
// private one, with the parameters Open gives it.
func TestPINLockout(t *testing.T) {
	run := func(t *testing.T, tp *TPM, maxTries uint32) {
		pin, wrong := pinOf("correct horse"), pinOf("battery staple")
		secret := []byte("the secret")
		blob, err := tp.CreatePINObject(pin, secret)
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		if st := daStatus(t, tp); st.MaxTries != maxTries || st.Counter != 0 {
			t.Fatalf("DA status %+v, want MaxTries %d and counter 0", st, maxTries)
		}
		start := time.Now()
		for i := uint32(1); i <= maxTries; i++ {
			if _, err := tp.UnsealWithPIN(blob, wrong); !errors.Is(err, ErrPINMismatch) {
				t.Fatalf("wrong PIN %d of %d: %v, want ErrPINMismatch", i, maxTries, err)
			}
			if st := daStatus(t, tp); st.Counter != i {
				t.Fatalf("after %d wrong PINs counter = %d", i, st.Counter)
			}
		}
		t.Logf("%d wrong PINs in %v", maxTries, time.Since(start))
		st := daStatus(t, tp)
		if !st.InLockout || st.Counter != maxTries {
			t.Errorf("after %d wrong PINs: %+v, want in lockout", maxTries, st)
		}
		if d, ok := st.RecoversWithin(); !st.Locked() || !ok || d != st.RecoveryTime {
			t.Errorf("after %d wrong PINs: Locked %v, RecoversWithin %v %v; want true, %v", maxTries, st.Locked(), d, ok, st.RecoveryTime)
		}
		for _, p := range [][]byte{wrong, pin} {
			_, err = tp.UnsealWithPIN(blob, p)
			if !errors.Is(err, ErrLockout) || errors.Is(err, ErrPINMismatch) {
				t.Fatalf("in lockout: %v, want ErrLockout", err)
			}
			if !strings.Contains(err.Error(), "TPM-wide") || !strings.Contains(err.Error(), fmt.Sprintf("%d of %d", maxTries, maxTries)) {
				t.Errorf("lockout message lacks the explanation or the counter: %v", err)
			}
			assertNoLeftovers(t, tp)
		}
		t.Logf("lockout error: %v", err)
		if st := daStatus(t, tp); st.Counter != maxTries {
			t.Errorf("tries during lockout counted: counter %d", st.Counter)
		}
		// The lockout is TPM-wide, but credential keys are noDA: passkeys
		// keep signing while PIN guessing is stopped.
		if _, err := tp.Sign(key, digestOf("x")); err != nil {
			t.Errorf("Sign in lockout: %v, want a signature (credential keys are noDA)", err)
		}
		assertNoLeftovers(t, tp)

		tp.mu.Lock()
		err = tp.dictionaryAttackLockReset()
		tp.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.UnsealWithPIN(blob, pin); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("right PIN after lockout reset: %v", err)
		}
		if _, err := tp.Sign(key, digestOf("x")); err != nil {
			t.Errorf("Sign after lockout reset: %v", err)
		}
	}
	t.Run("sim", func(t *testing.T) {
		tp := sharedSim(t)
		daSandbox(t, tp, 5)
		run(t, tp, 5)
	})
	t.Run("swtpm", func(t *testing.T) {
		run(t, openTestSwtpm(t, t.TempDir()), swtpmMaxTries)
	})
}

// TestPINOnTheWire: a bus sniffer sees neither the PIN-derived values nor
// the secret, while it does see a plain Seal's secret (the control).
func TestPINOnTheWire(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		pin, wrong := pinOf("0000"), pinOf("0001")
		secret := randomBytes(t, 48)
		s := sniff(t, tp)

		// Control: Seal and Unseal use password sessions and no
		// parameter encryption, so the secret crosses the bus.
		plain, err := tp.Seal(secret)
		if err != nil {
			t.Fatal(err)
		}
		if !s.seen(secret) {
			t.Fatal("sniffer missed Seal's secret: it does not see the traffic")
		}
		s.reset()
		if _, err := tp.Unseal(plain); err != nil {
			t.Fatal(err)
		}
		if !s.seen(secret) {
			t.Fatal("sniffer missed Unseal's secret")
		}

		s.reset()
		blob, err := tp.CreatePINObject(pin, secret)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.UnsealWithPIN(blob, wrong); !errors.Is(err, ErrPINMismatch) {
			t.Fatalf("wrong PIN: %v", err)
		}
		got, err := tp.UnsealWithPIN(blob, pin)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("UnsealWithPIN: %v", err)
		}
		for what, b := range map[string][]byte{
			"pinAuth":         pin,
			"wrong pinAuth":   wrong,
			"authValue":       pinAuthValue(pin),
			"wrong authValue": pinAuthValue(wrong),
			"secret":          secret,
			"secret prefix":   secret[:8],
		} {
			if s.seen(b) {
				t.Errorf("the %s is in clear on the wire", what)
			}
		}

		// The sessions are what the design says: StartAuthSession salted
		// with the SRK and bound to nothing; Create and Unseal authorised
		// through an HMAC session (not TPM_RS_PW) with decrypt resp.
		// encrypt set.
		sas := s.command(tpm2.TPMCCStartAuthSession)
		if sas == nil {
			t.Fatal("no TPM2_StartAuthSession")
		}
		if key, bind := binary.BigEndian.Uint32(sas[10:]), binary.BigEndian.Uint32(sas[14:]); key != uint32(tp.srk.Handle) || bind != uint32(tpm2.TPMRHNull) {
			t.Errorf("StartAuthSession tpmKey 0x%08x bind 0x%08x, want the SRK 0x%08x and TPM_RH_NULL", key, bind, uint32(tp.srk.Handle))
		}
		for _, c := range []struct {
			cc       tpm2.TPMCC
			nHandles int
			attr     byte
		}{{tpm2.TPMCCCreate, 1, sessionDecrypt}, {tpm2.TPMCCUnseal, 1, sessionEncrypt}} {
			cmd := s.command(c.cc)
			if cmd == nil {
				t.Fatalf("no command 0x%x", uint32(c.cc))
			}
			h, attrs := firstSession(t, cmd, c.nHandles)
			if uint32(h)>>24 != uint32(tpm2.TPMHTHMACSession) {
				t.Errorf("command 0x%x authorised by 0x%08x, want an HMAC session", uint32(c.cc), uint32(h))
			}
			if attrs&c.attr == 0 {
				t.Errorf("command 0x%x session attributes 0x%02x lack 0x%02x", uint32(c.cc), attrs, c.attr)
			}
		}
		assertNoLeftovers(t, tp)
	})
}

// TestPINBlobKinds: PIN objects and other blobs do not mix, and nothing
// that is refused before the TPM authorises counts against the lockout.
func TestPINBlobKinds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		pin := pinOf("246810")
		blob, err := tp.CreatePINObject(pin, []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := tp.Seal([]byte("no PIN"))
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("PIN object blob (1-byte secret) %d bytes, sealed blob (6 bytes) %d", len(blob), len(plain))
		if _, err := tp.Unseal(blob); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Unseal(PIN object) = %v, want ErrInvalidBlob", err)
		}
		if _, err := tp.UnsealWithPIN(plain, pin); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("UnsealWithPIN(sealed data without PIN) = %v, want ErrInvalidBlob", err)
		}
		if _, err := tp.UnsealWithPIN(key, pin); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("UnsealWithPIN(key) = %v, want ErrInvalidBlob", err)
		}
		if _, err := tp.Sign(blob, digestOf("x")); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("Sign(PIN object) = %v, want ErrInvalidBlob", err)
		}
		if _, _, err := PublicKey(blob); !errors.Is(err, ErrInvalidBlob) {
			t.Errorf("PublicKey(PIN object) = %v, want ErrInvalidBlob", err)
		}
		for _, off := range []int{len(blob) - 1, len(blob) / 2, 2 + 12} {
			bad := bytes.Clone(blob)
			bad[off] ^= 0x01
			if _, err := tp.UnsealWithPIN(bad, pin); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("byte %d flipped: %v, want ErrInvalidBlob", off, err)
			}
		}
		for name, b := range map[string][]byte{"nil": nil, "truncated": blob[:len(blob)-1], "trailing": append(bytes.Clone(blob), 0)} {
			if _, err := tp.UnsealWithPIN(b, pin); !errors.Is(err, ErrInvalidBlob) {
				t.Errorf("%s: %v, want ErrInvalidBlob", name, err)
			}
		}
		if st := daStatus(t, tp); st.Counter != 0 {
			t.Errorf("refused blobs counted against the lockout: counter %d", st.Counter)
		}
		assertNoLeftovers(t, tp)

		// Arguments.
		if _, err := tp.CreatePINObject(pin[:15], []byte("s")); err == nil {
			t.Error("CreatePINObject accepted a 15-byte pinAuth")
		}
		if _, err := tp.CreatePINObject(make([]byte, 65), []byte("s")); err == nil {
			t.Error("CreatePINObject accepted a 65-byte pinAuth")
		}
		if _, err := tp.CreatePINObject(pin, nil); err == nil {
			t.Error("CreatePINObject accepted an empty secret")
		}
		if _, err := tp.CreatePINObject(pin, make([]byte, 129)); err == nil {
			t.Error("CreatePINObject accepted 129 bytes")
		}
		if _, err := tp.UnsealWithPIN(blob, nil); err == nil || errors.Is(err, ErrPINMismatch) {
			t.Errorf("UnsealWithPIN(nil pinAuth) = %v, want an argument error", err)
		}
		max := bytes.Repeat([]byte{0x5A}, 128)
		b128, err := tp.CreatePINObject(digestOf("32-byte pinAuth"), max)
		if err != nil {
			t.Fatalf("CreatePINObject(128 bytes, 32-byte pinAuth): %v", err)
		}
		if got, err := tp.UnsealWithPIN(b128, digestOf("32-byte pinAuth")); err != nil || !bytes.Equal(got, max) {
			t.Errorf("UnsealWithPIN(128 bytes) = %v", err)
		}
	})
}

// TestPINAuthZeroBytes: pinAuth values with zero bytes anywhere work (go-tpm
// v0.9.8 cuts an authValue at its first zero byte; pinAuthValue has none).
func TestPINAuthZeroBytes(t *testing.T) {
	for range 10000 {
		if v := pinAuthValue(randomBytes(t, 16)); len(v) != 32 || bytes.IndexByte(v, 0) >= 0 {
			t.Fatalf("pinAuthValue = %x", v)
		}
	}
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		cases := map[string][]byte{
			"inner zero":    append(append(bytes.Repeat([]byte{7}, 8), 0), bytes.Repeat([]byte{9}, 7)...),
			"leading zero":  append([]byte{0}, bytes.Repeat([]byte{7}, 15)...),
			"trailing zero": append(bytes.Repeat([]byte{7}, 15), 0),
			"all zero":      make([]byte, 16),
		}
		for name, pin := range cases {
			blob, err := tp.CreatePINObject(pin, []byte(name))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got, err := tp.UnsealWithPIN(blob, pin); err != nil || string(got) != name {
				t.Errorf("%s: UnsealWithPIN = %q, %v", name, got, err)
			}
		}
		if st := daStatus(t, tp); st.Counter != 0 {
			t.Errorf("right PINs counted as failures: counter %d", st.Counter)
		}
	})
}

// TestPINChange: a new PIN object replaces the old one, but the TPM cannot
// revoke the old blob: it still opens with the old PIN, so the store must
// destroy it.
func TestPINChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		oldPIN, newPIN := pinOf("old"), pinOf("new")
		secret := []byte("device secret")
		oldBlob, err := tp.CreatePINObject(oldPIN, secret)
		if err != nil {
			t.Fatal(err)
		}
		newBlob, err := tp.CreatePINObject(newPIN, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.UnsealWithPIN(newBlob, newPIN); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("new blob, new PIN: %v", err)
		}
		if _, err := tp.UnsealWithPIN(newBlob, oldPIN); !errors.Is(err, ErrPINMismatch) {
			t.Errorf("new blob, old PIN: %v, want ErrPINMismatch", err)
		}
		if got, err := tp.UnsealWithPIN(oldBlob, oldPIN); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("old blob, old PIN: %v (the TPM keeps no revocation state)", err)
		}
	})
}

// failTPM fails the first command with code cc, after sending it, as a
// connection that breaks while the TPM works would.
type failTPM struct {
	next   transport.TPM
	cc     tpm2.TPMCC
	failed bool
}

func (f *failTPM) Send(cmd []byte) ([]byte, error) {
	rsp, err := f.next.Send(cmd)
	if !f.failed && len(cmd) >= headerSize && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == f.cc {
		f.failed = true
		return nil, errors.New("injected transport error")
	}
	return rsp, err
}

// TestPINFlushOnTransportError: a session whose command got no answer is
// flushed all the same.
func TestPINFlushOnTransportError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		pin := pinOf("9999")
		blob, err := tp.CreatePINObject(pin, []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		for _, cc := range []tpm2.TPMCC{tpm2.TPMCCUnseal, tpm2.TPMCCCreate} {
			// The failing Unseal is a wrong PIN: the TPM flushes the
			// session itself only after a success.
			p := pinOf("wrong")
			if cc == tpm2.TPMCCCreate {
				p = pin
			}
			tp.mu.Lock()
			orig := tp.tpm
			tp.tpm = &failTPM{next: orig, cc: cc}
			tp.mu.Unlock()
			if cc == tpm2.TPMCCUnseal {
				_, err = tp.UnsealWithPIN(blob, p)
			} else {
				_, err = tp.CreatePINObject(p, []byte("s"))
			}
			tp.mu.Lock()
			tp.tpm = orig
			tp.mu.Unlock()
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Errorf("command 0x%x: %v, want the injected error", uint32(cc), err)
			}
			assertNoLeftovers(t, tp)
		}
	})
}

func TestConcurrentPINAndSign(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		daSandbox(t, tp, 8)
		pin := pinOf("5555")
		blob, err := tp.CreatePINObject(pin, []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := tp.CreateKey(ES256)
		if err != nil {
			t.Fatal(err)
		}
		concurrently(t, 8, func(g int) error {
			for range 3 {
				var err error
				if g%2 == 0 {
					_, err = tp.UnsealWithPIN(blob, pin)
				} else {
					_, err = tp.Sign(key, digestOf("x"))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		assertNoLeftovers(t, tp)
	})
}

func TestDictionaryAttackStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tp *TPM) {
		st := daStatus(t, tp)
		t.Logf("%s: %+v", tp.Info().Kind, st)
		if st.MaxTries == 0 || st.RecoveryTime == 0 {
			t.Errorf("implausible DA status %+v", st)
		}
	})
}

// TestSwtpmDAParameters: Open sets the DA parameters of a private swtpm,
// and only of a private swtpm ("unix:" is someone else's).
func TestSwtpmDAParameters(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	proc, conn, err := startSwtpm(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := conn.addr
	_ = conn.Close()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = proc.stop()
		}
	})

	tp, err := Open(Config{Spec: "unix:" + sock, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defaults := daStatus(t, tp)
	t.Logf("swtpm defaults: %+v", defaults)
	if defaults.MaxTries == swtpmMaxTries {
		t.Fatalf("unix: swtpm has MaxTries %d: Open changed it, or the default changed", defaults.MaxTries)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	_ = proc.stop()
	stopped = true

	for round := range 2 {
		tp := openTestSwtpm(t, dir)
		st := daStatus(t, tp)
		want := DAStatus{MaxTries: swtpmMaxTries, RecoveryTime: swtpmRecoveryTime, LockoutRecovery: swtpmLockoutRecovery}
		if st != want {
			t.Errorf("round %d: private swtpm DA status %+v, want %+v", round, st, want)
		}
		if err := tp.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnorderlyShutdownAfterPINUse measures what lockout.go describes: a
// swtpm that exits without TPM2_Shutdown after a PIN object was used counts
// one failure at its next start-up; after mere object creation it does not.
// A "unix:" swtpm keeps the count; a private swtpm's Open resets it.
func TestUnorderlyShutdownAfterPINUse(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	pin := pinOf("1111")
	var blob KeyBlob
	// crash starts swtpm on dir, runs f over "unix:", and kills swtpm
	// without TPM2_Shutdown. It returns the DA counter seen at the start.
	crash := func(f func(tp *TPM)) uint32 {
		t.Helper()
		proc, conn, err := startSwtpm(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = proc.stop() }()
		sock := conn.addr
		_ = conn.Close()
		tp, err := Open(Config{Spec: "unix:" + sock, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		n := daStatus(t, tp).Counter
		f(tp)
		if err := tp.Close(); err != nil { // no TPM2_Shutdown for "unix:"
			t.Fatal(err)
		}
		return n
	}
	create := func(tp *TPM) {
		var err error
		if blob, err = tp.CreatePINObject(pin, []byte("s")); err != nil {
			t.Fatal(err)
		}
	}
	unseal := func(tp *TPM) {
		if _, err := tp.UnsealWithPIN(blob, pin); err != nil {
			t.Fatal(err)
		}
	}
	if n := crash(create); n != 0 {
		t.Fatalf("fresh swtpm counter %d", n)
	}
	if n := crash(unseal); n != 0 {
		t.Errorf("counter after an unorderly exit with no DA use = %d, want 0", n)
	}
	if n := crash(func(*TPM) {}); n != 1 {
		t.Errorf("counter after an unorderly exit after a PIN unseal = %d, want 1", n)
	}
	tp := openTestSwtpm(t, dir) // private swtpm: Open resets
	if n := daStatus(t, tp).Counter; n != 0 {
		t.Errorf("private swtpm counter after Open = %d, want 0 (reset)", n)
	}
}

// TestPINPersistentSRK: with a persistent SRK the salted session uses its
// public area from TPM2_ReadPublic; blobs made under the transient SRK
// (the same key) still open.
func TestPINPersistentSRK(t *testing.T) {
	dir := t.TempDir()
	tp := openTestSwtpmSRK(t, dir, SRKConfigTransient)
	pin := pinOf("4321")
	blob, err := tp.CreatePINObject(pin, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	tp2 := persistSRKAndReopen(t, tp, dir)
	if !tp2.srkPersistent {
		t.Fatal("SRK is not the persistent one")
	}
	if got, err := tp2.UnsealWithPIN(blob, pin); err != nil || string(got) != "s" {
		t.Errorf("UnsealWithPIN under the persistent SRK: %q, %v", got, err)
	}
	blob2, err := tp2.CreatePINObject(pin, []byte("t"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tp2.UnsealWithPIN(blob2, pin); err != nil || string(got) != "t" {
		t.Errorf("UnsealWithPIN of a new object: %q, %v", got, err)
	}
	assertNoLeftovers(t, tp2)
}

// TestOpenWarnsAboutLockout: Open says so when the TPM is in lockout.
func TestOpenWarnsAboutLockout(t *testing.T) {
	needSwtpm(t)
	proc, conn, err := startSwtpm(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.stop() })
	sock := conn.addr
	_ = conn.Close()
	spec := "unix:" + sock
	tp, err := Open(Config{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	pin := pinOf("1")
	blob, err := tp.CreatePINObject(pin, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	for { // swtpm's own default: 3 tries
		if _, err := tp.UnsealWithPIN(blob, pinOf("2")); errors.Is(err, ErrLockout) {
			break
		} else if !errors.Is(err, ErrPINMismatch) {
			t.Fatal(err)
		}
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	tp, err = Open(Config{Spec: spec, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if !strings.Contains(logs.String(), "level=WARN msg=\"TPM is in dictionary-attack lockout (TPM-wide)") {
		t.Errorf("Open logged no lockout warning:\n%s", logs.String())
	}
	if st := daStatus(t, tp); !st.InLockout || st.MaxTries != 3 {
		t.Errorf("unix: swtpm DA status %+v: Open must not touch it", st)
	}
}
