// Package install tests `make install` and `make uninstall`: the files and
// their modes, the systemd unit's sandbox, that the units run the installed
// binaries, and that the udev rules hand users passkeyd's hidraw node and
// nothing else. With systemd-analyze on the machine the unit is also
// verified and its exposure score logged; with udevadm >= 253 the rules are
// verified.
//
// Without make the test skips, except with CI=true, where it fails.
package install

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/uhid"
)

// repoRoot is two levels up from this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("no Makefile at the repository root %s: %v", root, err)
	}
	return root
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tree lists the regular files and symlinks under root (path inside root ->
// permission bits; a symlink as ModeSymlink).
func tree(t *testing.T, root string) map[string]fs.FileMode {
	t.Helper()
	files := map[string]fs.FileMode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if fi.Mode()&fs.ModeSymlink != 0 {
			files["/"+rel] = fs.ModeSymlink
		} else {
			files["/"+rel] = fi.Mode().Perm()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestInstallUninstall(t *testing.T) {
	requireTools(t, "make", "install", "sed")
	root := repoRoot(t)
	run(t, root, "make", "build")

	for _, prefix := range []string{"/usr", "/usr/local"} {
		t.Run(strings.ReplaceAll(prefix, "/", "_"), func(t *testing.T) {
			destdir := t.TempDir()
			out := run(t, root, "make", "install", "DESTDIR="+destdir, "PREFIX="+prefix)
			t.Logf("make install PREFIX=%s:\n%s", prefix, out)
			// The default (users = "auto") is seat mode on a desktop:
			// nobody needs an owner there, so the steps must not ask
			// for one unconditionally.
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "owner") && !strings.Contains(line, "no logind") {
					t.Errorf("make install's steps ask for an owner outside owner mode: %q", line)
				}
			}

			want := map[string]fs.FileMode{
				prefix + "/bin/passkeyd":                              0o755,
				prefix + "/bin/passkeyctl":                            0o755,
				prefix + "/lib/systemd/system/passkeyd.service":       0o644,
				prefix + "/lib/systemd/user/passkeyctl-agent.service": 0o644,
				prefix + "/lib/udev/rules.d/60-passkeyd.rules":        0o644,
				prefix + "/lib/sysusers.d/passkeyd.conf":              0o644,
				prefix + "/lib/modules-load.d/passkeyd.conf":          0o644,
				// polkitd reads one directory, whatever the PREFIX.
				"/usr/share/polkit-1/actions/org.passkeyd.policy": 0o644,
			}
			got := tree(t, destdir)
			for f, mode := range want {
				if m, ok := got[f]; !ok {
					t.Errorf("not installed: %s", f)
				} else if m != mode {
					t.Errorf("%s: mode %v, want %v", f, m, mode)
				}
			}
			for f := range got {
				if _, ok := want[f]; !ok {
					t.Errorf("installed but not expected: %s", f)
				}
			}
			if t.Failed() {
				return
			}

			unit := filepath.Join(destdir, prefix, "lib/systemd/system/passkeyd.service")
			checkUnit(t, unit, prefix+"/bin/passkeyd", destdir)
			agent := parseUnit(t, filepath.Join(destdir, prefix, "lib/systemd/user/passkeyctl-agent.service"))
			if exec := strings.Fields(agent.one(t, "ExecStart")); len(exec) == 0 || exec[0] != prefix+"/bin/passkeyctl" {
				t.Errorf("passkeyctl-agent.service: ExecStart=%s, want %s/bin/passkeyctl ...", strings.Join(exec, " "), prefix)
			}
			checkRules(t, filepath.Join(destdir, prefix, "lib/udev/rules.d/60-passkeyd.rules"))
			checkSysusers(t, filepath.Join(destdir, prefix, "lib/sysusers.d/passkeyd.conf"))
			if b, err := os.ReadFile(filepath.Join(destdir, prefix, "lib/modules-load.d/passkeyd.conf")); err != nil || !slices.Contains(strings.Fields(stripComments(string(b))), "uhid") {
				t.Errorf("modules-load.d/passkeyd.conf does not load uhid (%v):\n%s", err, b)
			}
			if prefix == "/usr" {
				systemdAnalyze(t, unit, destdir)
			}

			run(t, root, "make", "uninstall", "DESTDIR="+destdir, "PREFIX="+prefix)
			if left := tree(t, destdir); len(left) > 0 {
				t.Errorf("make uninstall left files behind: %v", left)
			}
		})
	}
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// unitFile maps "Section.Key" to the values of every assignment, in order.
type unitFile map[string][]string

func parseUnit(t *testing.T, file string) unitFile {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not an assignment: %q", file, line)
			}
			if strings.HasSuffix(v, `\`) {
				t.Fatalf("%s: continuation lines are not supported here: %q", file, line)
			}
			u[section+"."+strings.TrimSpace(k)] = append(u[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single [Service] value of key; several or none fail.
func (u unitFile) one(t *testing.T, key string) string {
	t.Helper()
	v := u["Service."+key]
	if len(v) != 1 {
		t.Errorf("[Service] %s=: %d assignments %q, want exactly one", key, len(v), v)
		return ""
	}
	return v[0]
}

func checkUnit(t *testing.T, file, bin, destdir string) {
	u := parseUnit(t, file)
	for key, want := range map[string]string{
		"User":                    "passkeyd",
		"Group":                   "passkeyd",
		"SupplementaryGroups":     "tss",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateNetwork":          "yes",
		"PrivateDevices":          "no",
		"DevicePolicy":            "closed",
		"RestrictAddressFamilies": "AF_UNIX",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"StateDirectory":          "passkeyd",
		"StateDirectoryMode":      "0700",
		"RuntimeDirectory":        "passkeyd",
		"RuntimeDirectoryMode":    "0755",
		"UMask":                   "0077",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"Restart":                 "on-failure",
	} {
		if got := u.one(t, key); got != want {
			t.Errorf("[Service] %s=%s, want %s=%s", key, got, key, want)
		}
	}
	// A start that fails for good (damaged store, TPM cleared) must end in
	// "failed", not restart every RestartSec forever: systemd's default
	// limit (5 starts in 10 s) never trips at RestartSec=2s.
	if got, want := u["Unit.StartLimitIntervalSec"], []string{"60"}; !slices.Equal(got, want) {
		t.Errorf("[Unit] StartLimitIntervalSec=%q, want %q", got, want)
	}
	if got, want := u["Unit.StartLimitBurst"], []string{"5"}; !slices.Equal(got, want) {
		t.Errorf("[Unit] StartLimitBurst=%q, want %q", got, want)
	}
	if got, want := u["Service.DeviceAllow"], []string{"/dev/uhid rw", "/dev/tpmrm0 rw"}; !slices.Equal(got, want) {
		t.Errorf("DeviceAllow=%q, want exactly %q", got, want)
	}
	if f := u["Service.SystemCallFilter"]; !slices.Contains(f, "~@privileged @resources") || len(f) == 0 || !strings.HasPrefix(f[0], "@system-service") {
		t.Errorf("SystemCallFilter=%q: want @system-service, then ~@privileged @resources", f)
	}
	if got := u["Install.WantedBy"]; !slices.Equal(got, []string{"multi-user.target"}) {
		t.Errorf("WantedBy=%q, want multi-user.target", got)
	}

	exec := strings.Fields(u.one(t, "ExecStart"))
	if len(exec) == 0 {
		return
	}
	if exec[0] != bin {
		t.Errorf("ExecStart runs %s, but the binary is installed as %s", exec[0], bin)
	}
	if fi, err := os.Stat(filepath.Join(destdir, exec[0])); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("ExecStart binary %s is not an installed executable: %v", exec[0], err)
	}
	// Every setting comes from /etc/passkeyd/passkeyd.conf: a flag here
	// would override the administrator's file.
	if args := exec[1:]; !slices.Equal(args, []string{"serve"}) {
		t.Errorf("ExecStart passes %q, want only \"serve\" (settings belong in passkeyd.conf)", args)
	}
	if env := u["Service.EnvironmentFile"]; len(env) != 0 {
		t.Errorf("EnvironmentFile=%q: settings belong in passkeyd.conf", env)
	}
}

// rule is one udev rule line: its keys with operator and value.
type rule []struct{ key, op, value string }

func (r rule) has(key, op, value string) bool {
	for _, kv := range r {
		if kv.key == key && kv.op == op && kv.value == value {
			return true
		}
	}
	return false
}

func (r rule) get(key, op string) (string, bool) {
	for _, kv := range r {
		if kv.key == key && kv.op == op {
			return kv.value, true
		}
	}
	return "", false
}

func parseRules(t *testing.T, file string) []rule {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rules []rule
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\\\n", ""), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		var r rule
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			i := strings.IndexAny(part, "=!+:-")
			if i <= 0 {
				t.Fatalf("%s: cannot parse %q in %q", file, part, line)
			}
			key, rest := part[:i], part[i:]
			op := "="
			for _, o := range []string{"==", "!=", "+=", "-=", ":="} {
				if strings.HasPrefix(rest, o) {
					op = o
				}
			}
			val := strings.TrimPrefix(rest, op)
			if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
				t.Fatalf("%s: value not quoted in %q", file, part)
			}
			r = append(r, struct{ key, op, value string }{key, op, val[1 : len(val)-1]})
		}
		rules = append(rules, r)
	}
	return rules
}

// udevMatch matches like udev: fnmatch(3) without FNM_PATHNAME, so "*"
// also crosses "/", and "|" separates alternatives.
func udevMatch(t *testing.T, pattern, s string) bool {
	t.Helper()
	for _, alt := range strings.Split(pattern, "|") {
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(alt); i++ {
			switch c := alt[i]; c {
			case '*':
				re.WriteString("(?s:.*)")
			case '?':
				re.WriteString("(?s:.)")
			case '[':
				j := strings.IndexByte(alt[i+1:], ']')
				if j < 0 {
					t.Fatalf("unterminated [ in %q", pattern)
				}
				class := alt[i+1 : i+1+j]
				if strings.HasPrefix(class, "!") {
					class = "^" + class[1:]
				}
				re.WriteString("[" + class + "]")
				i += j + 1
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		if regexp.MustCompile(re.String()).MatchString(s) {
			return true
		}
	}
	return false
}

func checkRules(t *testing.T, file string) {
	rules := parseRules(t, file)
	// The hid device the kernel creates for passkeyd under /dev/uhid's
	// misc device: BUS:VID:PID.SEQ in upper-case hex.
	ours := fmt.Sprintf("/devices/virtual/misc/uhid/0003:%04X:%04X.0007/hidraw/hidraw3", uhid.DefaultVendor, uhid.DefaultProduct)
	others := []string{
		fmt.Sprintf("/devices/virtual/misc/uhid/0003:%04X:%04X.0007/hidraw/hidraw3", uhid.DefaultVendor, uhid.DefaultProduct+1),
		fmt.Sprintf("/devices/virtual/misc/uhid/0005:%04X:%04X.0007/hidraw/hidraw3", uhid.DefaultVendor, uhid.DefaultProduct),
		fmt.Sprintf("/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/0003:%04X:%04X.0007/hidraw/hidraw3", uhid.DefaultVendor, uhid.DefaultProduct),
		"/devices/virtual/misc/uhid/0003:046D:C52B.0001/hidraw/hidraw0",
	}
	var uhidRule, hidrawRules int
	for _, r := range rules {
		if r.has("KERNEL", "==", "uhid") {
			uhidRule++
			// Whoever writes /dev/uhid can create a keyboard: the
			// daemon's group only, never the user at the seat.
			if !r.has("GROUP", "=", "passkeyd") || !r.has("MODE", "=", "0660") || r.has("TAG", "+=", "uaccess") {
				t.Errorf("the /dev/uhid rule must give it to group passkeyd, mode 0660, and no uaccess: %v", r)
			}
			continue
		}
		if !r.has("TAG", "+=", "uaccess") && !r.has("ENV{ID_SECURITY_TOKEN}", "=", "1") {
			continue
		}
		// A rule that gives users a device must be the hidraw rule,
		// pinned to passkeyd's own device.
		hidrawRules++
		devpath, ok := r.get("DEVPATH", "==")
		if !r.has("SUBSYSTEM", "==", "hidraw") || !ok {
			t.Errorf("a uaccess rule not limited to a hidraw DEVPATH: %v", r)
			continue
		}
		if !udevMatch(t, devpath, ours) {
			t.Errorf("DEVPATH==%q does not match passkeyd's device %s", devpath, ours)
		}
		for _, o := range others {
			if udevMatch(t, devpath, o) {
				t.Errorf("DEVPATH==%q also matches %s", devpath, o)
			}
		}
	}
	if uhidRule != 1 || hidrawRules != 1 {
		t.Errorf("want one /dev/uhid rule and one uaccess rule, have %d and %d", uhidRule, hidrawRules)
	}

	if _, err := exec.LookPath("udevadm"); err != nil {
		t.Log("udevadm not found: rules checked by parsing only")
		return
	}
	out, err := exec.Command("udevadm", "verify", "--resolve-names=never", file).CombinedOutput()
	switch {
	case err == nil:
		t.Logf("udevadm verify: %s", strings.TrimSpace(string(out)))
	case bytes.Contains(out, []byte("nknown command")) || bytes.Contains(out, []byte("nrecognized option")):
		t.Log("this udevadm has no verify (systemd < 254): rules checked by parsing only")
	default:
		t.Errorf("udevadm verify %s: %v\n%s", file, err, out)
	}
}

func checkSysusers(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var user, tss bool
	for _, line := range strings.Split(stripComments(string(b)), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "u" && f[1] == "passkeyd":
			user = true
		case len(f) >= 2 && f[0] == "g" && f[1] == "tss":
			tss = true
		case len(f) >= 3 && f[0] == "m":
			t.Errorf("sysusers adds %s to group %s: the unit's SupplementaryGroups= is enough", f[1], f[2])
		}
	}
	if !user || !tss {
		t.Errorf("sysusers: want user passkeyd (%v) and group tss (%v):\n%s", user, tss, b)
	}
}

// systemdAnalyze verifies the unit and logs its exposure score, where
// systemd-analyze exists. The unit names the binary by its final path, so
// the copy checked here points into DESTDIR instead.
func systemdAnalyze(t *testing.T, unit, destdir string) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found: skipping systemd-analyze verify and security")
		return
	}
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "passkeyd.service")
	b = bytes.ReplaceAll(b, []byte("\nExecStart=/"), []byte("\nExecStart="+destdir+"/"))
	if err := os.WriteFile(copyPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	} else {
		t.Log("systemd-analyze verify: clean")
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", copyPath).CombinedOutput()
	if err != nil {
		t.Logf("systemd-analyze security --offline=yes not available (%v): no exposure score", err)
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Overall exposure level") {
			t.Log("systemd-analyze security: " + strings.TrimSpace(line))
		}
	}
}
