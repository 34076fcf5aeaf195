package ctap2

// Black-box tests of authenticatorLargeBlobs (CTAP 2.1 §6.10) with tokens
// from internal/ctaptest.

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// serializedLargeBlobArray is a valid serialized large-blob array
// (§6.10.1): a CBOR array of n-byte entries and LEFT(SHA-256(array), 16).
func serializedLargeBlobArray(t *testing.T, n int) []byte {
	t.Helper()
	entry := map[int]any{1: bytes.Repeat([]byte{0xab}, n), 2: make([]byte, 12), 3: n}
	arr, err := encMode.Marshal([]any{entry})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(arr)
	return append(arr, h[:16]...)
}

// lbSet sends one fragment of a write at offset (length on the first),
// authorised by tok (nil: no pinUvAuthParam) over
// 32×0xff || h'0c00' || uint32LE(offset) || SHA-256(set) (§6.10.3).
func lbSet(t *testing.T, c *ctaptest.Client, tok []byte, set []byte, offset, length int) Status {
	t.Helper()
	req := map[int]any{2: set, 3: offset}
	if offset == 0 {
		req[4] = length
	}
	if tok != nil {
		req[5], req[6] = c.Param(tok, ctaptest.LargeBlobMessage(uint32(offset), set)), c.Version
	}
	resp := c.Raw(t, CmdLargeBlobs, req)
	if len(resp) != 1 {
		t.Fatalf("large-blob set: a %d-byte response, want the status alone", len(resp))
	}
	return Status(resp[0])
}

// lbGet reads the whole array in fragments of n bytes (§6.10.2).
func lbGet(t *testing.T, e *testEnv, n int) []byte {
	t.Helper()
	var out []byte
	for {
		st, m := e.call(t, CmdLargeBlobs, map[int]any{1: n, 3: len(out)})
		if st != StatusOK {
			t.Fatalf("large-blob get at %d: %v", len(out), st)
		}
		part := field[[]byte](t, m, 1)
		out = append(out, part...)
		if len(part) < n {
			return out
		}
	}
}

// write sends arr in fragments of n bytes and returns the status of each.
func lbWrite(t *testing.T, c *ctaptest.Client, tok []byte, arr []byte, n int) []Status {
	t.Helper()
	var sts []Status
	for off := 0; off < len(arr); off += n {
		sts = append(sts, lbSet(t, c, tok, arr[off:min(off+n, len(arr))], off, len(arr)))
	}
	return sts
}

func allOK(sts []Status) bool {
	for _, st := range sts {
		if st != StatusOK {
			return false
		}
	}
	return true
}

// TestKitLargeBlobsWrite: a fragmented write (§6.10.3) without a PIN and
// with one (then only with an lbw token over each fragment's message),
// read back byte for byte; a bad hash is INTEGRITY_FAILURE and keeps the
// old array; the sequencing and size errors.
func TestKitLargeBlobsWrite(t *testing.T) {
	e, c := kitEnv(t, 2)
	if got := lbGet(t, e, 100); !bytes.Equal(got, emptyLargeBlobArray()) {
		t.Fatalf("initial array %x, want the empty one", got)
	}
	arr := serializedLargeBlobArray(t, 900)
	if sts := lbWrite(t, c, nil, arr, 400); !allOK(sts) || len(sts) != 3 {
		t.Fatalf("write without a PIN: %v", sts)
	}
	if got := lbGet(t, e, 300); !bytes.Equal(got, arr) {
		t.Fatalf("read back %d bytes, want the %d written", len(got), len(arr))
	}

	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	arr2 := serializedLargeBlobArray(t, 1500)
	if st := lbSet(t, c, nil, arr2[:500], 0, len(arr2)); st != ErrPUATRequired {
		t.Errorf("write with a PIN set, no token: %v, want PUAT_REQUIRED", st)
	}
	noLbw := mustToken(t, c, "1234", pinuv.PermGetAssertion, "")
	if st := lbSet(t, c, noLbw, arr2[:500], 0, len(arr2)); st != ErrPinAuthInvalid {
		t.Errorf("token without lbw: %v, want PIN_AUTH_INVALID", st)
	}
	tok := mustToken(t, c, "1234", pinuv.PermLargeBlobWrite, "")
	if st := lbSet(t, c, tok, arr2[:500], 0, len(arr2)); st != StatusOK {
		t.Fatalf("first fragment: %v", st)
	}
	// The second fragment's param made over the first's offset.
	req := map[int]any{2: arr2[500:1000], 3: 500, 5: c.Param(tok, ctaptest.LargeBlobMessage(0, arr2[500:1000])), 6: 2}
	if got := c.Raw(t, CmdLargeBlobs, req); !bytes.Equal(got, []byte{byte(ErrPinAuthInvalid)}) {
		t.Errorf("param over the wrong offset: %x, want 33", got)
	}
	if st := lbSet(t, c, tok, arr2[500:1000], 400, 0); st != ErrInvalidSeq {
		t.Errorf("fragment at offset 400, 500 expected: %v, want INVALID_SEQ (0x04)", st)
	}
	for off := 500; off < len(arr2); off += 500 {
		if st := lbSet(t, c, tok, arr2[off:min(off+500, len(arr2))], off, 0); st != StatusOK {
			t.Fatalf("fragment at %d: %v", off, st)
		}
	}
	if got := lbGet(t, e, 1000); !bytes.Equal(got, arr2) {
		t.Fatal("read back differs from the array written with a token")
	}

	// Integrity: a wrong trailing hash is refused, the old array stays.
	broken := bytes.Clone(serializedLargeBlobArray(t, 100))
	broken[len(broken)-1] ^= 1
	if sts := lbWrite(t, c, tok, broken, 1000); sts[len(sts)-1] != ErrIntegrityFailure {
		t.Errorf("bad hash: %v, want INTEGRITY_FAILURE (0x3D)", sts)
	}
	if got := lbGet(t, e, 1000); !bytes.Equal(got, arr2) {
		t.Error("a refused write changed the stored array")
	}

	// Sizes and sequence (§6.10.3 steps 4-9).
	for name, tc := range map[string]struct {
		req  map[int]any
		want Status
	}{
		"length over maxSerializedLargeBlobArray": {map[int]any{2: []byte{1}, 3: 0, 4: maxSerializedLargeBlobArray + 1}, ErrLargeBlobStorageFull},
		"length under 17":                         {map[int]any{2: []byte{1}, 3: 0, 4: 16}, ErrInvalidParameter},
		"offset 0 without length":                 {map[int]any{2: []byte{1}, 3: 0}, ErrInvalidParameter},
		"length with offset 1":                    {map[int]any{2: []byte{1}, 3: 1, 4: 20}, ErrInvalidParameter},
		"continuation without a write":            {map[int]any{2: []byte{1}, 3: 5}, ErrInvalidSeq},
		"fragment over maxFragmentLength":         {map[int]any{2: make([]byte, maxLargeBlobFragment+1), 3: 0, 4: 4000}, ErrInvalidLength},
		"get beyond the end":                      {map[int]any{1: 10, 3: len(arr2) + 1}, ErrInvalidParameter},
		"get over maxFragmentLength":              {map[int]any{1: maxLargeBlobFragment + 1, 3: 0}, ErrInvalidLength},
	} {
		if got := c.Raw(t, CmdLargeBlobs, tc.req); !bytes.Equal(got, []byte{byte(tc.want)}) {
			t.Errorf("%s: %x, want %02x", name, got, byte(tc.want))
		}
	}
	// More bytes than announced: INVALID_PARAMETER, and the write ends.
	if st := lbSet(t, c, tok, make([]byte, 10), 0, 20); st != StatusOK {
		t.Fatal(st)
	}
	if st := lbSet(t, c, tok, make([]byte, 11), 10, 0); st != ErrInvalidParameter {
		t.Errorf("past the announced length: %v, want INVALID_PARAMETER", st)
	}
	if st := lbSet(t, c, tok, make([]byte, 10), 10, 0); st != ErrInvalidSeq {
		t.Errorf("continuing an ended write: %v, want INVALID_SEQ", st)
	}
}
