package test

// A TPM in dictionary-attack lockout never judges a PIN, so it must never
// cost a PIN retry. This test runs passkeyd on an swtpm of its own with
// swtpm's default lockout (3 failed authorisations, 1000 s each), handed
// over as "unix:" so that passkeyd leaves those parameters alone, and locks
// the TPM as other software on the same TPM would: wrong authorisations on
// a DA-protected object of its own.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// sharingProxy lets the daemon and the test use one swtpm at once: swtpm
// serves one connection at a time and passkeyd keeps its connection open,
// so every command, the daemon's and the test's, goes over one upstream
// connection, one command at a time.
type sharingProxy struct {
	ln net.Listener
	mu sync.Mutex
	up net.Conn

	hookMu sync.Mutex
	// beforeUnseal, when set, runs once before the next TPM2_Unseal (a PIN
	// check) goes to the TPM.
	beforeUnseal func()
}

// onNextUnseal arms beforeUnseal.
func (p *sharingProxy) onNextUnseal(f func()) {
	p.hookMu.Lock()
	p.beforeUnseal = f
	p.hookMu.Unlock()
}

func newSharingProxy(t *testing.T, path, upstream string) *sharingProxy {
	t.Helper()
	up, err := net.Dial("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &sharingProxy{ln: ln, up: up}
	t.Cleanup(func() { ln.Close(); up.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

// readTPMMessage reads one TPM command or response (framed by the size in
// its 10-byte header).
func readTPMMessage(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("bad TPM message size %d", size)
	}
	msg := make([]byte, size)
	copy(msg, hdr)
	if _, err := io.ReadFull(r, msg[10:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// Send implements go-tpm's transport.TPM: the test's own commands.
func (p *sharingProxy) Send(cmd []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.up.Write(cmd); err != nil {
		return nil, err
	}
	return readTPMMessage(p.up)
}

func (p *sharingProxy) serve(down net.Conn) {
	defer down.Close()
	for {
		cmd, err := readTPMMessage(down)
		if err != nil {
			return
		}
		if binary.BigEndian.Uint32(cmd[6:10]) == tpmCCUnseal {
			p.hookMu.Lock()
			f := p.beforeUnseal
			p.beforeUnseal = nil
			p.hookMu.Unlock()
			if f != nil {
				f()
			}
		}
		rsp, err := p.Send(cmd)
		if err != nil {
			return
		}
		if _, err := down.Write(rsp); err != nil {
			return
		}
	}
}

// tpmProperty reads one TPM_PT_* value.
func tpmProperty(t *testing.T, tp *sharingProxy, pt tpm2.TPMPT) uint32 {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(pt), PropertyCount: 1}.Execute(tp)
	if err != nil {
		t.Fatalf("GetCapability 0x%x: %v", uint32(pt), err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != pt {
		t.Fatalf("GetCapability 0x%x: %v %+v", uint32(pt), err, props)
	}
	return props.TPMProperty[0].Value
}

// lockTPMAsOtherSoftware drives the TPM into dictionary-attack lockout the
// way any other program on the machine could: it makes a DA-protected HMAC
// key of its own (owner hierarchy, empty owner auth on a fresh swtpm) and
// uses it with a wrong password until the TPM answers TPM_RC_LOCKOUT.
func lockTPMAsOtherSoftware(t *testing.T, tp *sharingProxy) {
	t.Helper()
	n, err := lockTPM(tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("other software locked the TPM out after %d wrong passwords", n)
}

// lockTPM is lockTPMAsOtherSoftware; it returns the number of wrong
// passwords it took.
func lockTPM(tp *sharingProxy) (int, error) {
	pub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
			// NoDA false: wrong passwords count against the lockout.
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{}),
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: []byte("other software's password")},
		}},
		InPublic: tpm2.New2B(pub),
	}.Execute(tp)
	if err != nil {
		return 0, fmt.Errorf("other software: CreatePrimary: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp)
	for i := 1; i <= 16; i++ {
		_, err := tpm2.Hmac{
			Handle:  tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth([]byte("wrong"))},
			Buffer:  tpm2.TPM2BMaxBuffer{Buffer: []byte("x")},
			HashAlg: tpm2.TPMAlgSHA256,
		}.Execute(tp)
		switch {
		case errors.Is(err, tpm2.TPMRCLockout):
			return i - 1, nil
		case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		default:
			return 0, fmt.Errorf("other software: HMAC with a wrong password: %w", err)
		}
	}
	return 0, errors.New("the TPM never locked out")
}

// dictionaryAttackLockReset sends TPM2_DictionaryAttackLockReset with the
// empty lockoutAuth of a fresh swtpm (go-tpm has no struct for it).
func dictionaryAttackLockReset(t *testing.T, tp *sharingProxy) {
	t.Helper()
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 27)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCDictionaryAttackLockReset))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHLockout))
	cmd = binary.BigEndian.AppendUint32(cmd, 9) // authorizationSize
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRSPW))
	cmd = append(cmd, 0, 0, 0, 0, 0) // empty nonce, attributes, empty password
	rsp, err := tp.Send(cmd)
	if err != nil {
		t.Fatalf("DictionaryAttackLockReset: %v", err)
	}
	if rc := binary.BigEndian.Uint32(rsp[6:10]); rc != 0 {
		t.Fatalf("DictionaryAttackLockReset: TPM_RC 0x%x", rc)
	}
}

// lockoutInfo is what passkeyctl info --json says about the PIN and the
// TPM's lockout, by the documented JSON names.
type lockoutInfo struct {
	PINRetries int `json:"pinRetries"`
	TPMLockout *struct {
		InLockout               bool   `json:"inLockout"`
		FailedTries             uint32 `json:"failedTries"`
		MaxTries                uint32 `json:"maxTries"`
		RecoveryIntervalSeconds int64  `json:"recoveryIntervalSeconds"`
		RecoversWithinSeconds   int64  `json:"recoversWithinSeconds"`
	} `json:"tpmLockout"`
}

// infoJSON runs passkeyctl info --json.
func infoJSON(t *testing.T, ctlBin, sock string) lockoutInfo {
	t.Helper()
	out, code := ctl(t, ctlBin, sock, "", "info", "--json")
	var in lockoutInfo
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil {
		t.Fatalf("info --json (%d): %s", code, out)
	}
	return in
}

// TestTPMLockoutCostsNoPINRetry: while the TPM is in dictionary-attack
// lockout the right PIN is refused with CTAP2_ERR_PIN_AUTH_BLOCKED (0x34,
// CTAP 2.1 §6.5.5.7.2: the authenticator cannot check the PIN now, which is
// what the status tells a platform) and the retry counter that
// getPINRetries (§6.5.5.2) reports stays where it was: many more tries than
// CTAP's 8 never reach CTAP2_ERR_PIN_BLOCKED (0x32). passkeyctl info says
// the TPM is in lockout and when it recovers. After the lockout is reset
// the right PIN works and the counter is 8. Then the race: other software
// locks the TPM just before passkeyd's PIN check reaches it (after passkeyd
// found it clear and spent the retry): PIN_AUTH_BLOCKED, and the retry is
// given back.
func TestTPMLockoutCostsNoPINRetry(t *testing.T) {
	requirePrereqs(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	tpmDir, err := os.MkdirTemp("", "pk-da-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tpmDir) })
	os.Chmod(tpmDir, 0o755)
	proxy := newSharingProxy(t, filepath.Join(tpmDir, "proxy.sock"), startSwtpm(t, tpmDir))
	ctlSock := filepath.Join(tpmDir, "control.sock")
	d := startDaemonArgs(t, bin, newStateDir(t), freeUDPPort(t), "unix:"+filepath.Join(tpmDir, "proxy.sock"), "--control", ctlSock)

	// swtpm's defaults, which passkeyd leaves alone on a "unix:" TPM.
	if n := tpmProperty(t, proxy, tpm2.TPMPTMaxAuthFail); n != 3 {
		t.Fatalf("TPM_PT_MAX_AUTH_FAIL = %d, want swtpm's default 3", n)
	}
	if s := tpmProperty(t, proxy, tpm2.TPMPTLockoutInterval); s != 1000 {
		t.Fatalf("TPM_PT_LOCKOUT_INTERVAL = %d, want swtpm's default 1000", s)
	}

	if got := pinutil(t, d.port, "set", "1234"); got != "OK" {
		t.Fatalf("set PIN: %s", got)
	}
	if got := pinutil(t, d.port, "token", "1234"); got != "OK" {
		t.Fatalf("right PIN before the lockout: %s", got)
	}
	if in := infoJSON(t, ctlBin, ctlSock); in.PINRetries != 8 || in.TPMLockout == nil || in.TPMLockout.InLockout || in.TPMLockout.MaxTries != 3 {
		t.Errorf("info before the lockout: retries %d, tpmLockout %+v; want 8 and not in lockout, 3 tries", in.PINRetries, in.TPMLockout)
	}

	lockTPMAsOtherSoftware(t, proxy)

	// Many more tries than CTAP's 8, alternating with getPINRetries.
	var bad []string
	for i := 1; i <= 12; i++ {
		got := pinutil(t, d.port, "token", "1234")
		retries := pinutil(t, d.port, "retries")
		t.Logf("in lockout, try %d with the right PIN: %s; getPINRetries: %s", i, got, retries)
		if got != "PIN_AUTH_BLOCKED" || retries != "8" {
			bad = append(bad, fmt.Sprintf("try %d: %s, retries %s", i, got, retries))
		}
		if got == "PIN_BLOCKED" {
			break
		}
	}
	if len(bad) > 0 {
		t.Errorf("in lockout the right PIN must answer PIN_AUTH_BLOCKED (0x34) and leave 8 retries:\n%s", strings.Join(bad, "\n"))
	}
	// A wrong PIN is not judged either: the TPM cannot check it.
	if got, retries := pinutil(t, d.port, "token", "0000"), pinutil(t, d.port, "retries"); got != "PIN_AUTH_BLOCKED" || retries != "8" {
		t.Errorf("wrong PIN in lockout: %s, retries %s; want PIN_AUTH_BLOCKED and 8", got, retries)
	}
	// changePIN checks the current PIN the same way.
	if got, retries := pinutil(t, d.port, "change", "1234", "5678"), pinutil(t, d.port, "retries"); got != "PIN_AUTH_BLOCKED" || retries != "8" {
		t.Errorf("changePIN in lockout: %s, retries %s; want PIN_AUTH_BLOCKED and 8", got, retries)
	}

	// passkeyctl info tells the person.
	in := infoJSON(t, ctlBin, ctlSock)
	if in.PINRetries != 8 || in.TPMLockout == nil || !in.TPMLockout.InLockout || in.TPMLockout.FailedTries < 3 ||
		in.TPMLockout.MaxTries != 3 || in.TPMLockout.RecoveryIntervalSeconds != 1000 ||
		in.TPMLockout.RecoversWithinSeconds < 1000 {
		t.Errorf("info --json in lockout: retries %d, tpmLockout %+v", in.PINRetries, in.TPMLockout)
	}
	out, code := ctl(t, ctlBin, ctlSock, "", "info")
	if code != 0 || !strings.Contains(out, "dictionary-attack lockout") || !strings.Contains(out, "recovers within") {
		t.Errorf("info in lockout (%d) does not say the TPM is locked out and when it recovers:\n%s", code, out)
	}
	t.Logf("passkeyctl info in lockout:\n%s", out)

	// The lockout authority (empty on a fresh swtpm) ends it.
	dictionaryAttackLockReset(t, proxy)
	if got := pinutil(t, d.port, "token", "1234"); got != "OK" {
		t.Fatalf("right PIN after the lockout reset: %s", got)
	}
	if got := pinutil(t, d.port, "retries"); got != "8" {
		t.Errorf("retries after the lockout reset and the right PIN: %s, want 8", got)
	}
	if in := infoJSON(t, ctlBin, ctlSock); in.TPMLockout == nil || in.TPMLockout.InLockout {
		t.Errorf("info after the lockout reset: %+v", in.TPMLockout)
	}
	if out, _ := ctl(t, ctlBin, ctlSock, "", "info"); strings.Contains(out, "recovers within") {
		t.Errorf("info after the lockout reset still reports a lockout:\n%s", out)
	}

	// The race: the TPM is not in lockout when passkeyd asks, and other
	// software locks it just before passkeyd's PIN check reaches it. The
	// retry spent before the check is given back.
	locked := make(chan error, 1)
	proxy.onNextUnseal(func() { _, err := lockTPM(proxy); locked <- err })
	if got := pinutil(t, d.port, "token", "1234"); got != "PIN_AUTH_BLOCKED" {
		t.Errorf("right PIN, TPM locked out during the check: %s, want PIN_AUTH_BLOCKED", got)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("the PIN check never reached the TPM")
	}
	if got := pinutil(t, d.port, "retries"); got != "8" {
		t.Errorf("retries after a lockout during the check: %s, want 8 (the retry given back)", got)
	}
	dictionaryAttackLockReset(t, proxy)
	if got := pinutil(t, d.port, "token", "1234"); got != "OK" {
		t.Fatalf("right PIN after the second lockout reset: %s", got)
	}
	d.stop()
}
