package polkit

// Tests against python3-dbusmock on a private dbus-daemon (package
// dbustest): polkitd from testdata/polkitd.py (answers what the test sets,
// records every call, implements CancelCheckAuthorization, which
// dbusmock's own polkitd template does not) and dbusmock's logind
// template. Without dbus-daemon or dbusmock the tests skip, loudly; under
// CI=true they fail.

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

// mockBus is a private bus with the polkitd and logind mocks on it.
type mockBus struct {
	*dbustest.Bus
	polkitd *dbustest.Mock
	logind  *dbustest.Logind
}

// startBus starts dbus-daemon and the polkitd and logind mocks on it.
func startBus(t *testing.T) *mockBus {
	t.Helper()
	b := dbustest.Start(t)
	template, err := filepath.Abs("testdata/polkitd.py")
	if err != nil {
		t.Fatal(err)
	}
	return &mockBus{Bus: b, polkitd: b.StartMock(template, busName), logind: dbustest.StartLogind(b)}
}

// mock calls one of the polkitd mock's control methods.
func (b *mockBus) mock(method string, args ...any) *dbus.Call {
	return b.polkitd.Control(authorityPath, method, args...)
}

func (b *mockBus) setResult(t testing.TB, authorized, challenge bool, details map[string]string) {
	t.Helper()
	if details == nil {
		details = map[string]string{}
	}
	b.mock("SetResult", authorized, challenge, details)
}

// recorded is one call the polkitd mock saw.
type recorded struct {
	Method         string         `json:"method"`
	SubjectKind    string         `json:"subject_kind"`
	Subject        map[string]any `json:"subject"`
	Action         string         `json:"action"`
	Details        map[string]any `json:"details"`
	Flags          uint32         `json:"flags"`
	CancellationID string         `json:"cancellation_id"`
}

func (b *mockBus) calls(t testing.TB) []recorded {
	t.Helper()
	var s string
	if err := b.mock("Calls").Store(&s); err != nil {
		t.Fatal(err)
	}
	var r []recorded
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatal(err)
	}
	b.mock("Reset")
	return r
}

// addSession makes logind's seat0 have session id (uid 1000) active.
func (b *mockBus) addSession(t testing.TB, id string) {
	t.Helper()
	b.logind.Control(dbustest.LogindPath, "AddSession", id, "seat0", uint32(1000), "alice", true)
}

// backend is a Backend on the mock bus for the active session on seat0.
func (b *mockBus) backend() *Backend {
	return &Backend{Conn: b.Conn, Subject: LogindSubject(b.Conn, Seat0Session(b.Conn))}
}

var signIn = prompt.Request{Operation: prompt.OpSignIn, RPID: "example.com", UserName: "alice@example.com"}

// TestCheckAuthorization: the call carries the active session's subject
// (its leader process, the session's uid), the action, the RP and the
// operation, AllowUserInteraction and a cancellation id; each answer maps
// onto the prompt errors.
func TestCheckAuthorization(t *testing.T) {
	b := startBus(t)
	pk := b.backend()
	if err := pk.VerifyUser(context.Background(), signIn); !errors.Is(err, prompt.ErrNoUser) {
		t.Errorf("no active session: %v, want ErrNoUser", err)
	}
	if c := b.calls(t); len(c) != 0 {
		t.Errorf("polkit asked without a session: %+v", c)
	}
	b.addSession(t, "c7")

	b.setResult(t, true, false, nil)
	if err := pk.VerifyUser(context.Background(), signIn); err != nil {
		t.Fatalf("authorized: %v", err)
	}
	c := b.calls(t)
	if len(c) != 1 {
		t.Fatalf("calls %+v, want one", c)
	}
	got := c[0]
	if got.Method != "CheckAuthorization" || got.Action != ActionID || got.Flags != 1 || got.CancellationID == "" {
		t.Errorf("call %+v: want CheckAuthorization of %s, flags 1, a cancellation id", got, ActionID)
	}
	// dbusmock's logind gives every session Leader 1.
	if got.SubjectKind != "unix-process" || got.Subject["pid"] != float64(1) || got.Subject["uid"] != float64(1000) || got.Subject["start-time"] != float64(0) {
		t.Errorf("subject %s %v, want unix-process pid 1 uid 1000 start-time 0", got.SubjectKind, got.Subject)
	}
	want := map[string]any{"rp": "example.com", "operation": "sign in", "user": "alice@example.com"}
	for k, v := range want {
		if got.Details[k] != v {
			t.Errorf("details %v, want %v", got.Details, want)
			break
		}
	}
	if err := pk.Confirm(context.Background(), prompt.Request{Operation: prompt.OpManage}); err != nil {
		t.Errorf("Confirm: %v", err)
	}
	if c := b.calls(t); len(c) != 1 || c[0].Details["rp"] != "this computer" || c[0].Details["operation"] != string(prompt.OpManage) {
		t.Errorf("Confirm without an RP: %+v", c)
	}

	for _, tc := range []struct {
		name                  string
		authorized, challenge bool
		details               map[string]string
		want                  error
		notWant               error
	}{
		{"not verified", false, false, nil, prompt.ErrNotVerified, nil},
		{"dismissed", false, false, map[string]string{"polkit.dismissed": "true"}, prompt.ErrDenied, prompt.ErrNotVerified},
		{"no agent", false, true, nil, prompt.ErrNoVerifier, nil},
	} {
		b.setResult(t, tc.authorized, tc.challenge, tc.details)
		err := pk.VerifyUser(context.Background(), signIn)
		if !errors.Is(err, tc.want) || (tc.notWant != nil && errors.Is(err, tc.notWant)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if errors.Is(err, prompt.ErrNotVerified) && !errors.Is(err, prompt.ErrDenied) {
			t.Errorf("%s: ErrNotVerified is not ErrDenied", tc.name)
		}
	}
}

// TestCancelAndTimeout: a cancelled or expired context calls
// CancelCheckAuthorization with the call's cancellation id.
func TestCancelAndTimeout(t *testing.T) {
	b := startBus(t)
	b.addSession(t, "c1")
	pk := b.backend()
	b.mock("SetHang", true)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := pk.VerifyUser(ctx, signIn); !errors.Is(err, prompt.ErrTimeout) {
		t.Errorf("deadline: %v, want ErrTimeout", err)
	}
	assertCancelled(t, b)

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	if err := pk.VerifyUser(ctx, signIn); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	assertCancelled(t, b)
}

func assertCancelled(t *testing.T, b *mockBus) {
	t.Helper()
	c := b.calls(t)
	if len(c) != 2 || c[0].Method != "CheckAuthorization" || c[1].Method != "CancelCheckAuthorization" || c[1].CancellationID != c[0].CancellationID {
		t.Errorf("calls %+v, want CheckAuthorization then CancelCheckAuthorization of its id", c)
	}
}

// TestNoPolkit: no polkit on the bus is ErrNoVerifier (the agent fallback
// of polkit+agent applies).
func TestNoPolkit(t *testing.T) {
	b := startBus(t)
	b.addSession(t, "c1")
	pk := b.backend()
	pk.name = "org.freedesktop.PolicyKit1.Nobody" // the mock is there; ask a name nobody owns
	err := pk.VerifyUser(context.Background(), signIn)
	if !errors.Is(err, prompt.ErrNoVerifier) {
		t.Errorf("no polkit: %v, want ErrNoVerifier", err)
	}
}

// TestStockPolkitdTemplate: the backend against python3-dbusmock's own
// polkitd template (which answers allowed or not, and can hang, but knows
// neither challenges, dismissals nor CancelCheckAuthorization: those are
// testdata/polkitd.py's): allowed is verified, not allowed is
// ErrNotVerified, no answer in time is ErrTimeout even though the
// template cannot withdraw the call.
func TestStockPolkitdTemplate(t *testing.T) {
	b := dbustest.Start(t)
	pd := b.StartMock("polkitd", busName)
	dbustest.StartLogind(b).Control(dbustest.LogindPath, "AddSession", "c9", "seat0", uint32(1000), "alice", true)
	pk := &Backend{Conn: b.Conn, Subject: LogindSubject(b.Conn, Seat0Session(b.Conn))}

	pd.Control(authorityPath, "SetAllowed", []string{ActionID})
	if err := pk.VerifyUser(context.Background(), signIn); err != nil {
		t.Errorf("allowed: %v", err)
	}
	pd.Control(authorityPath, "SetAllowed", []string{"org.example.other"})
	if err := pk.VerifyUser(context.Background(), signIn); !errors.Is(err, prompt.ErrNotVerified) {
		t.Errorf("not allowed: %v, want ErrNotVerified", err)
	}
	pd.Control(authorityPath, "SimulateHang", true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := pk.VerifyUser(ctx, signIn); !errors.Is(err, prompt.ErrTimeout) {
		t.Errorf("no answer: %v, want ErrTimeout", err)
	}
}

// TestDetailsShownSafely: the RP ID and account a client sends reach the
// desktop's authentication dialog ($(rp) in the action's message) only as
// the agent shows them: no line breaks or escapes, no bidirectional
// overrides, at most prompt.DisplayMax bytes; a real RP ID is unchanged.
func TestDetailsShownSafely(t *testing.T) {
	long := strings.Repeat("a", 1000) + ".example"
	d := Details(prompt.Request{Operation: prompt.OpRegister,
		RPID:     "example.com with the security key\n\nYour system needs an update: authenticate to continue",
		UserName: "\u202egnp.exe\x1b[2J" + long})
	for _, k := range []string{"rp", "user"} {
		v := d[k]
		if len(v) > prompt.DisplayMax || !utf8.ValidString(v) {
			t.Errorf("%s = %q: %d bytes, want valid UTF-8 of at most %d", k, v, len(v), prompt.DisplayMax)
		}
		for _, r := range v {
			if unicode.IsControl(r) || r == '\u202e' {
				t.Errorf("%s = %q holds %U", k, v, r)
			}
		}
	}
	if !strings.HasSuffix(d["user"], "…") {
		t.Errorf("a long account is not cut visibly: %q", d["user"])
	}
	if d := Details(signIn); d["rp"] != "example.com" || d["user"] != "alice@example.com" || d["operation"] != "sign in" {
		t.Errorf("a real request changed: %v", d)
	}
}

// TestPromptForUser: a prompt restricted to one user (prompt.ForUser: a
// user's own passkeyctl change in seat mode) asks polkit only while that
// user's session is the active one; another user's session is nobody to
// ask (ErrNoVerifier), and polkit never sees the call.
func TestPromptForUser(t *testing.T) {
	b := startBus(t)
	pk := b.backend()
	b.addSession(t, "c7") // alice, uid 1000
	b.setResult(t, true, false, nil)
	manage := prompt.Request{Operation: prompt.OpManage}
	if err := pk.Confirm(prompt.ForUser(context.Background(), 1001), manage); !errors.Is(err, prompt.ErrNoVerifier) {
		t.Errorf("bob's change while alice is active: %v, want ErrNoVerifier", err)
	}
	if c := b.calls(t); len(c) != 0 {
		t.Errorf("polkit was asked about alice's session for bob's change: %+v", c)
	}
	if err := pk.Confirm(prompt.ForUser(context.Background(), 1000), manage); err != nil {
		t.Errorf("alice's own change: %v", err)
	}
	if c := b.calls(t); len(c) != 1 {
		t.Errorf("alice's own change: %d polkit calls, want 1", len(c))
	}
}
