// Package u2f implements the CTAP1/U2F raw message protocol (FIDO U2F Raw
// Message Formats v1.2) carried in ISO 7816-4 APDUs over CTAPHID_MSG.
// It parses and encodes messages; the keys and the user belong to a
// Backend.
//
// Layer: protocol. It imports nothing of the daemon or the hardware; the
// keys are the Backend's (internal/protocol/ctap2 implements it on the TPM).
package u2f

import (
	"context"
	"encoding/binary"
	"errors"
)

// Instructions (U2F raw message formats §3).
const (
	InsRegister     byte = 0x01
	InsAuthenticate byte = 0x02
	InsVersion      byte = 0x03
)

// Control bytes of AUTHENTICATE (P1).
const (
	CheckOnly                  byte = 0x07
	EnforceUserPresenceAndSign byte = 0x03
	DontEnforceUserPresence    byte = 0x08
)

// StatusWord is an ISO 7816 status word. Backend errors of this type are
// sent as they are; any other error becomes SW_UNKNOWN... (0x6F00).
type StatusWord uint16

// Status words (U2F raw message formats §3.3).
const (
	SWNoError                StatusWord = 0x9000
	SWConditionsNotSatisfied StatusWord = 0x6985
	SWWrongData              StatusWord = 0x6A80
	SWWrongLength            StatusWord = 0x6700
	SWClaNotSupported        StatusWord = 0x6E00
	SWInsNotSupported        StatusWord = 0x6D00
	SWUnknown                StatusWord = 0x6F00
)

func (s StatusWord) Error() string { return "U2F status word " + hex4(uint16(s)) }

func hex4(v uint16) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[v>>12], digits[v>>8&0xF], digits[v>>4&0xF], digits[v&0xF]})
}

// RegisterResponse is the body of a successful REGISTER (§4.3).
type RegisterResponse struct {
	PublicKey       [65]byte // uncompressed P-256 point
	KeyHandle       []byte   // at most 255 bytes
	AttestationCert []byte   // X.509 DER
	Signature       []byte   // DER ECDSA over 0x00|app|challenge|keyHandle|publicKey
}

func (r *RegisterResponse) marshal() ([]byte, error) {
	if len(r.KeyHandle) > 255 {
		return nil, errors.New("u2f: key handle longer than 255 bytes")
	}
	b := make([]byte, 0, 1+65+1+len(r.KeyHandle)+len(r.AttestationCert)+len(r.Signature))
	b = append(b, 0x05) // reserved byte, legacy reasons
	b = append(b, r.PublicKey[:]...)
	b = append(b, byte(len(r.KeyHandle)))
	b = append(b, r.KeyHandle...)
	b = append(b, r.AttestationCert...)
	return append(b, r.Signature...), nil
}

// AuthenticateResponse is the body of a successful AUTHENTICATE (§5.4).
type AuthenticateResponse struct {
	UserPresence byte
	Counter      uint32
	Signature    []byte // DER ECDSA over app|userPresence|counter|challenge
}

func (r *AuthenticateResponse) marshal() []byte {
	b := make([]byte, 0, 5+len(r.Signature))
	b = append(b, r.UserPresence)
	b = binary.BigEndian.AppendUint32(b, r.Counter)
	return append(b, r.Signature...)
}

// Backend performs U2F operations. Errors of type StatusWord are reported
// as such (SWConditionsNotSatisfied while waiting for the user,
// SWWrongData for a key handle that is not ours).
type Backend interface {
	Register(ctx context.Context, challenge, application []byte) (*RegisterResponse, error)
	Authenticate(ctx context.Context, control byte, challenge, application, keyHandle []byte) (*AuthenticateResponse, error)
}

// Command is a parsed command APDU (ISO 7816-4 §5.1, short or extended
// length encoding).
type Command struct {
	CLA, INS, P1, P2 byte
	Data             []byte
}

// ParseCommand parses a command APDU in short or extended encoding.
func ParseCommand(apdu []byte) (Command, error) {
	if len(apdu) < 4 {
		return Command{}, SWWrongLength
	}
	c := Command{CLA: apdu[0], INS: apdu[1], P1: apdu[2], P2: apdu[3]}
	body := apdu[4:]
	switch {
	case len(body) == 0: // case 1: no data, no Le
		return c, nil
	case len(body) == 1: // case 2 short: Le only
		return c, nil
	case body[0] != 0: // short Lc
		lc := int(body[0])
		rest := body[1:]
		if len(rest) != lc && len(rest) != lc+1 {
			return Command{}, SWWrongLength
		}
		c.Data = rest[:lc]
		return c, nil
	case len(body) == 3: // case 2 extended: 00 Le1 Le2
		return c, nil
	case len(body) < 3:
		return Command{}, SWWrongLength
	default: // extended Lc
		lc := int(binary.BigEndian.Uint16(body[1:3]))
		rest := body[3:]
		if lc == 0 && len(rest) == 2 {
			// 00 0000 Le1 Le2: an empty extended Lc then Le, as
			// python-fido2 sends VERSION.
			return c, nil
		}
		if lc == 0 || (len(rest) != lc && len(rest) != lc+2) {
			return Command{}, SWWrongLength
		}
		c.Data = rest[:lc]
		return c, nil
	}
}

// Handle executes one command APDU against b and returns the response
// APDU (data followed by the status word).
func Handle(ctx context.Context, b Backend, apdu []byte) []byte {
	body, err := handle(ctx, b, apdu)
	sw := SWNoError
	if err != nil {
		body = nil
		if !errors.As(err, &sw) {
			sw = SWUnknown
		}
	}
	return binary.BigEndian.AppendUint16(body, uint16(sw))
}

func handle(ctx context.Context, b Backend, apdu []byte) ([]byte, error) {
	c, err := ParseCommand(apdu)
	if err != nil {
		return nil, err
	}
	if c.CLA != 0 {
		return nil, SWClaNotSupported
	}
	switch c.INS {
	case InsVersion:
		if len(c.Data) != 0 {
			return nil, SWWrongLength
		}
		return []byte("U2F_V2"), nil
	case InsRegister:
		if len(c.Data) != 64 {
			return nil, SWWrongLength
		}
		r, err := b.Register(ctx, c.Data[:32], c.Data[32:])
		if err != nil {
			return nil, err
		}
		return r.marshal()
	case InsAuthenticate:
		if len(c.Data) < 65 || len(c.Data) != 65+int(c.Data[64]) {
			return nil, SWWrongLength
		}
		switch c.P1 {
		case CheckOnly, EnforceUserPresenceAndSign, DontEnforceUserPresence:
		default:
			return nil, SWWrongData
		}
		r, err := b.Authenticate(ctx, c.P1, c.Data[:32], c.Data[32:64], c.Data[65:])
		if err != nil {
			return nil, err
		}
		return r.marshal(), nil
	default:
		return nil, SWInsNotSupported
	}
}
