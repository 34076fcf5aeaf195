package ctaptest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// Status is a CTAP status code (CTAP 2.1 §8.2), the first byte of every
// authenticatorAPI response. It converts to ctap2.Status.
type Status byte

// The status codes the kit itself interprets or tests commonly expect
// (§8.2; the complete list is ctap2.Status).
const (
	StatusOK              Status = 0x00 // CTAP2_OK
	ErrInvalidParameter   Status = 0x02 // CTAP1_ERR_INVALID_PARAMETER
	ErrPinInvalid         Status = 0x31 // CTAP2_ERR_PIN_INVALID
	ErrPinBlocked         Status = 0x32 // CTAP2_ERR_PIN_BLOCKED
	ErrPinAuthInvalid     Status = 0x33 // CTAP2_ERR_PIN_AUTH_INVALID
	ErrPinAuthBlocked     Status = 0x34 // CTAP2_ERR_PIN_AUTH_BLOCKED
	ErrPinNotSet          Status = 0x35 // CTAP2_ERR_PIN_NOT_SET
	ErrPUATRequired       Status = 0x36 // CTAP2_ERR_PUAT_REQUIRED
	ErrPinPolicyViolation Status = 0x37 // CTAP2_ERR_PIN_POLICY_VIOLATION
)

func (s Status) String() string { return fmt.Sprintf("CTAP status 0x%02x", byte(s)) }

// Transport carries one authenticatorAPI request (command byte || CBOR
// parameters) and returns the response (status byte || CBOR). It is the
// method *ctap2.Authenticator and *HIDChannel have. An empty response
// means the transport failed.
type Transport interface {
	CBOR(ctx context.Context, req []byte) []byte
}

// TransportFunc adapts a function to Transport.
type TransportFunc func(ctx context.Context, req []byte) []byte

// CBOR calls f.
func (f TransportFunc) CBOR(ctx context.Context, req []byte) []byte { return f(ctx, req) }

// Command bytes of the authenticatorAPI (§6) the kit sends.
const (
	CmdMakeCredential       byte = 0x01
	CmdGetAssertion         byte = 0x02
	CmdGetInfo              byte = 0x04
	CmdClientPIN            byte = 0x06
	CmdReset                byte = 0x07
	CmdGetNextAssertion     byte = 0x08
	CmdCredentialManagement byte = 0x0A
	CmdSelection            byte = 0x0B
	CmdLargeBlobs           byte = 0x0C
	CmdConfig               byte = 0x0D
)

// clientPIN subcommands (§6.5.5).
const (
	pinGetPINRetries      = 0x01
	pinGetKeyAgreement    = 0x02
	pinSetPIN             = 0x03
	pinChangePIN          = 0x04
	pinGetPinToken        = 0x05
	pinTokenUsingUv       = 0x06
	pinGetUVRetries       = 0x07
	pinTokenUsingPinPerms = 0x09
)

// Client is a platform in front of one authenticator, speaking PIN/UV
// auth protocol Version (1 or 2).
type Client struct {
	T       Transport
	Version int
	// Ctx is passed to every Transport call; nil means
	// context.Background().
	Ctx context.Context
}

// NewClient is a Client for t over PIN/UV auth protocol version.
func NewClient(t Transport, version int) *Client { return &Client{T: t, Version: version} }

func (c *Client) ctx() context.Context {
	if c.Ctx == nil {
		return context.Background()
	}
	return c.Ctx
}

// Raw sends cmd with params CBOR-encoded (nil: no parameters; []byte or
// cbor.RawMessage: sent as they are) and returns the whole response,
// status byte first.
func (c *Client) Raw(tb testing.TB, cmd byte, params any) []byte {
	tb.Helper()
	req := []byte{cmd}
	switch p := params.(type) {
	case nil:
	case []byte:
		req = append(req, p...)
	case cbor.RawMessage:
		req = append(req, p...)
	default:
		b, err := cbor.Marshal(p)
		if err != nil {
			tb.Fatalf("ctaptest: encode command 0x%02x: %v", cmd, err)
		}
		req = append(req, b...)
	}
	resp := c.T.CBOR(c.ctx(), req)
	if len(resp) == 0 {
		tb.Fatalf("ctaptest: command 0x%02x: no response", cmd)
	}
	return resp
}

// Call is Raw with the response split: the status and the decoded
// response map (nil when the response has no body). An error status with
// a body fails the test: §8 sends a body only with CTAP2_OK.
func (c *Client) Call(tb testing.TB, cmd byte, params any) (Status, map[int]cbor.RawMessage) {
	tb.Helper()
	resp := c.Raw(tb, cmd, params)
	st := Status(resp[0])
	if len(resp) == 1 {
		return st, nil
	}
	if st != StatusOK {
		tb.Fatalf("ctaptest: command 0x%02x: status 0x%02x with a %d-byte body", cmd, byte(st), len(resp)-1)
	}
	var m map[int]cbor.RawMessage
	if err := cbor.Unmarshal(resp[1:], &m); err != nil {
		tb.Fatalf("ctaptest: command 0x%02x: response is not a CBOR map: %v", cmd, err)
	}
	return st, m
}

// Field decodes key k of a response map into a T; a missing key or a
// value of another type fails the test.
func Field[T any](tb testing.TB, m map[int]cbor.RawMessage, k int) T {
	tb.Helper()
	var v T
	raw, ok := m[k]
	if !ok {
		tb.Fatalf("ctaptest: response has no key %d", k)
	}
	if err := cbor.Unmarshal(raw, &v); err != nil {
		tb.Fatalf("ctaptest: response key %d: %v", k, err)
	}
	return v
}

// MustEncrypt is Encrypt failing tb on an error.
func (s *Session) MustEncrypt(tb testing.TB, plaintext []byte) []byte {
	tb.Helper()
	out, err := s.Encrypt(plaintext)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// MustDecrypt is Decrypt failing tb on an error.
func (s *Session) MustDecrypt(tb testing.TB, ciphertext []byte) []byte {
	tb.Helper()
	out, err := s.Decrypt(ciphertext)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// KeyAgreement runs getKeyAgreement (§6.5.5.4) and encapsulates to the
// authenticator's key: a new Session for one exchange.
func (c *Client) KeyAgreement(tb testing.TB) (*Session, Status) {
	tb.Helper()
	st, m := c.Call(tb, CmdClientPIN, map[int]any{1: c.Version, 2: pinGetKeyAgreement})
	if st != StatusOK {
		return nil, st
	}
	peer := Field[COSEKey](tb, m, 1)
	s, err := Encapsulate(c.Version, peer, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s, StatusOK
}

// session is KeyAgreement that fails the test unless it succeeds.
func (c *Client) session(tb testing.TB) *Session {
	tb.Helper()
	s, st := c.KeyAgreement(tb)
	if st != StatusOK {
		tb.Fatalf("ctaptest: getKeyAgreement: %v", st)
	}
	return s
}

// Retries is getPINRetries (§6.5.5.2): pinRetries and powerCycleState.
func (c *Client) Retries(tb testing.TB) (retries int, powerCycle bool, st Status) {
	tb.Helper()
	st, m := c.Call(tb, CmdClientPIN, map[int]any{1: c.Version, 2: pinGetPINRetries})
	if st != StatusOK {
		return 0, false, st
	}
	retries = Field[int](tb, m, 3)
	if _, ok := m[4]; ok {
		powerCycle = Field[bool](tb, m, 4)
	}
	return retries, powerCycle, st
}

// UVRetries is getUVRetries (§6.5.5.3).
func (c *Client) UVRetries(tb testing.TB) (int, Status) {
	tb.Helper()
	st, m := c.Call(tb, CmdClientPIN, map[int]any{1: c.Version, 2: pinGetUVRetries})
	if st != StatusOK {
		return 0, st
	}
	return Field[int](tb, m, 5), st
}

// SetPIN is setPIN (§6.5.5.5) with pin zero-padded to 64 bytes.
func (c *Client) SetPIN(tb testing.TB, pin string) Status {
	tb.Helper()
	return c.SetPINPadded(tb, PadPIN(pin))
}

// SetPINPadded is setPIN with newPinEnc = encrypt(padded) as given (a
// padded PIN of another length, a PIN without a terminating zero).
func (c *Client) SetPINPadded(tb testing.TB, padded []byte) Status {
	tb.Helper()
	s := c.session(tb)
	enc := s.MustEncrypt(tb, padded)
	st, _ := c.Call(tb, CmdClientPIN, map[int]any{
		1: c.Version, 2: pinSetPIN, 3: s.PublicKey, 4: s.Authenticate(s.HMACKey(), enc), 5: enc,
	})
	return st
}

// ChangePIN is changePIN (§6.5.5.6): pinHashEnc of current, newPinEnc of
// next, pinUvAuthParam over newPinEnc || pinHashEnc.
func (c *Client) ChangePIN(tb testing.TB, current, next string) Status {
	tb.Helper()
	return c.ChangePINPadded(tb, current, PadPIN(next))
}

// ChangePINPadded is ChangePIN with the new PIN's padded form given.
func (c *Client) ChangePINPadded(tb testing.TB, current string, padded []byte) Status {
	tb.Helper()
	s := c.session(tb)
	newPinEnc := s.MustEncrypt(tb, padded)
	pinHashEnc := s.MustEncrypt(tb, PINHash(current))
	msg := append(append([]byte{}, newPinEnc...), pinHashEnc...)
	st, _ := c.Call(tb, CmdClientPIN, map[int]any{
		1: c.Version, 2: pinChangePIN, 3: s.PublicKey, 4: s.Authenticate(s.HMACKey(), msg), 5: newPinEnc, 6: pinHashEnc,
	})
	return st
}

// token sends a token request made by fill and decrypts the token.
func (c *Client) token(tb testing.TB, fill func(s *Session) map[int]any) ([]byte, Status) {
	tb.Helper()
	s := c.session(tb)
	st, m := c.Call(tb, CmdClientPIN, fill(s))
	if st != StatusOK {
		return nil, st
	}
	tok := s.MustDecrypt(tb, Field[[]byte](tb, m, 2))
	if len(tok) != 32 {
		tb.Fatalf("ctaptest: pinUvAuthToken of %d bytes, want 32 (§6.5.2.1)", len(tok))
	}
	return tok, st
}

// PinToken is getPinToken (§6.5.5.7.1, superseded but still required):
// the decrypted pinUvAuthToken.
func (c *Client) PinToken(tb testing.TB, pin string) ([]byte, Status) {
	tb.Helper()
	return c.token(tb, func(s *Session) map[int]any {
		return map[int]any{1: c.Version, 2: pinGetPinToken, 3: s.PublicKey, 6: s.MustEncrypt(tb, PINHash(pin))}
	})
}

// PinTokenWithPermissions is getPinUvAuthTokenUsingPinWithPermissions
// (§6.5.5.7.2); rpID "" sends none.
func (c *Client) PinTokenWithPermissions(tb testing.TB, pin string, perms byte, rpID string) ([]byte, Status) {
	tb.Helper()
	return c.token(tb, func(s *Session) map[int]any {
		m := map[int]any{1: c.Version, 2: pinTokenUsingPinPerms, 3: s.PublicKey, 6: s.MustEncrypt(tb, PINHash(pin)), 9: perms}
		if rpID != "" {
			m[10] = rpID
		}
		return m
	})
}

// UVTokenWithPermissions is getPinUvAuthTokenUsingUvWithPermissions
// (§6.5.5.7.3); rpID "" sends none.
func (c *Client) UVTokenWithPermissions(tb testing.TB, perms byte, rpID string) ([]byte, Status) {
	tb.Helper()
	return c.token(tb, func(s *Session) map[int]any {
		m := map[int]any{1: c.Version, 2: pinTokenUsingUv, 3: s.PublicKey, 9: perms}
		if rpID != "" {
			m[10] = rpID
		}
		return m
	})
}

// Param is a pinUvAuthParam: authenticate(token, msg) of the client's
// protocol.
func (c *Client) Param(token, msg []byte) []byte { return Authenticate(c.Version, token, msg) }

// CredMgmtMessage is what credential management's pinUvAuthParam
// authenticates: subCommand || subCommandParams (§6.8.2).
func CredMgmtMessage(sub byte, params []byte) []byte {
	return append([]byte{sub}, params...)
}

// ConfigMessage is what authenticatorConfig's pinUvAuthParam
// authenticates: 32×0xff || 0x0d || subCommand || subCommandParams
// (§6.11.1).
func ConfigMessage(sub byte, params []byte) []byte {
	m := append(bytes.Repeat([]byte{0xff}, 32), CmdConfig, sub)
	return append(m, params...)
}

// LargeBlobMessage is what a large-blob write's pinUvAuthParam
// authenticates: 32×0xff || h'0c00' || uint32LittleEndian(offset) ||
// SHA-256(set) (§6.10.3 step 6).
func LargeBlobMessage(offset uint32, set []byte) []byte {
	m := append(bytes.Repeat([]byte{0xff}, 32), 0x0c, 0x00)
	m = binary.LittleEndian.AppendUint32(m, offset)
	h := sha256.Sum256(set)
	return append(m, h[:]...)
}

// HMACSecret is one hmac-secret (or hmac-secret-mc) request (§12.5): the
// extension input and the session that decrypts the output.
type HMACSecret struct {
	Session *Session
	// Input is the extension input: keyAgreement (1), saltEnc (2),
	// saltAuth (3), pinUvAuthProtocol (4).
	Input map[int]any
	// Salts are the salts sent, in order.
	Salts [][]byte
}

// HMACSecretInput does a key agreement and builds the hmac-secret input
// for one or two 32-byte salts: saltEnc = encrypt(salt1 [|| salt2]),
// saltAuth = authenticate(HMAC key, saltEnc).
func (c *Client) HMACSecretInput(tb testing.TB, salts ...[]byte) *HMACSecret {
	tb.Helper()
	s := c.session(tb)
	enc := s.MustEncrypt(tb, bytes.Join(salts, nil))
	return &HMACSecret{
		Session: s,
		Input:   map[int]any{1: s.PublicKey, 2: enc, 3: s.Authenticate(s.HMACKey(), enc), 4: c.Version},
		Salts:   salts,
	}
}

// Outputs decrypts an hmac-secret output into one 32-byte output per salt
// sent; an output of another length fails the test.
func (h *HMACSecret) Outputs(tb testing.TB, enc []byte) [][]byte {
	tb.Helper()
	pt := h.Session.MustDecrypt(tb, enc)
	if len(pt) != 32*len(h.Salts) {
		tb.Fatalf("ctaptest: hmac-secret output of %d bytes for %d salts", len(pt), len(h.Salts))
	}
	var out [][]byte
	for i := range h.Salts {
		out = append(out, pt[32*i:32*i+32])
	}
	return out
}
