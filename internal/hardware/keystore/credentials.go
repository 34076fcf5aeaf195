package keystore

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// probeRecords is how many records Unlock tries when meta/keycheck is
// missing or doesn't match, before calling the key wrong.
const probeRecords = 3

// Unlock sets the 32-byte key that encrypts credential metadata at rest.
// The first Unlock of a store (or the first after Wipe) adopts the key; later
// ones return ErrWrongKey for any other key.
func (s *Store) Unlock(key []byte) error {
	k, err := deriveKeys(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		stored := meta.Get(metaKeyCheck)
		if hmac.Equal(stored, k.check) {
			return nil
		}
		// A missing or damaged check value must neither lock the owner out nor
		// let a wrong key in: if a record opens with this key, the key is right.
		opened, seen := probe(k, tx.Bucket(bucketCred))
		if !opened && (seen > 0 || stored != nil) {
			return ErrWrongKey
		}
		return meta.Put(metaKeyCheck, k.check)
	})
	if errors.Is(err, ErrWrongKey) {
		return ErrWrongKey
	}
	if err != nil {
		return fmt.Errorf("keystore: unlock: %w", err)
	}
	s.k = k
	return nil
}

// probe tries the first few records with k.
func probe(k *keys, creds *bolt.Bucket) (opened bool, seen int) {
	c := creds.Cursor()
	for key, val := c.First(); key != nil && seen < probeRecords; key, val = c.Next() {
		seen++
		if _, err := k.open(key, val); err == nil {
			return true, seen
		}
	}
	return false, seen
}

// keysLocked returns the record keys; the caller holds s.mu.
func (s *Store) keysLocked() (*keys, error) {
	if s.k == nil {
		return nil, ErrSealed
	}
	return s.k, nil
}

// PutCredential stores c, replacing a credential with the same ID (which
// keeps its place in creation order), and deletes the credentials whose
// IDs are in replaces (makeCredential's step 18: a new discoverable
// credential replaces the RP's one for the same user handle), all in one
// transaction: one commit, so the new credential and the old ones'
// removal reach the disk together, and a crash leaves either the old
// state or the new, never no credential. It is durable when it returns,
// and a failed call changes nothing. An ID in replaces that is not stored
// (or is c's own) is skipped.
func (s *Store) PutCredential(c *Credential, replaces ...[]byte) error {
	if c == nil {
		return errors.New("keystore: put credential: nil credential")
	}
	if err := checkCredential(c); err != nil {
		return fmt.Errorf("keystore: put credential: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return err
	}
	var added bool
	var removed [][]byte
	err = s.update(func(tx *bolt.Tx) error {
		var err error
		removed = removed[:0]
		if added, err = putCredential(tx, k, c); err != nil {
			return err
		}
		for _, id := range replaces {
			if bytes.Equal(id, c.ID) {
				continue
			}
			key := k.credKey(id)
			found, err := deleteCredential(tx, k, key)
			if err != nil {
				return fmt.Errorf("replace: %w", err)
			}
			if found {
				removed = append(removed, key)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keystore: put credential: %w", err)
	}
	if added {
		s.count.Add(1)
	}
	s.forget(removed...)
	return nil
}

// putCredential writes c inside tx and reports whether its ID is new.
func putCredential(tx *bolt.Tx, k *keys, c *Credential) (added bool, err error) {
	creds, idx := tx.Bucket(bucketCred), tx.Bucket(bucketRP)
	key := k.credKey(c.ID)
	var seq uint64
	if old := creds.Get(key); old == nil {
		added = true
	} else if rec, err := k.open(key, old); err == nil {
		seq = rec.Seq
		if rec.Discoverable {
			if err := idx.Delete(k.rpIndexKey(rec.RPID, rec.Seq)); err != nil {
				return false, fmt.Errorf("drop old index entry: %w", err)
			}
		}
	} else if err := dropIndexTo(idx, key); err != nil {
		// The record being replaced is unreadable, so its RP is unknown.
		return false, err
	}
	if seq == 0 {
		if seq, err = creds.NextSequence(); err != nil {
			return false, fmt.Errorf("next sequence: %w", err)
		}
	}
	val, err := k.seal(key, recordFrom(c, seq))
	if err != nil {
		return false, err
	}
	if err := creds.Put(key, val); err != nil {
		return false, fmt.Errorf("write record: %w", err)
	}
	if c.Discoverable {
		if err := idx.Put(k.rpIndexKey(c.RPID, seq), key); err != nil {
			return false, fmt.Errorf("write index entry: %w", err)
		}
	}
	return added, nil
}

// dropIndexTo removes every rp index entry pointing at credKey. It scans the
// whole index, so it is only used for records that can't be read.
func dropIndexTo(idx *bolt.Bucket, credKey []byte) error {
	var stale [][]byte
	err := idx.ForEach(func(k, v []byte) error {
		if bytes.Equal(v, credKey) {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan index: %w", err)
	}
	for _, k := range stale {
		if err := idx.Delete(k); err != nil {
			return fmt.Errorf("drop index entry: %w", err)
		}
	}
	return nil
}

// Credential returns the credential with this ID. A record that can't be
// read gives an error wrapping ErrCorrupt.
func (s *Store) Credential(id []byte) (*Credential, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return nil, err
	}
	key := k.credKey(id)
	var rec *record
	err = s.view(func(tx *bolt.Tx) error {
		val := tx.Bucket(bucketCred).Get(key)
		if val == nil {
			return ErrNotFound
		}
		r, err := k.open(key, val)
		if err != nil {
			return err
		}
		rec = r
		if !bytes.Equal(rec.ID, id) {
			// Authentic but filed under another ID's key: only a writer
			// holding the key could do that.
			return fmt.Errorf("%w: record %x holds another credential ID", ErrCorrupt, short(key))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: credential: %w", err)
	}
	return s.withTouch(key, rec.credential()), nil
}

// CredentialsByRP returns the RP's discoverable credentials, newest first.
// If some can't be read it returns the readable ones together with an error
// wrapping ErrCorrupt, so one bad record doesn't hide the others.
func (s *Store) CredentialsByRP(rpID string) ([]*Credential, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return nil, err
	}
	prefix := k.rpPrefix(rpID)
	var recs []*record
	var keys [][]byte
	var bad badRecords
	err = s.view(func(tx *bolt.Tx) error {
		creds := tx.Bucket(bucketCred)
		c := tx.Bucket(bucketRP).Cursor()
		for ik, credKey := c.Seek(prefix); ik != nil && bytes.HasPrefix(ik, prefix); ik, credKey = c.Next() {
			val := creds.Get(credKey)
			if val == nil {
				continue // index entry outlived an unreadable record's deletion
			}
			rec, err := k.open(credKey, val)
			if err != nil {
				bad.add(err)
				continue
			}
			// The index is only a hint: the authenticated record decides.
			if !rec.Discoverable || rec.RPID != rpID || len(ik) != len(prefix)+8 ||
				rec.Seq != binary.BigEndian.Uint64(ik[len(prefix):]) {
				continue
			}
			recs = append(recs, rec)
			keys = append(keys, bytes.Clone(credKey))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: credentials of RP: %w", err)
	}
	// The scan ran oldest first (ascending seq).
	out := make([]*Credential, len(recs))
	for i, rec := range recs {
		out[len(recs)-1-i] = s.withTouch(keys[i], rec.credential())
	}
	return out, bad.err("keystore: credentials of RP")
}

// Credentials returns every credential, newest first, with the same
// partial-result rule as CredentialsByRP.
func (s *Store) Credentials() ([]*Credential, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return nil, err
	}
	type entry struct {
		key []byte
		rec *record
	}
	var all []entry
	var bad badRecords
	err = s.view(func(tx *bolt.Tx) error {
		all = make([]entry, 0, s.count.Load())
		return tx.Bucket(bucketCred).ForEach(func(key, val []byte) error {
			rec, err := k.open(key, val)
			if err != nil {
				bad.add(err)
				return nil
			}
			all = append(all, entry{bytes.Clone(key), rec})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: credentials: %w", err)
	}
	// Keys are HMACs, so bbolt's order is random: sort by creation sequence.
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(b.rec.Seq, a.rec.Seq) })
	out := make([]*Credential, len(all))
	for i, e := range all {
		out[i] = s.withTouch(e.key, e.rec.credential())
	}
	return out, bad.err("keystore: credentials")
}

// iterBatch is how many records ForEachCredential decrypts per read
// transaction: the memory a walk holds, and how long it keeps a
// transaction open (a long one would make writers that grow the file wait).
const iterBatch = 64

// ErrSkipAll, returned by ForEachCredential's fn, ends the walk early; the
// walk then returns nil (or the unreadable records' error).
var ErrSkipAll = errors.New("keystore: skip every remaining credential")

// ForEachCredential calls fn for every credential, in no particular order
// (the store's key order: keys are HMACs). Unlike Credentials it never
// holds more than iterBatch records: it reads them in short read
// transactions and calls fn between them, so fn may take its time (write
// to a socket) without holding up writers, and a walk over any number of
// credentials costs the memory of iterBatch records, and of the file's
// pages of releaseBatches batches (releaseMapping). The walk is not a snapshot:
// a credential added or deleted during it may or may not be seen; every
// other one is seen exactly once. An error from fn ends the walk and is
// returned; unreadable records are skipped and reported at the end with
// the same partial-result rule as Credentials.
func (s *Store) ForEachCredential(fn func(*Credential) error) error {
	var after []byte // last key read
	var bad badRecords
	for batches := 1; ; batches++ {
		batch, last, err := s.credentialBatch(after, &bad, batches%releaseBatches == 0)
		if err != nil {
			return fmt.Errorf("keystore: credentials: %w", err)
		}
		for _, c := range batch {
			if err := fn(c); errors.Is(err, ErrSkipAll) {
				return bad.err("keystore: credentials")
			} else if err != nil {
				return err
			}
		}
		if last == nil {
			return bad.err("keystore: credentials")
		}
		after = last
	}
}

// releaseBatches is how many batches a walk reads between releases of
// the file's pages (releaseMapping). A release costs more than reading a
// batch (the kernel unmaps and flushes the TLB), and a read fault maps
// the neighbouring cached pages too. Measured at 10,000 records on the
// 2-core development machine: after every batch, the walk took 2.7 times
// as long as Credentials; after every 4th, 1.0-2.4 times (noisy), and a
// list's peak RSS was 19.4 MB instead of 18.0 MB (45 MB before
// streaming).
const releaseBatches = 4

// credentialBatch reads the credentials of up to iterBatch records with
// keys after after (from the first when nil). last is the last key read,
// nil once the bucket is done. With release, and at the bucket's end, it
// lets go of the file's pages.
func (s *Store) credentialBatch(after []byte, bad *badRecords, release bool) (out []*Credential, last []byte, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return nil, nil, err
	}
	var keys [][]byte
	err = s.view(func(tx *bolt.Tx) error {
		defer func() {
			if release || last == nil {
				releaseMapping(tx)
			}
		}()
		c := tx.Bucket(bucketCred).Cursor()
		key, val := c.First()
		if after != nil {
			// Seek finds the next key even if after was deleted meanwhile.
			if key, val = c.Seek(after); bytes.Equal(key, after) {
				key, val = c.Next()
			}
		}
		for n := 0; key != nil; key, val = c.Next() {
			if n == iterBatch {
				return nil // more to come: last is set
			}
			n++
			last = bytes.Clone(key)
			rec, err := k.open(key, val)
			if err != nil {
				bad.add(err)
				continue
			}
			out = append(out, rec.credential())
			keys = append(keys, last)
		}
		last = nil // the bucket is done
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i, c := range out {
		out[i] = s.withTouch(keys[i], c)
	}
	return out, last, nil
}

// DeleteCredential removes a credential; ErrNotFound if there is none. An
// unreadable record can be deleted too: that is how it gets cleaned up.
func (s *Store) DeleteCredential(id []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.keysLocked()
	if err != nil {
		return err
	}
	key := k.credKey(id)
	err = s.update(func(tx *bolt.Tx) error {
		found, err := deleteCredential(tx, k, key)
		if err == nil && !found {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("keystore: delete credential: %w", err)
	}
	s.forget(key)
	return nil
}

// deleteCredential removes the record under key and its index entry
// inside tx; found is false when there is no such record.
func deleteCredential(tx *bolt.Tx, k *keys, key []byte) (found bool, err error) {
	creds, idx := tx.Bucket(bucketCred), tx.Bucket(bucketRP)
	val := creds.Get(key)
	if val == nil {
		return false, nil
	}
	if rec, err := k.open(key, val); err != nil {
		if err := dropIndexTo(idx, key); err != nil {
			return false, err
		}
	} else if rec.Discoverable {
		if err := idx.Delete(k.rpIndexKey(rec.RPID, rec.Seq)); err != nil {
			return false, fmt.Errorf("drop index entry: %w", err)
		}
	}
	if err := creds.Delete(key); err != nil {
		return false, fmt.Errorf("delete record: %w", err)
	}
	return true, nil
}

// forget accounts for deleted records: the count, and their pending uses.
func (s *Store) forget(keys ...[]byte) {
	if len(keys) == 0 {
		return
	}
	s.count.Add(-int64(len(keys)))
	s.touchMu.Lock()
	for _, key := range keys {
		delete(s.touches, string(key))
	}
	s.touchMu.Unlock()
}

// CountCredentials returns the number of stored credentials (readable or
// not). It needs no key: it counts records, it doesn't read them.
func (s *Store) CountCredentials() int { return int(s.count.Load()) }

// TouchCredential records a use of the credential at t. It never touches the
// disk on the caller's path: uses are batched in memory and written by a
// background flusher about every second, and by Close. A crash loses at most
// the last second of LastUsedAt updates. Reads see pending uses at once.
// Sealed stores ignore it.
func (s *Store) TouchCredential(id []byte, t time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.k == nil || t.IsZero() {
		return
	}
	key := string(s.k.credKey(id))
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	if t.After(s.touches[key]) {
		s.touches[key] = t
	}
}

// withTouch applies a pending use to c.
func (s *Store) withTouch(key []byte, c *Credential) *Credential {
	s.touchMu.Lock()
	t, ok := s.touches[string(key)]
	s.touchMu.Unlock()
	if ok && t.After(c.LastUsedAt) {
		c.LastUsedAt = t.UTC()
	}
	return c
}

func (s *Store) flushLoop() {
	defer close(s.done)
	tick := time.NewTicker(touchFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			// A failure keeps the batch; it is retried next tick and
			// finally reported by Close.
			_ = s.flush()
		}
	}
}

// flush writes pending uses and pending device values in one transaction.
func (s *Store) flush() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.touchMu.Lock()
	batch := s.touches
	s.touches = make(map[string]time.Time)
	values := len(s.pending)
	s.touchMu.Unlock()
	k := s.k
	if k == nil {
		clear(batch) // sealed: no record to update
	}
	if len(batch) == 0 && values == 0 {
		return nil
	}
	var written map[string]pendingValue
	err := s.update(func(tx *bolt.Tx) error {
		// Taken inside the transaction: a Put of the same name runs
		// either before it (and dropped the value) or after it.
		s.touchMu.Lock()
		written = maps.Clone(s.pending)
		s.touchMu.Unlock()
		dev := tx.Bucket(bucketDevice)
		for name, p := range written {
			if err := dev.Put([]byte(name), p.v); err != nil {
				return fmt.Errorf("write %q: %w", name, err)
			}
		}
		creds := tx.Bucket(bucketCred)
		for key, t := range batch {
			dbKey := []byte(key)
			val := creds.Get(dbKey)
			if val == nil {
				continue // deleted meanwhile
			}
			rec, err := k.open(dbKey, val)
			if err != nil {
				continue // unreadable: reads report it, nothing to update
			}
			if !t.After(rec.LastUsedAt.time()) {
				continue
			}
			rec.LastUsedAt = toStamp(t)
			sealed, err := k.seal(dbKey, rec)
			if err != nil {
				return err
			}
			if err := creds.Put(dbKey, sealed); err != nil {
				return fmt.Errorf("write record: %w", err)
			}
		}
		return nil
	})
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	if err != nil {
		// Values stay pending; uses go back, unless newer ones came.
		for key, t := range batch {
			if t.After(s.touches[key]) {
				s.touches[key] = t
			}
		}
		return fmt.Errorf("keystore: flush last-used times and device values: %w", err)
	}
	for name, p := range written {
		if s.pending[name].gen == p.gen {
			delete(s.pending, name)
		}
	}
	return nil
}

// badRecords summarises unreadable records met during a scan.
type badRecords struct {
	n     int
	first error
}

func (b *badRecords) add(err error) {
	if b.n == 0 {
		b.first = err
	}
	b.n++
}

func (b *badRecords) err(op string) error {
	if b.n == 0 {
		return nil
	}
	return fmt.Errorf("%s: %d unreadable record(s), first: %w", op, b.n, b.first)
}

func appendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
