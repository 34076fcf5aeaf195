package main

// Seat mode through the daemon's own wiring (serve): the real control
// socket, the real management service, the real seat loop following the
// real session tracker on dbusmock's logind, the namespaces on the TPM
// simulator, the UDP transport standing in for uhid. The management
// calls are passkeyctl itself, run as other users: the daemon sees them
// through SO_PEERCRED on the socket, as it would on a desktop.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
	"github.com/passkeyd/passkeyd/internal/testkit/gobuild"
)

func TestMain(m *testing.M) { gobuild.Main(m) }

// account is a local user the tests act as. Both are in every Debian
// base system (base-passwd), so no test adds an account to the machine.
type account struct {
	name     string
	uid, gid uint32
}

func lookupAccount(t *testing.T, name string) account {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("the seat tests act as the system account %q: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return account{name: u.Username, uid: uint32(uid), gid: uint32(gid)}
}

// seatDaemon is serve in seat mode on a private bus with dbusmock's logind.
type seatDaemon struct {
	t      *testing.T
	logind *dbustest.Logind
	sock   string // the control socket
	udp    string // the transport's address
}

// startSeatDaemon runs serve in seat mode with --prompt promptMode.
func startSeatDaemon(t *testing.T, promptMode string) *seatDaemon {
	t.Helper()
	if os.Geteuid() != 0 {
		const msg = "the seat tests run passkeyctl as other users: they need root"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, "SKIPPING: "+msg)
		t.Skip("SKIPPING: " + msg)
	}
	bus := dbustest.Start(t)
	d := &seatDaemon{t: t, logind: dbustest.StartLogind(bus)}
	old := newTracker
	newTracker = func(ctx context.Context, o session.Options) (*session.Tracker, error) {
		o.Address = bus.Addr
		return session.New(ctx, o)
	}
	t.Cleanup(func() { newTracker = old })

	// Every user must reach the socket, as under /run/passkeyd.
	d.sock = filepath.Join(sharedDir(t, "passkeyd-seat-"), "control.sock")
	d.udp = freeUDPAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, serveOptions{stateDir: t.TempDir(), tpmSpec: "sim", transport: "udp:" + d.udp,
			users: "seat", prompt: promptMode, control: d.sock, logLevel: "warn"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(dbustest.Wait):
			t.Error("serve did not stop")
		}
	})
	for deadline := time.Now().Add(dbustest.Wait); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v", err)
		default:
		}
		if c, err := control.Dial(d.sock); err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("no control socket")
		}
	}
}

// sharedDir is a directory every user may enter, removed after the test
// (not under t.TempDir, whose parents are root's alone; and short, for
// socket paths).
func sharedDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// twoUsers is the daemon with two users' sessions on seat0, alice's (the
// system account daemon) in the foreground and served, bob's (bin) in the
// background.
func twoUsers(t *testing.T, promptMode string) (d *seatDaemon, alice, bob account) {
	t.Helper()
	alice, bob = lookupAccount(t, "daemon"), lookupAccount(t, "bin")
	d = startSeatDaemon(t, promptMode)
	d.logind.AddSession("3", bob.uid, bob.name, "wayland")
	d.logind.AddSession("2", alice.uid, alice.name, "wayland")
	d.logind.Foreground("2", "3")
	d.awaitServing(served(alice))
	return d, alice, bob
}

// served is how info names a as the user served.
func served(a account) string { return fmt.Sprintf("%s (uid %d)", a.name, a.uid) }

// info is the info operation as root.
func (d *seatDaemon) info() mgmtapi.Info {
	d.t.Helper()
	c, err := control.Dial(d.sock)
	if err != nil {
		d.t.Fatal(err)
	}
	defer c.Close()
	var in mgmtapi.Info
	if err := c.Call(mgmtapi.OpInfo, nil, &in); err != nil {
		d.t.Fatal(err)
	}
	return in
}

// awaitServing waits until the daemon says whom the key serves ("" for
// nobody), which it says after the seat loop has applied the switch.
func (d *seatDaemon) awaitServing(want string) {
	d.t.Helper()
	var in mgmtapi.Info
	for deadline := time.Now().Add(dbustest.Wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if in = d.info(); in.Serving == want {
			return
		}
	}
	d.t.Fatalf("serving %q, want %q", in.Serving, want)
}

// key opens a CTAPHID channel on the key over the UDP transport.
func (d *seatDaemon) key() *ctaptest.Client {
	d.t.Helper()
	conn, err := net.Dial("udp", d.udp)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	// A pipe whose device end is the UDP socket: ctaptest speaks
	// CTAPHID on its host end.
	p := ctaptest.NewPipe()
	d.t.Cleanup(p.Close)
	go func() {
		for {
			r, err := p.ReadReport()
			if err != nil {
				return
			}
			if _, err := conn.Write(r); err != nil {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := conn.Read(buf)
			if err != nil || p.WriteReport(buf[:n]) != nil {
				return
			}
		}
	}()
	ch, err := ctaptest.OpenHID(p)
	if err != nil {
		d.t.Fatal(err)
	}
	return ctaptest.NewClient(ch, 2)
}

// register makes a discoverable credential at rp on the key and returns
// its ID as passkeyctl shows it (base64url).
func register(t *testing.T, c *ctaptest.Client, rp, name string) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString(c.MakeES256(t, bytes.Repeat([]byte{0xcd}, 32), rp, name, true).ID)
}

// command is passkeyctl on the daemon's socket, to run as a (nil: root)
// with env added to a minimal environment.
func (d *seatDaemon) command(a *account, env []string, args ...string) *exec.Cmd {
	d.t.Helper()
	cmd := exec.Command(gobuild.Binary(d.t, "github.com/passkeyd/passkeyd/cmd/passkeyctl"), append([]string{"--control", d.sock}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "LANG=C"}, env...)
	if a != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid}}
	}
	return cmd
}

// ctl runs passkeyctl as a (nil: root), with stdin, and returns its
// output and exit status.
func (d *seatDaemon) ctl(a *account, stdin string, args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	cmd := d.command(a, nil, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		d.t.Fatalf("passkeyctl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// list is `passkeyctl list --json` (and args) as a: the credential IDs.
func (d *seatDaemon) list(a *account, args ...string) []mgmtapi.Credential {
	d.t.Helper()
	out, errs, code := d.ctl(a, "", append([]string{"list", "--json"}, args...)...)
	if code != 0 {
		d.t.Fatalf("passkeyctl list %v as %v: exit %d: %s", args, a, code, errs)
	}
	var creds []mgmtapi.Credential
	if err := json.Unmarshal([]byte(out), &creds); err != nil {
		d.t.Fatalf("passkeyctl list --json: %v: %s", err, out)
	}
	return creds
}

func ids(creds []mgmtapi.Credential) []string {
	out := make([]string, len(creds))
	for i, c := range creds {
		out[i] = c.CredentialID
	}
	return out
}

func sameIDs(got []mgmtapi.Credential, want ...string) bool { return slices.Equal(ids(got), want) }

// TestSeatModeManagementPerCaller: in seat mode every caller of the
// control socket manages their own namespace and no one else's: list,
// info and export show the caller's own passkeys; delete, pin set and
// reset are refused to a user who is not the active one (their prompts
// would go to another user's session); root with --user reaches the named
// user's namespace.
func TestSeatModeManagementPerCaller(t *testing.T) {
	d, alice, bob := twoUsers(t, "approve-all")
	bobServed := served(bob)
	aliceID := register(t, d.key(), "example.com", "alice@example.com")

	d.logind.Foreground("3", "2")
	d.awaitServing(bobServed)
	bobID := register(t, d.key(), "example.com", "bob@example.com")
	bobID2 := register(t, d.key(), "bob.example", "bob")

	// Each user lists their own, never the other's.
	if got := d.list(&alice); !sameIDs(got, aliceID) {
		t.Errorf("alice's list = %v, want only hers %v", ids(got), aliceID)
	}
	if got := d.list(&bob, "--sort", "rp"); !sameIDs(got, bobID2, bobID) {
		t.Errorf("bob's list = %v, want only his %v", ids(got), []string{bobID2, bobID})
	}
	// info and export: the caller's namespace.
	for _, tc := range []struct {
		who   *account
		creds int
	}{{&alice, 1}, {&bob, 2}} {
		out, errs, code := d.ctl(tc.who, "", "info", "--json")
		var in mgmtapi.Info
		if code != 0 || json.Unmarshal([]byte(out), &in) != nil {
			t.Fatalf("info as %s: exit %d %s", tc.who.name, code, errs)
		}
		if in.Credentials != tc.creds || in.Mode != mgmtapi.ModeSeat || in.Serving != bobServed {
			t.Errorf("info as %s: %d passkeys, mode %q, serving %q; want %d, seat, %q", tc.who.name, in.Credentials, in.Mode, in.Serving, tc.creds, bobServed)
		}
	}
	out, errs, code := d.ctl(&alice, "", "export")
	var ex mgmtapi.Export
	if code != 0 || json.Unmarshal([]byte(out), &ex) != nil {
		t.Fatalf("export as alice: exit %d %s", code, errs)
	}
	if !ex.Exists || !sameIDs(ex.Credentials, aliceID) || strings.Contains(out, bobID) {
		t.Errorf("alice's export = %s, want only her passkey", out)
	}
	// Naming another user is root's.
	if _, errs, code := d.ctl(&alice, "", "list", "--user", bob.name); code != 4 || !strings.Contains(errs, "only root may name a user") {
		t.Errorf("alice listing bob's: exit %d %q, want 4 and only root may name a user", code, errs)
	}
	const want = "passkeyctl: refused: only root may name a user (--user)\n"
	if _, errs, code := d.ctl(&alice, "", "reset", "--user", bob.name, "--yes"); code != 4 || errs != want {
		t.Errorf("alice removing bob's namespace: exit %d %q, want 4 and %q", code, errs, want)
	}

	// Changes are the active user's only (bob's now): alice is refused
	// before anything is asked or changed.
	const refused = "passkeyctl: refused: only the user of the active session at seat0 may change passkeys: the confirmation is asked in that session\n"
	for _, tc := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"delete", aliceID, "--yes"}, ""},
		{[]string{"pin", "set", "--stdin"}, "alice-pin\nalice-pin\n"},
		{[]string{"reset", "--yes"}, ""},
	} {
		_, errs, code := d.ctl(&alice, tc.stdin, tc.args...)
		if code != 4 || !strings.HasSuffix(errs, refused) {
			t.Errorf("alice (not active): passkeyctl %v = exit %d %q, want exit 4 and %q", tc.args, code, errs, refused)
		}
	}
	if got := d.list(&alice); !sameIDs(got, aliceID) {
		t.Fatalf("alice's passkeys after the refusals: %v, want %v", ids(got), aliceID)
	}
	if out, _, _ := d.ctl(&alice, "", "info", "--json"); strings.Contains(out, `"pinSet": true`) {
		t.Error("alice's refused pin set set a PIN")
	}

	// Bob, active, changes his own namespace, and cannot name alice's
	// passkey: it is not in his list.
	if _, errs, code := d.ctl(&bob, "", "delete", aliceID, "--yes"); code != 5 {
		t.Errorf("bob deleting alice's passkey: exit %d %q, want 5 (no such passkey)", code, errs)
	}
	if _, errs, code := d.ctl(&bob, "bob-pin-1\nbob-pin-1\n", "pin", "set", "--stdin"); code != 0 {
		t.Fatalf("bob's pin set: exit %d %s", code, errs)
	}
	if _, errs, code := d.ctl(&bob, "bob-pin-1\n", "delete", bobID2, "--yes", "--stdin"); code != 0 {
		t.Fatalf("bob's delete: exit %d %s", code, errs)
	}
	if got := d.list(&bob); !sameIDs(got, bobID) {
		t.Errorf("bob's list after his delete = %v, want %v", ids(got), bobID)
	}
	if out, _, _ := d.ctl(&alice, "", "info", "--json"); strings.Contains(out, `"pinSet": true`) || !strings.Contains(out, `"credentials": 1`) {
		t.Errorf("bob's PIN or delete reached alice's namespace: %s", out)
	}

	// Root: the named user's namespace; its own (the device's) holds
	// nobody's passkeys.
	if got := d.list(nil, "--user", alice.name); !sameIDs(got, aliceID) {
		t.Errorf("root's list --user %s = %v, want %v", alice.name, ids(got), aliceID)
	}
	if got := d.list(nil, "--user", bob.name); !sameIDs(got, bobID) {
		t.Errorf("root's list --user %s = %v, want %v", bob.name, ids(got), bobID)
	}
	if got := d.list(nil); len(got) != 0 {
		t.Errorf("root's own list = %v, want none", ids(got))
	}
	if out, errs, code := d.ctl(nil, "", "export", "--user", bob.name); code != 0 || !strings.Contains(out, bobID) || strings.Contains(out, aliceID) || !strings.Contains(out, `"pinSet": true`) {
		t.Errorf("root's export --user %s: exit %d %s %s", bob.name, code, out, errs)
	}
	if _, errs, code := d.ctl(nil, "", "reset", "--user", bob.name, "--yes"); code == 0 || !strings.Contains(errs, "is being served now") {
		t.Errorf("root removing the active user's namespace: exit %d %q, want a refusal", code, errs)
	}
	if _, errs, code := d.ctl(nil, "", "reset", "--user", alice.name, "--yes"); code != 0 {
		t.Fatalf("root removing alice's namespace: exit %d %s", code, errs)
	}
	if got := d.list(&alice); len(got) != 0 {
		t.Errorf("alice's list after root removed her namespace = %v, want none", ids(got))
	}
	if got := d.list(&bob); !sameIDs(got, bobID) {
		t.Errorf("bob's list after root removed alice's namespace = %v, want %v", ids(got), bobID)
	}
}

// agent is `passkeyctl agent` running as a user, with the fake pinentry
// recording what it is shown.
type agent struct {
	cmd    *exec.Cmd
	stderr *ctaptest.SyncBuffer
	log    string // the fake pinentry's record
	done   chan error
}

// startAgent starts passkeyctl agent as a; the test's cleanup stops it.
func (d *seatDaemon) startAgent(a account, logDir string) *agent {
	d.t.Helper()
	f, err := os.CreateTemp(logDir, a.name+"-*.log")
	if err != nil {
		d.t.Fatal(err)
	}
	f.Close()
	ag := &agent{stderr: &ctaptest.SyncBuffer{}, log: f.Name(), done: make(chan error, 1)}
	// The pinentry runs as a and appends to its record.
	err = os.Chown(ag.log, int(a.uid), int(a.gid))
	if err != nil {
		d.t.Fatal(err)
	}
	pinentry := gobuild.Binary(d.t, "github.com/passkeyd/passkeyd/internal/daemon/pinentry/testdata/fakepinentry")
	ag.cmd = d.command(&a, []string{"FAKE_LOG=" + ag.log}, "agent", "--pinentry", pinentry)
	ag.cmd.Stdout, ag.cmd.Stderr = ag.stderr, ag.stderr
	if err := ag.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() { ag.done <- ag.cmd.Wait() }()
	d.t.Cleanup(func() {
		_ = ag.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ag.done:
		case <-time.After(dbustest.Wait):
			_ = ag.cmd.Process.Kill()
			<-ag.done
		}
	})
	return ag
}

// await waits until the agent has said what (its log lines count, from
// the start).
func (ag *agent) await(t *testing.T, what string, count int) {
	t.Helper()
	for deadline := time.Now().Add(dbustest.Wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(ag.stderr.String(), what) >= count {
			return
		}
	}
	t.Fatalf("the agent did not say %q %d times:\n%s", what, count, ag.stderr.String())
}

// prompts is how many confirmations the agent's pinentry was asked for.
func (ag *agent) prompts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(ag.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\nCONFIRM")
}

const agentConnected = "connected to passkeyd: showing its prompts"

// TestSeatModeAgentPerUser: the daemon's wiring of the prompt agent in
// seat mode: only the active user's agent is admitted (another user's is
// told it is not active and keeps retrying), a second agent of the active
// user is refused for good (exit 78) rather than replacing the first,
// prompts go to the active user's agent only, and a switch hands them to
// the new user's agent.
func TestSeatModeAgentPerUser(t *testing.T) {
	d, alice, bob := twoUsers(t, "agent")

	logDir := sharedDir(t, "passkeyd-agents-")
	agentA := d.startAgent(alice, logDir)
	agentB := d.startAgent(bob, logDir)
	agentA.await(t, agentConnected, 1)
	agentB.await(t, "is not the user of the active session on seat0", 1)
	if strings.Contains(agentB.stderr.String(), agentConnected) {
		t.Fatalf("bob's agent was admitted while alice is active:\n%s", agentB.stderr.String())
	}

	// A second agent of the active user does not take the prompts over:
	// it is refused for good (an admitted one would run on).
	second := d.startAgent(alice, logDir)
	select {
	case err := <-second.done:
		var ee *exec.ExitError
		want := "passkeyctl: prompt agent refused: another agent of this user is connected\n"
		if !errors.As(err, &ee) || ee.ExitCode() != 78 || second.stderr.String() != want {
			t.Errorf("alice's second agent: %v %q, want exit 78 and %q", err, second.stderr.String(), want)
		}
		second.done <- err // for the cleanup
	case <-time.After(dbustest.Wait):
		t.Fatalf("alice's second agent still runs:\n%s", second.stderr.String())
	}

	// Presence for alice's registration is asked in her session only.
	register(t, d.key(), "example.com", "alice@example.com")
	if a, b := agentA.prompts(t), agentB.prompts(t); a != 1 || b != 0 {
		t.Errorf("prompts: alice's agent %d, bob's %d; want 1 and 0", a, b)
	}

	// The switch: alice's agent is dropped, bob's admitted.
	d.logind.Foreground("3", "2")
	d.awaitServing(served(bob))
	agentB.await(t, agentConnected, 1)
	agentA.await(t, "not connected to passkeyd; retrying", 1)
	register(t, d.key(), "example.com", "bob@example.com")
	if a, b := agentA.prompts(t), agentB.prompts(t); a != 1 || b != 1 {
		t.Errorf("prompts after the switch: alice's agent %d, bob's %d; want 1 and 1", a, b)
	}
}
