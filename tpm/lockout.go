package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Dictionary-attack lockout and a private swtpm.
//
// Credential keys are DA-protected (no noDA attribute). Once one has been
// used, a TPM2_Startup that follows no orderly TPM2_Shutdown counts as a
// failed authorization. For a private swtpm, "power loss" is our process
// dying: swtpm then gets SIGTERM (Pdeathsig) and exits without Shutdown.
// Measured with swtpm 0.7.1: three such exits and every Sign fails with
// TPM_RC_LOCKOUT (default maxTries 3, recovery 1000 s per try).
//
// So at Open of a private swtpm we clear a non-zero lockout counter with
// TPM2_DictionaryAttackLockReset. This gives nothing away: the swtpm is
// reachable only through our 0600 socket, PIN retries are counted in
// software above us, and whoever holds the state directory can run swtpm on
// it and reset the lockout (empty lockoutAuth) anyway. Devices and "unix:"
// TPMs belong to someone else and are left alone.

// resetLockoutIfCounted resets the DA lockout if the counter is non-zero.
// The caller holds t.mu.
func (t *TPM) resetLockoutIfCounted() error {
	n, err := t.property(tpm2.TPMPTLockoutCounter)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := t.dictionaryAttackLockReset(); err != nil {
		// lockoutAuth was set by someone: keys may be locked out, but
		// the TPM is otherwise usable, so Open goes on.
		t.log.Warn("swtpm dictionary-attack counter is non-zero and could not be reset; DA-protected keys may be locked out",
			"counter", n, "err", err)
		return nil
	}
	t.log.Info("reset swtpm dictionary-attack counter left by unclean shutdowns", "counter", n)
	return nil
}

// property reads one TPM_PT_* value with TPM2_GetCapability.
func (t *TPM) property(pt tpm2.TPMPT) (uint32, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(pt),
		PropertyCount: 1,
	}.Execute(t.tpm)
	if err != nil {
		return 0, fmt.Errorf("get TPM property 0x%x: %w", uint32(pt), err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, fmt.Errorf("get TPM property 0x%x: %w", uint32(pt), err)
	}
	if len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != pt {
		return 0, fmt.Errorf("get TPM property 0x%x: not reported", uint32(pt))
	}
	return props.TPMProperty[0].Value, nil
}

// dictionaryAttackLockReset sends TPM2_DictionaryAttackLockReset
// (Part 3, 25.2) authorised by an empty lockoutAuth password. go-tpm v0.9.8
// has the command code but no command struct, and tpm2.Command cannot be
// implemented outside go-tpm, so the bytes are built here.
func (t *TPM) dictionaryAttackLockReset() error {
	const size = 10 + 4 + 4 + 9 // header, lockHandle, authorizationSize, TPMS_AUTH_COMMAND
	cmd := make([]byte, 0, size)
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, size)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCDictionaryAttackLockReset))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHLockout))
	cmd = binary.BigEndian.AppendUint32(cmd, 9)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRSPW)) // sessionHandle
	cmd = binary.BigEndian.AppendUint16(cmd, 0)                    // nonce
	cmd = append(cmd, 0)                                           // sessionAttributes
	cmd = binary.BigEndian.AppendUint16(cmd, 0)                    // hmac: the empty password
	rsp, err := t.tpm.Send(cmd)
	if err != nil {
		return fmt.Errorf("dictionary attack lock reset: %w", err)
	}
	if len(rsp) < headerSize {
		return errors.New("dictionary attack lock reset: short response")
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return fmt.Errorf("dictionary attack lock reset: %w", rc)
	}
	return nil
}
