package ctap2

import (
	"context"
	"fmt"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

// Limits advertised in getInfo.
const (
	// MaxMsgSize is the largest CTAPHID message (CTAP 2.1 §11.2.4).
	MaxMsgSize = 7609
	// maxCredentialCountInList keeps a full allowList of our own IDs well
	// inside MaxMsgSize.
	maxCredentialCountInList = 16
	// FirmwareVersion is reported in getInfo (0x0E).
	FirmwareVersion = 1
)

// maxCredentialIDLength is the length of the longest credential ID this
// authenticator issues: the overhead plus the largest TPM key blob of the
// algorithms in use.
func maxCredentialIDLength(algs []tpm.Algorithm) int {
	n := 0
	for _, alg := range algs {
		// ES256 blobs are ~220 bytes; RSA-2048 blobs ~600 (256-byte
		// modulus + ~330-byte private). Bounds with margin.
		l := credIDOverhead + 256
		if alg == tpm.RS256 {
			l = credIDOverhead + 720
		}
		n = max(n, l)
	}
	return n
}

// getInfo is authenticatorGetInfo (CTAP 2.1 §6.4). Every option reported
// is one that works.
func (a *Authenticator) getInfo() ([]byte, error) {
	algs := make([]algorithmOut, 0, len(a.algorithm))
	for _, alg := range a.algorithm {
		algs = append(algs, algorithmOut{Alg: int64(alg), Type: credentialTypePublicKey})
	}
	versions := []string{"FIDO_2_0", "FIDO_2_1"}
	if !a.pin.AlwaysUV() {
		versions = append(versions, "U2F_V2") // U2F cannot carry UV: off under alwaysUv
	}
	options := map[string]bool{
		"rk":               true,
		"up":               true,
		"plat":             false,
		"clientPin":        a.pin.IsSet(),
		"pinUvAuthToken":   true,
		"alwaysUv":         a.pin.AlwaysUV(),
		"setMinPINLength":  true,
		"makeCredUvNotRqd": !a.pin.AlwaysUV(),
		"authnrCfg":        true,
		"credMgmt":         true,
		// The CTAP 2.1-PRE name, for platforms that only know 0x41.
		"credentialMgmtPreview": true,
		"largeBlobs":            true,
	}
	info := GetInfoResponse{
		Versions:                         versions,
		Extensions:                       supportedExtensions,
		MaxCredBlobLength:                maxCredBlobLength,
		MaxSerializedLargeBlobArray:      maxSerializedLargeBlobArray,
		AAGUID:                           AAGUID[:],
		Options:                          options,
		PinUvAuthProtocols:               []int{2, 1},
		ForcePINChange:                   a.pin.ForcePINChange(),
		MinPINLength:                     a.pin.MinPINLength(),
		MaxRPIDsForSetMinPINLength:       maxMinPINLengthRPIDs,
		MaxMsgSize:                       MaxMsgSize,
		MaxCredentialCountInList:         maxCredentialCountInList,
		MaxCredentialIDLength:            maxCredentialIDLength(a.algorithm),
		Transports:                       []string{"usb"},
		Algorithms:                       algs,
		FirmwareVersion:                  FirmwareVersion,
		RemainingDiscoverableCredentials: max(0, a.capacity-a.store.CountCredentials()),
	}
	if a.pin.BuiltInUV() {
		// Built-in UV is the device PIN typed into the prompt, or the
		// system's verification (no PIN needed).
		options["uv"] = a.pin.UVConfigured()
		// A token from built-in UV may carry acfg (§6.5.5.7.3 step 4
		// allows it only when uvAcfg is true).
		options["uvAcfg"] = true
		info.PreferredPlatformUvAttempts = 1
		info.UVModality = uvModalityPasscodeInternal
		if a.pin.SystemUV() {
			info.UVModality = uvModalitySystem
		}
	}
	return marshal(info)
}

// User verification methods (FIDO Registry of Predefined Values §3.1).
const (
	// uvModalityPasscodeInternal is USER_VERIFY_PASSCODE_INTERNAL: the
	// device PIN typed into the authenticator's own prompt.
	uvModalityPasscodeInternal = 0x00000004
	// uvModalitySystem is the system's verification through polkit:
	// USER_VERIFY_PASSCODE_EXTERNAL (0x800), the session user's password,
	// a passcode that is not the authenticator's own and is checked
	// outside it (by PAM, not the TPM), | USER_VERIFY_FINGERPRINT_INTERNAL
	// (0x2), a fingerprint reader of this machine where PAM's polkit-1
	// stack has pam_fprintd. Which one the dialog offers is PAM's choice,
	// invisible to the authenticator, so both bits are hints; the password
	// always remains.
	uvModalitySystem = 0x00000800 | 0x00000002
)

// reset is authenticatorReset (CTAP 2.1 §6.6): only within 10 s of
// power-up and with user presence; it wipes every credential and device
// secret, so credential IDs issued before no longer open.
func (a *Authenticator) reset(ctx context.Context, tx ctaphid.Transaction) error {
	if a.now().Sub(a.powerUp) > resetWindow {
		return ErrNotAllowed
	}
	if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpReset}); err != nil {
		return err
	}
	return a.wipe()
}

// wipe deletes every credential and secret of the namespace and starts a
// new identity: credential IDs issued before no longer open. The
// device-wide values (the U2F attestation, the Attester's CA and AK, the
// caller's DeviceValues) stay: in their own store, or kept across the
// wipe when the namespace's store holds them too, as a hardware key's
// attestation certificate survives its reset.
func (a *Authenticator) wipe() error {
	for _, name := range a.keep {
		// The Attester's values exist before the authenticator: their
		// absence is damage, not something a reset may paper over.
		if _, err := a.store.Get(name); err != nil && (!isNotFound(err) || a.mustKeep(name)) {
			return fmt.Errorf("reset: keep %s: %w", name, err)
		}
	}
	if err := a.store.Wipe(a.keep...); err != nil {
		return fmt.Errorf("reset: wipe store: %w", err)
	}
	s, err := loadDeviceSecrets(a.tpm, a.store, a.device, a.now())
	if err != nil {
		return fmt.Errorf("reset: new device secrets: %w", err)
	}
	a.secrets = s
	pin, err := newClientPIN(a.clientPINConfig())
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	a.pin = pin
	a.presence.clear()
	a.log.Warn("authenticator reset: every credential deleted")
	return nil
}

// mustKeep reports whether a reset must find name in the store: the
// Attester's values are created before the authenticator, so their
// absence is damage (as before namespaces).
func (a *Authenticator) mustKeep(name string) bool {
	if a.attester == nil {
		return false
	}
	for _, n := range a.attester.StoredValues() {
		if n == name {
			return true
		}
	}
	return false
}

// selection is authenticatorSelection (CTAP 2.1 §6.9).
func (a *Authenticator) selection(ctx context.Context, tx ctaphid.Transaction) error {
	return a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpSelect})
}
