package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Dictionary-attack lockout and a private swtpm.
//
// PIN objects are DA-protected (no noDA attribute; credential keys are
// noDA). Once one has been used, a TPM2_Startup that follows no orderly
// TPM2_Shutdown counts as a failed authorization. For a private swtpm,
// "power loss" is our process dying: swtpm then gets SIGTERM (Pdeathsig) and
// exits without Shutdown. Measured with swtpm 0.7.1: three such exits and
// every DA-protected object fails with TPM_RC_LOCKOUT (default maxTries 3,
// recovery 1000 s per try); see TestUnorderlyShutdownAfterPINUse.
//
// So at Open of a private swtpm we clear a non-zero lockout counter with
// TPM2_DictionaryAttackLockReset. This gives nothing away: the swtpm is
// reachable only through our 0600 socket, PIN retries are counted in
// software above us, and whoever holds the state directory can run swtpm on
// it and reset the lockout (empty lockoutAuth) anyway. The reset also
// forgives wrong PINs counted before the restart; the software counters
// (persistent, 8 per PIN) are what limit guessing through passkeyd.
//
// At Open of a private swtpm we also set the DA parameters (once; they live
// in the swtpm's NV) to swtpmMaxTries tries, one forgiven every
// swtpmRecoveryTime, and swtpmLockoutRecovery after a failed lockoutAuth:
// CTAP's limits (3 wrong PINs per power cycle, 8 in all) are reached long
// before the TPM's, so the TPM lockout stays a backstop. With the swtpm
// default (3 tries, 1000 s) the third wrong PIN, or the third crash after a
// PIN check, would lock the PIN out for up to 50 minutes. Devices and "unix:" TPMs belong to someone else: their DA
// parameters and counter are left alone (DictionaryAttackStatus reports
// them).

// Dictionary-attack parameters of a private swtpm.
const (
	swtpmMaxTries        = 32
	swtpmRecoveryTime    = 600 * time.Second
	swtpmLockoutRecovery = 600 * time.Second
)

// permanentInLockout is TPMA_PERMANENT.inLockout (Part 2, 8.6).
const permanentInLockout = 1 << 9

// DAStatus is the TPM's dictionary-attack state. It is TPM-wide: every
// DA-protected object on the TPM, passkeyd's or anyone else's, shares it.
type DAStatus struct {
	// Counter is the number of failed authorizations counted
	// (TPM_PT_LOCKOUT_COUNTER); unorderly shutdowns after a DA-protected
	// object was used count as well. A successful authorization does not
	// decrease it: only RecoveryTime does, or a lockout reset.
	Counter uint32
	// MaxTries is TPM_PT_MAX_AUTH_FAIL: at Counter >= MaxTries the TPM is in
	// lockout and refuses every DA-protected object, the right PIN included.
	MaxTries uint32
	// RecoveryTime (TPM_PT_LOCKOUT_INTERVAL) is how long, in TPM uptime,
	// until the counter drops by one.
	RecoveryTime time.Duration
	// LockoutRecovery (TPM_PT_LOCKOUT_RECOVERY) is how long the lockout
	// authority is unusable after a failed lockoutAuth.
	LockoutRecovery time.Duration
	// InLockout is TPMA_PERMANENT.inLockout.
	InLockout bool
}

// Locked reports whether the TPM refuses DA-protected objects now: it
// answers TPM_RC_LOCKOUT without judging their authorization, so a PIN
// check then tells nothing about the PIN.
func (s DAStatus) Locked() bool { return s.InLockout || s.Counter >= s.MaxTries }

// RecoversWithin is, for a TPM in lockout, the longest it stays locked out
// unless its lockout authority resets it: one failed try is forgiven per
// RecoveryTime of TPM uptime (the time since the last counted failure is
// not reported, so the first interval may be partly over). It is 0 for a
// TPM not in lockout. ok is false when only a reset ends the lockout
// (RecoveryTime or MaxTries 0).
func (s DAStatus) RecoversWithin() (d time.Duration, ok bool) {
	if !s.Locked() {
		return 0, true
	}
	if s.RecoveryTime == 0 || s.MaxTries == 0 {
		return 0, false
	}
	n := uint32(1) // in lockout below MaxTries: the parameters changed since
	if s.Counter >= s.MaxTries {
		n = s.Counter - s.MaxTries + 1
	}
	return time.Duration(n) * s.RecoveryTime, true
}

// DictionaryAttackStatus reads the TPM's dictionary-attack state with one
// TPM2_GetCapability (TPM properties TPM_PT_PERMANENT..TPM_PT_LOCKOUT_RECOVERY).
func (t *TPM) DictionaryAttackStatus() (DAStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return DAStatus{}, errClosed
	}
	return t.daStatus()
}

// daStatus is DictionaryAttackStatus without the lock.
func (t *TPM) daStatus() (DAStatus, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTPermanent),
		PropertyCount: uint32(tpm2.TPMPTLockoutRecovery-tpm2.TPMPTPermanent) + 1,
	}.Execute(t.tpm)
	if err != nil {
		return DAStatus{}, fmt.Errorf("get dictionary-attack status: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return DAStatus{}, fmt.Errorf("get dictionary-attack status: %w", err)
	}
	var st DAStatus
	const all = 1<<5 - 1
	seen := 0
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTPermanent:
			st.InLockout = p.Value&permanentInLockout != 0
			seen |= 1 << 0
		case tpm2.TPMPTLockoutCounter:
			st.Counter = p.Value
			seen |= 1 << 1
		case tpm2.TPMPTMaxAuthFail:
			st.MaxTries = p.Value
			seen |= 1 << 2
		case tpm2.TPMPTLockoutInterval:
			st.RecoveryTime = time.Duration(p.Value) * time.Second
			seen |= 1 << 3
		case tpm2.TPMPTLockoutRecovery:
			st.LockoutRecovery = time.Duration(p.Value) * time.Second
			seen |= 1 << 4
		}
	}
	if seen != all {
		return DAStatus{}, errors.New("get dictionary-attack status: TPM did not report all lockout properties")
	}
	return st, nil
}

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
	t.log.Info("reset swtpm dictionary-attack counter left by unclean shutdowns or wrong PINs", "counter", n)
	return nil
}

// configureSwtpmDA sets our DA parameters on a private swtpm unless it
// already has them. The caller holds t.mu.
func (t *TPM) configureSwtpmDA() error {
	st, err := t.daStatus()
	if err != nil {
		return err
	}
	if st.MaxTries == swtpmMaxTries && st.RecoveryTime == swtpmRecoveryTime && st.LockoutRecovery == swtpmLockoutRecovery {
		return nil
	}
	if err := t.dictionaryAttackParameters(swtpmMaxTries, swtpmRecoveryTime, swtpmLockoutRecovery); err != nil {
		// As for the reset: someone set lockoutAuth. PINs then meet the
		// swtpm's own limits, which may be lower than CTAP's.
		t.log.Warn("could not set swtpm dictionary-attack parameters; wrong PINs may lock the TPM out early",
			"max_tries", st.MaxTries, "recovery", st.RecoveryTime, "err", err)
		return nil
	}
	t.log.Info("set swtpm dictionary-attack parameters",
		"max_tries", swtpmMaxTries, "recovery", swtpmRecoveryTime, "lockout_recovery", swtpmLockoutRecovery,
		"was_max_tries", st.MaxTries, "was_recovery", st.RecoveryTime)
	return nil
}

// ctapMaxPINTries is CTAP's limit of wrong PINs before the PIN is blocked.
const ctapMaxPINTries = 8

// logDAStatus tells at Open what the TPM's dictionary-attack state means for
// PINs: a TPM already in lockout, or one that locks out before CTAP's
// counters do. The caller holds t.mu.
func (t *TPM) logDAStatus() {
	st, err := t.daStatus()
	switch {
	case err != nil:
		t.log.Warn("could not read the TPM's dictionary-attack status", "err", err)
	case st.InLockout:
		t.log.Warn("TPM is in dictionary-attack lockout (TPM-wide): PIN checks and credential keys fail until it recovers or its lockout authority resets it (tpm2_dictionarylockout --clear-lockout)",
			"counter", st.Counter, "max_tries", st.MaxTries, "recovery_per_try", st.RecoveryTime)
	case st.MaxTries <= ctapMaxPINTries:
		t.log.Warn("TPM locks out after fewer wrong PINs than CTAP allows; its owner can raise it with tpm2_dictionarylockout --setup-parameters",
			"max_tries", st.MaxTries, "ctap_max_tries", ctapMaxPINTries, "counter", st.Counter)
	default:
		t.log.Debug("TPM dictionary-attack status", "counter", st.Counter, "max_tries", st.MaxTries,
			"recovery_per_try", st.RecoveryTime, "lockout_recovery", st.LockoutRecovery)
	}
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
// (Part 3, 25.2): failedTries = 0.
func (t *TPM) dictionaryAttackLockReset() error {
	if err := t.lockoutCommand(tpm2.TPMCCDictionaryAttackLockReset, nil); err != nil {
		return fmt.Errorf("dictionary attack lock reset: %w", err)
	}
	return nil
}

// dictionaryAttackParameters sends TPM2_DictionaryAttackParameters
// (Part 3, 25.3). Times are whole seconds.
func (t *TPM) dictionaryAttackParameters(maxTries uint32, recovery, lockoutRecovery time.Duration) error {
	params := binary.BigEndian.AppendUint32(nil, maxTries)                              // newMaxTries
	params = binary.BigEndian.AppendUint32(params, uint32(recovery/time.Second))        // newRecoveryTime
	params = binary.BigEndian.AppendUint32(params, uint32(lockoutRecovery/time.Second)) // lockoutRecovery
	if err := t.lockoutCommand(tpm2.TPMCCDictionaryAttackParameters, params); err != nil {
		return fmt.Errorf("dictionary attack parameters: %w", err)
	}
	return nil
}

// lockoutCommand sends a command whose one handle is TPM_RH_LOCKOUT,
// authorised by an empty lockoutAuth password, followed by params. go-tpm
// v0.9.8 has the command codes of the DA commands but no command structs,
// and tpm2.Command cannot be implemented outside go-tpm, so the bytes are
// built here. The caller holds t.mu.
func (t *TPM) lockoutCommand(cc tpm2.TPMCC, params []byte) error {
	// header, lockHandle, authorizationSize, TPMS_AUTH_COMMAND, parameters
	size := 10 + 4 + 4 + 9 + len(params)
	cmd := make([]byte, 0, size)
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(size))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(cc))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHLockout))
	cmd = binary.BigEndian.AppendUint32(cmd, 9)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRSPW)) // sessionHandle
	cmd = binary.BigEndian.AppendUint16(cmd, 0)                    // nonce
	cmd = append(cmd, 0)                                           // sessionAttributes
	cmd = binary.BigEndian.AppendUint16(cmd, 0)                    // hmac: the empty password
	cmd = append(cmd, params...)
	rsp, err := t.tpm.Send(cmd)
	if err != nil {
		return err
	}
	if len(rsp) < headerSize {
		return errors.New("short response")
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return rc
	}
	return nil
}
