package install

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeSystem runs the package's maintainer scripts (packaging/scripts) in a
// fake root, as dpkg does for a chrootless install (DPKG_ROOT), with every
// command that acts on the machine stubbed on PATH: each stub logs its
// arguments and answers from files the test writes.
type fakeSystem struct {
	t     *testing.T
	root  string // DPKG_ROOT
	stubs string // the stubs, first on PATH
	log   string // one line per stub call: "NAME ARGS..."
}

// stubbed are the commands the scripts may run that change or ask the
// machine; sleep too, so that waiting for a daemon that never answers
// takes no time.
var stubbed = []string{"systemctl", "udevadm", "modprobe", "systemd-sysusers", "passkeyctl", "journalctl", "sleep"}

func newFakeSystem(t *testing.T, booted bool) *fakeSystem {
	t.Helper()
	requireTools(t, "bash", "sed", "awk", "find", "seq")
	dir := t.TempDir()
	f := &fakeSystem{t: t, root: filepath.Join(dir, "root"), stubs: filepath.Join(dir, "stubs"), log: filepath.Join(dir, "calls")}
	for _, d := range []string{f.root, f.stubs, filepath.Join(f.stubs, "answers")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if booted {
		f.mkdir("/run/systemd/system")
	}
	for _, name := range stubbed {
		// The answer is chosen by the first argument that is not an
		// option (systemctl -q is-active: "is-active").
		script := fmt.Sprintf(`#!/bin/sh
echo "%[1]s $*" >>%[2]q
verb=
for a; do case $a in -*) ;; *) verb=$a; break ;; esac; done
a=%[3]q/%[1]s
if [ -f "$a.$verb.out" ]; then cat "$a.$verb.out"; elif [ -f "$a.out" ]; then cat "$a.out"; fi
if [ -f "$a.$verb.rc" ]; then r=$a.$verb.rc; elif [ -f "$a.rc" ]; then r=$a.rc; else exit 0; fi
# One exit status per line, in turn; the last one stays.
rc=$(head -n 1 "$r")
if [ "$(wc -l <"$r")" -gt 1 ]; then tail -n +2 "$r" >"$r.next" && mv "$r.next" "$r"; fi
exit "$rc"
`, name, f.log, filepath.Join(f.stubs, "answers"))
		if err := os.WriteFile(filepath.Join(f.stubs, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeSystem) mkdir(p string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Join(f.root, p), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

// answer makes stub name print out and exit with rc when verb is its
// first non-option argument ("" for any call): with several, the first
// call exits with the first, and so on; the last one stays.
func (f *fakeSystem) answer(name, verb, out string, rc ...int) {
	f.t.Helper()
	base := filepath.Join(f.stubs, "answers", name)
	if verb != "" {
		base += "." + verb
	}
	if err := os.WriteFile(base+".out", []byte(out), 0o644); err != nil {
		f.t.Fatal(err)
	}
	var rcs strings.Builder
	for _, r := range rc {
		fmt.Fprintln(&rcs, r)
	}
	if err := os.WriteFile(base+".rc", []byte(rcs.String()), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// run runs a maintainer script with args; it returns stdout, stderr and
// the calls the stubs saw. A script that fails fails the test: dpkg and
// rpm would abort the transaction.
func (f *fakeSystem) run(script string, args ...string) (stdout, stderr string, calls []string) {
	f.t.Helper()
	os.Remove(f.log)
	// dpkg runs the script by its #!/bin/bash; rpm (numeric arguments)
	// passes it to /bin/sh, which is bash in POSIX mode on Fedora and RHEL.
	shell := []string{"bash"}
	if len(args) > 0 && args[0] != "" && strings.Trim(args[0], "0123456789") == "" {
		shell = []string{"bash", "--posix"}
	}
	cmd := exec.Command(shell[0], append(append(shell[1:], filepath.Join(repoRoot(f.t), "packaging/scripts", script)), args...)...)
	cmd.Env = []string{"PATH=" + f.stubs + ":/usr/bin:/bin", "DPKG_ROOT=" + f.root, "LC_ALL=C"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		f.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), err, out.String(), errb.String())
	}
	b, err := os.ReadFile(f.log)
	if err != nil && !os.IsNotExist(err) {
		f.t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			calls = append(calls, l)
		}
	}
	return out.String(), errb.String(), calls
}

func hasCall(calls []string, want string) bool { return slices.Contains(calls, want) }

func hasCallPrefix(calls []string, prefix string) bool {
	return slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// infoSeat and infoOwner are what passkeyctl info prints (its Users row
// and the settings table) in seat and owner mode.
const (
	infoSeat = "TPM:  hardware\nUsers:  seat: the key serves the active user at seat0 (now nobody: the key is unplugged); these are your passkeys\n\n" +
		"Settings (passkeyd.conf key, value, where it came from):\n  owner  \"\"  default\n  users  auto  default\n"
	infoOwner = "TPM:  hardware\nUsers:  owner: one set of passkeys, the owner's\n\n" +
		"Settings (passkeyd.conf key, value, where it came from):\n  owner  %s  %s\n  users  auto  default\n"
)

// TestPostinstFirstInstall: deb "configure" and rpm "1" on a booted
// desktop enable and start the service, enable the agent, load uhid and
// apply the udev rules; the daemon in seat mode needs no owner, and the
// postinst says so instead of asking for one.
func TestPostinstFirstInstall(t *testing.T) {
	for _, args := range [][]string{{"configure"}, {"configure", ""}, {"1"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			f := newFakeSystem(t, true)
			f.answer("passkeyctl", "info", infoSeat, 0)
			out, errs, calls := f.run("postinstall.sh", args...)
			root := "--root=" + f.root
			for _, want := range []string{
				"systemd-sysusers passkeyd.conf " + root,
				"modprobe uhid",
				"udevadm control --reload",
				"systemctl daemon-reload",
				"systemctl enable passkeyd.service " + root,
				"systemctl --global enable passkeyctl-agent.service " + root,
				"systemctl start passkeyd.service",
			} {
				if !hasCall(calls, want) {
					t.Errorf("no call %q; calls:\n%s", want, strings.Join(calls, "\n"))
				}
			}
			if hasCallPrefix(calls, "systemctl try-restart") {
				t.Errorf("a first install restarts: %q", calls)
			}
			if !strings.Contains(out, "passkeyd: each user at the seat has their own passkeys") || strings.Contains(out+errs, "owner") || errs != "" {
				t.Errorf("seat mode: stdout %q, stderr %q; want the per-user line, no owner advice, no warning", out, errs)
			}
		})
	}
}

// TestPostinstUpgrade: deb "configure OLD" and rpm "2" restart a running
// service once and leave whether it and the agent are enabled alone; a
// stopped service stays stopped.
func TestPostinstUpgrade(t *testing.T) {
	for _, args := range [][]string{{"configure", "0.9.0"}, {"2"}} {
		for _, active := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s_active=%v", strings.Join(args, "_"), active), func(t *testing.T) {
				f := newFakeSystem(t, true)
				f.answer("passkeyctl", "info", infoSeat, 0)
				if !active {
					f.answer("systemctl", "is-active", "", 3)
				}
				out, errs, calls := f.run("postinstall.sh", args...)
				if got := hasCall(calls, "systemctl try-restart passkeyd.service"); got != active {
					t.Errorf("try-restart: %v, want %v; calls %q", got, active, calls)
				}
				for _, c := range calls {
					if strings.Contains(c, " enable ") || strings.Contains(c, " disable ") || strings.HasPrefix(c, "systemctl start") {
						t.Errorf("an upgrade changed the enablement or started it: %q", c)
					}
				}
				if errs != "" {
					t.Errorf("stderr: %q", errs)
				}
				if active != strings.Contains(out, "each user at the seat") {
					t.Errorf("stdout %q", out)
				}
			})
		}
	}
}

// TestPostinstNotBooted: in a chroot, a container or an image build
// (systemd not PID 1) only the offline steps run, on DPKG_ROOT: the user,
// the enablement links. Nothing is loaded, triggered, started or asked.
func TestPostinstNotBooted(t *testing.T) {
	f := newFakeSystem(t, false)
	out, errs, calls := f.run("postinstall.sh", "configure")
	root := "--root=" + f.root
	want := []string{
		"systemd-sysusers passkeyd.conf " + root,
		"systemctl enable passkeyd.service " + root,
		"systemctl --global enable passkeyctl-agent.service " + root,
	}
	if !slices.Equal(calls, want) {
		t.Errorf("calls:\n%s\nwant exactly:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	if out != "" || errs != "" {
		t.Errorf("stdout %q, stderr %q: want nothing (the daemon decides its mode at its first start)", out, errs)
	}
}

// TestPostinstDaemonDoesNotStart: with no TPM (or no /dev/uhid, or a bad
// passkeyd.conf) the daemon exits at once with one line; the unit is
// Type=exec, so `systemctl start` succeeded. The install still succeeds,
// and says that passkeyd is not running and the daemon's reason.
func TestPostinstDaemonDoesNotStart(t *testing.T) {
	for _, args := range [][]string{{"configure"}, {"1"}, {"configure", "0.9.0"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			f := newFakeSystem(t, true)
			f.answer("passkeyctl", "info", "passkeyctl: passkeyd is not running\n", 3)
			// After the wait the unit is restarting: "activating"
			// (auto-restart), exit 3. An upgrade asks once before its
			// try-restart too, when it was running.
			if len(args) == 2 {
				f.answer("systemctl", "is-active", "", 0, 3)
			} else {
				f.answer("systemctl", "is-active", "", 3)
			}
			why := `open TPM "auto": no TPM device (/dev/tpmrm0): set tpm = "device-or-swtpm" to use a software TPM`
			f.answer("journalctl", "", "Started passkeyd.service - passkeyd TPM-backed FIDO2 security key.\npasskeyd: "+why+"\npasskeyd.service: Main process exited, code=exited, status=1/FAILURE\n", 0)
			out, errs, calls := f.run("postinstall.sh", args...)
			if !strings.Contains(errs, "passkeyd: warning: passkeyd is not running: "+why+"\n") {
				t.Errorf("stderr %q: want the warning with the daemon's line", errs)
			}
			if strings.Contains(out, "each user") || strings.Contains(out, "owner") {
				t.Errorf("stdout %q: nothing about users from a daemon that is not running", out)
			}
			if !hasCallPrefix(calls, "journalctl -u passkeyd.service --since @") {
				t.Errorf("the journal was not asked: %q", calls)
			}
		})
	}
}

// TestPostinstDaemonStillStarting: a daemon that runs but has not opened
// its control socket within the wait (a slow TPM's first start) is not
// reported as failed.
func TestPostinstDaemonStillStarting(t *testing.T) {
	f := newFakeSystem(t, true)
	f.answer("passkeyctl", "info", "passkeyctl: passkeyd is not running\n", 3)
	out, errs, calls := f.run("postinstall.sh", "configure")
	if errs != "" || !strings.Contains(out, "passkeyd: passkeyd is still starting") {
		t.Errorf("stdout %q, stderr %q: want the still-starting line and no warning", out, errs)
	}
	if hasCallPrefix(calls, "journalctl") {
		t.Errorf("a running daemon's journal was searched for a failure: %q", calls)
	}
}

// TestPostinstOwnerMode: where the daemon serves one owner (no logind, or
// users = "owner") and has none, the postinst says what to set; with an
// owner, nothing. The daemon's effective owner counts, whatever the
// file's quoting.
func TestPostinstOwnerMode(t *testing.T) {
	for _, tc := range []struct {
		owner, source string
		advice        bool
	}{
		{`""`, "default", true},
		{"alice", "/etc/passkeyd/passkeyd.conf:16", false},
	} {
		t.Run(tc.owner, func(t *testing.T) {
			f := newFakeSystem(t, true)
			f.mkdir("/etc/passkeyd")
			// A TOML literal string: the daemon's owner, whatever a
			// grep of the file would make of it.
			if err := os.WriteFile(filepath.Join(f.root, "etc/passkeyd/passkeyd.conf"), []byte("owner = 'alice'\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			f.answer("passkeyctl", "info", fmt.Sprintf(infoOwner, tc.owner, tc.source), 0)
			out, errs, _ := f.run("postinstall.sh", "configure")
			if got := strings.Contains(out, `passkeyd: no owner set: no user's prompt agent is admitted. As root, set owner = "YOUR_USER_NAME"`); got != tc.advice {
				t.Errorf("owner %s: advice %v, want %v; stdout %q", tc.owner, got, tc.advice, out)
			}
			if errs != "" {
				t.Errorf("stderr %q", errs)
			}
		})
	}
	// Not booted, users = "owner" and no owner in the file: the advice
	// comes from the file.
	f := newFakeSystem(t, false)
	f.mkdir("/etc/passkeyd")
	if err := os.WriteFile(filepath.Join(f.root, "etc/passkeyd/passkeyd.conf"), []byte("users = \"owner\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := f.run("postinstall.sh", "configure"); !strings.Contains(out, "no owner set") {
		t.Errorf("users = owner without an owner, not booted: stdout %q", out)
	}
}

// TestPrerm: removal (deb "remove", rpm "0") stops and disables the
// service and the agent; an upgrade (deb "upgrade NEW", rpm "1") touches
// nothing, since the new postinst restarts it once.
func TestPrerm(t *testing.T) {
	for _, args := range [][]string{{"remove"}, {"0"}} {
		f := newFakeSystem(t, true)
		_, _, calls := f.run("preremove.sh", args...)
		want := []string{"systemctl stop passkeyd.service", "systemctl disable passkeyd.service --root=" + f.root, "systemctl --global disable passkeyctl-agent.service --root=" + f.root}
		if !slices.Equal(calls, want) {
			t.Errorf("prerm %q: calls %q, want %q", args, calls, want)
		}
	}
	for _, args := range [][]string{{"upgrade", "1.1.0"}, {"1"}, {"failed-upgrade", "1.1.0"}, {"deconfigure", "in-favour", "x", "1"}} {
		f := newFakeSystem(t, true)
		if _, _, calls := f.run("preremove.sh", args...); len(calls) != 0 {
			t.Errorf("prerm %q: calls %q, want none", args, calls)
		}
	}
}

// TestPostrmKeepsPasskeys: remove and purge keep /var/lib/passkeyd; purge
// lists at most 20 of its entries and the command that would delete them,
// and succeeds however many entries there are (a machine with many users
// has many namespaces: find's output then outlasts head's 20 lines).
func TestPostrmKeepsPasskeys(t *testing.T) {
	for _, users := range []int{2, 1000} {
		f := newFakeSystem(t, true)
		f.mkdir("/var/lib/passkeyd/swtpm")
		if err := os.WriteFile(filepath.Join(f.root, "var/lib/passkeyd/passkeyd.db"), []byte("store"), 0o600); err != nil {
			t.Fatal(err)
		}
		for i := range users {
			f.mkdir(fmt.Sprintf("/var/lib/passkeyd/users/%064x", i))
		}
		state := filepath.Join(f.root, "var/lib/passkeyd")
		out, _, _ := f.run("postremove.sh", "purge")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.Contains(out, "'rm -rf "+state+"' would delete these "+fmt.Sprint(users+3)+" entries") || len(lines) > 22 {
			t.Errorf("purge with %d users:\n%s", users, out)
		}
		out, _, _ = f.run("postremove.sh", "remove")
		if !strings.Contains(out, "passkeyd: kept "+state+": it holds your passkeys.") {
			t.Errorf("remove: %q", out)
		}
		if _, err := os.Stat(filepath.Join(state, "passkeyd.db")); err != nil {
			t.Errorf("the store is gone: %v", err)
		}
	}
}
