package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "passkeyd.conf")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsWithoutFile(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "missing.conf"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.TPM != "auto" || c.Transport != "uhid" || c.Prompt != "polkit+agent" || c.Users != "auto" || c.StateDir != "/var/lib/passkeyd" || c.Policy.MinPINLength != 4 {
		t.Errorf("defaults: %+v", c)
	}
	for _, s := range c.Settings() {
		if s.Source.Kind != FromDefault || s.Source.String() != "default" {
			t.Errorf("%s: source %v", s.Key, s.Source)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.conf"), true); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("a required missing file: %v", err)
	}
}

func TestFileAndFlags(t *testing.T) {
	p := write(t, `# a fleet's file
tpm = "/dev/tpmrm0"
owner = "alice"
attestation = "tpm"

[policy]
always_uv = true
min_pin_length = 8
min_pin_length_rps = ["login.example.com", "sso.example.org"]
`)
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.TPM != "/dev/tpmrm0" || c.Owner != "alice" || c.Attestation != "tpm" || !c.Policy.AlwaysUV || c.Policy.MinPINLength != 8 ||
		!slices.Equal(c.Policy.MinPINLengthRPs, []string{"login.example.com", "sso.example.org"}) {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.SetFlag("owner", "bob"); err != nil {
		t.Fatal(err)
	}
	got := map[string]Setting{}
	for _, s := range c.Settings() {
		got[s.Key] = s
	}
	for key, want := range map[string]string{
		"tpm":                       p + ":2",
		"owner":                     "command line",
		"attestation":               p + ":4",
		"policy.always_uv":          p + ":7",
		"policy.min_pin_length":     p + ":8",
		"transport":                 "default",
		"policy.min_pin_length_rps": p + ":9",
	} {
		if s := got[key].Source.String(); s != want {
			t.Errorf("%s: source %q, want %q", key, s, want)
		}
	}
	if got["owner"].Value != "bob" {
		t.Errorf("the flag did not override the file: %q", got["owner"].Value)
	}
}

// TestBadValues: every bad value is one line naming the file, the key and
// what is allowed; unknown keys are errors too.
func TestBadValues(t *testing.T) {
	for _, tc := range []struct {
		body, want string
	}{
		{`tpm = "tpm2"`, `:1: tpm = "tpm2": want "auto"`},
		{`tpm = "unix:relative/sock"`, `tpm = "unix:relative/sock": want`},
		{`transport = "udp:127.0.0.1:99999"`, `transport =`},
		{`prompt = "yes"`, `prompt = "yes": want "agent", "pinentry", "polkit", "polkit+agent", "deny" or "approve-all"`},
		{`attestation = 1`, `attestation = 1: want "self", "none" or "tpm"`},
		{`log_level = "trace"`, `log_level = "trace"`},
		{`state_dir = "var/lib"`, `state_dir = "var/lib": want an absolute path`},
		{`owner = "root; rm -rf /"`, `owner = "root; rm -rf /": want a user name or uid`},
		{"\n\n[policy]\nmin_pin_length = 3", `:4: policy.min_pin_length = 3: want an integer from 4 to 63`},
		{"[policy]\nmin_pin_length = 64", `policy.min_pin_length = 64`},
		{"[policy]\nalways_uv = \"yes\"", `policy.always_uv = "yes": want true or false`},
		{"[policy]\nmin_pin_length_rps = [\"\"]", `policy.min_pin_length_rps`},
		{"[policy]\nmin_pin_length_rps = \"one.example\"", `policy.min_pin_length_rps`},
		{`tmp = "auto"`, `:1: unknown key "tmp" (known: state_dir, tpm,`},
		{"[policy]\nalways_UV = true", `unknown key "policy.always_UV"`},
		{"[polcy]\nalways_uv = true", `unknown key "polcy"`},
		{`policy = "x"`, `unknown key "policy"`},
		{`tpm = "auto`, `:1: `},
		{"tpm = \"auto\"\ntpm = \"swtpm\"", `:2: `},
	} {
		p := write(t, tc.body)
		_, err := Load(p, true)
		if err == nil {
			t.Errorf("%q: accepted", tc.body)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, p) || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line naming %s and containing %q", tc.body, msg, p, tc.want)
		}
	}
}

func TestHostileFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir, true); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	big := write(t, "# "+strings.Repeat("x", maxFileSize))
	if _, err := Load(big, true); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a huge file: %v", err)
	}
	for _, body := range []string{"\x00\x01\x02", "[[policy]]\nalways_uv = true", "[policy.deeper]\nx = 1", strings.Repeat("[", 10000)} {
		if _, err := Load(write(t, body), true); err == nil {
			t.Errorf("%q: accepted", body[:min(len(body), 20)])
		}
	}
}

func TestSetFlag(t *testing.T) {
	c := Default()
	if err := c.SetFlag("tpm", "bogus"); err == nil || err.Error() != `--tpm "bogus": want "auto" (the TPM device only), "device-or-swtpm", "swtpm", a device path such as "/dev/tpmrm0", or "unix:PATH"` {
		t.Errorf("bad flag: %v", err)
	}
	if err := c.SetFlag("control", ""); err != nil || c.Control != "" {
		t.Errorf("empty control: %v %q", err, c.Control)
	}
	for _, f := range Flags() {
		if f == "" {
			t.Error("an empty flag name")
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("tpm = \"auto\"\n[policy]\nmin_pin_length = 6\n"))
	f.Add([]byte("owner = 'x'\n"))
	f.Add([]byte("[policy]\nmin_pin_length_rps = [\"a\", \"b\"]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "c.conf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, true)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		// Whatever loads is a configuration whose every value the flags
		// would accept too.
		for _, s := range c.Settings() {
			if k, _ := lookup(s.Key); k.flag != "" {
				if err := Default().SetFlag(k.flag, s.Value); err != nil {
					t.Fatalf("%s = %q loaded but the flag refuses it: %v", s.Key, s.Value, err)
				}
			}
		}
	})
}

// TestShippedFile: the documented file the package installs loads as the
// defaults, and with every example uncommented it still loads to the
// defaults: each documented key exists and its example is valid.
func TestShippedFile(t *testing.T) {
	b, err := os.ReadFile("../../../cmd/passkeyd/dist/passkeyd.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := Default().Settings()
	for name, body := range map[string]string{
		"as shipped":  string(b),
		"uncommented": regexpUncomment(string(b)),
	} {
		c, err := Load(write(t, body), true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, s := range c.Settings() {
			if s.Value != want[i].Value {
				t.Errorf("%s: %s = %q, want the default %q", name, s.Key, s.Value, want[i].Value)
			}
		}
	}
	if n := strings.Count(regexpUncomment(string(b)), "\n") - strings.Count(string(b), "\n"); n != 0 {
		t.Fatal("uncommenting changed the line count")
	}
	// Every key is documented.
	for _, k := range keys {
		leaf := k.name[strings.LastIndex(k.name, ".")+1:]
		if !strings.Contains(string(b), "#"+leaf+" = ") {
			t.Errorf("%s is not documented in the shipped file", k.name)
		}
	}
}

// regexpUncomment turns "#key = value" example lines into settings.
func regexpUncomment(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if exampleRE.MatchString(l) {
			lines[i] = strings.TrimPrefix(l, "#")
		}
	}
	return strings.Join(lines, "\n")
}

var exampleRE = regexp.MustCompile(`^#[a-z_]+ = `)
