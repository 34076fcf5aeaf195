package keystore

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimalRecord is the encoding of {1: 1, 2: 1, 3: h'6d', 4: "r", 9: 0}.
const minimalRecord = "a5" + "0101" + "0201" + "03416d" + "046172" + "0900"

func TestDecodeRecordHostile(t *testing.T) {
	const body = "0101" + "0201" + "03416d" + "046172" + "0900" // minimalRecord's pairs
	tests := []struct {
		name string
		hex  string
		ok   bool
	}{
		{"minimal", minimalRecord, true},
		{"unknown key ignored", "a6" + body + "186300", true},
		{"empty", "", false},
		{"empty map", "a0", false},
		{"duplicate key", "a6" + body + "0101", false},
		{"indefinite-length map", "bf" + body + "ff", false},
		{"tagged", "c6" + minimalRecord, false},
		{"byte string claiming 4 GiB", "a5" + "0101" + "0201" + "035affffffff", false},
		{"nested too deep", "a6" + body + "0d8181818180", false},
		{"trailing bytes", minimalRecord + "00", false},
		{"invalid UTF-8", "a5" + "0101" + "0201" + "03416d" + "0462ffff" + "0900", false},
		{"byte string for text", "a5" + "0101" + "0201" + "03416d" + "044172" + "0900", false},
		{"version 2", "a5" + "0102" + "0201" + "03416d" + "046172" + "0900", false},
		{"sequence 0", "a5" + "0101" + "0200" + "03416d" + "046172" + "0900", false},
		{"empty ID", "a5" + "0101" + "0201" + "0340" + "046172" + "0900", false},
		{"credProtect 5", "a6" + body + "0c05", false},
		{"nanoseconds 1e9", "a6" + body + "0d82001a3b9aca00", false},
		{"timestamp of 3", "a6" + body + "0d83000000", false},
		{"algorithm overflows int", "a5" + "0101" + "0201" + "03416d" + "046172" + "093bffffffffffffffff", false},
		{"ID over maxField", "a5" + "0101" + "0201" + "03594001" + strings.Repeat("00", maxField+1) + "046172" + "0900", false},
		{"over maxRecord", strings.Repeat("00", maxRecord+1), false},
	}
	for _, tc := range tests {
		b, err := hex.DecodeString(tc.hex)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = decodeRecord(b)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestRecordEmptyFields: an empty user.id comes back as an empty byte
// string, never nil (CTAP 2.1 §6.2.2 returns user.id as a byte string, and
// clients reject null); explicitly empty optional fields read back the same
// as absent ones, so a record survives any number of round trips.
func TestRecordEmptyFields(t *testing.T) {
	c := &Credential{ID: []byte("e"), RPID: "r", UserID: []byte{}, CredBlob: []byte{}, LargeBlobKey: []byte{}, KeyBlob: []byte{}}
	enc, err := encodeRecord(recordFrom(c, 1))
	if err != nil {
		t.Fatal(err)
	}
	// {6: h''} is written; 10, 16 and 17 are omitted.
	if !bytes.Contains(enc, []byte{0x06, 0x40}) {
		t.Errorf("record %x does not carry user.id as an empty byte string", enc)
	}
	r, err := decodeRecord(enc)
	if err != nil {
		t.Fatal(err)
	}
	got := r.credential()
	if got.UserID == nil || len(got.UserID) != 0 {
		t.Errorf("UserID = %#v, want empty and non-nil", got.UserID)
	}
	if got.CredBlob != nil || got.LargeBlobKey != nil || got.KeyBlob != nil {
		t.Errorf("empty optional fields came back %#v %#v %#v, want nil", got.CredBlob, got.LargeBlobKey, got.KeyBlob)
	}
	// Hostile or older forms: user.id absent or null, credBlob h''.
	for _, h := range []string{
		minimalRecord,                              // no key 6 at all
		"a6" + minimalRecord[2:] + "06f6",          // 6: null
		"a6" + minimalRecord[2:] + "1040",          // 16: h''
		"a7" + minimalRecord[2:] + "0640" + "1040", // both empty
	} {
		b, _ := hex.DecodeString(h)
		r, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		c := r.credential()
		if c.UserID == nil || c.CredBlob != nil {
			t.Errorf("%s: UserID %#v, CredBlob %#v", h, c.UserID, c.CredBlob)
		}
		roundTrip(t, r)
	}
}

// roundTrip is the fuzz target's invariant: whatever decodes re-encodes
// and decodes to the same credential.
func roundTrip(t *testing.T, r *record) {
	t.Helper()
	enc, err := encodeRecord(r)
	if err != nil {
		t.Fatalf("decoded record does not encode: %v", err)
	}
	r2, err := decodeRecord(enc)
	if err != nil {
		t.Fatalf("re-encoded record does not decode: %v", err)
	}
	if !reflect.DeepEqual(r.credential(), r2.credential()) || r.Seq != r2.Seq {
		t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	full := recordFrom(&Credential{
		ID: []byte{1, 2, 3}, RPID: "example.com", RPName: "Example", UserID: []byte("u"),
		UserName: "alice", UserDisplayName: "Alice", Algorithm: -7, KeyBlob: []byte("blob"),
		Discoverable: true, CredProtect: 2, CreatedAt: time.Unix(1700000000, 5),
		LastUsedAt: time.Unix(1700000001, 0), HMACSecret: true, CredBlob: []byte("cb"),
		LargeBlobKey: bytes.Repeat([]byte{9}, 32),
	}, 7)
	valid, err := encodeRecord(full)
	if err != nil {
		f.Fatal(err)
	}
	minimal, err := encodeRecord(recordFrom(&Credential{ID: []byte("m"), RPID: "r"}, 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(minimal)
	for _, h := range []string{
		"", "a0", minimalRecord, minimalRecord + "00", "bf0101ff", "c6" + minimalRecord,
		"a50101020103" + "5affffffff", "a6" + minimalRecord[2:] + "0d8181818180",
		"a6" + minimalRecord[2:] + "0101", "a6" + minimalRecord[2:] + "0d82001a3b9aca00",
		"a6" + minimalRecord[2:] + "1040", "a6" + minimalRecord[2:] + "06f6",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			return
		}
		roundTrip(t, r) // whatever decodes survives a round trip unchanged
	})
}
