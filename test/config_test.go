package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
)

// TestConfigFileBadValue: a bad value or an unknown key in passkeyd.conf
// stops the daemon with exit 1 and one line naming the file, the key and
// what is allowed; a --config that does not exist too.
func TestConfigFileBadValue(t *testing.T) {
	requirePrereqs(t)
	bin := daemonBinary(t)
	dir := t.TempDir()
	for _, tc := range []struct{ body, want string }{
		{"tpm = \"tpm2\"\n", `:1: tpm = "tpm2": want "auto"`},
		{"owner = \"alice\"\nprompt = \"always\"\n", `:2: prompt = "always": want "agent"`},
		{"[policy]\nmin_pin_length = 2\n", `:2: policy.min_pin_length = 2: want an integer from 4 to 63`},
		{"tmp = \"auto\"\n", `:1: unknown key "tmp"`},
	} {
		conf := filepath.Join(dir, "passkeyd.conf")
		if err := os.WriteFile(conf, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runServeOnce(t, bin, filepath.Join(dir, "state"), "swtpm", "--config", conf)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(out, conf) || !strings.Contains(out, tc.want) {
			t.Errorf("%q: exit %d, output %q; want exit 1 and one line naming %s with %q", tc.body, code, out, conf, tc.want)
		}
	}
	out, code := runServeOnce(t, bin, filepath.Join(dir, "state"), "swtpm", "--config", filepath.Join(dir, "missing.conf"))
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "missing.conf") {
		t.Errorf("a missing --config: exit %d, %q", code, out)
	}
}

// TestConfigFileSettings: the file's settings take effect (the PIN policy
// floor reaches getInfo through passkeyctl info), a flag overrides the
// file, and passkeyctl info says where each effective setting came from.
func TestConfigFileSettings(t *testing.T) {
	requirePrereqs(t)
	bin, ctlBin := daemonBinary(t), buildCtl(t)
	dir, err := os.MkdirTemp("", "pkconf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "passkeyd.conf")
	body := "# a fleet's settings\nattestation = \"none\"\nprompt = \"deny\"\n\n[policy]\nalways_uv = true\nmin_pin_length = 6\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control.sock")
	// startDaemonArgs passes --prompt approve-all: it overrides the file.
	startDaemonArgs(t, bin, newStateDir(t), freeUDPPort(t), "swtpm", "--control", sock, "--config", conf)
	out, code := ctl(t, ctlBin, sock, "", "info", "--json")
	if code != 0 {
		t.Fatalf("info: %d %s", code, out)
	}
	var in mgmtapi.Info
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	if in.Attestation != "none" || in.Prompt != "approve-all" || in.MinPINLength != 6 || !in.AlwaysUV {
		t.Errorf("effective: attestation %q, prompt %q, minPinLength %d, alwaysUv %v; want none, approve-all, 6, true",
			in.Attestation, in.Prompt, in.MinPINLength, in.AlwaysUV)
	}
	got := map[string]mgmtapi.Setting{}
	for _, s := range in.Settings {
		got[s.Key] = s
	}
	for key, want := range map[string]mgmtapi.Setting{
		"attestation":           {Key: "attestation", Value: "none", Source: conf + ":2"},
		"prompt":                {Key: "prompt", Value: "approve-all", Source: "command line"},
		"policy.always_uv":      {Key: "policy.always_uv", Value: "true", Source: conf + ":6"},
		"policy.min_pin_length": {Key: "policy.min_pin_length", Value: "6", Source: conf + ":7"},
		"log_level":             {Key: "log_level", Value: "info", Source: "command line"},
		"owner":                 {Key: "owner", Value: "", Source: "default"},
	} {
		if got[key] != want {
			t.Errorf("setting %s: %+v, want %+v", key, got[key], want)
		}
	}
	out, code = ctl(t, ctlBin, sock, "", "info")
	if code != 0 || !strings.Contains(out, "policy.min_pin_length") || !strings.Contains(out, conf+":7") {
		t.Errorf("info's table lacks the settings:\n%s", out)
	}
}
