package ctap2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// CmdLargeBlobs is authenticatorLargeBlobs (CTAP 2.1 §6.10).
const CmdLargeBlobs byte = 0x0C

// Large-blob limits: the serialized array (CBOR array || 16-byte
// truncated SHA-256) is kept whole in the store; fragments fit a message.
const (
	maxSerializedLargeBlobArray = 4096
	maxLargeBlobFragment        = MaxMsgSize - 64
	largeBlobHashLen            = 16
	valueLargeBlobs             = "large-blobs"
)

// ErrIntegrityFailure is CTAP2_ERR_INTEGRITY_FAILURE.
const ErrIntegrityFailure Status = 0x3D

// ErrLargeBlobStorageFull is CTAP2_ERR_LARGE_BLOB_STORAGE_FULL.
const ErrLargeBlobStorageFull Status = 0x18

// ErrInvalidSeq is CTAP1_ERR_INVALID_SEQ.
const ErrInvalidSeq Status = 0x04

// LargeBlobsRequest is authenticatorLargeBlobs's parameter map.
type LargeBlobsRequest struct {
	Get               *uint64 `cbor:"1,keyasint"`
	Set               []byte  `cbor:"2,keyasint"`
	Offset            *uint64 `cbor:"3,keyasint"`
	Length            *uint64 `cbor:"4,keyasint"`
	PinUvAuthParam    []byte  `cbor:"5,keyasint"`
	PinUvAuthProtocol *uint64 `cbor:"6,keyasint"`
}

type largeBlobsResponse struct {
	Config []byte `cbor:"1,keyasint"`
}

// largeBlobWrite is a write in progress (§6.10.3: expectedLength and
// expectedNextOffset).
type largeBlobWrite struct {
	expectedLength int
	buf            []byte
}

// emptyLargeBlobArray is the initial serialized array: an empty CBOR array
// and its truncated hash.
func emptyLargeBlobArray() []byte {
	h := sha256.Sum256([]byte{0x80})
	return append([]byte{0x80}, h[:largeBlobHashLen]...)
}

func (a *Authenticator) largeBlobArray() ([]byte, error) {
	b, err := a.store.Get(valueLargeBlobs)
	if errors.Is(err, keystore.ErrNotFound) {
		return emptyLargeBlobArray(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read large blobs: %w", err)
	}
	return b, nil
}

// largeBlobs is authenticatorLargeBlobs (CTAP 2.1 §6.10.2-3).
func (a *Authenticator) largeBlobs(params []byte) ([]byte, error) {
	var req LargeBlobsRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	// §6.10.2 steps 1-3: offset is mandatory, exactly one of get and set,
	// each failure CTAP1_ERR_INVALID_PARAMETER.
	if req.Offset == nil {
		return nil, ErrInvalidParameter
	}
	if (req.Get == nil) == (req.Set == nil) {
		return nil, ErrInvalidParameter
	}
	if req.Get != nil {
		a.lbWrite = nil
		// §6.10.2 get step 1: a read takes no length and no
		// pinUvAuthParam or pinUvAuthProtocol.
		if req.Length != nil || req.PinUvAuthParam != nil || req.PinUvAuthProtocol != nil {
			return nil, ErrInvalidParameter
		}
		if *req.Get > maxLargeBlobFragment {
			return nil, ErrInvalidLength
		}
		arr, err := a.largeBlobArray()
		if err != nil {
			return nil, err
		}
		if *req.Offset > uint64(len(arr)) {
			return nil, ErrInvalidParameter
		}
		end := min(uint64(len(arr)), *req.Offset+*req.Get)
		return marshal(largeBlobsResponse{Config: arr[*req.Offset:end]})
	}
	return nil, a.largeBlobsSet(&req)
}

func (a *Authenticator) largeBlobsSet(req *LargeBlobsRequest) error {
	if len(req.Set) > maxLargeBlobFragment {
		return ErrInvalidLength
	}
	offset := *req.Offset
	if offset == 0 {
		if req.Length == nil {
			return ErrInvalidParameter
		}
		if *req.Length > maxSerializedLargeBlobArray {
			return ErrLargeBlobStorageFull
		}
		if *req.Length < largeBlobHashLen+1 {
			return ErrInvalidParameter
		}
		a.lbWrite = &largeBlobWrite{expectedLength: int(*req.Length)}
	} else {
		if req.Length != nil {
			return ErrInvalidParameter
		}
		if a.lbWrite == nil || offset != uint64(len(a.lbWrite.buf)) {
			return ErrInvalidSeq
		}
	}
	// Writes are authorised by a token with the lbw permission over
	// 32×0xff || 0x0c 0x00 || uint32LE(offset) || SHA-256(set).
	if a.pin.Protected() {
		h := sha256.Sum256(req.Set)
		msg := append(bytes.Repeat([]byte{0xff}, 32), 0x0c, 0x00)
		msg = binary.LittleEndian.AppendUint32(msg, uint32(offset))
		msg = append(msg, h[:]...)
		if err := a.pin.Authorize(pinuv.PermLargeBlobWrite, "", msg, req.PinUvAuthParam, req.PinUvAuthProtocol); err != nil {
			return err
		}
	}
	w := a.lbWrite
	if len(w.buf)+len(req.Set) > w.expectedLength {
		a.lbWrite = nil
		return ErrInvalidParameter
	}
	w.buf = append(w.buf, req.Set...)
	if len(w.buf) < w.expectedLength {
		return nil
	}
	a.lbWrite = nil
	body, tag := w.buf[:len(w.buf)-largeBlobHashLen], w.buf[len(w.buf)-largeBlobHashLen:]
	h := sha256.Sum256(body)
	if !bytes.Equal(h[:largeBlobHashLen], tag) {
		return ErrIntegrityFailure
	}
	if err := a.store.Put(valueLargeBlobs, w.buf); err != nil {
		return fmt.Errorf("store large blobs: %w", err)
	}
	return nil
}
