// Package users keeps one passkey namespace per Linux user, the way
// Windows Hello keeps each account's passkeys apart.
//
// A namespace is a whole authenticator's state: discoverable credentials,
// large blobs, the PIN object and its retry counters, authenticatorConfig's
// settings, and the TPM-sealed keys protecting them (the credential-ID
// wrapping key, the store key, the hmac-secret key). Each user's lives in
// its own store file, STATE_DIR/users/<ID>/passkeyd.db, where <ID> is
// HMAC-SHA256 under a TPM-sealed device key over the user's uid and name:
// the directory names say nothing about whose they are, and a uid reused
// by an account of another name finds a new, empty namespace.
//
// The device store, STATE_DIR/passkeyd.db, holds what every namespace
// shares: the U2F attestation key and certificate, the "tpm" attestation
// CA and AK, and the device key of the IDs. It also keeps its own
// namespace, the default one: the single-owner layout of passkeyd before
// namespaces, which the daemon serves when no user is selected and which
// is the owner's when users are (so an upgrade moves nothing and keeps
// every passkey).
//
// A credential ID is sealed under its namespace's wrapping key, so an ID
// made for one user fails to open for another before any TPM command.
//
// Layer: daemon. It opens store files and wires authenticators; CTAP is
// ctap2's.
package users

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
)

// Dir is the directory of the per-user namespaces inside the state dir.
const Dir = "users"

// valueKey names the TPM-sealed device key of the namespace IDs in the
// device store.
const valueKey = "users-key.sealed"

// idLabel separates the namespace IDs' HMAC from any other use of the key.
const idLabel = "passkeyd user namespace v1\x00"

// maxName bounds a user name (Linux allows 32 bytes; other NSS sources
// may allow more).
const maxName = 256

var (
	// ErrNoNamespace: the user has no namespace (Lookup, Remove).
	ErrNoNamespace = errors.New("users: no namespace for this user")
	// ErrDefault: the default namespace (the device store's, the
	// owner's) cannot be removed; a reset empties it.
	ErrDefault = errors.New("users: the owner's passkeys are the device's own namespace: it cannot be removed, only reset")
	// ErrActive: the namespace is being served and cannot be removed.
	ErrActive = errors.New("users: the namespace is active (its user is being served)")
	// ErrClosed: Users was closed.
	ErrClosed = errors.New("users: closed")
)

// Identity is a Linux user: uid and name. A namespace belongs to both.
type Identity struct {
	UID  uint32
	Name string
}

func (id Identity) check() error {
	if id.Name == "" || len(id.Name) > maxName || strings.ContainsRune(id.Name, 0) {
		return fmt.Errorf("users: a user needs a name of 1 to %d bytes without NUL", maxName)
	}
	return nil
}

// Config wires Users.
type Config struct {
	// StateDir holds the device store and the users directory.
	StateDir string
	// Device is the device store, StateDir/passkeyd.db, opened by the
	// caller (its lock keeps a second daemon out) and closed by it after
	// Users.
	Device *keystore.Store
	// Auth is the template of every namespace's authenticator (TPM,
	// prompt, logger, attestation, policy, ...). Users sets its Store,
	// Device and DeviceValues.
	Auth ctap2.Config
	// Owner is whose the default namespace is when users are selected
	// (Activate, Lookup): nil when the device has no owner, and then the
	// default namespace is nobody's but the device's (single-owner mode).
	// The owner's namespace, too, is bound to uid and name; an owner
	// given as a uid without an account (no name) matches by uid alone.
	Owner *Identity
}

// Users opens the namespaces: the default one at Open, a user's on first
// use (created then), and keeps them open until Remove or Close. Its
// methods are safe for concurrent use.
type Users struct {
	cfg Config
	def *ctap2.Authenticator

	mu     sync.Mutex
	key    []byte // the device key of the namespace IDs; nil until needed
	open   map[string]*namespace
	active *ctap2.Authenticator
	closed bool
}

type namespace struct {
	store *keystore.Store
	auth  *ctap2.Authenticator
}

// Open opens the default namespace, in the device store, exactly as the
// single-owner daemon did. Nothing of the per-user layout is created
// before a user is first selected.
func Open(cfg Config) (*Users, error) {
	if cfg.Device == nil || cfg.Auth.TPM == nil || cfg.StateDir == "" {
		return nil, errors.New("users: StateDir, Device and a TPM are required")
	}
	ac := cfg.Auth
	ac.Store, ac.Device, ac.DeviceValues = cfg.Device, cfg.Device, []string{valueKey}
	def, err := ctap2.New(ac)
	if err != nil {
		return nil, err
	}
	return &Users{cfg: cfg, def: def, open: make(map[string]*namespace)}, nil
}

// Default is the default namespace's authenticator: the one the daemon
// serves when no user is selected, and the owner's.
func (u *Users) Default() *ctap2.Authenticator { return u.def }

// IsOwner reports whether id is the owner, whose namespace is the default
// one.
func (u *Users) IsOwner(id Identity) bool {
	o := u.cfg.Owner
	return o != nil && o.UID == id.UID && (o.Name == "" || o.Name == id.Name)
}

// Activate selects uid's namespace (name is the account's name; both bind
// it), opening it, or creating it on first use, and returns its
// authenticator for the CTAPHID server of the user's session. The
// authenticator is power-cycled: to the person it is a key plugged in
// now (the caller creates the device anew). The previous selection ends,
// as Deactivate ends it.
func (u *Users) Activate(uid uint32, name string) (*ctap2.Authenticator, error) {
	u.mu.Lock()
	a, err := u.namespaceLocked(Identity{UID: uid, Name: name}, true)
	var prev *ctap2.Authenticator
	if err == nil {
		prev, u.active = u.active, a // under the same lock: Remove cannot close it in between
	}
	u.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if prev != nil && prev != a {
		prev.PowerCycle()
	}
	a.PowerCycle()
	return a, nil
}

// Deactivate ends the selection: no namespace is served (the caller stops
// the CTAPHID server). Namespaces stay open. The one that was served is
// power-cycled: its key was unplugged, so what a key keeps only while
// powered goes (tokens, a U2F touch prompt still open in the session that
// is leaving).
func (u *Users) Deactivate() {
	u.mu.Lock()
	prev := u.active
	u.active = nil
	u.mu.Unlock()
	if prev != nil {
		prev.PowerCycle()
	}
}

// Active is the selected namespace's authenticator, nil when none is.
func (u *Users) Active() *ctap2.Authenticator {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.active
}

// Lookup returns id's namespace, opening it if it exists; it creates
// nothing, and answers ErrNoNamespace for a user without one. The owner's
// is the default namespace.
func (u *Users) Lookup(id Identity) (*ctap2.Authenticator, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.namespaceLocked(id, false)
}

func (u *Users) namespaceLocked(id Identity, create bool) (*ctap2.Authenticator, error) {
	if err := id.check(); err != nil {
		return nil, err
	}
	if u.IsOwner(id) {
		return u.def, nil
	}
	if u.closed {
		return nil, ErrClosed
	}
	nsID, err := u.idLocked(id)
	if err != nil {
		return nil, err
	}
	if ns, ok := u.open[nsID]; ok {
		return ns.auth, nil
	}
	dir := u.dir(nsID)
	if !create {
		if _, err := os.Lstat(filepath.Join(dir, keystore.FileName)); errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoNamespace
		} else if err != nil {
			return nil, fmt.Errorf("users: namespace of uid %d: %w", id.UID, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(u.cfg.StateDir, Dir), 0o700); err != nil {
		return nil, fmt.Errorf("users: create %s: %w", Dir, err)
	}
	st, err := keystore.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("users: namespace of uid %d: %w", id.UID, err)
	}
	ac := u.cfg.Auth
	ac.Store, ac.Device, ac.DeviceValues = st, u.cfg.Device, nil
	a, err := ctap2.New(ac)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("users: namespace of uid %d: %w", id.UID, err)
	}
	u.open[nsID] = &namespace{store: st, auth: a}
	return a, nil
}

// Remove deletes id's namespace: its store file, with every passkey, the
// PIN and its settings, and its directory. The owner's (the default
// namespace) and the active one are refused.
func (u *Users) Remove(id Identity) error {
	if err := id.check(); err != nil {
		return err
	}
	if u.IsOwner(id) {
		return ErrDefault
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	nsID, err := u.idLocked(id)
	if err != nil {
		return err
	}
	dir := u.dir(nsID)
	if ns, ok := u.open[nsID]; ok {
		if ns.auth == u.active {
			return ErrActive
		}
		if err := ns.store.Close(); err != nil {
			return fmt.Errorf("users: remove the namespace of uid %d: %w", id.UID, err)
		}
		delete(u.open, nsID)
	} else if _, err := os.Lstat(filepath.Join(dir, keystore.FileName)); errors.Is(err, fs.ErrNotExist) {
		return ErrNoNamespace
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("users: remove the namespace of uid %d: %w", id.UID, err)
	}
	return nil
}

// NamespaceDir is the directory of id's namespace (whether or not it
// exists); the owner's is the state dir.
func (u *Users) NamespaceDir(id Identity) (string, error) {
	if err := id.check(); err != nil {
		return "", err
	}
	if u.IsOwner(id) {
		return u.cfg.StateDir, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	nsID, err := u.idLocked(id)
	if err != nil {
		return "", err
	}
	return u.dir(nsID), nil
}

// Close closes every user's namespace (not the device store: the
// caller's). Later calls do nothing.
func (u *Users) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed, u.active = true, nil
	var errs []error
	for id, ns := range u.open {
		if err := ns.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("users: close a namespace: %w", err))
		}
		delete(u.open, id)
	}
	return errors.Join(errs...)
}

func (u *Users) dir(nsID string) string { return filepath.Join(u.cfg.StateDir, Dir, nsID) }

// idLocked is id's namespace ID: hex(HMAC-SHA256(key, label || uid || name)).
func (u *Users) idLocked(id Identity) (string, error) {
	if u.key == nil {
		k, err := u.loadKey()
		if err != nil {
			return "", err
		}
		u.key = k
	}
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte(idLabel))
	m.Write(binary.BigEndian.AppendUint32(nil, id.UID))
	m.Write([]byte(id.Name))
	return hex.EncodeToString(m.Sum(nil)), nil
}

// loadKey unseals the device key of the namespace IDs, creating it on
// first use. A key the TPM no longer unseals is an error, never a reason
// to make a new one: every user would lose their namespace.
func (u *Users) loadKey() ([]byte, error) {
	t, s := u.cfg.Auth.TPM, u.cfg.Device
	blob, err := s.Get(valueKey)
	if errors.Is(err, keystore.ErrNotFound) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("users: generate the namespace key: %w", err)
		}
		sealed, err := t.Seal(k)
		if err != nil {
			return nil, fmt.Errorf("users: seal the namespace key: %w", err)
		}
		if err := s.Put(valueKey, sealed); err != nil {
			return nil, fmt.Errorf("users: store the namespace key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("users: read the namespace key: %w", err)
	}
	k, err := t.Unseal(blob)
	switch {
	case errors.Is(err, tpm.ErrBlobRefused):
		return nil, fmt.Errorf("users: the TPM cannot unseal the namespace key: the TPM was cleared or is not the one this state dir was created with: %w", err)
	case errors.Is(err, tpm.ErrInvalidBlob):
		return nil, fmt.Errorf("users: the namespace key in the device store is damaged (restore the store from a backup): %w", err)
	case err != nil:
		return nil, fmt.Errorf("users: unseal the namespace key: %w", err)
	case len(k) != 32:
		return nil, fmt.Errorf("users: the namespace key unsealed to %d bytes, want 32 (the store is damaged)", len(k))
	}
	return k, nil
}
