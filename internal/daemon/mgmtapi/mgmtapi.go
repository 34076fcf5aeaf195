// Package mgmtapi defines the management operations passkeyctl asks the
// daemon for over the control socket: their names and JSON shapes, shared
// by both sides so they cannot drift apart.
//
// It is the wire contract and nothing else: plain types and constants. It
// may import only the standard library, never the TPM, the store, CTAP or
// anything with cgo, because passkeyctl links it (internal/daemon/mgmt
// serves it in the daemon).
package mgmtapi

import "time"

// Operation names on the control socket.
const (
	OpInfo = "info"
	// OpList streams the credentials of a namespace (args UserArgs):
	// see ListMessage.
	OpList   = "list.stream"
	OpDelete = "delete"
	OpSetPIN = "pin.set"
	OpReset  = "reset"
	// OpAttestationCA answers AttestationCA.
	OpAttestationCA = "attestation.ca"
	// OpExport streams a namespace's metadata (args UserArgs): an Export
	// and then its credentials, see ListMessage.
	OpExport = "namespace.export.stream"
	// OpRemoveNamespace deletes a user's namespace (args UserArgs; root
	// only).
	OpRemoveNamespace = "namespace.remove"
)

// UserArgs names the Linux user whose passkey namespace an operation
// (list, export, remove) concerns. Empty: the caller's own (root's is the
// device's). Naming a user is for root only. UID is for an account no
// longer in the user database; a namespace belongs to uid and name.
type UserArgs struct {
	User string  `json:"user,omitempty"`
	UID  *uint32 `json:"uid,omitempty"`
}

// Export is what OpExport streams: what a namespace holds, without any
// key (no key blob, credBlob, largeBlobKey, PIN object or sealed secret).
// On the wire its Credentials follow it, one ListMessage each;
// passkeyctl export prints it with them.
type Export struct {
	// User and UID name the namespace's user; both empty for the
	// caller's own.
	User string  `json:"user,omitempty"`
	UID  *uint32 `json:"uid,omitempty"`
	// Exists is false for a user without a namespace (nothing below).
	Exists bool `json:"exists"`
	// Directory holds the namespace's store (the state dir for the
	// device's own, the owner's).
	Directory    string       `json:"directory,omitempty"`
	PINSet       bool         `json:"pinSet"`
	PINRetries   int          `json:"pinRetries"`
	MinPINLength int          `json:"minPinLength"`
	AlwaysUV     bool         `json:"alwaysUv"`
	Credentials  []Credential `json:"credentials"`
}

// ListMessage is one line of a credential stream (OpList, OpExport).
// After {"ok": true} the daemon sends, for OpExport, an Export whose
// Credentials are empty; then one message per credential, in no
// particular order; then End with Count, the number of credentials sent.
// A stream that fails midway ends with Error instead, and one that ends
// with neither was cut off. The daemon sends each credential as it reads
// it from the store, so it never holds the whole set however many there
// are; a client that sorts collects them.
type ListMessage struct {
	Export     *Export     `json:"export,omitempty"`
	Credential *Credential `json:"credential,omitempty"`
	End        bool        `json:"end,omitempty"`
	Count      int         `json:"count,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// AttestationCA is the answer to OpAttestationCA: the local attestation
// CA's certificate, which an organisation adds to its relying parties'
// trusted roots.
type AttestationCA struct {
	Certificate []byte `json:"certificate"` // DER (base64 in JSON)
}

// Credential is one passkey as `passkeyctl list --json` prints it.
type Credential struct {
	CredentialID    string     `json:"credentialId"` // base64url, no padding
	RPID            string     `json:"rpId"`
	RPName          string     `json:"rpName"`
	UserID          string     `json:"userId"` // base64url, no padding
	UserName        string     `json:"userName"`
	UserDisplayName string     `json:"userDisplayName"`
	CreatedAt       time.Time  `json:"createdAt"`
	LastUsedAt      *time.Time `json:"lastUsedAt"` // null when never used
	Algorithm       int        `json:"algorithm"`  // COSE
	CredProtect     int        `json:"credProtect"`
	Discoverable    bool       `json:"discoverable"`
}

// TPM describes the TPM in use.
type TPM struct {
	Kind         string `json:"kind"`
	Manufacturer string `json:"manufacturer"`
	Firmware     string `json:"firmware"`
	// SRK is where the storage primary key lives (tpm.Info.SRK):
	// "persistent 0x81000001", "persistent 0x81000001 (provisioned now)"
	// or "transient: REASON". Transient costs about twice the TPM
	// commands per operation through /dev/tpmrm0.
	SRK string `json:"srk"`
	// Software: a private swtpm whose state is in the state dir (see
	// SoftwareTPMWarning).
	Software bool `json:"software"`
}

// SoftwareTPMWarning is what the daemon logs at start-up and passkeyctl
// info prints when the TPM is a private swtpm: its seeds are files in the
// state directory, so a copy of it signs as every passkey without the PIN,
// and short PINs can be guessed offline against it.
const SoftwareTPMWarning = "software TPM: a copy of the state directory is a copy of your passkeys"

// Info is the answer to OpInfo.
// Modes of Info.Mode.
const (
	ModeOwner = "owner" // one set of passkeys, the owner's
	ModeSeat  = "seat"  // the active user's at seat0, followed live
)

type Info struct {
	Version      string   `json:"version"`
	AAGUID       string   `json:"aaguid"`
	TPM          TPM      `json:"tpm"`
	PINSet       bool     `json:"pinSet"`
	PINRetries   int      `json:"pinRetries"`
	MinPINLength int      `json:"minPinLength"`
	AlwaysUV     bool     `json:"alwaysUv"`
	BuiltInUV    bool     `json:"builtInUv"`
	Credentials  int      `json:"credentials"`
	Capacity     int      `json:"capacity"`
	Algorithms   []string `json:"algorithms"`
	Attestation  string   `json:"attestation"`
	StateDir     string   `json:"stateDir"`
	Transport    string   `json:"transport"`
	Prompt       string   `json:"prompt"`
	// Mode is whose passkeys the key serves: ModeSeat or ModeOwner
	// (absent from daemons that predate it: owner).
	Mode string `json:"mode,omitempty"`
	// Serving, in seat mode, says whom the key serves now: "NAME (uid
	// N)", or "" when it is unplugged (nobody active at seat0).
	Serving string `json:"serving,omitempty"`
	// TPMLockout is absent when the TPM does not report it.
	TPMLockout *Lockout `json:"tpmLockout,omitempty"`
	// Settings are the daemon's effective settings and where each came
	// from (the configuration file and line, the command line, or the
	// default).
	Settings []Setting `json:"settings,omitempty"`
}

// Setting is one effective daemon setting.
type Setting struct {
	Key    string `json:"key"`    // as in passkeyd.conf: "tpm", "policy.min_pin_length"
	Value  string `json:"value"`  // lists comma-separated
	Source string `json:"source"` // "FILE:LINE", "command line" or "default"
}

// Lockout is the TPM's dictionary-attack state. It is TPM-wide: wrong
// authorizations by any program count. In lockout the TPM checks no PIN;
// passkeyd then refuses PINs without using a retry.
type Lockout struct {
	InLockout   bool   `json:"inLockout"`
	FailedTries uint32 `json:"failedTries"` // TPM_PT_LOCKOUT_COUNTER
	MaxTries    uint32 `json:"maxTries"`    // TPM_PT_MAX_AUTH_FAIL
	// RecoveryIntervalSeconds is TPM_PT_LOCKOUT_INTERVAL: one failed try
	// is forgiven per this much TPM uptime.
	RecoveryIntervalSeconds int64 `json:"recoveryIntervalSeconds"`
	// RecoversWithinSeconds is, in lockout, the longest until the TPM
	// checks PINs again; 0 in lockout means only a reset by the lockout
	// authority ends it (tpm2_dictionarylockout --clear-lockout).
	RecoversWithinSeconds int64 `json:"recoversWithinSeconds"`
}

// DeleteArgs asks to delete credentials by their full IDs (base64url).
type DeleteArgs struct {
	IDs []string `json:"ids"`
	PIN string   `json:"pin,omitempty"`
}

// SetPINArgs sets (Old empty) or changes the PIN.
type SetPINArgs struct {
	Old string `json:"old,omitempty"`
	New string `json:"new"`
}

// ResetArgs asks for a reset; PIN is needed when one is set.
type ResetArgs struct {
	PIN string `json:"pin,omitempty"`
}
