package test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
)

// softwareTPMLine is what the daemon logs at WARN and passkeyctl info
// prints on a private swtpm; spelled out here so a change to the wording
// is a deliberate one.
const softwareTPMLine = "software TPM: a copy of the state directory is a copy of your passkeys"

func skipWithTPMDevice(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		t.Skip("/dev/tpmrm0 exists: this test needs a machine without a TPM device")
	}
}

// TestTPMAutoWithoutDeviceRefuses: --tpm auto (the default, and the shipped
// service's) on a machine without /dev/tpmrm0 exits 1 with one line that
// names the opt-in, and starts no software TPM (no swtpm state is made).
// It used to fall back to a private swtpm silently.
func TestTPMAutoWithoutDeviceRefuses(t *testing.T) {
	requirePrereqs(t)
	skipWithTPMDevice(t)
	bin := daemonBinary(t)
	stateDir := newStateDir(t)
	out, code := runServeOnce(t, bin, stateDir, "auto")
	noRuntimeFault(t, out)
	if code != 1 {
		t.Errorf("exit code %d, want 1:\n%s", code, tail(out, 10))
	}
	line := strings.TrimSuffix(out, "\n")
	if strings.Contains(line, "\n") {
		t.Errorf("stderr is %d lines, want one:\n%s", strings.Count(out, "\n"), out)
	}
	for _, want := range []string{`passkeyd: open TPM "auto": `, "/dev/tpmrm0", "never falls back to a software TPM", "--tpm device-or-swtpm"} {
		if !strings.Contains(line, want) {
			t.Errorf("message lacks %q: %s", want, line)
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir, "swtpm")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a software TPM was started after all (swtpm state: %v)", err)
	}
	t.Logf("refused: %s", line)
}

// TestSoftwareTPMOptInWarns: --tpm device-or-swtpm without a TPM device
// starts on a private swtpm, says so at WARN at start-up, and passkeyctl
// info prints the warning as a line of its own (and "software": true in
// --json).
func TestSoftwareTPMOptInWarns(t *testing.T) {
	requirePrereqs(t)
	skipWithTPMDevice(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	d := startDaemonArgs(t, bin, newStateDir(t), freeUDPPort(t), "device-or-swtpm", "--control", sock)
	if !strings.Contains(d.log.String(), `level=WARN msg="`+softwareTPMLine+`"`) {
		t.Errorf("no WARN %q in the start-up log:\n%s", softwareTPMLine, tail(d.log.String(), 20))
	}
	out, code := ctl(t, ctlBin, sock, "", "info")
	if code != 0 || !slices.Contains(strings.Split(out, "\n"), softwareTPMLine) {
		t.Errorf("passkeyctl info (exit %d) lacks the line %q:\n%s", code, softwareTPMLine, out)
	}
	// A fresh swtpm has 0x81000001 free: the daemon persists the SRK
	// there, and says so.
	if !regexp.MustCompile(`(?m)^TPM storage key \(SRK\): +persistent 0x81000001 \(provisioned now\)$`).MatchString(out) {
		t.Errorf("passkeyctl info lacks the SRK line:\n%s", out)
	}
	var info mgmtapi.Info
	out, code = ctl(t, ctlBin, sock, "", "info", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.TPM.Kind != "swtpm" || !strings.Contains(out, `"software": true`) ||
		info.TPM.SRK != "persistent 0x81000001 (provisioned now)" {
		t.Errorf("passkeyctl info --json (exit %d): %s", code, out)
	}
	d.stop()
}
