// Package polkit asks polkit (org.freedesktop.PolicyKit1) to verify the
// person in the active session: the desktop's authentication agent shows
// one dialog, the person proves who they are the way the desktop unlocks
// (the session user's password, or a fingerprint where PAM's polkit-1
// stack has pam_fprintd), and that answers user presence and user
// verification at once. Backend is a prompt.Verifier.
//
// The call is CheckAuthorization for the action org.passkeyd.verify-user
// (cmd/passkeyd/dist/org.passkeyd.policy: allow_active=auth_self) with
// AllowUserInteraction, the RP and the operation in the details, and a
// cancellation id: a cancelled context calls CancelCheckAuthorization.
//
// The subject is the active session, named by its leader process with
// the session's user ("unix-process": pid, start-time 0 so that polkitd
// reads it, uid), which polkitd maps back to the session for the
// active/local check and for the session's authentication agent. Not a
// "unix-session" subject: polkitd 122 (Debian 12) aborts on one
// (assertion process != NULL in
// polkit_backend_session_monitor_get_session_for_subject, measured). The
// uid is given explicitly: a leader such as gdm-session-worker runs as
// root, and root is always authorised.
//
// Layer: daemon. It talks D-Bus only (github.com/godbus/dbus/v5) and
// knows nothing of CTAP.
package polkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
)

// ActionID is passkeyd's polkit action (org.passkeyd.policy).
const ActionID = "org.passkeyd.verify-user"

// D-Bus names of polkit's authority.
const (
	busName       = "org.freedesktop.PolicyKit1"
	authorityPath = "/org/freedesktop/PolicyKit1/Authority"
	authorityIfc  = "org.freedesktop.PolicyKit1.Authority"
	// errCancelled is what CheckAuthorization answers after
	// CancelCheckAuthorization.
	errCancelled = "org.freedesktop.PolicyKit1.Error.Cancelled"
)

// CheckAuthorization flags.
const flagAllowUserInteraction uint32 = 1

// Subject is the subject of a CheckAuthorization call, D-Bus (sa{sv}).
type Subject struct {
	Kind    string
	Details map[string]dbus.Variant
}

// ProcessSubject is the "unix-process" subject for pid, run on behalf of
// uid. start-time 0 makes polkitd read the process's start time itself.
func ProcessSubject(pid, uid uint32) Subject {
	return Subject{Kind: "unix-process", Details: map[string]dbus.Variant{
		"pid":        dbus.MakeVariant(pid),
		"start-time": dbus.MakeVariant(uint64(0)),
		"uid":        dbus.MakeVariant(int32(uid)),
	}}
}

// authResult is CheckAuthorization's answer, D-Bus (bba{ss}).
type authResult struct {
	IsAuthorized bool
	IsChallenge  bool
	Details      map[string]string
}

// Backend asks polkit. Confirm and VerifyUser are the same question:
// polkit has no "press OK" dialog, so presence alone also costs the
// password (the "polkit+agent" prompt asks presence through the session
// agent instead). Safe for concurrent use.
type Backend struct {
	// Conn is a connection to the system bus.
	Conn *dbus.Conn
	// Subject names the person to ask: the active session's. An error
	// wrapping prompt.ErrNoUser means there is nobody (no active
	// session).
	Subject func(ctx context.Context) (Subject, error)
	// Action is the polkit action; empty means ActionID.
	Action string
	// Logger receives every answer; nil discards.
	Logger *slog.Logger

	seq  atomic.Uint64
	name string // polkit's bus name; empty means busName (tests change it)
}

// Confirm implements prompt.Prompter.
func (b *Backend) Confirm(ctx context.Context, req prompt.Request) error {
	return b.check(ctx, req)
}

// VerifyUser implements prompt.Verifier.
func (b *Backend) VerifyUser(ctx context.Context, req prompt.Request) error {
	return b.check(ctx, req)
}

func (b *Backend) log() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Details are what the action's message shows ($(rp), $(operation)) and
// what a polkit rule may look at; "user" is the account, possibly empty.
// The RP ID and the account come from the client, unchecked over raw HID:
// they go into the system's own authentication dialog only as the agent's
// prompts show them (prompt.Display), so a hostile client cannot add lines
// to it, reorder it with bidirectional overrides or push the rest off the
// screen. A real RP ID (a DNS name) passes unchanged.
func Details(req prompt.Request) map[string]string {
	rp := prompt.Display(req.RPID, prompt.DisplayMax)
	if rp == "" {
		rp = "this computer"
	}
	return map[string]string{"rp": rp, "operation": prompt.Display(string(req.Operation), prompt.DisplayMax),
		"user": prompt.Display(req.UserName, prompt.DisplayMax)}
}

// check asks polkit once and maps the answer: authorised → nil; the
// dialog dismissed → prompt.ErrDenied; not authorised after a dialog →
// prompt.ErrNotVerified; a challenge left unanswered (polkitd answers
// is_challenge when no authentication agent is registered for the
// session: measured with polkitd 122) or no polkit on the bus →
// prompt.ErrNoVerifier; ctx's deadline → prompt.ErrTimeout; ctx
// cancelled → ctx.Err(), after CancelCheckAuthorization.
func (b *Backend) check(ctx context.Context, req prompt.Request) error {
	subject, err := b.Subject(ctx)
	if err != nil {
		b.log().Warn("polkit: no subject to ask", "err", err)
		if errors.Is(err, prompt.ErrNoUser) {
			return err
		}
		return fmt.Errorf("%w: %v", prompt.ErrNoUser, err)
	}
	if want, ok := prompt.UserFrom(ctx); ok && !subject.isUser(want) {
		// A user's own request, and another user's session is active.
		return fmt.Errorf("%w: the active session is not the requester's", prompt.ErrNoVerifier)
	}
	action := b.Action
	if action == "" {
		action = ActionID
	}
	cancelID := "passkeyd-" + strconv.FormatUint(b.seq.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	name := b.name
	if name == "" {
		name = busName
	}
	obj := b.Conn.Object(name, authorityPath)
	// Not CallWithContext: the call must be cancelled at polkitd, or
	// the dialog stays up. The reply is awaited below.
	call := obj.Go(authorityIfc+".CheckAuthorization", 0, make(chan *dbus.Call, 1),
		subject, action, Details(req), flagAllowUserInteraction, cancelID)
	var res authResult
	select {
	case <-call.Done:
		err = call.Err
	case <-ctx.Done():
		b.cancel(obj, cancelID)
		b.log().Info("polkit: request withdrawn", "operation", string(req.Operation), "why", ctx.Err())
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return prompt.ErrTimeout
		}
		return ctx.Err()
	}
	if err == nil {
		err = call.Store(&res)
	}
	if err != nil {
		var de dbus.Error
		if errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
			b.log().Warn("polkit: no polkit on the system bus", "err", err)
			return fmt.Errorf("%w: %v", prompt.ErrNoVerifier, err)
		}
		if errors.As(err, &de) && de.Name == errCancelled && ctx.Err() != nil {
			return ctx.Err()
		}
		b.log().Error("polkit: CheckAuthorization failed", "action", action, "err", err)
		return fmt.Errorf("polkit: %w", err)
	}
	// No RP ID or user name: logs name neither (README, "Running it").
	attrs := []any{"action", action, "operation", string(req.Operation),
		"authorized", res.IsAuthorized, "challenge", res.IsChallenge}
	switch {
	case res.IsAuthorized:
		b.log().Info("polkit: user verified", attrs...)
		return nil
	case res.Details["polkit.dismissed"] != "":
		b.log().Info("polkit: the dialog was dismissed", attrs...)
		return prompt.ErrDenied
	case res.IsChallenge:
		// With AllowUserInteraction, a challenge in the answer means
		// nobody showed one: no authentication agent in the session.
		b.log().Warn("polkit: no authentication agent answered in the session", attrs...)
		return prompt.ErrNoVerifier
	default:
		b.log().Info("polkit: user not verified", attrs...)
		return prompt.ErrNotVerified
	}
}

// cancel withdraws the dialog of the call with cancelID; it does not wait
// long, the request is already answered.
func (b *Backend) cancel(obj dbus.BusObject, cancelID string) {
	ctx, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	if err := obj.CallWithContext(ctx, authorityIfc+".CancelCheckAuthorization", 0, cancelID).Err; err != nil {
		b.log().Warn("polkit: CancelCheckAuthorization failed", "err", err)
	}
}

// LogindSubject names the session that session returns through logind:
// its leader process and its user. ok=false from session means no active
// session: prompt.ErrNoUser.
func LogindSubject(conn *dbus.Conn, session func() (id string, ok bool)) func(ctx context.Context) (Subject, error) {
	return func(ctx context.Context) (Subject, error) {
		id, ok := session()
		if !ok {
			return Subject{}, fmt.Errorf("%w: no active session", prompt.ErrNoUser)
		}
		var path dbus.ObjectPath
		login := conn.Object("org.freedesktop.login1", "/org/freedesktop/login1")
		if err := login.CallWithContext(ctx, "org.freedesktop.login1.Manager.GetSession", 0, id).Store(&path); err != nil {
			return Subject{}, fmt.Errorf("logind: session %q: %w", id, err)
		}
		s := conn.Object("org.freedesktop.login1", path)
		leader, err := s.GetProperty("org.freedesktop.login1.Session.Leader")
		if err != nil {
			return Subject{}, fmt.Errorf("logind: session %q: leader: %w", id, err)
		}
		user, err := s.GetProperty("org.freedesktop.login1.Session.User")
		if err != nil {
			return Subject{}, fmt.Errorf("logind: session %q: user: %w", id, err)
		}
		pid, ok1 := leader.Value().(uint32)
		u, ok2 := user.Value().([]any) // (uo)
		var uid uint32
		ok3 := ok2 && len(u) == 2
		if ok3 {
			uid, ok3 = u[0].(uint32)
		}
		if !ok1 || !ok3 || pid == 0 {
			return Subject{}, fmt.Errorf("logind: session %q: unexpected Leader %v / User %v", id, leader, user)
		}
		return ProcessSubject(pid, uid), nil
	}
}

// OnlyUser narrows subject to the sessions of uid: in owner mode the
// passkeys are the owner's, so only the owner may verify for them. Another
// user's active session is nobody to ask (prompt.ErrNoVerifier): polkit
// would have them prove who they are with their own password, and show
// them the owner's RP and account.
func OnlyUser(subject func(context.Context) (Subject, error), uid uint32) func(context.Context) (Subject, error) {
	return func(ctx context.Context) (Subject, error) {
		s, err := subject(ctx)
		if err != nil {
			return s, err
		}
		if !s.isUser(uid) {
			return Subject{}, fmt.Errorf("%w: the active session is not the owner's", prompt.ErrNoVerifier)
		}
		return s, nil
	}
}

// isUser reports whether the subject runs as uid.
func (s Subject) isUser(uid uint32) bool {
	v, ok := s.Details["uid"].Value().(int32)
	return ok && uint32(v) == uid
}

// Seat0Session is the active session on seat0 as logind reports it: a
// stand-in until the daemon's session tracker tells the backend.
func Seat0Session(conn *dbus.Conn) func() (string, bool) {
	return func() (string, bool) {
		v, err := conn.Object("org.freedesktop.login1", "/org/freedesktop/login1/seat/seat0").
			GetProperty("org.freedesktop.login1.Seat.ActiveSession")
		if err != nil {
			return "", false
		}
		s, ok := v.Value().([]any) // (so)
		if !ok || len(s) != 2 {
			return "", false
		}
		id, _ := s[0].(string)
		return id, id != ""
	}
}
