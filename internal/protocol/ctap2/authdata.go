package ctap2

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
)

// Authenticator data flags (WebAuthn §6.1).
const (
	flagUP = 0x01 // user present
	flagUV = 0x04 // user verified
	flagAT = 0x40 // attested credential data included
	flagED = 0x80 // extension data included
)

// authenticatorData is WebAuthn §6.1's structure.
type authenticatorData struct {
	RPIDHash  []byte
	Flags     byte
	SignCount uint32
	// Attested credential data (WebAuthn §6.5.1), present when Flags&flagAT.
	AAGUID       []byte
	CredentialID []byte
	PublicKey    []byte // COSE_Key, CBOR encoded
	Extensions   []byte // CBOR map, present when Flags&flagED
}

// setExtensions encodes the extension outputs into the authenticator data
// and sets ED; no outputs leave both absent (WebAuthn §6.1).
func (a *authenticatorData) setExtensions(out map[string]any) error {
	if out == nil {
		return nil
	}
	ext, err := marshal(out)
	if err != nil {
		return err
	}
	a.Extensions = ext
	a.Flags |= flagED
	return nil
}

func (a *authenticatorData) marshal() []byte {
	b := make([]byte, 0, 37+16+2+len(a.CredentialID)+len(a.PublicKey)+len(a.Extensions))
	b = append(b, a.RPIDHash...)
	b = append(b, a.Flags)
	b = binary.BigEndian.AppendUint32(b, a.SignCount)
	if a.Flags&flagAT != 0 {
		b = append(b, a.AAGUID...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(a.CredentialID)))
		b = append(b, a.CredentialID...)
		b = append(b, a.PublicKey...)
	}
	if a.Flags&flagED != 0 {
		b = append(b, a.Extensions...)
	}
	return b
}

// COSE key parameters (RFC 9052 §7, RFC 9053).
type coseEC2Key struct {
	Kty int64  `cbor:"1,keyasint"`
	Alg int64  `cbor:"3,keyasint"`
	Crv int64  `cbor:"-1,keyasint"`
	X   []byte `cbor:"-2,keyasint"`
	Y   []byte `cbor:"-3,keyasint"`
}

type coseRSAKey struct {
	Kty int64  `cbor:"1,keyasint"`
	Alg int64  `cbor:"3,keyasint"`
	N   []byte `cbor:"-1,keyasint"`
	E   []byte `cbor:"-2,keyasint"`
}

// coseKey encodes pub as a COSE_Key for alg.
func coseKey(alg tpm.Algorithm, pub crypto.PublicKey) ([]byte, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != tpm.ES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("COSE key: EC key for algorithm %d", alg)
		}
		// X and Y are fixed-width 32-byte big-endian (RFC 9053 §7.1.1),
		// as in the uncompressed point 04 | X | Y.
		point, err := k.Bytes()
		if err != nil || len(point) != 65 {
			return nil, fmt.Errorf("COSE key: encode P-256 point: %v", err)
		}
		return marshal(coseEC2Key{Kty: 2, Alg: int64(tpm.ES256), Crv: 1, X: point[1:33], Y: point[33:65]})
	case *rsa.PublicKey:
		if alg != tpm.RS256 {
			return nil, fmt.Errorf("COSE key: RSA key for algorithm %d", alg)
		}
		return marshal(coseRSAKey{Kty: 3, Alg: int64(tpm.RS256), N: k.N.Bytes(), E: big.NewInt(int64(k.E)).Bytes()})
	default:
		return nil, fmt.Errorf("COSE key: unsupported key type %T", pub)
	}
}
