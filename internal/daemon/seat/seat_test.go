package seat

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/daemon/users"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestMain(m *testing.M) { tpmsim.Main(m) }

// fakeDevice is a pipe whose opening and closing the opener records.
type fakeDevice struct {
	*ctaptest.Pipe
	n      int
	opener *fakeOpener
	once   sync.Once
}

func (d *fakeDevice) Close() error {
	d.once.Do(func() {
		d.Pipe.Close()
		d.opener.record(fmt.Sprintf("close %d", d.n), -1)
	})
	return nil
}

// fakeOpener stands in for uhid: every Open is a new device.
type fakeOpener struct {
	mu     sync.Mutex
	events []string
	open   int // devices open now
	devs   []*fakeDevice
}

func (o *fakeOpener) record(ev string, delta int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
	o.open += delta
}

func (o *fakeOpener) Open() (Device, error) {
	o.mu.Lock()
	d := &fakeDevice{Pipe: ctaptest.NewPipe(), n: len(o.devs) + 1, opener: o}
	o.devs = append(o.devs, d)
	o.mu.Unlock()
	o.record(fmt.Sprintf("open %d", d.n), +1)
	return d, nil
}

func (o *fakeOpener) snapshot() (events []string, open int, last *fakeDevice) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := len(o.devs); n > 0 {
		last = o.devs[n-1]
	}
	return append([]string(nil), o.events...), o.open, last
}

type harness struct {
	t        *testing.T
	users    *users.Users
	opener   *fakeOpener
	states   chan session.State
	switched chan session.State
	cancel   context.CancelFunc
	done     chan error
}

var (
	alice  = session.State{Active: true, UID: 1000, UserName: "alice", SessionID: "2"}
	bob    = session.State{Active: true, UID: 1001, UserName: "bob", SessionID: "5"}
	nobody = session.State{Reason: "no session on seat0"}
	locked = session.State{UID: 1000, UserName: "alice", SessionID: "2", Locked: true, Reason: "the screen is locked"}
)

// simMu serialises the tests' use of the one simulator.
var simMu sync.Mutex

// newHarness runs the loop on States the test sends (harness.send).
func newHarness(t *testing.T) *harness {
	t.Helper()
	return runHarness(t, nil)
}

// runHarness runs the loop on the namespaces of a fresh state dir and the
// fake opener, following states (nil: the harness's own channel).
func runHarness(t *testing.T, states <-chan session.State) *harness {
	t.Helper()
	u := openNamespaces(t)
	h := &harness{t: t, users: u, opener: &fakeOpener{}, states: make(chan session.State),
		switched: make(chan session.State, 1024), done: make(chan error, 1)}
	if states == nil {
		states = h.states
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- Run(ctx, Config{States: states, Users: u, Open: h.opener.Open, HID: hidConfig,
			Switched: func(st session.State) { h.switched <- st }})
	}()
	t.Cleanup(h.stop) // before openNamespaces' cleanups (LIFO)
	return h
}

// openNamespaces opens the per-user namespaces of a fresh state dir on
// the shared simulator (held until the test ends), closed when it ends.
func openNamespaces(t *testing.T) *users.Users {
	t.Helper()
	simMu.Lock()
	t.Cleanup(simMu.Unlock)
	dir := t.TempDir()
	dev, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	u, err := users.Open(users.Config{StateDir: dir, Device: dev, Auth: ctap2.Config{TPM: tpmsim.TPM(), Prompt: prompt.ApproveAll{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// stop ends Run (idempotent) and checks it returned nil.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return")
	}
}

// send delivers st and waits until Run has applied it.
func (h *harness) send(st session.State) {
	h.t.Helper()
	h.states <- st
	select {
	case <-h.switched:
	case <-time.After(10 * time.Second):
		h.t.Fatalf("state %+v not applied", st)
	}
}

// client opens a CTAPHID channel on the newest device.
func (h *harness) client() *ctaptest.Client {
	h.t.Helper()
	_, open, d := h.opener.snapshot()
	if open != 1 || d == nil {
		h.t.Fatalf("%d devices open, want 1", open)
	}
	ch, err := ctaptest.OpenHID(d.Pipe)
	if err != nil {
		h.t.Fatal(err)
	}
	return ctaptest.NewClient(ch, 2)
}

// hidConfig is the daemon's: a CTAP2 key.
var hidConfig = ctaphid.Config{Capabilities: ctaphid.CapWink | ctaphid.CapCBOR, Version: [3]byte{0, 1, 0}}

var cdh = bytes.Repeat([]byte{0xcd}, 32)

func makeCredential(t *testing.T, c *ctaptest.Client, rp, user string) []byte {
	t.Helper()
	return c.MakeES256(t, cdh, rp, user, true).ID
}

// getAssertion asks for a discoverable credential at rp.
func getAssertion(t *testing.T, c *ctaptest.Client, rp string) (ctaptest.Status, []byte) {
	t.Helper()
	a := c.GetAssertion(t, cdh, rp)
	return a.Status, a.ID
}

const errNoCredentials = ctaptest.Status(0x2E)

func (h *harness) expectOpen(want int) {
	h.t.Helper()
	if _, open, _ := h.opener.snapshot(); open != want {
		h.t.Fatalf("%d devices open, want %d", open, want)
	}
}

// TestSwitchUsers walks A -> B -> nobody -> A -> locked: each switch
// closes the old device before it opens the new one, B's device serves
// B's namespace (A's discoverable credential is not there), nobody and a
// locked screen leave nothing open, and A comes back to the same
// namespace.
func TestSwitchUsers(t *testing.T) {
	h := newHarness(t)

	h.send(alice)
	a := h.client()
	id := makeCredential(t, a, "example.com", "alice")
	if st, got := getAssertion(t, a, "example.com"); st != ctaptest.StatusOK || !bytes.Equal(got, id) {
		t.Fatalf("alice's getAssertion = %v %x, want her credential", st, got)
	}
	_, _, devA := h.opener.snapshot()

	h.send(bob)
	ev, _, _ := h.opener.snapshot()
	if want := "open 1,close 1,open 2"; strings.Join(ev, ",") != want {
		t.Fatalf("events %v, want %s (A's device closed before B's opened)", ev, want)
	}
	h.expectOpen(1)
	// A descriptor of the old session no longer reaches anything.
	if _, err := ctaptest.OpenHID(devA.Pipe); err == nil {
		t.Error("A's device still answers after the switch")
	}
	b := h.client()
	if st, _ := getAssertion(t, b, "example.com"); st != errNoCredentials {
		t.Fatalf("getAssertion through B's device = %v, want NO_CREDENTIALS (0x2E)", st)
	}
	if h.users.Active() == nil {
		t.Error("no namespace active while bob is served")
	}

	h.send(nobody)
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active with nobody at the seat")
	}

	h.send(alice)
	h.expectOpen(1)
	a = h.client()
	if st, got := getAssertion(t, a, "example.com"); st != ctaptest.StatusOK || !bytes.Equal(got, id) {
		t.Fatalf("alice's getAssertion after coming back = %v %x, want her credential %x", st, got, id)
	}

	h.send(locked)
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active on a locked screen")
	}
	ev, _, _ = h.opener.snapshot()
	if want := "open 1,close 1,open 2,close 2,open 3,close 3"; strings.Join(ev, ",") != want {
		t.Fatalf("events %v, want %s", ev, want)
	}
}

// TestSameUserKeepsTheDevice: another session of the same user (or the
// same State again) does not re-plug the key.
func TestSameUserKeepsTheDevice(t *testing.T) {
	h := newHarness(t)
	h.send(alice)
	other := alice
	other.SessionID = "7"
	h.send(other)
	ev, open, _ := h.opener.snapshot()
	if open != 1 || len(ev) != 1 {
		t.Fatalf("events %v, %d open: want one device kept", ev, open)
	}
}

// TestStopUnplugs: when Run ends, the key is unplugged.
func TestStopUnplugs(t *testing.T) {
	h := newHarness(t)
	h.send(alice)
	h.stop()
	h.expectOpen(0)
	if h.users.Active() != nil {
		t.Error("a namespace stays active after Run")
	}
}

// TestRapidSwitches: a burst of switches leaks neither devices nor
// goroutines, and at most one device is ever open.
func TestRapidSwitches(t *testing.T) {
	h := newHarness(t)
	seq := []session.State{alice, bob, nobody, bob, locked, alice, bob, alice, nobody}
	for i := range 60 {
		h.states <- seq[i%len(seq)]
		if _, open, _ := h.opener.snapshot(); open > 1 {
			t.Fatalf("%d devices open at once", open)
		}
	}
	for range 60 {
		<-h.switched
	}
	h.send(bob)
	h.expectOpen(1)
	h.client() // the last device serves
	h.send(nobody)
	h.expectOpen(0)
	h.stop()
	// Namespaces stay open (their stores' goroutines too): what must not
	// outlive a switch is a CTAPHID server or its device reader.
	var leaked string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		leaked = ""
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "/ctaphid.") || strings.Contains(g, "seat.apply") {
				leaked += g + "\n\n"
			}
		}
		if leaked == "" {
			return
		}
	}
	t.Fatalf("goroutines left after the switches:\n%s", leaked)
}

// failingOpener fails every Open.
type failingOpener struct{}

func (failingOpener) Open() (Device, error) { return nil, fmt.Errorf("uhid: no /dev/uhid") }

// TestOpenFailureFailsClosed: when the device cannot be created the
// namespace is not left active, and the loop goes on.
func TestOpenFailureFailsClosed(t *testing.T) {
	u := openNamespaces(t)
	states := make(chan session.State)
	applied := make(chan struct{}, 4)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{States: states, Users: u, Open: failingOpener{}.Open,
			Switched: func(session.State) { applied <- struct{}{} }})
	}()
	states <- alice
	<-applied
	if u.Active() != nil {
		t.Error("namespace active without a device")
	}
	close(states)
	if err := <-done; err != nil {
		t.Errorf("Run = %v after the stream closed", err)
	}
}

// recordingOpener is fakeOpener that also records, at each Open, whom the
// daemon was last told the key serves (Config.Serving).
type recordingOpener struct {
	fakeOpener
	mu      sync.Mutex
	serving session.State
	atOpen  []session.State
}

func (o *recordingOpener) Open() (Device, error) {
	o.mu.Lock()
	o.atOpen = append(o.atOpen, o.serving)
	o.mu.Unlock()
	return o.fakeOpener.Open()
}

// TestServingBeforeThePlug: the daemon learns whose key it is (prompts,
// polkit's subject and the control socket follow Serving) after the
// previous user's device is gone and before the new user's exists. With
// only Switched, called once the new device served, a request on bob's
// new key in between prompted alice's agent and asked polkit about
// alice's session, showing her bob's RP and account.
func TestServingBeforeThePlug(t *testing.T) {
	u := openNamespaces(t)
	o := &recordingOpener{}
	states := make(chan session.State)
	applied := make(chan session.State, 8)
	var served []session.State
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{States: states, Users: u, Open: o.Open, HID: hidConfig,
			Serving: func(st session.State) {
				// The previous user's device is closed by now.
				if _, open, _ := o.snapshot(); open != 0 {
					t.Errorf("Serving(%+v) with %d devices open", st, open)
				}
				o.mu.Lock()
				o.serving = st
				o.mu.Unlock()
				served = append(served, st)
			},
			Switched: func(st session.State) { applied <- st }})
	}()
	for _, st := range []session.State{alice, bob, nobody, alice} {
		states <- st
		<-applied
	}
	close(states)
	if err := <-done; err != nil {
		t.Errorf("Run = %v after the stream closed", err)
	}
	want := []session.State{alice, bob, alice}
	if !slices.Equal(o.atOpen, want) {
		t.Errorf("whom the daemon served at each Open: %+v, want %+v", o.atOpen, want)
	}
	if wantAll := []session.State{alice, bob, nobody, alice}; !slices.Equal(served, wantAll) {
		t.Errorf("Serving saw %+v, want %+v", served, wantAll)
	}
}
