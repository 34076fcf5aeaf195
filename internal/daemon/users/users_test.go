package users

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestMain(m *testing.M) { tpmsim.Main(m) }

// countingTPM counts every TPM command the authenticators send, so a test
// can assert that a request was refused before the TPM saw anything. It
// refuses wrong PINs itself, as the TPM would (tpm.ErrPINMismatch), so
// that the tests' wrong PINs do not run up the simulator's process-wide
// dictionary-attack counter; right PINs go to the TPM.
type countingTPM struct {
	*tpm.TPM
	calls atomic.Int64
	auth  map[string][]byte // PIN object blob -> its pinAuth, under pinMu
}

var pinMu sync.Mutex

func (c *countingTPM) CreateKey(alg tpm.Algorithm) (tpm.KeyBlob, crypto.PublicKey, error) {
	c.calls.Add(1)
	return c.TPM.CreateKey(alg)
}

func (c *countingTPM) Sign(blob tpm.KeyBlob, digest []byte) ([]byte, error) {
	c.calls.Add(1)
	return c.TPM.Sign(blob, digest)
}

func (c *countingTPM) Seal(secret []byte) (tpm.KeyBlob, error) {
	c.calls.Add(1)
	return c.TPM.Seal(secret)
}

func (c *countingTPM) Unseal(blob tpm.KeyBlob) ([]byte, error) {
	c.calls.Add(1)
	return c.TPM.Unseal(blob)
}

func (c *countingTPM) CreatePINObject(pinAuth, secret []byte) (tpm.KeyBlob, error) {
	c.calls.Add(1)
	blob, err := c.TPM.CreatePINObject(pinAuth, secret)
	if err == nil {
		pinMu.Lock()
		c.auth[string(blob)] = bytes.Clone(pinAuth)
		pinMu.Unlock()
	}
	return blob, err
}

func (c *countingTPM) UnsealWithPIN(blob tpm.KeyBlob, pinAuth []byte) ([]byte, error) {
	c.calls.Add(1)
	pinMu.Lock()
	want, ok := c.auth[string(blob)]
	pinMu.Unlock()
	if !ok {
		return nil, errors.New("countingTPM: a PIN object it did not create")
	}
	if !bytes.Equal(want, pinAuth) {
		return nil, fmt.Errorf("unseal with PIN: %w", tpm.ErrPINMismatch)
	}
	return c.TPM.UnsealWithPIN(blob, pinAuth)
}

func (c *countingTPM) CreateHMACKey() (tpm.KeyBlob, error) {
	c.calls.Add(1)
	return c.TPM.CreateHMACKey()
}

func (c *countingTPM) HMAC(key tpm.KeyBlob, data []byte) ([]byte, error) {
	c.calls.Add(1)
	return c.TPM.HMAC(key, data)
}

func (c *countingTPM) DictionaryAttackStatus() (tpm.DAStatus, error) {
	c.calls.Add(1)
	return c.TPM.DictionaryAttackStatus()
}

// simMu serialises the tests' use of the one simulator.
var simMu sync.Mutex

// pinObjects outlives an env: a test that restarts Users over the same
// state dir still finds its PIN objects.
var pinObjects = map[string][]byte{}

type env struct {
	dir string
	dev *keystore.Store
	u   *Users
	tpm *countingTPM
}

var (
	alice = Identity{UID: 1000, Name: "alice"}
	bob   = Identity{UID: 1001, Name: "bob"}
)

// openEnv opens Users over dir, owned by owner (nil: no owner).
func openEnv(t *testing.T, dir string, owner *Identity) *env {
	t.Helper()
	dev, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, dev: dev, tpm: &countingTPM{TPM: tpmsim.TPM(), auth: pinObjects}}
	e.u, err = Open(Config{StateDir: dir, Device: dev, Owner: owner,
		Auth: ctap2.Config{TPM: e.tpm, Prompt: prompt.ApproveAll{}}})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	e.u.Close()
	e.dev.Close()
}

func newEnv(t *testing.T) *env {
	simMu.Lock()
	t.Cleanup(simMu.Unlock)
	return openEnv(t, t.TempDir(), &alice)
}

func (e *env) activate(t *testing.T, id Identity) *ctaptest.Client {
	t.Helper()
	a, err := e.u.Activate(id.UID, id.Name)
	if err != nil {
		t.Fatalf("activate %s: %v", id.Name, err)
	}
	return ctaptest.NewClient(a, 2)
}

var cdh = bytes.Repeat([]byte{0xcd}, 32)

// makeCredential registers user at rp and returns the credential ID.
func makeCredential(t *testing.T, c *ctaptest.Client, rp, user string, rk bool) []byte {
	t.Helper()
	return c.MakeES256(t, cdh, rp, user, rk).ID
}

// getAssertion returns the status and, on success, the asserted ID.
func getAssertion(t *testing.T, c *ctaptest.Client, rp string, allow ...[]byte) (ctaptest.Status, []byte) {
	t.Helper()
	a := c.GetAssertion(t, cdh, rp, allow...)
	return a.Status, a.ID
}

const errNoCredentials = ctaptest.Status(0x2E)

// TestNamespacesIsolateCredentials: alice's discoverable credential is
// invisible to bob, and her non-discoverable credential ID is refused for
// bob before the TPM sees any command (it does not open under bob's
// wrapping key); both keep working for alice.
func TestNamespacesIsolateCredentials(t *testing.T) {
	e := newEnv(t)
	a := e.activate(t, alice)
	rkID := makeCredential(t, a, "example.com", "alice", true)
	nonRK := makeCredential(t, a, "example.com", "alice-2", false)
	b := e.activate(t, bob)

	if st, _ := getAssertion(t, b, "example.com"); st != errNoCredentials {
		t.Fatalf("bob, no allowList: %v, want CTAP2_ERR_NO_CREDENTIALS", st)
	}
	for name, id := range map[string][]byte{"non-discoverable": nonRK, "discoverable": rkID} {
		before := e.tpm.calls.Load()
		if st, _ := getAssertion(t, b, "example.com", id); st != errNoCredentials {
			t.Fatalf("bob, alice's %s ID: %v, want CTAP2_ERR_NO_CREDENTIALS", name, st)
		}
		if n := e.tpm.calls.Load() - before; n != 0 {
			t.Fatalf("bob, alice's %s ID: %d TPM commands, want none", name, n)
		}
	}
	// A makeCredential excludeList with alice's ID does not see it either.
	st, _ := b.Call(t, ctaptest.CmdMakeCredential, map[int]any{
		1: cdh, 2: map[string]any{"id": "example.com"}, 3: map[string]any{"id": []byte("bob"), "name": "bob"},
		4: []map[string]any{{"alg": -7, "type": "public-key"}},
		5: []map[string]any{{"id": nonRK, "type": "public-key"}},
	})
	if st != ctaptest.StatusOK {
		t.Fatalf("bob, makeCredential excluding alice's ID: %v, want CTAP2_OK", st)
	}

	a = e.activate(t, alice)
	if st, id := getAssertion(t, a, "example.com"); st != ctaptest.StatusOK || !bytes.Equal(id, rkID) {
		t.Fatalf("alice, no allowList: %v %x, want her credential %x", st, id, rkID)
	}
	if st, id := getAssertion(t, a, "example.com", nonRK); st != ctaptest.StatusOK || !bytes.Equal(id, nonRK) {
		t.Fatalf("alice, her non-discoverable ID: %v %x", st, id)
	}
}

// TestPINsAreIndependent: each namespace has its own PIN and retry
// counter.
func TestPINsAreIndependent(t *testing.T) {
	e := newEnv(t)
	a := e.activate(t, alice)
	b := e.activate(t, bob)
	if st := a.SetPIN(t, "1111"); st != ctaptest.StatusOK {
		t.Fatalf("alice setPIN: %v", st)
	}
	if r, _, st := b.Retries(t); st != ctaptest.StatusOK || r != 8 {
		t.Fatalf("bob's retries before his PIN: %d %v", r, st)
	}
	if _, st := b.PinToken(t, "1111"); st != ctaptest.ErrPinNotSet {
		t.Fatalf("bob, alice's PIN before he set one: %v, want CTAP2_ERR_PIN_NOT_SET", st)
	}
	if st := b.SetPIN(t, "222222"); st != ctaptest.StatusOK {
		t.Fatalf("bob setPIN: %v", st)
	}
	if _, st := b.PinToken(t, "1111"); st != ctaptest.ErrPinInvalid {
		t.Fatalf("bob, alice's PIN: %v, want CTAP2_ERR_PIN_INVALID", st)
	}
	if _, st := b.PinToken(t, "3333"); st != ctaptest.ErrPinInvalid {
		t.Fatalf("bob, a wrong PIN: %v, want CTAP2_ERR_PIN_INVALID", st)
	}
	if r, _, _ := b.Retries(t); r != 6 {
		t.Fatalf("bob's retries after two misses: %d, want 6", r)
	}
	if r, _, _ := a.Retries(t); r != 8 {
		t.Fatalf("alice's retries after bob's misses: %d, want 8", r)
	}
	if _, st := a.PinToken(t, "222222"); st != ctaptest.ErrPinInvalid {
		t.Fatalf("alice, bob's PIN: %v, want CTAP2_ERR_PIN_INVALID", st)
	}
	if _, st := a.PinToken(t, "1111"); st != ctaptest.StatusOK {
		t.Fatalf("alice, her PIN: %v", st)
	}
	if r, _, _ := a.Retries(t); r != 8 {
		t.Fatalf("alice's retries after her right PIN: %d, want 8", r)
	}
	if r, _, _ := b.Retries(t); r != 6 {
		t.Fatalf("bob's retries after alice's PINs: %d, want 6", r)
	}
	if _, st := b.PinToken(t, "222222"); st != ctaptest.StatusOK {
		t.Fatalf("bob, his PIN: %v", st)
	}
}

// serialized is a serialized large-blob array (§6.10.1) of one entry.
func serialized(t *testing.T, fill byte) []byte {
	t.Helper()
	em, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	arr, err := em.Marshal([]any{map[int]any{1: bytes.Repeat([]byte{fill}, 40), 2: make([]byte, 12), 3: 40}})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(arr)
	return append(arr, h[:16]...)
}

func readLargeBlobs(t *testing.T, c *ctaptest.Client) []byte {
	t.Helper()
	st, m := c.Call(t, ctaptest.CmdLargeBlobs, map[int]any{1: 1024, 3: 0})
	if st != ctaptest.StatusOK {
		t.Fatalf("large-blob get: %v", st)
	}
	return ctaptest.Field[[]byte](t, m, 1)
}

// TestLargeBlobsAreIndependent: bob's large-blob array is his alone.
func TestLargeBlobsAreIndependent(t *testing.T) {
	e := newEnv(t)
	a := e.activate(t, alice)
	b := e.activate(t, bob)
	if st := b.SetPIN(t, "222222"); st != ctaptest.StatusOK {
		t.Fatal(st)
	}
	tok, st := b.PinTokenWithPermissions(t, "222222", 0x10, "")
	if st != ctaptest.StatusOK {
		t.Fatalf("bob's lbw token: %v", st)
	}
	arr := serialized(t, 0xb0)
	st, _ = b.Call(t, ctaptest.CmdLargeBlobs, map[int]any{2: arr, 3: 0, 4: len(arr),
		5: b.Param(tok, ctaptest.LargeBlobMessage(0, arr)), 6: b.Version})
	if st != ctaptest.StatusOK {
		t.Fatalf("bob's large-blob write: %v", st)
	}
	empty := []byte{0x80, 0x76, 0xbe, 0x8b, 0x52, 0x8d, 0x00, 0x75, 0xf7, 0xaa, 0xe9, 0x8d, 0x6f, 0xa5, 0x7a, 0x6d, 0x3c}
	if got := readLargeBlobs(t, a); !bytes.Equal(got, empty) {
		t.Fatalf("alice's large blobs: %x, want the empty array %x", got, empty)
	}
	if got := readLargeBlobs(t, b); !bytes.Equal(got, arr) {
		t.Fatalf("bob's large blobs: %x, want %x", got, arr)
	}
}

// TestResetOfOneUserLeavesTheOther: authenticatorReset over bob's
// namespace deletes his credentials and PIN only; alice's, the device
// values and the namespace key stay.
func TestResetOfOneUserLeavesTheOther(t *testing.T) {
	e := newEnv(t)
	a := e.activate(t, alice)
	aliceID := makeCredential(t, a, "example.com", "alice", true)
	if st := a.SetPIN(t, "1111"); st != ctaptest.StatusOK {
		t.Fatal(st)
	}
	u2f, err := e.dev.Get("u2f-attestation.cert")
	if err != nil {
		t.Fatal(err)
	}
	b := e.activate(t, bob)
	bobID := makeCredential(t, b, "example.com", "bob", true)
	if st := b.SetPIN(t, "222222"); st != ctaptest.StatusOK {
		t.Fatal(st)
	}
	if st, _ := b.Call(t, ctaptest.CmdReset, nil); st != ctaptest.StatusOK {
		t.Fatalf("bob's reset: %v", st)
	}
	if st, _ := getAssertion(t, b, "example.com", bobID); st != errNoCredentials {
		t.Fatalf("bob's credential after his reset: %v, want CTAP2_ERR_NO_CREDENTIALS", st)
	}
	if _, st := b.PinToken(t, "222222"); st != ctaptest.ErrPinNotSet {
		t.Fatalf("bob's PIN after his reset: %v, want CTAP2_ERR_PIN_NOT_SET", st)
	}
	a = e.activate(t, alice)
	if st, id := getAssertion(t, a, "example.com"); st != ctaptest.StatusOK || !bytes.Equal(id, aliceID) {
		t.Fatalf("alice after bob's reset: %v %x", st, id)
	}
	if _, st := a.PinToken(t, "1111"); st != ctaptest.StatusOK {
		t.Fatalf("alice's PIN after bob's reset: %v", st)
	}
	if got, err := e.dev.Get("u2f-attestation.cert"); err != nil || !bytes.Equal(got, u2f) {
		t.Fatalf("U2F attestation certificate after bob's reset: changed (%v)", err)
	}
}

// TestOwnerResetKeepsTheOtherNamespaces: the owner's namespace is the
// device store's own; its reset keeps the device values, among them the
// key of the namespace IDs, so bob's namespace is still found (also
// after a restart) with his passkey.
func TestOwnerResetKeepsTheOtherNamespaces(t *testing.T) {
	simMu.Lock()
	defer simMu.Unlock()
	dir := t.TempDir()
	e := openEnv(t, dir, &alice)
	b := e.activate(t, bob)
	bobID := makeCredential(t, b, "example.com", "bob", true)
	u2f, err := e.dev.Get("u2f-attestation.cert")
	if err != nil {
		t.Fatal(err)
	}
	a := e.activate(t, alice)
	makeCredential(t, a, "example.com", "alice", true)
	if st, _ := a.Call(t, ctaptest.CmdReset, nil); st != ctaptest.StatusOK {
		t.Fatalf("alice's reset: %v", st)
	}
	if st, _ := getAssertion(t, a, "example.com"); st != errNoCredentials {
		t.Fatalf("alice after her reset: %v, want CTAP2_ERR_NO_CREDENTIALS", st)
	}
	if got, err := e.dev.Get("u2f-attestation.cert"); err != nil || !bytes.Equal(got, u2f) {
		t.Fatalf("U2F attestation certificate after the owner's reset: changed (%v)", err)
	}
	e.close()
	e = openEnv(t, dir, &alice)
	b = e.activate(t, bob)
	if st, id := getAssertion(t, b, "example.com"); st != ctaptest.StatusOK || !bytes.Equal(id, bobID) {
		t.Fatalf("bob after alice's reset and a restart: %v %x, want %x", st, id, bobID)
	}
}

// TestStateDirHoldsNoIdentity: no file or directory name of the state dir,
// nor any file's bytes, holds the user's uid or name, as text or binary.
func TestStateDirHoldsNoIdentity(t *testing.T) {
	e := newEnv(t)
	zelda := Identity{UID: 271828, Name: "zelda-hyrule"}
	c := e.activate(t, zelda)
	makeCredential(t, c, "example.com", "someone", true)
	if st := c.SetPIN(t, "1111"); st != ctaptest.StatusOK {
		t.Fatal(st)
	}
	e.close() // flush everything to disk
	needles := map[string][]byte{
		"name":         []byte(zelda.Name),
		"uid as text":  []byte(strconv.Itoa(int(zelda.UID))),
		"uid, BE":      binary.BigEndian.AppendUint32(nil, zelda.UID),
		"uid, LE":      binary.LittleEndian.AppendUint32(nil, zelda.UID),
		"uid, hex":     []byte(strconv.FormatUint(uint64(zelda.UID), 16)),
		"name, UTF-16": []byte("z\x00e\x00l\x00d\x00a\x00"),
	}
	files := 0
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(e.dir, path)
		for what, n := range needles {
			if bytes.Contains([]byte(rel), n) {
				t.Errorf("path %s holds the %s", rel, what)
			}
		}
		if d.IsDir() {
			return nil
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for what, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s holds the %s", rel, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 2 {
		t.Fatalf("searched %d files, want the device store and zelda's", files)
	}
}

// TestNamespaceCreatedOnFirstUse: nothing of the per-user layout exists
// before a user is activated; Lookup creates nothing; Activate creates
// users/<64 hex>/passkeyd.db (0700, 0600), found again after a restart.
func TestNamespaceCreatedOnFirstUse(t *testing.T) {
	simMu.Lock()
	defer simMu.Unlock()
	dir := t.TempDir()
	e := openEnv(t, dir, &alice)
	if _, err := os.Lstat(filepath.Join(dir, Dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("users dir before any user: %v", err)
	}
	if _, err := e.dev.Get(valueKey); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("namespace key before any user: %v, want none", err)
	}
	if _, err := e.u.Lookup(bob); !errors.Is(err, ErrNoNamespace) {
		t.Fatalf("Lookup before first use: %v, want ErrNoNamespace", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, Dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("users dir after Lookup: %v, want none", err)
	}
	b := e.activate(t, bob)
	id := makeCredential(t, b, "example.com", "bob", true)
	entries, err := os.ReadDir(filepath.Join(dir, Dir))
	if err != nil || len(entries) != 1 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(entries[0].Name()) {
		t.Fatalf("users dir after bob's first use: %v %v", entries, err)
	}
	nsDir := filepath.Join(dir, Dir, entries[0].Name())
	if got, _ := e.u.NamespaceDir(bob); got != nsDir {
		t.Fatalf("NamespaceDir(bob) = %s, want %s", got, nsDir)
	}
	for path, mode := range map[string]fs.FileMode{filepath.Join(dir, Dir): 0o700 | fs.ModeDir, nsDir: 0o700 | fs.ModeDir, filepath.Join(nsDir, keystore.FileName): 0o600} {
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != mode {
			t.Fatalf("%s: %v %v, want %v", path, fi.Mode(), err, mode)
		}
	}
	if got, err := e.u.Lookup(bob); err != nil || got != e.u.Active() {
		t.Fatalf("Lookup(bob) after Activate: %v, want the active authenticator", err)
	}
	e.close()
	e = openEnv(t, dir, &alice)
	if got, err := e.u.NamespaceDir(bob); err != nil || got != nsDir {
		t.Fatalf("bob's namespace after a restart: %s %v, want %s", got, err, nsDir)
	}
	bl, err := e.u.Lookup(bob)
	if err != nil {
		t.Fatalf("Lookup(bob) after a restart: %v", err)
	}
	if st, got := getAssertion(t, ctaptest.NewClient(bl, 2), "example.com"); st != ctaptest.StatusOK || !bytes.Equal(got, id) {
		t.Fatalf("bob's credential after a restart: %v %x", st, got)
	}
}

// TestRemoveAndReusedUID: Remove deletes a namespace's directory; the
// owner's and the active one are refused; a uid reused under another name
// finds a new, empty namespace, never the old one.
func TestRemoveAndReusedUID(t *testing.T) {
	e := newEnv(t)
	b := e.activate(t, bob)
	makeCredential(t, b, "example.com", "bob", true)
	if err := e.u.Remove(bob); !errors.Is(err, ErrActive) {
		t.Fatalf("Remove(active bob): %v, want ErrActive", err)
	}
	if err := e.u.Remove(alice); !errors.Is(err, ErrDefault) {
		t.Fatalf("Remove(owner): %v, want ErrDefault", err)
	}
	// Another account with bob's uid sees nothing of his.
	mallory := e.activate(t, Identity{UID: bob.UID, Name: "mallory"})
	if st, _ := getAssertion(t, mallory, "example.com"); st != errNoCredentials {
		t.Fatalf("a reused uid under another name: %v, want CTAP2_ERR_NO_CREDENTIALS", st)
	}
	bobDir, _ := e.u.NamespaceDir(bob)
	if err := e.u.Remove(bob); err != nil {
		t.Fatalf("Remove(bob): %v", err)
	}
	if _, err := os.Lstat(bobDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("bob's dir after Remove: %v", err)
	}
	if _, err := e.u.Lookup(bob); !errors.Is(err, ErrNoNamespace) {
		t.Fatalf("Lookup(bob) after Remove: %v, want ErrNoNamespace", err)
	}
	if err := e.u.Remove(bob); !errors.Is(err, ErrNoNamespace) {
		t.Fatalf("second Remove(bob): %v, want ErrNoNamespace", err)
	}
	b = e.activate(t, bob)
	if st, _ := getAssertion(t, b, "example.com"); st != errNoCredentials {
		t.Fatalf("bob after his namespace was removed: %v, want CTAP2_ERR_NO_CREDENTIALS", st)
	}
	for _, bad := range []Identity{{UID: 5}, {UID: 5, Name: "a\x00b"}} {
		if _, err := e.u.Activate(bad.UID, bad.Name); err == nil {
			t.Fatalf("Activate(%q) succeeded", bad.Name)
		}
	}
}

// TestLegacyStoreBecomesTheOwners: a state dir of the single-owner daemon
// (one passkeyd.db, made by ctap2.New over it as before namespaces) keeps
// every passkey, its PIN and its U2F attestation: the default namespace
// and the owner's Activate serve them; another user sees none of them.
func TestLegacyStoreBecomesTheOwners(t *testing.T) {
	simMu.Lock()
	defer simMu.Unlock()
	dir := t.TempDir()
	st, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := ctap2.New(ctap2.Config{TPM: &countingTPM{TPM: tpmsim.TPM(), auth: pinObjects}, Store: st, Prompt: prompt.ApproveAll{}})
	if err != nil {
		t.Fatal(err)
	}
	lc := ctaptest.NewClient(legacy, 2)
	ids := [][]byte{
		makeCredential(t, lc, "example.com", "alice", true),
		makeCredential(t, lc, "example.com", "alice-2", true),
		makeCredential(t, lc, "github.com", "alice", true),
	}
	nonRK := makeCredential(t, lc, "example.org", "alice", false)
	if st := lc.SetPIN(t, "1111"); st != ctaptest.StatusOK {
		t.Fatal(st)
	}
	u2f, err := st.Get("u2f-attestation.cert")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	e := openEnv(t, dir, &alice)
	for _, a := range []*ctaptest.Client{ctaptest.NewClient(e.u.Default(), 2), e.activate(t, alice)} {
		n := 0
		err := e.u.Default().EachCredential(func(keystore.Credential) error { n++; return nil })
		if err != nil || n != 3 {
			t.Fatalf("listed %d credentials (%v), want 3", n, err)
		}
		for _, id := range ids {
			rp := "example.com"
			if bytes.Equal(id, ids[2]) {
				rp = "github.com"
			}
			// Discoverable credentials now need UV (a PIN is set):
			// the allowList path shows each is there and signs.
			if st, got := getAssertion(t, a, rp, id); st != ctaptest.StatusOK || !bytes.Equal(got, id) {
				t.Fatalf("legacy credential %x: %v", id[:8], st)
			}
		}
		if st, got := getAssertion(t, a, "example.org", nonRK); st != ctaptest.StatusOK || !bytes.Equal(got, nonRK) {
			t.Fatalf("legacy non-discoverable credential: %v", st)
		}
		if _, st := a.PinToken(t, "1111"); st != ctaptest.StatusOK {
			t.Fatalf("legacy PIN: %v", st)
		}
	}
	if got, err := e.dev.Get("u2f-attestation.cert"); err != nil || !bytes.Equal(got, u2f) {
		t.Fatalf("U2F attestation certificate after the upgrade: changed (%v)", err)
	}
	b := e.activate(t, bob)
	if st, _ := getAssertion(t, b, "example.com"); st != errNoCredentials {
		t.Fatalf("bob sees the owner's passkeys: %v", st)
	}
	if st, _ := getAssertion(t, b, "example.org", nonRK); st != errNoCredentials {
		t.Fatalf("bob with the owner's non-discoverable ID: %v", st)
	}
}

// TestNoOwner: without an owner every user, even one named like nobody in
// particular, gets a namespace of their own; the default namespace is
// reached only as Default.
func TestNoOwner(t *testing.T) {
	simMu.Lock()
	defer simMu.Unlock()
	e := openEnv(t, t.TempDir(), nil)
	makeCredential(t, ctaptest.NewClient(e.u.Default(), 2), "example.com", "device", true)
	a := e.activate(t, alice)
	if st, _ := getAssertion(t, a, "example.com"); st != errNoCredentials {
		t.Fatalf("alice without an owner sees the default namespace: %v", st)
	}
	if e.u.IsOwner(alice) {
		t.Fatal("IsOwner(alice) without an owner")
	}
	e.u.Deactivate()
	if e.u.Active() != nil {
		t.Fatal("Active after Deactivate")
	}
}
