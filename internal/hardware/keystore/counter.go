package keystore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// counterReserve is how many counter values one disk sync buys.
const counterReserve = 256

// NextCounter returns the next value of the global signature counter
// (starting at 1). Values come from memory out of a durably reserved range,
// so there is a sync only every counterReserve calls; after a crash the
// counter resumes past the last reserved range and never goes backwards. At
// 2^32-1 it stops with an error rather than wrap.
func (s *Store) NextCounter() (uint32, error) {
	s.ctrMu.Lock()
	defer s.ctrMu.Unlock()
	if s.closed.Load() {
		return 0, errClosed
	}
	if s.ctrErr != nil {
		return 0, s.ctrErr
	}
	if s.ctrNext > math.MaxUint32 {
		return 0, errors.New("keystore: signature counter exhausted")
	}
	if s.ctrNext > s.ctrLimit {
		limit := min(s.ctrNext-1+counterReserve, math.MaxUint32)
		if err := s.reserveCounter(limit); err != nil {
			return 0, err
		}
		s.ctrLimit = limit
	}
	v := s.ctrNext
	s.ctrNext++
	return uint32(v), nil
}

// reserveCounter durably raises the high-water mark to limit (never lowers it).
func (s *Store) reserveCounter(limit uint64) error {
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		high, err := readCounter(meta)
		if err != nil {
			return err
		}
		if limit <= high {
			return nil
		}
		return meta.Put(metaCounter, binary.BigEndian.AppendUint64(nil, limit))
	})
	if err != nil {
		return fmt.Errorf("keystore: reserve signature counters: %w", err)
	}
	return nil
}

// readCounter returns the stored high-water mark (0 if none).
func readCounter(meta *bolt.Bucket) (uint64, error) {
	v := meta.Get(metaCounter)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: signature counter is %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
