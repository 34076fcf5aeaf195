// Package tpm keeps passkeyd's credential keys and device secrets inside a
// TPM 2.0: keys are created under the storage primary key (SRK) and leave the
// TPM only as wrapped blobs that this TPM alone can load.
//
// Backends: a kernel TPM device (/dev/tpmrm0), a swtpm socket, a private swtpm
// process, or go-tpm-tools' in-process reference simulator. The simulator is
// C (cgo, OpenSSL) and for tests only: it is compiled in with the tpmsim tag
// (sim.go); without it, which is every production build, Spec "sim" fails
// with ErrNoSimulator (nosim.go). Benchmarks and tests of other packages open
// a private software TPM the same way this package's do:
//
//	t, err := tpm.Open(tpm.Config{Spec: "swtpm", StateDir: tb.TempDir()})
//
// A CTAP2 client PIN is checked by the TPM itself: CreatePINObject seals a
// secret in a DA-protected object whose authorization derives from the PIN,
// UnsealWithPIN opens it over a salted session. Wrong PINs count against the
// TPM's dictionary-attack lockout, which is TPM-wide (DictionaryAttackStatus;
// see pin.go and lockout.go for how it meets CTAP's own retry counters).
//
// The package owns every command passkeyd sends to the TPM, the blob format,
// and the one TPM-backed crypto.Signer (Signer). It imports no other passkeyd
// package and knows nothing of CTAP, credentials or the store: those build on
// it, never the reverse.
package tpm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Algorithm is a COSE algorithm identifier.
type Algorithm int

// Credential algorithms, by COSE identifier (RFC 9053, RFC 8812).
const (
	ES256 Algorithm = -7
	RS256 Algorithm = -257
)

// String returns the COSE name, for logs and errors.
func (a Algorithm) String() string {
	switch a {
	case ES256:
		return "ES256"
	case RS256:
		return "RS256"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// KeyBlob is an opaque, storable key: TPM2B_PUBLIC || TPM2B_PRIVATE as created
// under the storage primary key. Only this TPM can use it. Keep it compact
// (ES256 ~218 bytes: U2F key handles max 255 bytes incl. ~30 bytes of wrapping
// overhead).
type KeyBlob []byte

// Config selects and configures the TPM.
type Config struct {
	// Spec is one of:
	//   "auto" (or ""): /dev/tpmrm0, and only that: never a software TPM
	//   "device-or-swtpm": /dev/tpmrm0 if it opens, else a private swtpm under
	//                StateDir (logged at WARN: see Info.Software)
	//   any other path, e.g. "/dev/tpmrm0": a TPM character device
	//   "unix:PATH": a socket taking raw TPM commands (swtpm --server type=unixio);
	//                one connection, held until Close (swtpm serves one client at a time)
	//   "swtpm": start a private swtpm with state under StateDir/swtpm, killed on Close
	//   "sim": go-tpm-tools' in-process reference simulator, for tests only: it
	//          exists only in binaries built with -tags tpmsim (and cgo), else
	//          Open returns ErrNoSimulator; one per process; freshly
	//          manufactured on each Open, so blobs die with it
	Spec string
	// StateDir is needed for "swtpm" and "device-or-swtpm".
	StateDir string
	// Logger may be nil.
	Logger *slog.Logger
	// SRK: "" uses the TCG SRK at 0x81000001, persisting it there first
	// when the handle is free (see prepareSRK); SRKConfigTransient never
	// persists anything and derives the SRK at every Open when
	// 0x81000001 is free (a key found there is still used).
	SRK string
}

// SRKConfigTransient is Config.SRK for "never persist the SRK".
const SRKConfigTransient = "transient"

// Info describes the TPM in use.
type Info struct {
	Kind            string // "device:/dev/tpmrm0", "swtpm", "unix:...", "simulator"
	Manufacturer    string // 4-char vendor id, e.g. "IBM "
	FirmwareVersion string // TPM_PT_FIRMWARE_VERSION_1/_2 as four 16-bit numbers, e.g. "8217.4131.22.13878"
	// SRK is where the storage primary key lives: SRKPersistent,
	// SRKProvisioned or SRKTransient; SRKReason says why it is transient.
	SRK, SRKReason string
	// Software is set for a private swtpm: its state, the TPM's seeds
	// included, is files under StateDir, so a copy of that directory is a
	// working copy of every key, and PINs can be guessed offline on it.
	Software bool
}

// ErrInvalidBlob is wrapped by errors for blobs that cannot be parsed or that
// this TPM refuses to load (tampered, or made by another TPM or SRK). CTAP
// code maps it to "no such credential" rather than to a device failure.
var ErrInvalidBlob = errors.New("invalid key blob")

// ErrBlobRefused is wrapped (with ErrInvalidBlob) by errors for a blob that
// parses but that the TPM will not load: its integrity check under our
// storage key failed. That is what a blob made by another TPM, or by this
// one before a TPM clear, gets. An ErrInvalidBlob without it is a blob
// that is malformed or truncated, which no TPM change explains.
var ErrBlobRefused = fmt.Errorf("%w: the TPM refuses it", ErrInvalidBlob)

// ErrNoSimulator is what Open with Spec "sim" returns in a binary built
// without the tpmsim tag, which is every production build: the simulator is
// for tests only. Its text is the whole explanation passkeyd prints.
var ErrNoSimulator = errors.New("this build has no TPM simulator: it is for tests (go test -tags tpmsim)")

// errSimInUse: the simulator is open already (sim.go). Declared here, in
// every build, for the tests that check it.
var errSimInUse = errors.New("open simulator: already open in this process (it is a process-wide singleton: share one *TPM)")

var errClosed = errors.New("tpm: use of closed TPM")

const (
	defaultDevice = "/dev/tpmrm0"
	// persistentSRK is the TCG-reserved handle for the storage primary key
	// (TCG TPM v2.0 Provisioning Guidance, section 7.8).
	persistentSRK tpm2.TPMHandle = 0x81000001
)

// TPM is an open TPM. Its methods are safe for concurrent use: every command
// goes through one mutex, held across Load..Flush sequences so that at most
// one credential object is loaded at a time (swtpm and the simulator have only
// three transient object slots, and go-tpm transports are not concurrency-safe).
type TPM struct {
	mu   sync.Mutex
	tpm  transport.TPM // retrying wrapper around conn; nil once closed
	conn io.Closer     // the underlying transport
	proc *swtpmProcess // our swtpm child, or nil
	log  *slog.Logger
	// reopen opens another file on a resource-managed device (nil for
	// every other backend): see opFile.
	reopen func() (transport.TPMCloser, error)

	// Set at Open, read-only afterwards, but for the SRK fields and
	// info.SRK/SRKReason, which switchToTemplateSRK may change under mu.
	info          Info
	algs          []Algorithm
	srk           tpm2.NamedHandle
	srkPublic     tpm2.TPMTPublic // salts the HMAC sessions that carry PINs
	srkPersistent bool
	// srkChecked: a blob was refused under a persistent SRK found at
	// Open, and switchToTemplateSRK has run (once per Open).
	srkChecked bool
}

// backend is an opened transport plus what Open and Close must know about it.
type backend struct {
	conn transport.TPMCloser
	kind string
	proc *swtpmProcess
	// flushStale: nothing virtualises handles, so objects and sessions of
	// a crashed run still occupy the TPM's few slots.
	flushStale bool
	// reopen, for a TPM behind the kernel's resource manager, opens
	// another file on the same device (see TPM.opFile).
	reopen func() (transport.TPMCloser, error)
}

// Open opens the TPM that cfg selects, prepares the storage primary key and
// asks which credential algorithms the TPM supports.
func Open(cfg Config) (*TPM, error) { return open(cfg, openHooks{}) }

// openHooks let tests watch every command (count_test.go counts them the
// way the kernel's resource manager would multiply them).
type openHooks struct {
	// wrap, if set, is put between the retry logic and the backend.
	wrap func(transport.TPM) transport.TPM
	// resourceManaged: treat the backend as /dev/tpmrm0 (no stale-handle
	// flush at Open), whatever it is.
	resourceManaged bool
	// reopen replaces the backend's reopen (a file per operation).
	reopen func() (transport.TPMCloser, error)
}

func open(cfg Config, hooks openHooks) (*TPM, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := openBackend(cfg, log)
	if err != nil {
		return nil, err
	}
	var next transport.TPM = b.conn
	if hooks.wrap != nil {
		next = hooks.wrap(next)
	}
	if hooks.resourceManaged {
		b.flushStale = false
	}
	if hooks.reopen != nil {
		b.reopen = hooks.reopen
	}
	t := &TPM{
		tpm:    newRetryTPM(next, log),
		conn:   b.conn,
		proc:   b.proc,
		log:    log,
		reopen: b.reopen,
		info:   Info{Kind: b.kind, Software: b.proc != nil},
	}
	switch cfg.SRK {
	case "", SRKConfigTransient:
	default:
		_ = b.conn.Close()
		if b.proc != nil {
			_ = b.proc.stop()
		}
		return nil, fmt.Errorf("open TPM: Config.SRK %q: want \"\" or %q", cfg.SRK, SRKConfigTransient)
	}
	if err := t.start(b.flushStale, cfg.SRK); err != nil {
		_ = t.shutdown()
		return nil, fmt.Errorf("open TPM (%s): %w", b.kind, err)
	}
	log.Info("TPM ready", "kind", t.info.Kind, "manufacturer", t.info.Manufacturer,
		"firmware", t.info.FirmwareVersion, "srk", t.info.SRK, "srk_reason", t.info.SRKReason, "algorithms", t.algs)
	return t, nil
}

func openBackend(cfg Config, log *slog.Logger) (*backend, error) {
	switch spec := cfg.Spec; {
	case spec == "" || spec == "auto":
		// Device only. A silent fallback to a software TPM would put the
		// keys' protection in files anyone who copies the state dir has.
		b, err := openDevice(defaultDevice)
		if err != nil {
			return nil, fmt.Errorf("%v; --tpm auto uses only a TPM device and never falls back to a software TPM: "+
				"pass --tpm device-or-swtpm to allow a private swtpm (a copy of the state directory is then a copy of your passkeys)", err)
		}
		log.Info("using TPM device", "path", defaultDevice)
		return b, nil
	case spec == "device-or-swtpm":
		b, devErr := openDevice(defaultDevice)
		if devErr == nil {
			log.Info("using TPM device", "path", defaultDevice)
			return b, nil
		}
		log.Warn("TPM device unavailable, using a private swtpm (--tpm device-or-swtpm)",
			"device", defaultDevice, "reason", devErr, "state_dir", cfg.StateDir)
		b, err := openSwtpm(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("open TPM (device-or-swtpm): %v, and no swtpm fallback: %w", devErr, err)
		}
		return b, nil
	case spec == "swtpm":
		return openSwtpm(cfg.StateDir)
	case spec == "sim":
		s, err := openSimulator()
		if err != nil {
			return nil, err
		}
		return &backend{conn: s, kind: "simulator", flushStale: true}, nil
	case strings.HasPrefix(spec, "unix:"):
		path := strings.TrimPrefix(spec, "unix:")
		if path == "" {
			return nil, errors.New(`open TPM: "unix:" needs a socket path`)
		}
		s, err := dialStream("unix", path, socketCommandTimeout)
		if err != nil {
			return nil, fmt.Errorf("open TPM: %w", err)
		}
		return &backend{conn: s, kind: spec, flushStale: true}, nil
	default:
		return openDevice(spec)
	}
}

func openDevice(path string) (*backend, error) {
	conn, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM device: %w", err)
	}
	// The kernel resource manager (/dev/tpmrmN) gives each open fd its own
	// handle space and flushes it on close. A raw /dev/tpmN is opened
	// exclusively, so whatever is loaded there is a dead client's leftover.
	rm := strings.HasPrefix(filepath.Base(path), "tpmrm")
	b := &backend{conn: conn, kind: "device:" + path, flushStale: !rm}
	if rm {
		b.reopen = func() (transport.TPMCloser, error) { return linuxtpm.Open(path) }
	}
	return b, nil
}

func openSwtpm(stateDir string) (*backend, error) {
	proc, conn, err := startSwtpm(stateDir)
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	return &backend{conn: conn, kind: "swtpm", proc: proc, flushStale: true}, nil
}

// start runs the Open-time commands.
func (t *TPM) start(flushStale bool, srkMode string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if flushStale {
		n, err := t.flushStaleHandles()
		if err != nil {
			return err
		}
		if n > 0 {
			t.log.Info("flushed stale TPM handles left by an earlier run", "count", n)
		}
	}
	if err := t.readInfo(); err != nil {
		return err
	}
	if t.proc != nil {
		if err := t.resetLockoutIfCounted(); err != nil {
			return err
		}
		if err := t.configureSwtpmDA(); err != nil {
			return err
		}
	}
	if err := t.prepareSRK(srkMode); err != nil {
		return err
	}
	algs, err := t.probeAlgorithms()
	if err != nil {
		return err
	}
	t.algs = algs
	t.logDAStatus()
	return nil
}

// flushStaleHandles flushes every loaded object and session. Only called when
// nothing else can legitimately own them (see backend.flushStale).
func (t *TPM) flushStaleHandles() (int, error) {
	n := 0
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		handles, err := t.handles(ht)
		if err != nil {
			return n, fmt.Errorf("flush stale handles: %w", err)
		}
		for _, h := range handles {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err != nil {
				return n, fmt.Errorf("flush stale handle 0x%08x: %w", uint32(h), err)
			}
			n++
		}
	}
	return n, nil
}

// handles lists the TPM's handles of type ht (TPM2_GetCapability TPM_CAP_HANDLES).
func (t *TPM) handles(ht tpm2.TPMHT) ([]tpm2.TPMHandle, error) {
	var out []tpm2.TPMHandle
	next := uint32(ht) << 24
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}.Execute(t.tpm)
		if err != nil {
			return nil, fmt.Errorf("get handles 0x%02x: %w", uint8(ht), err)
		}
		list, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("get handles 0x%02x: %w", uint8(ht), err)
		}
		for _, h := range list.Handle {
			if uint32(h)>>24 != uint32(ht) {
				return out, nil // the TPM went on to the next type
			}
			out = append(out, h)
		}
		if !rsp.MoreData || len(list.Handle) == 0 {
			return out, nil
		}
		next = uint32(list.Handle[len(list.Handle)-1]) + 1
	}
}

func (t *TPM) readInfo() error {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTManufacturer),
		PropertyCount: uint32(tpm2.TPMPTFirmwareVersion2-tpm2.TPMPTManufacturer) + 1,
	}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("get TPM properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return fmt.Errorf("get TPM properties: %w", err)
	}
	var fw1, fw2 uint32
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTManufacturer:
			t.info.Manufacturer = vendorString(p.Value)
		case tpm2.TPMPTFirmwareVersion1:
			fw1 = p.Value
		case tpm2.TPMPTFirmwareVersion2:
			fw2 = p.Value
		}
	}
	t.info.FirmwareVersion = fmt.Sprintf("%d.%d.%d.%d", fw1>>16, fw1&0xffff, fw2>>16, fw2&0xffff)
	return nil
}

// vendorString turns TPM_PT_MANUFACTURER into its 4 ASCII characters. The TCG
// vendor registry pads short ids with NUL (swtpm: "IBM\x00"); we show a space.
func vendorString(v uint32) string {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	for i, c := range b {
		switch {
		case c == 0:
			b[i] = ' '
		case c < 0x20 || c > 0x7e:
			b[i] = '?'
		}
	}
	return string(b)
}

// SRK placements (Info.SRK).
const (
	// SRKPersistent: the TCG SRK at 0x81000001, found there.
	SRKPersistent = "persistent 0x81000001"
	// SRKProvisioned: the TCG SRK at 0x81000001, put there by this Open.
	SRKProvisioned = "persistent 0x81000001 (provisioned now)"
	// SRKTransient: derived with CreatePrimary at every Open and held
	// as a transient object; Info.SRKReason says why.
	SRKTransient = "transient"
)

// prepareSRK finds the storage primary key. The TCG SRK at 0x81000001 (TCG
// TPM v2.0 Provisioning Guidance, 7.5.1 and 7.8: ECC NIST P-256 from the
// owner seed, the EK Credential Profile's template L-2 made a storage key;
// go-tpm's ECCSRKTemplate) is used when its public area has that
// template's shape; when the handle is free and Config.SRK allows it,
// CreatePrimary makes it and TPM2_EvictControl persists it there, as
// systemd-tpm2-setup does. Otherwise the key is derived with CreatePrimary
// and held as a transient object, as before.
//
// The same template on the same owner seed is the same key, so blobs made
// under a transient SRK load under the persistent one passkeyd provisions,
// and back. (A key found there may come from another template with the
// same shape: see switchToTemplateSRK.) The placement matters for speed:
// through the kernel resource manager (/dev/tpmrm0), a transient SRK is
// context-saved, flushed and loaded back around every command, which
// roughly doubles the commands a signature costs at the TPM (see
// test/vm/tpmcount.sh); a persistent one is never swapped.
func (t *TPM) prepareSRK(mode string) error {
	rp, err := tpm2.ReadPublic{ObjectHandle: persistentSRK}.Execute(t.tpm)
	switch {
	case err == nil:
		if isECCSRK(&rp.OutPublic) {
			return t.usePersistentSRK(rp, SRKPersistent)
		}
		t.info.SRKReason = "0x81000001 holds a key that is not the TCG ECC SRK"
		t.log.Info("persistent handle 0x81000001 is not a TCG ECC SRK; deriving the SRK with CreatePrimary")
	case errors.Is(err, tpm2.TPMRCHandle):
		// Nothing persisted there.
		if mode == SRKConfigTransient {
			t.info.SRKReason = "Config.SRK is \"transient\""
		}
	default:
		return fmt.Errorf("read public area of 0x81000001: %w", err)
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("create storage primary key (owner hierarchy): %w", err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		t.flush(cp.ObjectHandle)
		return fmt.Errorf("create storage primary key: public area: %w", err)
	}
	t.srk = tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name}
	t.srkPublic = *pub
	t.info.SRK = SRKTransient
	if t.info.SRKReason != "" {
		return nil
	}
	// The handle is free: persist the key there, authorized like the
	// CreatePrimary that just succeeded (an empty ownerAuth).
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     t.srk,
		PersistentHandle: persistentSRK,
	}.Execute(t.tpm)
	if err != nil && !errors.Is(err, tpm2.TPMRCNVDefined) {
		// TPM_RC_NV_SPACE (no room for another persistent object), a
		// hierarchy whose owner forbids it: keep the transient key.
		t.info.SRKReason = fmt.Sprintf("TPM2_EvictControl to 0x81000001 failed: %v", err)
		t.log.Info("could not persist the SRK at 0x81000001; keeping it transient", "err", err)
		return nil
	}
	// Persisted, or (TPM_RC_NV_DEFINED) someone else persisted a key
	// there meanwhile: use it if it is the SRK.
	rp, rerr := tpm2.ReadPublic{ObjectHandle: persistentSRK}.Execute(t.tpm)
	if rerr != nil || !isECCSRK(&rp.OutPublic) {
		t.info.SRKReason = "0x81000001 was taken by another key during start-up"
		return nil
	}
	t.flush(t.srk.Handle)
	how := SRKProvisioned
	if err != nil {
		how = SRKPersistent
	}
	return t.usePersistentSRK(rp, how)
}

// usePersistentSRK makes the key at 0x81000001, whose public area rp is,
// the SRK.
func (t *TPM) usePersistentSRK(rp *tpm2.ReadPublicResponse, how string) error {
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("read public area of 0x81000001: %w", err)
	}
	t.srk = tpm2.NamedHandle{Handle: persistentSRK, Name: rp.Name}
	t.srkPublic = *pub
	t.srkPersistent = true
	t.info.SRK, t.info.SRKReason = how, ""
	return nil
}

// isECCSRK reports whether pub is the TCG ECC SRK template with some unique
// point filled in, byte for byte.
func isECCSRK(pub *tpm2.TPM2BPublic) bool {
	got, err := pub.Contents()
	if err != nil || got.Type != tpm2.TPMAlgECC {
		return false
	}
	point, err := got.Unique.ECC()
	if err != nil {
		return false
	}
	want := tpm2.ECCSRKTemplate
	want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, point)
	return bytes.Equal(tpm2.Marshal(want), pub.Bytes())
}

// probeAlgorithms asks the TPM (TPM2_TestParms) which credential key
// templates it accepts.
func (t *TPM) probeAlgorithms() ([]Algorithm, error) {
	var algs []Algorithm
	for _, alg := range []Algorithm{ES256, RS256} {
		tmpl, _ := keyTemplate(alg)
		_, err := tpm2.TestParms{Parameters: tpm2.TPMTPublicParms{
			Type:       tmpl.Type,
			Parameters: tmpl.Parameters,
		}}.Execute(t.tpm)
		var rc tpm2.TPMRC
		switch {
		case err == nil:
			algs = append(algs, alg)
		case errors.As(err, &rc):
			t.log.Info("TPM does not support credential algorithm", "alg", alg, "reason", err)
		default:
			return nil, fmt.Errorf("test parameters for %v: %w", alg, err)
		}
	}
	if len(algs) == 0 {
		return nil, errors.New("TPM supports neither ES256 nor RS256 keys")
	}
	return algs, nil
}

// Close flushes the SRK (if transient), lets a swtpm we started shut down in
// order and stops it, and closes the connection. Further calls return nil.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return nil
	}
	return t.shutdown()
}

// shutdown is Close without the lock; also used when Open fails half-way.
func (t *TPM) shutdown() error {
	var errs []error
	if t.srk.Handle != 0 && !t.srkPersistent {
		if _, err := (tpm2.FlushContext{FlushHandle: t.srk.Handle}).Execute(t.tpm); err != nil {
			errs = append(errs, fmt.Errorf("flush storage primary key: %w", err))
		}
	}
	if t.proc != nil {
		// Without an orderly TPM2_Shutdown, the next TPM2_Startup counts
		// the session as a possible dictionary attack (failedTries++) once
		// a DA-protected key was used; swtpm locks out after 3.
		if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}).Execute(t.tpm); err != nil {
			errs = append(errs, fmt.Errorf("shut down swtpm: %w", err))
		}
	}
	if err := t.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close TPM connection: %w", err))
	}
	if t.proc != nil {
		if err := t.proc.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	t.tpm = nil
	return errors.Join(errs...)
}

// Info describes the TPM (read at Open; SRK and SRKReason change if a
// refused blob makes switchToTemplateSRK take the template's SRK).
func (t *TPM) Info() Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info
}

// Algorithms returns the credential algorithms this TPM supports, asked with
// TPM2_TestParms (ES256 first). Cached at Open.
func (t *TPM) Algorithms() []Algorithm {
	return append([]Algorithm(nil), t.algs...)
}

func (t *TPM) supports(alg Algorithm) bool {
	for _, a := range t.algs {
		if a == alg {
			return true
		}
	}
	return false
}
