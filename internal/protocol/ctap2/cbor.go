package ctap2

import (
	"errors"

	"github.com/fxamacker/cbor/v2"
)

// encMode encodes responses in CTAP2 canonical form (CTAP 2.1 §8):
// python-fido2 and others reject anything else.
var encMode cbor.EncMode

// decMode decodes hostile requests. Limits follow what the largest legal
// CTAP message (7609 bytes) can hold; every rejection becomes a CTAP status.
var decMode cbor.DecMode

func init() {
	var err error
	if encMode, err = cbor.CTAP2EncOptions().EncMode(); err != nil {
		panic(err) // static options: unreachable
	}
	dopts := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  256,
		MaxMapPairs:       64,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		DefaultMapType:    nil,
	}
	if decMode, err = dopts.DecMode(); err != nil {
		panic(err) // static options: unreachable
	}
}

// decodeParams decodes a command's parameter map into v and maps decoder
// failures onto CTAP statuses (CTAP 2.1 §8.2: wrong types are
// CTAP2_ERR_CBOR_UNEXPECTED_TYPE, anything unparsable CTAP2_ERR_INVALID_CBOR).
func decodeParams(data []byte, v any) error {
	if len(data) == 0 {
		return ErrMissingParameter
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		var te *cbor.UnmarshalTypeError
		if errors.As(err, &te) {
			return ErrCBORUnexpectedType
		}
		return ErrInvalidCBOR
	}
	return nil
}

// marshal encodes a response body canonically.
func marshal(v any) ([]byte, error) { return encMode.Marshal(v) }
