package ctap2

import (
	"bytes"
	"encoding/asn1"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// pkixP256 wraps an uncompressed P-256 point in a SubjectPublicKeyInfo.
func pkixP256(point []byte) []byte {
	type algo struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.ObjectIdentifier
	}
	type spki struct {
		Algorithm algo
		PublicKey asn1.BitString
	}
	der, _ := asn1.Marshal(spki{
		Algorithm: algo{asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}},
		PublicKey: asn1.BitString{Bytes: point, BitLength: len(point) * 8},
	})
	return der
}
