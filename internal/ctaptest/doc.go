// Package ctaptest is the platform side of CTAP 2.1 for tests: what a
// browser or libfido2 does in front of an authenticator, written once for
// every Go test and benchmark of passkeyd. It is test-only code: nothing
// outside _test.go files (and test/) may import it, and it makes no attempt
// at constant time or at keeping secrets.
//
//   - Session: one PIN/UV auth protocol key agreement (§6.5.6 protocol one,
//     §6.5.7 protocol two), platform side: encapsulate, encrypt, decrypt,
//     authenticate. The cryptography is written from the spec text
//     (HKDF spelled out from RFC 5869, AES-CBC through crypto/cipher), not
//     with internal/protocol/pinuv, so that tests of pinuv and of the
//     authenticator compare two independent implementations.
//   - Client: authenticatorClientPIN as a platform runs it (§6.5.5):
//     getKeyAgreement, setPIN, changePIN, getPinToken, the
//     getPinUvAuthTokenUsing{Pin,Uv}WithPermissions variants, and the
//     pinUvAuthParam messages of credential management (§6.8),
//     authenticatorConfig (§6.11) and large blobs (§6.10.3); hmac-secret
//     inputs and outputs (§12.5).
//   - Pipe and HIDChannel: an in-memory CTAPHID device (the shape of
//     ctaphid.Device) and a host client on it (§11.2): INIT, framing,
//     continuation packets, keepalives skipped and recorded, error frames.
//
// The package talks to an authenticator through Transport, the
// CBOR(ctx, req) []byte method that *ctap2.Authenticator and HIDChannel
// both have; it imports no passkeyd package, so tests inside ctap2,
// ctaphid and pinuv can use it without an import cycle.
//
// Results that the authenticator decides are returned as Status values for
// the test to compare; failures of the test's own machinery (a transport
// that does not answer, a response that does not decode) fail the test
// through the testing.TB passed in.
package ctaptest
