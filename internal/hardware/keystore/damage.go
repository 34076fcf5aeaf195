package keystore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrDamaged is matched by Open's error when the store file as a whole
// cannot be used: empty, truncated, or without a valid bbolt meta page.
// Open then leaves the file exactly as it is (nothing stored in it is
// lost) and the daemon must not start: starting over would be a new
// identity, and mapping a truncated file kills the process with SIGBUS.
var ErrDamaged = errors.New("keystore: store file is damaged")

// damagedError carries the one line the daemon shows; it matches ErrDamaged.
type damagedError struct{ path, reason string }

func (e *damagedError) Error() string {
	return fmt.Sprintf("store %s is damaged (%s): passkeyd left it unchanged and will not start on it; "+
		"restore a backup of it to %s (a backup works only with the same TPM), "+
		"or move it aside (mv %s %s.damaged) to start with an empty store and no passkeys",
		e.path, strings.Join(strings.Fields(e.reason), " "), e.path, e.path, e.path)
}

func (e *damagedError) Unwrap() error { return ErrDamaged }

// bbolt's on-disk format (go.etcd.io/bbolt v1.5.0, internal/common): pages
// 0 and 1 are meta pages, each a 16-byte page header followed by
//
//	magic u32, version u32, pageSize u32, flags u32,
//	root bucket {root pgid u64, sequence u64}, freelist pgid u64,
//	pgid u64 (high-water mark: pages in use), txid u64, checksum u64
//
// in the machine's byte order; checksum is FNV-64a of the fields before it.
// bbolt uses the valid meta with the higher txid and reads only pages below
// its pgid, so a file of at least pgid*pageSize bytes never faults.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16
	boltMetaSize     = 64
	boltMetaSumBytes = 56 // the fields the checksum covers
	boltNoFreelist   = ^uint64(0)
	minPageSize      = 1 << 10 // bbolt looks for the second meta from 1 KiB ...
	maxPageSize      = 1 << 24 // ... to 16 MiB
)

type boltMeta struct {
	pageSize           uint32
	root, freelist, hi uint64
	txid               uint64
}

// parseMeta decodes and validates the meta page at off; ok is false when it
// is missing, cut short or fails its checks (as bbolt's Meta.Validate).
func parseMeta(f io.ReaderAt, off int64) (m boltMeta, ok bool) {
	var b [boltMetaSize]byte
	if _, err := f.ReadAt(b[:], off+boltPageHeader); err != nil {
		return m, false
	}
	le := binary.NativeEndian // bbolt writes its structs in memory order
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	h.Write(b[:boltMetaSumBytes])
	if h.Sum64() != le.Uint64(b[56:]) {
		return m, false
	}
	m = boltMeta{
		pageSize: le.Uint32(b[8:]),
		root:     le.Uint64(b[16:]),
		freelist: le.Uint64(b[32:]),
		hi:       le.Uint64(b[40:]),
		txid:     le.Uint64(b[48:]),
	}
	ps := m.pageSize
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return m, false
	}
	return m, true
}

// checkFile reports why f (a bbolt file of size bytes) cannot be opened
// safely, or "" if it can. It reads at most two meta pages' worth of bytes.
func checkFile(f io.ReaderAt, size int64) string {
	switch {
	case size == 0:
		// bbolt would silently initialise an empty file as a new store. Open
		// never leaves one behind itself (see createFile), so this is damage.
		return "empty: 0 bytes"
	case size < boltPageHeader+boltMetaSize:
		return fmt.Sprintf("truncated to %d bytes, inside the first meta page", size)
	}
	// The page size is in the metas; the second meta is one page in. Like
	// bbolt, find it from either meta.
	m0, ok0 := parseMeta(f, 0)
	ps := int64(m0.pageSize)
	if !ok0 {
		for p := int64(minPageSize); p <= maxPageSize && p+boltPageHeader+boltMetaSize <= size; p <<= 1 {
			if m, ok := parseMeta(f, p); ok && int64(m.pageSize) == p {
				ps = p
				break
			}
		}
		if ps == 0 {
			return fmt.Sprintf("no valid bbolt meta page in its %d bytes", size)
		}
	}
	if size < 2*ps {
		return fmt.Sprintf("truncated to %d bytes, shorter than its two %d-byte meta pages", size, ps)
	}
	m1, ok1 := parseMeta(f, ps)
	if ok1 && int64(m1.pageSize) != ps {
		ok1 = false
	}
	if ok0 && int64(m0.pageSize) != ps {
		ok0 = false
	}
	// The meta bbolt will use: the valid one with the higher txid.
	var m boltMeta
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case ok0:
		m = m0
	default:
		return fmt.Sprintf("neither bbolt meta page is valid (%d bytes)", size)
	}
	if m.hi < 4 || m.root >= m.hi || (m.freelist != boltNoFreelist && m.freelist >= m.hi) {
		return fmt.Sprintf("its meta page is inconsistent (root page %d, freelist page %d, %d pages in use)", m.root, m.freelist, m.hi)
	}
	if m.hi > uint64(size/ps) {
		return fmt.Sprintf("truncated to %d bytes; its last commit uses %d pages of %d bytes", size, m.hi, ps)
	}
	return ""
}

// openChecked is bbolt's Options.OpenFile: it opens the existing store
// (never creating it: see createFile), takes bbolt's exclusive flock itself
// so that nobody writes while the file is checked, and refuses a damaged
// file before bbolt maps it. bbolt's own flock on this descriptor then
// succeeds at once: flock locks belong to the open file description.
func openChecked(path string, flag int, mode os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag&^os.O_CREATE, mode)
	if err != nil {
		return nil, err
	}
	if err := flockTimeout(f, lockTimeout); err != nil {
		_ = f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if reason := checkFile(f, fi.Size()); reason != "" {
		_ = f.Close()
		return nil, &damagedError{path: path, reason: reason}
	}
	return f, nil
}

// errFlockTimeout: another process holds the store's flock.
var errFlockTimeout = errors.New("flock timeout")

func flockTimeout(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return errFlockTimeout
		}
		time.Sleep(10 * time.Millisecond)
	}
}
