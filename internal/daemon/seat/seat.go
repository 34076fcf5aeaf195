// Package seat is passkeyd's seat mode: the USB key serves the passkeys of
// the user whose session is in the foreground on seat0, and follows that
// user live.
//
// Run reads States (from session.Tracker in the daemon, from a channel in
// tests) and, for each one that changes who is served:
//
//   - unplugs the key: closes the device (uhid destroys it, so a hidraw
//     descriptor opened in the old session stops working instead of
//     talking to the next user's passkeys), stops its CTAPHID server and
//     waits for Serve to return, then deactivates the namespace;
//   - for an active user, activates their namespace (created on first
//     use, power-cycled) and plugs in a NEW device with a new CTAPHID
//     server: to the browser it is another key, plugged in now.
//
// With nobody active (the login screen, a locked screen, no session,
// logind gone) the key stays unplugged. The old device is always closed
// before the next one is opened, so two users' keys never coexist.
//
// Layer: daemon. The device opener and the state source are injected, so
// that the loop runs without /dev/uhid and without logind in tests.
package seat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

// Device is a CTAPHID device the loop can unplug.
type Device interface {
	ctaphid.Device
	Close() error
}

// Namespaces selects the served user's passkeys (*users.Users).
type Namespaces interface {
	Activate(uid uint32, name string) (*ctap2.Authenticator, error)
	Deactivate()
}

// Config wires Run.
type Config struct {
	// States is who is at seat0, in order; Run ends when it is closed.
	States <-chan session.State
	// Users are the per-user namespaces.
	Users Namespaces
	// Open creates a new device (a uhid device, the UDP simulation
	// socket, a test pipe). It is called once per plug-in.
	Open func() (Device, error)
	// HID configures each CTAPHID server; its Logger defaults to Logger.
	HID ctaphid.Config
	// Serving, when set, is called with every State that changes whose
	// key it is, once the previous user's device is closed and before
	// the new user's namespace is activated and their device created:
	// the daemon's idea of who is served (whom prompts and polkit ask,
	// who may manage passkeys) must never lag behind the device the
	// host sees. It must not block for long.
	Serving func(session.State)
	// Switched, when set, is called after every State has been applied
	// (plugged in or unplugged) with that State: the daemon drops prompt
	// agents of the previous user there. It must not block for long.
	Switched func(session.State)
	// Logger receives the switches; nil discards them.
	Logger *slog.Logger
}

// plugged is the key as one user sees it: their device and its server.
type plugged struct {
	uid    uint32
	name   string
	dev    Device
	cancel context.CancelFunc
	done   chan error // the Serve result, once
}

// Run follows cfg.States until ctx is done or the stream closes, and
// unplugs the key before it returns. It returns nil then; an error means
// a CTAPHID server failed on its own (the device broke), which the daemon
// treats like the single-owner server failing: it exits and systemd
// restarts it.
func Run(ctx context.Context, cfg Config) error {
	if cfg.States == nil || cfg.Users == nil || cfg.Open == nil {
		return errors.New("seat: States, Users and Open are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.HID.Logger == nil {
		cfg.HID.Logger = log
	}
	var cur *plugged
	defer func() { unplug(cfg, log, &cur, "passkeyd stopping") }()
	for {
		var failed <-chan error
		if cur != nil {
			failed = cur.done
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			// Serve ended without being asked to: the device broke.
			uid := cur.uid
			cur.done = nil // already received
			unplug(cfg, log, &cur, "the device failed")
			return fmt.Errorf("seat: serving uid %d: %w", uid, err)
		case st, ok := <-cfg.States:
			if !ok {
				return nil
			}
			apply(ctx, cfg, log, &cur, st)
			if cfg.Switched != nil {
				cfg.Switched(st)
			}
		}
	}
}

// apply makes the key match st.
func apply(ctx context.Context, cfg Config, log *slog.Logger, cur **plugged, st session.State) {
	if st.Active && *cur != nil && (*cur).uid == st.UID && (*cur).name == st.UserName {
		// The same user in another session of theirs (or a repeated
		// State): the device is already theirs. Re-plugging would only
		// break a registration in progress.
		return
	}
	if !st.Active {
		unplug(cfg, log, cur, st.Reason)
		serving(cfg, st)
		return
	}
	unplug(cfg, log, cur, "another user is active")
	serving(cfg, st)
	auth, err := cfg.Users.Activate(st.UID, st.UserName)
	if err != nil {
		// Fail closed: no key rather than another user's.
		log.Error("seat: cannot open the user's passkeys: key unplugged", "uid", st.UID, "err", err)
		return
	}
	dev, err := cfg.Open()
	if err != nil {
		cfg.Users.Deactivate()
		log.Error("seat: cannot create the key's device: key unplugged", "uid", st.UID, "err", err)
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	p := &plugged{uid: st.UID, name: st.UserName, dev: dev, cancel: cancel, done: make(chan error, 1)}
	srv := ctaphid.NewServer(ctap2.HIDHandler(auth), cfg.HID)
	go func() { p.done <- srv.Serve(sctx, dev) }()
	*cur = p
	log.Info("seat: key plugged in for the active user", "uid", st.UID, "session", st.SessionID) // a uid, never the user name
}

func serving(cfg Config, st session.State) {
	if cfg.Serving != nil {
		cfg.Serving(st)
	}
}

// unplug closes the current device, waits for its server and deactivates
// the namespace; nothing when the key is unplugged already.
func unplug(cfg Config, log *slog.Logger, cur **plugged, why string) {
	p := *cur
	if p == nil {
		return
	}
	*cur = nil
	// Close first: the device is gone for the host before anything else
	// (and a blocked ReadReport returns), then stop the server.
	if err := p.dev.Close(); err != nil {
		log.Warn("seat: closing the key's device", "uid", p.uid, "err", err)
	}
	p.cancel()
	if p.done != nil {
		<-p.done
	}
	cfg.Users.Deactivate()
	log.Info("seat: key unplugged", "uid", p.uid, "why", why)
}
