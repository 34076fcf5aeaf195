// Package session answers "who is the user?": it follows systemd-logind
// (org.freedesktop.login1 on the system bus) and reports the user whose
// session is in the foreground on seat0, the seat with the physical
// keyboard and screen, live, as a stream of States.
//
// A State is Active, with that user's uid and name, only when every one of
// these holds for seat0's ActiveSession, re-read from logind each time:
//
//   - the session is a user's (Class "user" or "user-early"): the login
//     screen's greeter, a lock-screen session, background and manager
//     sessions are not a user;
//   - it is local (Remote false): a remote session is never the seat's user;
//   - it is on seat0, logind calls it active (Active true, State "active")
//     and it has a screen or a console (Type "x11", "wayland", "mir" or "tty");
//   - its screen is not locked (see below).
//
// Anything else, including no session at all, logind gone from the bus,
// a malformed answer and an error, is "no user": Active false, with a short
// Reason for the log. The tracker fails closed.
//
// # A locked screen is no user
//
// While the foreground session's screen is locked (LockedHint true, or
// logind asked the session to lock with the Lock signal and neither an
// Unlock signal nor a LockedHint change has followed), the State is not
// Active (Locked says why): the daemon unplugs the key. Nobody at the
// keyboard can approve a request without unlocking first, and a web page
// left open in the background cannot reach the user's passkeys while the
// user is away. This is Windows Hello's model: its passkeys belong to the
// signed-in user and its WebAuthn dialog appears only on that user's
// unlocked desktop, so nothing can be approved while the workstation is
// locked, and unlocking brings it back. A USB key stays plugged in on a
// locked Windows machine, but that key is a separate device the user
// carries away; ours is the user's own platform key, so it follows the
// lock. The Lock signal counts on its own because it comes before the
// screen locker's LockedHint: the key goes away as soon as locking is
// asked for, not when the locker gets round to reporting it.
//
// # Hostile input
//
// Everything from D-Bus is treated as hostile. Signals are only triggers:
// the state itself is always re-read from logind with method calls to its
// well-known name, so a forged signal can at most cause a re-read. Signals
// are accepted only from logind's current unique name (or the bus for
// NameOwnerChanged), because any peer on the system bus can send a unicast
// signal with any path and interface. Replies are type-checked field by
// field; strings are bounded and restricted to what logind produces;
// unknown types and values are rejected as "no user", never a panic.
//
// # No logind, restarts
//
// New returns an error matching ErrNoLogind when there is no system bus
// socket or org.freedesktop.login1 neither has an owner nor is activatable
// (containers, CI, servers without logind): the daemon keeps its explicit
// single-owner mode. Any other error from New is transient (the bus refused
// or timed out): retry or fail.
//
// After New, the tracker never gives up and never reports errors on the
// stream: if logind leaves the bus, it reports no user and re-reads when
// logind comes back (NameOwnerChanged); if the bus connection drops (the
// bus restarted), it reports no user and reconnects with a backoff, then
// re-reads. The daemon only ever sees States.
//
// # How the daemon uses it
//
//	tr, err := session.New(ctx, session.Options{Logger: log})
//	if errors.Is(err, session.ErrNoLogind) {
//		// keep the explicit single-owner mode from the configuration
//	} else if err != nil {
//		return err
//	}
//	defer tr.Close()
//	for st := range tr.States() {
//		dev.Close() // unplug whatever was plugged in
//		if !st.Active {
//			log.Info("no user at seat0: key unplugged", "reason", st.Reason)
//			continue
//		}
//		// recreate the uhid device for st.UID: their keystore, their prompts
//		dev = plugInFor(st.UID, st.UserName)
//	}
//
// Layer: daemon. It owns one system-bus connection and only reads logind:
// it never calls a logind method that changes anything (no Lock, Activate,
// Terminate), never touches the hardware (uhid, TPM, keystore) or the
// protocol, and decides nothing about passkeys; what to do with a State is
// the daemon's (cmd/passkeyd) business.
package session
