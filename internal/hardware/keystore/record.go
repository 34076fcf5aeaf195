package keystore

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Credential is one credential's stored form.
//
// Times come back in UTC with nanosecond precision (compare with Equal).
// UserID always comes back non-nil: CTAP returns user.id as a byte string
// even when it is empty (§6.2.2), so an empty ID must not turn into CBOR
// null. The other byte fields are optional, and empty ones come back nil:
// for them, absent and empty mean the same.
type Credential struct {
	ID              []byte // credential ID as the RP sees it
	RPID            string
	RPName          string
	UserID          []byte
	UserName        string
	UserDisplayName string
	Algorithm       int    // COSE alg
	KeyBlob         []byte // opaque TPM key blob
	Discoverable    bool
	CredProtect     int // 0 = unset, 1..3
	CreatedAt       time.Time
	LastUsedAt      time.Time // zero = never
	// Extension state, set by later features.
	HMACSecret   bool
	CredBlob     []byte
	LargeBlobKey []byte
}

const (
	recordVersion = 1
	// sealVersion prefixes every sealed value, so the format can change later.
	sealVersion = 1
	// maxField bounds every byte and text string in a record. fxamacker/cbor
	// has no per-string limit, so maxRecord (checked before decoding) bounds
	// them all and maxField is checked on the decoded values.
	maxField  = 16 << 10
	maxRecord = 64 << 10
)

// recordAD is the start of a record's associated data; the bbolt key follows,
// so a record moved to another key fails authentication.
var recordAD = []byte("passkeyd keystore v1 cred\x00")

// record is the CBOR form of a Credential (CTAP2 canonical, integer keys).
type record struct {
	Version         int    `cbor:"1,keyasint"`
	Seq             uint64 `cbor:"2,keyasint"` // creation order
	ID              []byte `cbor:"3,keyasint"`
	RPID            string `cbor:"4,keyasint"`
	RPName          string `cbor:"5,keyasint,omitempty"`
	UserID          []byte `cbor:"6,keyasint"` // always written, h'' when empty
	UserName        string `cbor:"7,keyasint,omitempty"`
	UserDisplayName string `cbor:"8,keyasint,omitempty"`
	Algorithm       int    `cbor:"9,keyasint"`
	KeyBlob         []byte `cbor:"10,keyasint,omitempty"`
	Discoverable    bool   `cbor:"11,keyasint,omitempty"`
	CredProtect     int    `cbor:"12,keyasint,omitempty"`
	CreatedAt       *stamp `cbor:"13,keyasint,omitempty"`
	LastUsedAt      *stamp `cbor:"14,keyasint,omitempty"`
	HMACSecret      bool   `cbor:"15,keyasint,omitempty"`
	CredBlob        []byte `cbor:"16,keyasint,omitempty"`
	LargeBlobKey    []byte `cbor:"17,keyasint,omitempty"`
}

// stamp is a time as [unix seconds, nanoseconds]: exact for any time,
// unlike UnixNano (which overflows outside 1678..2262) or a float.
type stamp struct {
	_    struct{} `cbor:",toarray"`
	Sec  int64
	Nsec int64
}

func toStamp(t time.Time) *stamp {
	if t.IsZero() {
		return nil
	}
	return &stamp{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func (st *stamp) time() time.Time {
	if st == nil {
		return time.Time{}
	}
	return time.Unix(st.Sec, st.Nsec).UTC()
}

var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

// The options are constants: an error here is a programming error that any
// test catches, never a property of data on disk.
func mustEncMode() cbor.EncMode {
	em, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}

// mustDecMode builds the hardened decoder of FIELD-NOTES §4, with limits cut
// to what a record needs (one map of 17 keys holding 2-element arrays).
func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  4,
		MaxArrayElements: 16,
		MaxMapPairs:      64,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

func recordFrom(c *Credential, seq uint64) *record {
	return &record{
		Version:         recordVersion,
		Seq:             seq,
		ID:              c.ID,
		RPID:            c.RPID,
		RPName:          c.RPName,
		UserID:          nonNil(c.UserID),
		UserName:        c.UserName,
		UserDisplayName: c.UserDisplayName,
		Algorithm:       c.Algorithm,
		KeyBlob:         c.KeyBlob,
		Discoverable:    c.Discoverable,
		CredProtect:     c.CredProtect,
		CreatedAt:       toStamp(c.CreatedAt),
		LastUsedAt:      toStamp(c.LastUsedAt),
		HMACSecret:      c.HMACSecret,
		CredBlob:        c.CredBlob,
		LargeBlobKey:    c.LargeBlobKey,
	}
}

func (r *record) credential() *Credential {
	return &Credential{
		ID:              r.ID,
		RPID:            r.RPID,
		RPName:          r.RPName,
		UserID:          nonNil(r.UserID),
		UserName:        r.UserName,
		UserDisplayName: r.UserDisplayName,
		Algorithm:       r.Algorithm,
		KeyBlob:         nilIfEmpty(r.KeyBlob),
		Discoverable:    r.Discoverable,
		CredProtect:     r.CredProtect,
		CreatedAt:       r.CreatedAt.time(),
		LastUsedAt:      r.LastUsedAt.time(),
		HMACSecret:      r.HMACSecret,
		CredBlob:        nilIfEmpty(r.CredBlob),
		LargeBlobKey:    nilIfEmpty(r.LargeBlobKey),
	}
}

// nonNil returns b, or an empty non-nil slice for nil (records written
// before UserID was always stored, or a null in a hostile record).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// nilIfEmpty maps an explicitly empty optional field onto "absent", the
// form the encoder (omitempty) writes, so that a record reads back the
// same after any number of round trips.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// checkCredential rejects what could not be stored and read back.
func checkCredential(c *Credential) error {
	switch {
	case len(c.ID) == 0:
		return errors.New("empty credential ID")
	case c.RPID == "":
		return errors.New("empty RP ID")
	case c.CredProtect < 0 || c.CredProtect > 3:
		return fmt.Errorf("credProtect %d out of range", c.CredProtect)
	}
	for _, n := range []int{len(c.ID), len(c.RPID), len(c.RPName), len(c.UserID), len(c.UserName),
		len(c.UserDisplayName), len(c.KeyBlob), len(c.CredBlob), len(c.LargeBlobKey)} {
		if n > maxField {
			return fmt.Errorf("field of %d bytes exceeds %d", n, maxField)
		}
	}
	return nil
}

func encodeRecord(r *record) ([]byte, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	if len(b) > maxRecord {
		return nil, fmt.Errorf("record of %d bytes exceeds %d", len(b), maxRecord)
	}
	return b, nil
}

// decodeRecord parses and validates a decrypted record. Its input has been
// authenticated, but it is still treated as hostile: a bug in an older
// version or a leaked key must not turn into a crash.
func decodeRecord(b []byte) (*record, error) {
	if len(b) > maxRecord {
		return nil, fmt.Errorf("record of %d bytes exceeds %d", len(b), maxRecord)
	}
	var r record
	if err := decMode.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("record version %d, want %d", r.Version, recordVersion)
	}
	if r.Seq == 0 {
		return nil, errors.New("record without sequence number")
	}
	for _, st := range []*stamp{r.CreatedAt, r.LastUsedAt} {
		if st != nil && (st.Nsec < 0 || st.Nsec >= 1e9) {
			return nil, fmt.Errorf("bad timestamp nanoseconds %d", st.Nsec)
		}
	}
	if err := checkCredential(r.credential()); err != nil {
		return nil, fmt.Errorf("invalid record: %w", err)
	}
	return &r, nil
}

// keys are the subkeys derived from the Unlock key.
type keys struct {
	aead    cipher.AEAD
	credIdx []byte // HMAC key naming credential records
	rpIdx   []byte // HMAC key naming RP index entries
	check   []byte // value stored as meta/keycheck
}

func deriveKeys(master []byte) (*keys, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("keystore: unlock key is %d bytes, want 32", len(master))
	}
	var err error
	sub := func(info string) []byte {
		out := make([]byte, 32)
		if _, e := io.ReadFull(hkdf.New(sha256.New, master, nil, []byte(info)), out); e != nil && err == nil {
			err = fmt.Errorf("keystore: derive %s: %w", info, e)
		}
		return out
	}
	aeadKey := sub("passkeyd keystore v1 record aead")
	checkKey := sub("passkeyd keystore v1 key check")
	k := &keys{
		credIdx: sub("passkeyd keystore v1 credential index"),
		rpIdx:   sub("passkeyd keystore v1 rp index"),
		check:   mac(checkKey, []byte("passkeyd keystore key check")),
	}
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(aeadKey)
	if err != nil {
		return nil, fmt.Errorf("keystore: record cipher: %w", err)
	}
	k.aead = aead
	return k, nil
}

func mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// credKey is the bbolt key of a credential's record.
func (k *keys) credKey(id []byte) []byte { return mac(k.credIdx, id) }

// rpPrefix starts the rp index keys of one RP.
func (k *keys) rpPrefix(rpID string) []byte { return mac(k.rpIdx, []byte(rpID)) }

func (k *keys) rpIndexKey(rpID string, seq uint64) []byte {
	return appendUint64(k.rpPrefix(rpID), seq)
}

// seal encrypts a record for storage under the bbolt key dbKey.
func (k *keys) seal(dbKey []byte, r *record) ([]byte, error) {
	pt, err := encodeRecord(r)
	if err != nil {
		return nil, err
	}
	ns := k.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(pt)+k.aead.Overhead())
	out[0] = sealVersion
	// 24-byte random nonces: no nonce state to keep, no practical collision.
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:], pt, associatedData(dbKey)), nil
}

// open authenticates, decrypts and decodes a stored value. Every failure
// wraps ErrCorrupt (with a wrong key, every record fails this way).
func (k *keys) open(dbKey, val []byte) (*record, error) {
	ns := k.aead.NonceSize()
	if len(val) < 1+ns+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: record %x: %d bytes is too short", ErrCorrupt, short(dbKey), len(val))
	}
	if val[0] != sealVersion {
		return nil, fmt.Errorf("%w: record %x: unknown seal version %d", ErrCorrupt, short(dbKey), val[0])
	}
	pt, err := k.aead.Open(nil, val[1:1+ns], val[1+ns:], associatedData(dbKey))
	if err != nil {
		return nil, fmt.Errorf("%w: record %x: %w", ErrCorrupt, short(dbKey), err)
	}
	r, err := decodeRecord(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: record %x: %w", ErrCorrupt, short(dbKey), err)
	}
	return r, nil
}

func associatedData(dbKey []byte) []byte {
	return append(append([]byte{}, recordAD...), dbKey...)
}

// short names a record in errors without printing its whole key.
func short(dbKey []byte) []byte { return dbKey[:min(len(dbKey), 8)] }
