// Package keystore is passkeyd's durable store: credentials, device state
// and the signature counter, in one bbolt file inside the state dir.
//
// On-disk layout of DIR/passkeyd.db (bbolt, one file, 0600, dir 0700):
//
//	meta    "format"   -> 1 (uint64 big-endian)
//	        "counter"  -> signature counter high-water mark (uint64 BE): every
//	                      value ever handed out is <= it
//	        "keycheck" -> HMAC-SHA256(checkKey, label): recognises the Unlock key
//	device  name       -> value, as given (callers store TPM-sealed blobs here)
//	cred    HMAC-SHA256(credIdxKey, credentialID)                   (32 bytes)
//	                   -> 0x01 || nonce(24) || XChaCha20-Poly1305(CBOR record),
//	                      associated data = label || this bbolt key
//	rp      HMAC-SHA256(rpIdxKey, rpID) || seq (8 bytes BE)          (40 bytes)
//	                   -> cred bucket key; discoverable credentials only
//
// aeadKey, credIdxKey, rpIdxKey and checkKey come from the 32-byte Unlock key
// through HKDF-SHA256 with distinct info strings, so the file holds neither
// RP IDs, user data nor credential IDs in clear. seq is the cred bucket's
// bbolt sequence, so a reverse prefix scan of rp lists an RP's credentials
// newest first. There is no in-memory cache: records are decrypted on read.
//
// Layer: hardware (durable storage). It stores what it is given and never
// interprets CTAP; the Unlock key comes from the caller (the authenticator
// unseals it with the TPM), so the package itself holds no TPM handle.
package keystore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrNotFound is returned for a device value or credential that doesn't exist.
	ErrNotFound = errors.New("keystore: not found")
	// ErrLocked is returned by Open when another process (or another Open in
	// this one) holds the store. The error's message names the dir and file.
	ErrLocked = errors.New("keystore: state dir is in use by another passkeyd")
	// ErrSealed is returned by credential methods before Unlock (and after Wipe).
	ErrSealed = errors.New("keystore: credentials are sealed (Unlock first)")
	// ErrWrongKey is returned by Unlock when the key is not the one the
	// store's credentials were sealed with.
	ErrWrongKey = errors.New("keystore: key does not match this store")
	// ErrCorrupt marks a record (or value) on disk that cannot be read: it
	// fails authentication, decoding or validation. It concerns that record only.
	ErrCorrupt = errors.New("keystore: corrupted record")
)

// FileName is the store's file inside its directory.
const FileName = dbName

const (
	dbName        = "passkeyd.db"
	formatVersion = 1
	// lockTimeout makes a second daemon fail at once instead of blocking on flock.
	lockTimeout = 100 * time.Millisecond
	// touchFlushInterval bounds how much LastUsedAt a crash can lose.
	touchFlushInterval = time.Second
)

var (
	bucketMeta   = []byte("meta")
	bucketDevice = []byte("device")
	bucketCred   = []byte("cred")
	bucketRP     = []byte("rp")

	metaFormat   = []byte("format")
	metaCounter  = []byte("counter")
	metaKeyCheck = []byte("keycheck")
)

var errClosed = errors.New("keystore: store is closed")

// pendingValue is a device value waiting for the flusher. gen tells it
// from a later PutEventually of the same name.
type pendingValue struct {
	v   []byte
	gen uint64
}

// lockedError carries the exact message the daemon shows; it matches ErrLocked.
type lockedError struct{ dir, path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("state dir %s is in use by another passkeyd (lock held on %s)", e.dir, e.path)
}

func (e *lockedError) Unwrap() error { return ErrLocked }

// Store is the open keystore. Its methods are safe for concurrent use.
type Store struct {
	db *bolt.DB

	// mu guards k. Credential operations hold it for reading for their whole
	// transaction, so Unlock and Wipe (writers) never interleave with one and a
	// record is never sealed under a key that Wipe has just discarded.
	mu sync.RWMutex
	k  *keys // nil while sealed

	count   atomic.Int64 // records in the cred bucket
	commits atomic.Int64 // write transactions run: each is a commit with its syncs

	ctrMu    sync.Mutex
	ctrNext  uint64 // next value to hand out
	ctrLimit uint64 // last value durably reserved
	ctrErr   error  // counter unreadable on disk

	// touchMu guards the writes the flusher batches: uses of credentials
	// and device values given to PutEventually.
	touchMu sync.Mutex
	touches map[string]time.Time // cred bucket key -> latest pending use
	pending map[string]pendingValue
	pendGen uint64 // last pendingValue.gen handed out

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	done      chan struct{}
}

// Open opens DIR/passkeyd.db, creating the dir (0700) and file (0600) if
// needed. It fails at once with an error matching ErrLocked when another
// process holds the store, and with one matching ErrDamaged, leaving the
// file untouched, when the file is empty, truncated or not a bbolt file.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore: create state dir: %w", err)
	}
	path := filepath.Join(dir, dbName)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := createFile(dir, path); err != nil {
			return nil, err
		}
	}

	db, err := openDB(path)
	if errors.Is(err, berrors.ErrTimeout) || errors.Is(err, errFlockTimeout) {
		return nil, &lockedError{dir: dir, path: path}
	}
	if errors.Is(err, ErrDamaged) {
		return nil, err // the one line the daemon shows
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: open %s: %w", path, err)
	}

	s := &Store{
		db:      db,
		touches: make(map[string]time.Time),
		pending: make(map[string]pendingValue),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrCorrupt) {
			// bbolt's structures are broken beyond one record: the file as
			// a whole is damaged.
			return nil, &damagedError{path: path, reason: err.Error()}
		}
		return nil, err
	}
	go s.flushLoop()
	return s, nil
}

// init creates the buckets, checks the format and loads the counter mark.
func (s *Store) init() error {
	var high uint64
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketDevice, bucketCred, bucketRP} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaFormat); {
		case v == nil:
			if err := meta.Put(metaFormat, binary.BigEndian.AppendUint64(nil, formatVersion)); err != nil {
				return fmt.Errorf("write format: %w", err)
			}
		case len(v) != 8 || binary.BigEndian.Uint64(v) != formatVersion:
			return fmt.Errorf("unsupported store format %x", v)
		}
		var err error
		high, err = readCounter(meta)
		if err != nil {
			// Only signing needs the counter: keep the rest of the store usable.
			s.ctrErr = fmt.Errorf("keystore: signature counter: %w", err)
		}
		return nil
	})
	if err == nil {
		n, err = s.countCredentials()
	}
	if err != nil {
		return fmt.Errorf("keystore: init: %w", err)
	}
	s.ctrNext, s.ctrLimit = high+1, high
	s.count.Store(int64(n))
	return nil
}

// countCredentials counts the records of the cred bucket. It reads every
// leaf page, so it lets go of the pages as it goes (releaseMapping):
// opening a large store leaves no more of it resident than a small one.
func (s *Store) countCredentials() (n int, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		defer releaseMapping(tx)
		c := tx.Bucket(bucketCred).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if n++; n%countRelease == 0 {
				releaseMapping(tx)
			}
		}
		return nil
	})
	return n, err
}

// countRelease is how many records the count reads between releases of
// the pages it read.
const countRelease = 256

// Close flushes pending LastUsedAt updates and device values, and closes
// the file. Later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		var ferr, cerr error
		if err := s.flush(); err != nil {
			ferr = fmt.Errorf("keystore: close: %w", err)
		}
		if err := s.db.Close(); err != nil {
			cerr = fmt.Errorf("keystore: close: %w", err)
		}
		s.closeErr = errors.Join(ferr, cerr)
	})
	return s.closeErr
}

// Get returns the device value stored under name (a pending
// PutEventually's value included).
func (s *Store) Get(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("keystore: get: empty name")
	}
	s.touchMu.Lock()
	p, ok := s.pending[name]
	s.touchMu.Unlock()
	if ok {
		return bytes.Clone(p.v), nil
	}
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketDevice).Cursor().Seek([]byte(name))
		if !bytes.Equal(k, []byte(name)) {
			return ErrNotFound
		}
		// bbolt's slice dies with the transaction; an empty value stays non-nil.
		out = append([]byte{}, v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: get %q: %w", name, err)
	}
	return out, nil
}

// Put stores a device value; it is on disk (fsync'ed) when Put returns.
// It supersedes a pending PutEventually of the same name.
func (s *Store) Put(name string, value []byte) error {
	if name == "" {
		return errors.New("keystore: put: empty name")
	}
	err := s.update(func(tx *bolt.Tx) error {
		s.dropPending(name)
		return tx.Bucket(bucketDevice).Put([]byte(name), bytes.Clone(value))
	})
	if err != nil {
		return fmt.Errorf("keystore: put %q: %w", name, err)
	}
	return nil
}

// PutEventually stores a device value without a disk sync on the caller's
// path: Get sees it at once, and the background flusher writes it (with
// the pending last-used times, in one commit) about a second later, or
// Close does. A crash before then, or a write that keeps failing, leaves
// the previous value on disk: use it only for a value whose previous one
// is the safe one to come back to, such as a PIN retry counter going
// back up after a right PIN (the attempt was counted durably before the
// check). A later Put, Delete or Wipe supersedes it.
func (s *Store) PutEventually(name string, value []byte) {
	if name == "" {
		return
	}
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	s.pendGen++
	s.pending[name] = pendingValue{v: bytes.Clone(value), gen: s.pendGen}
}

// dropPending forgets a pending value of name. Called inside a write
// transaction: bbolt runs one at a time, so the flusher's transaction
// either wrote the pending value before this one or never sees it.
func (s *Store) dropPending(name string) {
	s.touchMu.Lock()
	delete(s.pending, name)
	s.touchMu.Unlock()
}

// Delete removes a device value. Deleting an absent name is not an error.
func (s *Store) Delete(name string) error {
	if name == "" {
		return errors.New("keystore: delete: empty name")
	}
	err := s.update(func(tx *bolt.Tx) error {
		s.dropPending(name)
		return tx.Bucket(bucketDevice).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("keystore: delete %q: %w", name, err)
	}
	return nil
}

// Wipe deletes every credential and device value (authenticatorReset) in one
// transaction, except the device values named in keep (values a reset
// leaves, such as a device-wide attestation key, kept in the same
// transaction so that a crash cannot lose them). The signature counter's
// high-water mark survives too, so counters stay monotonic. Wipe works
// while sealed (a lost key is what reset recovers from) and leaves the
// store sealed: the old key's sealed blob was a device value, so the
// caller must Unlock again, normally with a fresh key.
func (s *Store) Wipe(keep ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.update(func(tx *bolt.Tx) error {
		kept := make(map[string][]byte, len(keep))
		s.touchMu.Lock()
		for _, name := range keep {
			if p, ok := s.pending[name]; ok {
				kept[name] = p.v
			} else if v := tx.Bucket(bucketDevice).Get([]byte(name)); v != nil {
				kept[name] = bytes.Clone(v)
			}
		}
		clear(s.pending)
		s.touchMu.Unlock()
		for _, name := range [][]byte{bucketDevice, bucketCred, bucketRP} {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("delete bucket %s: %w", name, err)
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		for name, v := range kept {
			if err := tx.Bucket(bucketDevice).Put([]byte(name), v); err != nil {
				return fmt.Errorf("keep %q: %w", name, err)
			}
		}
		return tx.Bucket(bucketMeta).Delete(metaKeyCheck)
	})
	if err != nil {
		return fmt.Errorf("keystore: wipe: %w", err)
	}
	s.k = nil
	s.count.Store(0)
	s.touchMu.Lock()
	clear(s.touches)
	s.touchMu.Unlock()
	return nil
}

// Commits is the number of write transactions run since Open: each is a
// bbolt commit, which syncs the file (twice: the pages, then the meta
// page). Tests and benchmarks count the syncs an operation costs with it.
func (s *Store) Commits() int64 { return s.commits.Load() }

// view and update run bbolt transactions. bbolt panics on some structural
// damage to its pages; the panic is turned into an error so a bad file
// fails the operation instead of killing the daemon (bbolt rolls back first).
//
// SetPanicOnFault does the same for a memory fault (SIGBUS) on the mapped
// file, should it shrink under us or hold a page number past its end that
// Open's check (checkFile) cannot see: an error instead of a dead daemon.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return s.db.View(fn)
}

func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	s.commits.Add(1)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return s.db.Update(fn)
}

func recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: database file damaged: %v", ErrCorrupt, r)
	}
}

// openDB opens the existing store file with bbolt, checked first by
// openChecked, and with faults turned into errors as in view.
func openDB(path string) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, &damagedError{path: path, reason: fmt.Sprintf("bbolt failed reading it: %v", r)}
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, OpenFile: openChecked})
}

// createFile makes a new, empty store at path atomically: bbolt initialises
// it under a temporary name, and only the complete file is linked into
// place. So a crash during the first start never leaves an empty or
// half-written passkeyd.db, and Open can treat an empty one as damage.
func createFile(dir, path string) error {
	f, err := os.CreateTemp(dir, dbName+".new-*")
	if err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Close(); err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	// Link, not rename: a daemon starting at the same moment may have
	// linked its own file first, and that one must win untouched.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keystore: create %s: %w", path, err)
	}
	// bbolt syncs the file, not the directory entry: without this a crash
	// right after first start could lose the whole file.
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keystore: sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keystore: sync state dir: %w", err)
	}
	return nil
}
