// Package config reads passkeyd's configuration file
// (/etc/passkeyd/passkeyd.conf, TOML) and merges it with the defaults and
// the command line: a flag overrides the file, the file overrides the
// default, and every effective setting remembers where it came from, so
// that `passkeyctl info` can say.
//
// The file is hostile input like any other: every bad value is one error
// naming the file, the key and what is allowed, unknown keys are errors
// (a typo must not silently leave a fleet on a default), and nothing in it
// is executed.
//
// Layer: daemon. It knows the daemon's settings and their syntax, not how
// the daemon uses them; it imports no protocol or hardware package.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the package installs the documented file.
const DefaultPath = "/etc/passkeyd/passkeyd.conf"

// maxFileSize bounds the file: it is a few dozen lines.
const maxFileSize = 64 << 10

// Kinds of Source.
const (
	FromDefault = "default"
	FromFile    = "file"
	FromFlag    = "flag"
)

// Source says where an effective setting came from.
type Source struct {
	Kind string // FromDefault, FromFile or FromFlag
	File string // FromFile: the file
	Line int    // FromFile: the line of the key, 0 when not found
}

func (s Source) String() string {
	switch s.Kind {
	case FromFile:
		if s.Line > 0 {
			return fmt.Sprintf("%s:%d", s.File, s.Line)
		}
		return s.File
	case FromFlag:
		return "command line"
	}
	return "default"
}

// Policy is what an admin sets for a fleet on top of what CTAP lets a
// platform configure (CTAP 2.1 §6.11): floors the person cannot lower.
type Policy struct {
	// AlwaysUV turns alwaysUv on at start-up and keeps it on
	// (toggleAlwaysUv cannot turn it off).
	AlwaysUV bool
	// MinPINLength is the minimum PIN length in code points (4..63); the
	// authenticator's own minimum is raised to it, never lowered.
	MinPINLength int
	// MinPINLengthRPs are the RP IDs that may read the minimum PIN length
	// through the minPinLength extension (CTAP 2.1 §12.4), in addition to
	// those set with authenticatorConfig.
	MinPINLengthRPs []string
}

// Config is the daemon's effective configuration.
type Config struct {
	StateDir    string
	TPM         string
	Transport   string
	Prompt      string
	Pinentry    string
	Control     string
	Owner       string
	Users       string // "auto", "seat" or "owner": whose passkeys the key serves
	Attestation string
	LogLevel    string
	Policy      Policy

	sources map[string]Source
}

// key describes one setting: its name in the file (dotted for tables),
// how to check a value, and how to store it.
type key struct {
	name  string
	flag  string // the serve flag that overrides it, "" for none
	allow string // what is allowed, for errors
	set   func(c *Config, v any) error
	get   func(c *Config) string
}

// Errors of set functions; the caller adds file, key and allow.
var errBad = errors.New("bad value")

func str(dst func(*Config) *string, ok func(string) bool) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, isStr := v.(string)
		if !isStr || !ok(s) {
			return errBad
		}
		*dst(c) = s
		return nil
	}
}

func oneOf(vals ...string) func(string) bool {
	return func(s string) bool { return slices.Contains(vals, s) }
}

func absPath(s string) bool {
	return filepath.IsAbs(s) && filepath.Clean(s) == s && !strings.ContainsRune(s, 0)
}

// ownerRE: a user name as useradd accepts it, or a uid.
var ownerRE = regexp.MustCompile(`^([a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10})$`)

var keys = []key{
	{name: "state_dir", flag: "state-dir", allow: "an absolute path",
		set: str(func(c *Config) *string { return &c.StateDir }, absPath),
		get: func(c *Config) string { return c.StateDir }},
	{name: "tpm", flag: "tpm", allow: `"auto" (the TPM device only), "device-or-swtpm", "swtpm", a device path such as "/dev/tpmrm0", or "unix:PATH"`,
		set: str(func(c *Config) *string { return &c.TPM }, func(s string) bool {
			switch {
			case s == "auto", s == "device-or-swtpm", s == "swtpm", s == "sim":
				return true
			case strings.HasPrefix(s, "unix:"):
				return absPath(strings.TrimPrefix(s, "unix:"))
			}
			return absPath(s)
		}),
		get: func(c *Config) string { return c.TPM }},
	{name: "transport", flag: "transport", allow: `"uhid", "uhid:PATH" or "udp:HOST:PORT"`,
		set: str(func(c *Config) *string { return &c.Transport }, func(s string) bool {
			switch {
			case s == "uhid":
				return true
			case strings.HasPrefix(s, "uhid:"):
				return absPath(strings.TrimPrefix(s, "uhid:"))
			case strings.HasPrefix(s, "udp:"):
				_, port, found := strings.Cut(strings.TrimPrefix(s, "udp:"), ":")
				n, err := strconv.Atoi(port)
				return found && err == nil && n >= 0 && n < 65536
			}
			return false
		}),
		get: func(c *Config) string { return c.Transport }},
	{name: "prompt", flag: "prompt", allow: `"agent", "pinentry", "polkit", "polkit+agent", "deny" or "approve-all" (tests only)`,
		set: str(func(c *Config) *string { return &c.Prompt }, oneOf("agent", "pinentry", "polkit", "polkit+agent", "deny", "approve-all")),
		get: func(c *Config) string { return c.Prompt }},
	{name: "pinentry", flag: "pinentry", allow: `"" (pinentry on PATH) or an absolute path`,
		set: str(func(c *Config) *string { return &c.Pinentry }, func(s string) bool { return s == "" || absPath(s) }),
		get: func(c *Config) string { return c.Pinentry }},
	{name: "control", flag: "control", allow: `an absolute path, or "" to disable the control socket`,
		set: str(func(c *Config) *string { return &c.Control }, func(s string) bool { return s == "" || absPath(s) }),
		get: func(c *Config) string { return c.Control }},
	{name: "owner", flag: "owner", allow: `a user name or uid, or "" for none`,
		set: str(func(c *Config) *string { return &c.Owner }, func(s string) bool { return s == "" || ownerRE.MatchString(s) }),
		get: func(c *Config) string { return c.Owner }},
	{name: "users", flag: "users", allow: `"auto" (seat when logind is on the system bus and the transport is uhid, else owner), "seat" (the active user at seat0) or "owner"`,
		set: str(func(c *Config) *string { return &c.Users }, oneOf("auto", "seat", "owner")),
		get: func(c *Config) string { return c.Users }},
	{name: "attestation", flag: "attestation", allow: `"self", "none" or "tpm"`,
		set: str(func(c *Config) *string { return &c.Attestation }, oneOf("self", "none", "tpm")),
		get: func(c *Config) string { return c.Attestation }},
	{name: "log_level", flag: "log-level", allow: `"debug", "info", "warn" or "error"`,
		set: str(func(c *Config) *string { return &c.LogLevel }, oneOf("debug", "info", "warn", "error")),
		get: func(c *Config) string { return c.LogLevel }},
	{name: "policy.always_uv", allow: "true or false",
		set: func(c *Config, v any) error {
			b, ok := v.(bool)
			if !ok {
				return errBad
			}
			c.Policy.AlwaysUV = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(c.Policy.AlwaysUV) }},
	{name: "policy.min_pin_length", allow: "an integer from 4 to 63 (code points)",
		set: func(c *Config, v any) error {
			n, ok := v.(int64)
			if !ok || n < 4 || n > 63 {
				return errBad
			}
			c.Policy.MinPINLength = int(n)
			return nil
		},
		get: func(c *Config) string { return strconv.Itoa(c.Policy.MinPINLength) }},
	{name: "policy.min_pin_length_rps", allow: "a list of at most 32 RP IDs (non-empty strings of at most 253 bytes)",
		set: func(c *Config, v any) error {
			list, ok := v.([]any)
			if !ok || len(list) > 32 {
				return errBad
			}
			var rps []string
			for _, e := range list {
				s, ok := e.(string)
				if !ok || s == "" || len(s) > 253 || strings.ContainsAny(s, " \t\r\n\x00") {
					return errBad
				}
				rps = append(rps, s)
			}
			c.Policy.MinPINLengthRPs = rps
			return nil
		},
		get: func(c *Config) string { return strings.Join(c.Policy.MinPINLengthRPs, ",") }},
}

// Default returns the built-in defaults: the shipped service's behaviour.
func Default() *Config {
	c := &Config{
		StateDir:    "/var/lib/passkeyd",
		TPM:         "auto",
		Transport:   "uhid",
		Prompt:      "polkit+agent",
		Control:     "/run/passkeyd/control.sock",
		Users:       "auto",
		Attestation: "self",
		LogLevel:    "info",
		Policy:      Policy{MinPINLength: 4},
		sources:     map[string]Source{},
	}
	for _, k := range keys {
		c.sources[k.name] = Source{Kind: FromDefault}
	}
	return c
}

// Load reads the file at path onto the defaults. A missing file is not an
// error unless required (it was named on the command line): the package
// ships one, but a hand-installed daemon runs on defaults.
func Load(path string, required bool) (*Config, error) {
	c := Default()
	b, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var raw map[string]any
	md, err := toml.Decode(string(b), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config %s:%d: %s", path, pe.Position.Line, oneLine(pe.Message))
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	flat := map[string]any{}
	for k, v := range raw {
		if t, ok := v.(map[string]any); ok && k == "policy" {
			for sk, sv := range t {
				flat["policy."+sk] = sv
			}
			continue
		}
		flat[k] = v
	}
	// Unknown keys first, in file order, so the error names the first one.
	for _, k := range md.Keys() {
		name := k.String()
		if name == "policy" {
			if _, ok := raw["policy"].(map[string]any); ok {
				continue
			}
		}
		if _, ok := lookup(name); !ok {
			return nil, fmt.Errorf("config %s:%d: unknown key %q (known: %s)", path, lineOf(b, name), name, knownKeys())
		}
	}
	for _, k := range keys {
		v, ok := flat[k.name]
		if !ok {
			continue
		}
		if err := k.set(c, v); err != nil {
			return nil, fmt.Errorf("config %s:%d: %s = %s: want %s", path, lineOf(b, k.name), k.name, show(v), k.allow)
		}
		c.sources[k.name] = Source{Kind: FromFile, File: path, Line: lineOf(b, k.name)}
	}
	return c, nil
}

// readFile reads a regular file of bounded size.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%d bytes is more than a configuration file holds (%d)", fi.Size(), maxFileSize)
	}
	return os.ReadFile(path)
}

// SetFlag applies a command-line flag (by its flag name) over the file.
// The value is checked as the file's would be; the error names the flag.
func (c *Config) SetFlag(flag, value string) error {
	for _, k := range keys {
		if k.flag != flag {
			continue
		}
		if err := k.set(c, value); err != nil {
			return fmt.Errorf("--%s %q: want %s", flag, value, k.allow)
		}
		c.sources[k.name] = Source{Kind: FromFlag}
		return nil
	}
	return fmt.Errorf("--%s is not a configuration setting", flag)
}

// Setting is one effective setting and where it came from.
type Setting struct {
	Key    string
	Value  string
	Source Source
}

// Settings lists every effective setting, in the file's documented order.
func (c *Config) Settings() []Setting {
	out := make([]Setting, 0, len(keys))
	for _, k := range keys {
		out = append(out, Setting{Key: k.name, Value: k.get(c), Source: c.sources[k.name]})
	}
	return out
}

// Flags lists the serve flags the file's keys correspond to.
func Flags() []string {
	var out []string
	for _, k := range keys {
		if k.flag != "" {
			out = append(out, k.flag)
		}
	}
	return out
}

func lookup(name string) (key, bool) {
	for _, k := range keys {
		if k.name == name {
			return k, true
		}
	}
	return key{}, false
}

func knownKeys() string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// show renders a decoded value for an error without echoing a long or
// multi-line value back whole.
func show(v any) string {
	s := fmt.Sprintf("%#v", v)
	if str, ok := v.(string); ok {
		s = strconv.Quote(str)
	}
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// oneLine keeps the TOML parser's message to one line: it quotes the
// file's text, whose control characters (a newline) are escaped here.
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// lineOf finds the line that sets name ("policy.x" inside [policy]). It is
// for messages only; 0 when not found.
func lineOf(b []byte, name string) int {
	table, leaf := "", name
	if t, l, ok := strings.Cut(name, "."); ok {
		table, leaf = t, l
	}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[] \t")
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"`)
		if (cur == table && k == leaf) || (cur == "" && k == name) {
			return n
		}
	}
	return 0
}
