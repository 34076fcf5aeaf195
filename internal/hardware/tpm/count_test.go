package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM commands per operation: what passkeyd sends, and what the TPM
// executes once the kernel's resource manager (/dev/tpmrm0) has multiplied
// it. Counts, not times: a regression here is a regression in the latency
// a person waits for on a real TPM (make bench models it).

// rmModel records every command passkeyd sends and counts the commands the
// TPM would execute behind the Linux kernel's resource manager
// (drivers/char/tpm/tpm2-space.c), which gives each open file of
// /dev/tpmrm0 its own handle space. Its rule: before each command, every
// transient object and session the sending file holds is loaded
// (TPM2_ContextLoad each); after it, every object is saved and flushed
// (ContextSave, FlushContext) and every session saved (ContextSave); a
// save of something the command itself ended (FlushContext, a session
// without continueSession) fails, but is still a command. Closing a file
// flushes the sessions it still holds (a command each) and drops its
// saved objects (none). What a file holds is read from the TPM behind the
// model after each command (that backend has no resource manager, so what
// it holds is what the resource manager's tables would); those reads, and
// the flushes that stand for the kernel dropping saved objects, are not
// counted.
type rmModel struct {
	next transport.TPM

	mu     sync.Mutex
	files  []*rmFile
	issued []tpm2.TPMCC   // by passkeyd
	atTPM  map[string]int // at the TPM, by command name
	failed int            // of atTPM: the failed ContextSaves
	// lastRetry: the last response asked for the command again.
	lastRetry bool
}

// rmFile is one open file of /dev/tpmrm0.
type rmFile struct {
	m    *rmModel
	held []tpm2.TPMHandle // transient objects and loaded sessions
}

func newRMModel(next transport.TPM) *rmModel {
	return &rmModel{next: next, atTPM: map[string]int{}}
}

// file opens a file.
func (m *rmModel) file() *rmFile {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := &rmFile{m: m}
	m.files = append(m.files, f)
	return f
}

// Send implements transport.TPM.
func (f *rmFile) Send(cmd []byte) ([]byte, error) {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
	// A command sent again after TPM_RC_RETRY (retryTPM) is passkeyd's
	// one command, executed twice: swtpm asks for a retry of the first
	// DA-protected authorization after start-up (the PIN's Unseal).
	if !m.lastRetry {
		m.issued = append(m.issued, cc)
	}
	pre := f.held
	m.atTPM["ContextLoad"] += len(pre)
	before, err := m.loaded()
	if err != nil {
		return nil, err
	}
	rsp, err := m.next.Send(cmd)
	if err != nil {
		return nil, err
	}
	m.atTPM[ccName(cc)]++
	m.lastRetry = retryable(rsp)
	after, err := m.loaded()
	if err != nil {
		return nil, err
	}
	var post []tpm2.TPMHandle
	for _, h := range after {
		if slices.Contains(pre, h) || !slices.Contains(before, h) {
			post = append(post, h) // still held, or new from this command
		}
	}
	for _, h := range post {
		m.atTPM["ContextSave"]++
		if isObject(h) {
			m.atTPM["FlushContext"]++
		}
	}
	for _, h := range pre {
		if !slices.Contains(post, h) {
			m.atTPM["ContextSave"]++
			m.failed++
		}
	}
	f.held = post
	return rsp, nil
}

// Close implements io.Closer: the kernel flushes the file's sessions and
// drops its saved objects; here both are flushed on the backend, the
// sessions counted.
func (f *rmFile) Close() error {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range f.held {
		if !isObject(h) {
			m.atTPM["FlushContext"]++
		}
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(m.next); err != nil {
			return fmt.Errorf("rm model: close: flush 0x%08x: %w", uint32(h), err)
		}
	}
	f.held = nil
	m.files = slices.DeleteFunc(m.files, func(g *rmFile) bool { return g == f })
	return nil
}

func isObject(h tpm2.TPMHandle) bool { return uint32(h)>>24 == uint32(tpm2.TPMHTTransient) }

// loaded lists the transient objects and loaded sessions, uncounted.
func (m *rmModel) loaded() ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 16,
		}.Execute(m.next)
		if err != nil {
			return nil, fmt.Errorf("rm model: list handles: %w", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("rm model: list handles: %w", err)
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 == uint32(ht) {
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// take returns and resets what was counted since the last take.
func (m *rmModel) take() (issued []string, atTPM int, by map[string]int, failed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cc := range m.issued {
		issued = append(issued, ccName(cc))
	}
	for _, n := range m.atTPM {
		atTPM += n
	}
	by, failed = m.atTPM, m.failed
	m.issued, m.atTPM, m.failed = nil, map[string]int{}, 0
	return issued, atTPM, by, failed
}

func ccName(cc tpm2.TPMCC) string {
	switch cc {
	case tpm2.TPMCCCreatePrimary:
		return "CreatePrimary"
	case tpm2.TPMCCCreate:
		return "Create"
	case tpm2.TPMCCCreateLoaded:
		return "CreateLoaded"
	case tpm2.TPMCCLoad:
		return "Load"
	case tpm2.TPMCCSign:
		return "Sign"
	case tpm2.TPMCCUnseal:
		return "Unseal"
	case tpm2.TPMCCStartAuthSession:
		return "StartAuthSession"
	case tpm2.TPMCCContextSave:
		return "ContextSave"
	case tpm2.TPMCCContextLoad:
		return "ContextLoad"
	case tpm2.TPMCCFlushContext:
		return "FlushContext"
	case tpm2.TPMCCReadPublic:
		return "ReadPublic"
	case tpm2.TPMCCGetCapability:
		return "GetCapability"
	case tpm2.TPMCCTestParms:
		return "TestParms"
	case tpm2.TPMCCEvictControl:
		return "EvictControl"
	}
	return fmt.Sprintf("0x%03x", uint32(cc))
}

// rmOp is one operation's counts.
type rmOp struct {
	issued []string
	atTPM  int
	by     map[string]int
	failed int
}

func (o rmOp) plus(p rmOp) rmOp {
	by := map[string]int{}
	for k, n := range o.by {
		by[k] += n
	}
	for k, n := range p.by {
		by[k] += n
	}
	return rmOp{issued: append(slices.Clone(o.issued), p.issued...), atTPM: o.atTPM + p.atTPM, by: by, failed: o.failed + p.failed}
}

func (o rmOp) String() string {
	var parts []string
	for k, n := range o.by {
		parts = append(parts, fmt.Sprintf("%s x%d", k, n))
	}
	slices.Sort(parts)
	return fmt.Sprintf("passkeyd sends %v; %d at the TPM (%s; %d failed)", o.issued, o.atTPM, strings.Join(parts, " "), o.failed)
}

// rmRig is a swtpm (started here, so its state outlives each Open) that
// passkeyd opens as "unix:", treated as /dev/tpmrm0 with the model.
type rmRig struct {
	t     *testing.T
	spec  string
	model *rmModel
	// reopenFails: the device cannot be opened again (opFile falls back
	// to the main file).
	reopenFails bool
}

func newRMRig(t *testing.T) *rmRig {
	t.Helper()
	needSwtpm(t)
	proc, conn, err := startSwtpm(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.stop() })
	spec := "unix:" + conn.addr
	_ = conn.Close()
	return &rmRig{t: t, spec: spec}
}

// open opens the TPM with the model; its commands so far are taken.
func (r *rmRig) open(srk string) (*TPM, rmOp) {
	r.t.Helper()
	tp, err := open(Config{Spec: r.spec, Logger: testLogger(r.t), SRK: srk}, openHooks{
		resourceManaged: true,
		wrap: func(next transport.TPM) transport.TPM {
			r.model = newRMModel(next)
			return r.model.file()
		},
		reopen: func() (transport.TPMCloser, error) {
			if r.reopenFails {
				return nil, errors.New("too many open files")
			}
			return r.model.file(), nil
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return tp, r.take()
}

func (r *rmRig) take() rmOp {
	var o rmOp
	o.issued, o.atTPM, o.by, o.failed = r.model.take()
	return o
}

// rmOps runs passkeyd's operations on a TPM opened with Config.SRK srk and
// returns their counts: "open" (the first Open of a fresh TPM), "start-up"
// (the next Open, plus the two Unseals of the device secrets that every
// daemon start-up does), "stop", "getAssertion" (Sign), "makeCredential"
// (CreateKey, then the self-attestation Sign with the new key),
// "getAssertion-pin" (UnsealWithPIN, then Sign).
func rmOps(t *testing.T, srk string) map[string]rmOp {
	return rmOpsOn(t, newRMRig(t), srk)
}

func rmOpsOn(t *testing.T, r *rmRig, srk string) map[string]rmOp {
	ops := map[string]rmOp{}
	tp, first := r.open(srk)
	ops["open"] = first
	sealed := [2]KeyBlob{}
	for i := range sealed {
		var err error
		if sealed[i], err = tp.Seal([]byte("device secret")); err != nil {
			t.Fatal(err)
		}
	}
	key, _, err := tp.CreateKey(ES256)
	if err != nil {
		t.Fatal(err)
	}
	pin := pinOf("1357")
	pinObj, err := tp.CreatePINObject(pin, []byte("pin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tp, o := r.open(srk)
	for _, b := range sealed {
		if _, err := tp.Unseal(b); err != nil {
			t.Fatal(err)
		}
	}
	ops["start-up"] = o.plus(r.take())
	op := func(name string, f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ops[name] = r.take()
	}
	op("getAssertion", func() error {
		_, err := tp.Sign(key, digestOf("assertion"))
		return err
	})
	op("makeCredential", func() error {
		blob, _, err := tp.CreateKey(ES256)
		if err != nil {
			return err
		}
		_, err = tp.Sign(blob, digestOf("attestation"))
		return err
	})
	op("getAssertion-pin", func() error {
		if _, err := tp.UnsealWithPIN(pinObj, pin); err != nil {
			return err
		}
		_, err := tp.Sign(key, digestOf("assertion"))
		return err
	})
	op("stop", tp.Close)
	for name, o := range ops {
		t.Logf("%-16s %v", name, o)
	}
	return ops
}

// TestTPMCommandsPerOperation asserts what passkeyd sends per operation and
// what the TPM executes behind the kernel's resource manager (the model
// above; test/vm/tpmcount.sh measures the same through the real one in the
// VM and got the same numbers). Issue 13 asks for at most 10 per
// getAssertion and 11 per makeCredential at the TPM, and fewer at start-up
// than the 55 of a transient SRK; the persistent SRK and a file per
// operation make it 7, 8 and 19.
func TestTPMCommandsPerOperation(t *testing.T) {
	ops := rmOps(t, "")
	want := map[string][]string{
		// No FlushContext: each operation has its own file (opFile).
		"getAssertion":     {"Load", "Sign"},
		"makeCredential":   {"Create", "Load", "Sign"},
		"getAssertion-pin": {"Load", "StartAuthSession", "Unseal", "Load", "Sign"},
		"stop":             nil,
	}
	for name, w := range want {
		if got := ops[name].issued; !slices.Equal(got, w) {
			t.Errorf("%s: passkeyd sends %v, want %v", name, got, w)
		}
	}
	// No operation creates an SRK or holds anything across operations
	// (no ContextSave of its own: the SRK is persistent).
	for name, o := range ops {
		if name == "open" {
			continue
		}
		for _, c := range o.issued {
			if c == "CreatePrimary" || c == "ContextSave" || c == "ContextLoad" {
				t.Errorf("%s: passkeyd sends %s (%v)", name, c, o.issued)
			}
		}
	}
	for name, max := range map[string]int{"getAssertion": 7, "makeCredential": 8, "start-up": 19, "stop": 0} {
		if got := ops[name].atTPM; got > max {
			t.Errorf("%s: %d commands at the TPM through the resource manager, want at most %d (%v)", name, got, max, ops[name])
		}
	}
}

// TestTPMCommandsTransientSRK: the model reproduces what the VM measured
// through the real resource manager for a transient SRK (passkeyd before
// the persistent one; test/vm/tpmcount.sh: 19 per getAssertion, 23 per
// makeCredential, 55 per start-up, 3 per stop), which is what makes its
// other numbers worth asserting.
func TestTPMCommandsTransientSRK(t *testing.T) {
	ops := rmOps(t, SRKConfigTransient)
	for name, want := range map[string]int{"getAssertion": 19, "makeCredential": 23, "start-up": 55, "stop": 3} {
		if got := ops[name].atTPM; got != want {
			t.Errorf("%s with a transient SRK: %d commands at the TPM in the model, the VM measured %d (%v)", name, got, want, ops[name])
		}
	}
}

// TestTPMCommandsReopenFails: when the device cannot be opened again per
// operation, operations run on the main file and flush what they loaded:
// 10 commands per getAssertion at the TPM, as with a persistent SRK alone.
func TestTPMCommandsReopenFails(t *testing.T) {
	r := newRMRig(t)
	r.reopenFails = true
	ops := rmOpsOn(t, r, "")
	if got, want := ops["getAssertion"].issued, []string{"Load", "Sign", "FlushContext"}; !slices.Equal(got, want) {
		t.Errorf("getAssertion: passkeyd sends %v, want %v", got, want)
	}
	if got := ops["getAssertion"].atTPM; got != 10 {
		t.Errorf("getAssertion: %d commands at the TPM, want 10 (%v)", got, ops["getAssertion"])
	}
}
