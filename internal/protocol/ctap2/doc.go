// Package ctap2 implements the CTAP 2.1 authenticator API (and CTAP1/U2F
// through package u2f) on keys that live in a TPM.
//
// # What it owns
//
// An Authenticator owns the protocol state of CTAP 2.1: the commands of
// §6 and their multi-command state (getNextAssertion, the enumerations of
// credential management, a large-blob write), the credential-ID format,
// the device secrets and the attestation statements. Inside it, clientPIN
// (clientpin.go) is the one authority for PIN and user verification
// (§6.5): the PIN object and its counters, the PIN policy of
// authenticatorConfig, the PIN/UV auth protocols, the pinUvAuthToken and
// built-in UV. Every command that needs the user verified asks it, and
// nothing else touches its fields; it reaches the store and the TPM only
// through the narrow valueStore and pinTPM, so an authenticator could hold
// one per user.
//
// makeCredential and getAssertion are request states
// (makeCredentialState, getAssertionState) with one method per step of
// §6.1.2 and §6.2.2: parameters are parsed and validated before anything
// is decided.
//
// # What it may not touch
//
// It sees its surroundings only through interfaces: TPM for key
// operations and sealing, Store for durable state, prompt.Prompter for the
// user, Attester for "tpm" attestation. It imports no daemon or hardware
// package for what they do, only for shared vocabulary: from
// internal/hardware/tpm the key-blob, algorithm and dictionary-attack
// types, its sentinel errors and tpm.PublicKey (which parses a blob's
// public area without a TPM); from internal/hardware/keystore the
// Credential record and its sentinel errors; from internal/daemon/prompt
// the Prompter interfaces and request types. It never opens a TPM, a
// store or a socket.
//
// # Transports
//
// A transport drives it through HIDHandler, a ctaphid.Handler: every
// request comes with its ctaphid.Transaction, through which the
// authenticator reports user-presence waits (KEEPALIVE) and learns the
// channel its continuations are bound to. In-process callers (tests,
// benchmarks, the management API) call CBOR and MSG directly: channel 0,
// no keepalives.
package ctap2
