package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/passkeyd/passkeyd/internal/buildinfo"
	"github.com/passkeyd/passkeyd/internal/daemon/config"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmt"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/daemon/pinentry"
	"github.com/passkeyd/passkeyd/internal/daemon/polkit"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/daemon/seat"
	"github.com/passkeyd/passkeyd/internal/daemon/session"
	"github.com/passkeyd/passkeyd/internal/daemon/users"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/hardware/uhid"
	"github.com/passkeyd/passkeyd/internal/manpage"
	"github.com/passkeyd/passkeyd/internal/protocol/attest"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "passkeyd",
		Short:         "A FIDO2 security key backed by the TPM",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version,
	}
	// Hidden: the package build writes the manual pages with it.
	root.AddCommand(newServeCommand(), manpage.Command())
	return root
}

type serveOptions struct {
	configPath  string
	stateDir    string
	tpmSpec     string
	transport   string
	prompt      string
	pinentry    string
	control     string
	owner       string
	users       string // auto, seat or owner: whose passkeys the key serves
	attestation string
	logLevel    string
	serveUser   string // --serve-user: a user's namespace on CTAPHID instead of the device's
	policy      config.Policy
	settings    []mgmtapi.Setting // the effective settings and their sources
}

// loadConfig merges the configuration file with the flags the command line
// set: a flag overrides the file, the file the default. The file must
// exist when --config names it; the default path may be missing (a
// hand-installed daemon runs on defaults).
func loadConfig(flags *pflag.FlagSet, path string) (serveOptions, error) {
	c, err := config.Load(path, flags.Changed("config"))
	if err != nil {
		return serveOptions{}, err
	}
	for _, name := range config.Flags() {
		if f := flags.Lookup(name); f != nil && f.Changed {
			if err := c.SetFlag(name, f.Value.String()); err != nil {
				return serveOptions{}, err
			}
		}
	}
	o := serveOptions{
		configPath: path, stateDir: c.StateDir, tpmSpec: c.TPM, transport: c.Transport, prompt: c.Prompt,
		pinentry: c.Pinentry, control: c.Control, owner: c.Owner, users: c.Users, attestation: c.Attestation, logLevel: c.LogLevel,
		policy: c.Policy,
	}
	for _, st := range c.Settings() {
		o.settings = append(o.settings, mgmtapi.Setting{Key: st.Key, Value: st.Value, Source: st.Source.String()})
	}
	return o, nil
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the authenticator",
		Example: `  # The simulation transport, with a private swtpm, for tests:
  passkeyd serve --state-dir /tmp/pk --tpm swtpm --transport udp:127.0.0.1:8111 --prompt approve-all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			eff, err := loadConfig(cmd.Flags(), o.configPath)
			if err != nil {
				return err
			}
			eff.serveUser = o.serveUser
			return serve(cmd.Context(), eff)
		},
	}
	d := config.Default()
	f := cmd.Flags()
	f.StringVar(&o.configPath, "config", config.DefaultPath, "configuration file (TOML; every setting below has a key there, and a flag overrides it); the default path may be missing")
	f.StringVar(&o.stateDir, "state-dir", d.StateDir, "directory holding the credential store and TPM-sealed device secrets")
	f.StringVar(&o.tpmSpec, "tpm", d.TPM, "TPM to use: auto (the TPM device /dev/tpmrm0, never a software TPM), device-or-swtpm (the device if it opens, else a private swtpm in the state dir), a device path, unix:PATH (raw-command socket), swtpm (private swtpm in the state dir), sim (in-process simulator, in test builds only: -tags tpmsim). With a private swtpm, a copy of the state dir is a copy of every passkey")
	f.StringVar(&o.transport, "transport", d.Transport, "CTAPHID transport: uhid (a USB FIDO key on /dev/hidrawN, through /dev/uhid), uhid:PATH (another uhid node), udp:HOST:PORT (simulation transport for test suites)")
	f.StringVar(&o.prompt, "prompt", d.Prompt, "how to ask for user presence and the PIN: agent (passkeyctl agent in the active user's session, the owner's in owner mode, through the control socket), pinentry (run pinentry directly: the daemon runs in a user session), polkit (the desktop's polkit dialog: the session's password or fingerprint verifies the user, no PIN), polkit+agent (polkit verifies, the agent asks for presence and for the PIN when polkit has no agent), deny (nobody to ask: refuse), approve-all (tests only: grants everything, never gives a PIN)")
	f.StringVar(&o.pinentry, "pinentry", d.Pinentry, "pinentry program for --prompt pinentry (default: pinentry on PATH)")
	f.StringVar(&o.control, "control", d.Control, "control socket for passkeyctl and the prompt agent; empty disables it")
	f.StringVar(&o.owner, "owner", d.Owner, "owner mode (see --users): the user (name or uid) whose passkeys the key serves, who may connect the prompt agent and manage them; none (the default): only root. Seat mode: the user whose passkeys are the device's own namespace; each other user gets one of their own")
	f.StringVar(&o.users, "users", d.Users, "whose passkeys the key serves: seat (the user of the active session on seat0, followed live; needs logind), owner (one set of passkeys, the owner's), auto (seat when logind is on the system bus and the transport is uhid, else owner)")
	f.StringVar(&o.attestation, "attestation", d.Attestation, "makeCredential's attestation: self (packed, signed by the new key: identifies nothing beyond the model; for RP IDs no web page can use, such as pam-u2f's pam://, with a certificate of that key issued by itself, which pamu2fcfg 1.1.0 requires), none, or tpm (a TPM attestation key certifies the new key; its certificate is issued by a local CA that \"passkeyctl attestation ca\" exports)")
	f.StringVar(&o.logLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	// Until the session tracker selects the user of the seat, a fixed
	// selection: the USB key serves this user's namespace (created on
	// first use) instead of the device's own (the owner's).
	f.StringVar(&o.serveUser, "serve-user", "", "serve this user's own passkey namespace (users/<ID> in the state dir) on the transport instead of the device's")
	if err := f.MarkHidden("serve-user"); err != nil {
		panic(err)
	}
	return cmd
}

func serve(ctx context.Context, o serveOptions) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	open, err := parseTransport(o.transport)
	if err != nil {
		return err
	}
	// Seat mode is decided first: `users = "seat"` without logind stops
	// here, before the TPM or the store is touched.
	tracker, err := seatTracker(ctx, o, log)
	if err != nil {
		return err
	}
	if tracker != nil {
		defer tracker.Close()
	}
	// who is the user the key serves now, as the seat loop has applied
	// it (not the tracker's newer news): prompts, polkit's subject and
	// the control socket follow the namespace actually served. It
	// changes before the new user's device exists (seat.Config.Serving);
	// applied, what info and the management service go by, once the
	// switch is done, so that "serving bob" means bob's key is there.
	// (Management changes are still safe in between: their prompts go
	// through who.)
	var who, applied seatState
	var sessionOf func() (string, bool)
	if tracker != nil {
		sessionOf = who.session
	}
	prompter, err := parsePrompt(o, log, sessionOf)
	if err != nil {
		return err
	}
	switch ctap2.AttestationMode(o.attestation) {
	case "", ctap2.AttestationSelf, ctap2.AttestationNone, ctap2.AttestationTPM:
	default:
		return fmt.Errorf("--attestation %q: want self, none or tpm", o.attestation)
	}
	owner, err := control.ParseOwner(o.owner)
	if err != nil {
		return fmt.Errorf("--owner: %w", err)
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	// The store first: its lock makes a second daemon on the same state
	// dir fail at once, before it touches the TPM.
	store, err := keystore.Open(o.stateDir)
	if err != nil {
		return err
	}
	defer store.Close()
	t, err := tpm.Open(tpm.Config{Spec: o.tpmSpec, StateDir: o.stateDir, Logger: log})
	if err != nil {
		return fmt.Errorf("open TPM %q: %w", o.tpmSpec, err)
	}
	defer t.Close()
	if t.Info().Software {
		// Never silent: whoever copies the state dir can sign as every
		// passkey, and guess short PINs offline.
		log.Warn(mgmtapi.SoftwareTPMWarning, "tpm", t.Info().Kind, "state_dir", o.stateDir,
			"why", "the TPM's seeds are files in the state dir: a copy of it signs as every passkey without the PIN, and short PINs can be guessed offline")
	}
	cfg := ctap2.Config{TPM: t, Prompt: prompter, Logger: log, Attestation: ctap2.AttestationMode(o.attestation),
		Policy: ctap2.AdminPolicy{AlwaysUV: o.policy.AlwaysUV, MinPINLength: o.policy.MinPINLength, MinPINLengthRPs: o.policy.MinPINLengthRPs}}
	var attester *attest.TPMAttester
	if cfg.Attestation == ctap2.AttestationTPM {
		// Created once (the CA and the attestation key) in the device
		// store and kept across restarts and resets, every user's too: a
		// fleet trusts the CA certificate.
		if attester, err = attest.LoadTPMAttester(t, store, ctap2.AAGUID, time.Now()); err != nil {
			return fmt.Errorf("--attestation tpm: %w", err)
		}
		cfg.Attester = attester
	}
	// The device store's own namespace is the owner's: the state dir of
	// a daemon from before namespaces keeps every passkey where it is.
	namespaces, err := users.Open(users.Config{StateDir: o.stateDir, Device: store, Auth: cfg, Owner: ownerIdentity(owner)})
	if err != nil {
		return err
	}
	defer namespaces.Close()
	auth := namespaces.Default()
	served := auth // what the transport serves in owner mode
	if o.serveUser != "" {
		u, err := user.Lookup(o.serveUser)
		if err != nil {
			return fmt.Errorf("--serve-user: no user %q", o.serveUser)
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return fmt.Errorf("--serve-user: user %q has a non-numeric uid %q", o.serveUser, u.Uid)
		}
		if served, err = namespaces.Activate(uint32(uid), u.Username); err != nil {
			return fmt.Errorf("--serve-user: %w", err)
		}
		log.Info("serving one user's passkey namespace", "uid", uid)
	}
	// The control socket after the store's lock, so that a second daemon
	// stops there and never touches the first one's socket. Only the
	// agent prompt cannot do without it.
	var ctl *net.UnixListener
	if o.control != "" {
		ctl, err = control.Listen(o.control)
		if err != nil {
			if _, agent := sessionAgent(prompter); agent {
				return fmt.Errorf("--control: %w", err)
			}
			log.Warn("no control socket: passkeyctl cannot reach this daemon", "err", err)
		} else {
			defer ctl.Close()
		}
	}
	var dev reportDevice
	switch {
	case tracker == nil:
		if dev, err = open(); err != nil {
			return err
		}
		defer dev.Close()
	case isUHID(o.transport):
		// Seat mode creates the device only when a user is active: a
		// machine without /dev/uhid (or without the permission) would
		// otherwise run with a key that never appears, saying so only
		// at each login. Stop here with the line owner mode gives.
		path, _ := uhidPath(o.transport)
		if err := uhid.Probe(path); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if dev != nil {
		go func() {
			<-ctx.Done()
			dev.Close() // unblocks ReadReport
		}()
	}
	agent, hasAgent := sessionAgent(prompter)
	// privileged: who may use the agent and the management operations
	// that prompt, and keeps reserved control connections. In owner mode
	// root and the owner; in seat mode the active user and root (the
	// management service then decides per caller itself, with a reason,
	// and root is never an agent).
	privileged := control.OwnerOrRoot(owner)
	agentAllowed := privileged
	if tracker != nil {
		privileged = func(p control.Peer) bool { return p.UID == 0 || who.isActive(p.UID) }
		agentAllowed = control.Anyone // Admit refuses with a reason the agent understands
		if hasAgent {
			agent.Admit = func(uid uint32) error {
				if !who.isActive(uid) {
					return fmt.Errorf("%w: uid %d is not the user of the active session on seat0", prompt.ErrAgentNotActive, uid)
				}
				return nil
			}
			agent.OnePerUser = true
		}
	}
	if ctl != nil {
		csrv := control.NewServer(log)
		// Root and the owner (the active user) keep slots that other
		// users cannot take.
		csrv.Reserve(privileged)
		csrv.Handle("version", control.Anyone, func(context.Context, control.Peer, json.RawMessage) (any, error) {
			return map[string]string{"version": buildinfo.Version}, nil
		})
		svc := mgmt.Service{Auth: auth, TPM: t.Info(), Version: buildinfo.Version, StateDir: o.stateDir,
			Transport: o.transport, Prompt: o.prompt, Settings: o.settings, Users: namespaces, Mode: mgmtapi.ModeOwner}
		if attester != nil {
			svc.AttestationCA = attester.CACertificate()
		}
		if tracker != nil {
			// Each user manages their own passkeys; what prompts is
			// the active user's only, since prompts go to their session.
			svc.PerUser, svc.Mode, svc.Seat = true, mgmtapi.ModeSeat, applied.identity
		}
		svc.Register(csrv, privileged)
		if hasAgent {
			csrv.HandleRefusableStream("agent", agentAllowed, func(ctx context.Context, p control.Peer, _ json.RawMessage, s *control.Stream) error {
				err := agent.AttachUID(ctx, s, p.UID)
				if refusal := agentRefusal(err); refusal != nil {
					return refusal // logged by the agent, once while it repeats
				}
				log.Info("prompt agent disconnected", "uid", p.UID, "pid", p.PID)
				return err
			})
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := csrv.Serve(ctx, ctl); err != nil {
				log.Error("control socket failed", "err", err)
			}
		}()
		defer func() { stop(); <-served }() // stop ends Serve
	}
	info := t.Info()
	hid := ctaphid.Config{
		Capabilities: ctaphid.CapWink | ctaphid.CapCBOR,
		Version:      [3]byte{0, 1, 0},
		Logger:       log,
	}
	if tracker != nil {
		log.Info("passkeyd serving the active user at seat0", "version", buildinfo.Version, "transport", o.transport, "tpm", info.Kind, "state_dir", o.stateDir)
		err = seat.Run(ctx, seat.Config{
			States: tracker.States(), Users: namespaces, HID: hid, Logger: log,
			Open: func() (seat.Device, error) { return open() },
			// who changes before the new user's device exists: a
			// request on it never prompts the previous user.
			Serving: who.set,
			Switched: func(st session.State) {
				who.set(st) // also another session of the same user
				applied.set(st)
				if hasAgent {
					// Prompts go only to the active user: the previous
					// user's agent is disconnected (it reconnects, and
					// is admitted, once its user is active again).
					agent.Restrict(st.Active, st.UID)
				}
			},
		})
		if ctx.Err() != nil {
			log.Info("passkeyd stopping")
			return nil
		}
		return err
	}
	log.Info("passkeyd serving", "version", buildinfo.Version, "transport", o.transport, "tpm", info.Kind, "state_dir", o.stateDir)
	srv := ctaphid.NewServer(ctap2.HIDHandler(served), hid)
	err = srv.Serve(ctx, dev)
	if ctx.Err() != nil {
		log.Info("passkeyd stopping")
		return nil
	}
	return err
}

// seatState is who the seat loop serves now; the zero value is nobody.
type seatState struct {
	mu sync.Mutex
	st session.State
}

func (w *seatState) set(st session.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st = st
}

// active is the served user's uid; ok false when the key is unplugged.
func (w *seatState) active() (uid uint32, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.UID, w.st.Active
}

// identity is the served user as logind names them.
func (w *seatState) identity() (users.Identity, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return users.Identity{UID: w.st.UID, Name: w.st.UserName}, w.st.Active
}

func (w *seatState) isActive(uid uint32) bool {
	a, ok := w.active()
	return ok && a == uid
}

// session is the served user's logind session, for polkit's subject.
func (w *seatState) session() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.SessionID, w.st.Active
}

// newTracker follows logind; tests replace it.
var newTracker = session.New

// seatTracker decides the mode from --users: a tracker of seat0 for seat
// mode, nil for owner mode. "auto" is seat mode only on a desktop: the
// uhid transport (the simulation transport serves test suites, one fixed
// user) and logind on the system bus; "seat" without logind is an error.
func seatTracker(ctx context.Context, o serveOptions, log *slog.Logger) (*session.Tracker, error) {
	switch o.users {
	case "", "owner": // "": callers that predate the setting
		return nil, nil
	case "auto", "seat":
	default:
		return nil, fmt.Errorf("--users %q: want auto, seat or owner", o.users)
	}
	if o.serveUser != "" {
		if o.users == "seat" {
			return nil, errors.New("--serve-user is a fixed selection: it cannot be combined with --users seat")
		}
		return nil, nil
	}
	if o.users == "auto" && !isUHID(o.transport) {
		return nil, nil
	}
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tr, err := newTracker(tctx, session.Options{Logger: log})
	switch {
	case errors.Is(err, session.ErrNoLogind) && o.users == "auto":
		log.Info("no logind on the system bus: serving the owner's passkeys (users = owner)")
		return nil, nil
	case errors.Is(err, session.ErrNoLogind):
		return nil, errors.New(`--users seat: logind (org.freedesktop.login1) is not on the system bus; on a machine without logind set users = "owner"`)
	case err != nil:
		return nil, fmt.Errorf("--users %s: follow logind: %w", o.users, err)
	}
	return tr, nil
}

func isUHID(transport string) bool {
	_, ok := uhidPath(transport)
	return ok
}

// uhidPath is the uhid node --transport names: "" (uhid.DefaultPath) for
// "uhid", PATH for "uhid:PATH"; ok false for another transport.
func uhidPath(transport string) (path string, ok bool) {
	if transport == "uhid" {
		return "", true
	}
	path, ok = strings.CutPrefix(transport, "uhid:")
	return path, ok
}

// agentRefusal is the control socket's answer to an agent AttachUID
// refused, nil when it was not refused. A user who is not active retries
// (they may become active); a second agent of the same user is a
// configuration error the agent reports and exits on.
func agentRefusal(err error) error {
	switch {
	case errors.Is(err, prompt.ErrAgentNotActive):
		return &control.Error{Code: control.CodeNotActive, Message: err.Error()}
	case errors.Is(err, prompt.ErrAgentConnected):
		return &control.Error{Code: control.CodeAgentConnected, Message: err.Error()}
	}
	return nil
}

// ownerIdentity is the owner (a uid, control.NoOwner for none) as a user
// of the namespaces: uid and account name, or the uid alone when no
// account has it.
func ownerIdentity(owner int) *users.Identity {
	if owner < 0 {
		return nil
	}
	id := &users.Identity{UID: uint32(owner)}
	if u, err := user.LookupId(strconv.Itoa(owner)); err == nil {
		id.Name = u.Username
	}
	return id
}

// reportDevice is a CTAPHID device the daemon can close.
type reportDevice interface {
	ctaphid.Device
	Close() error
}

// parseTransport turns --transport into an opener. Nothing is created or
// bound unless the flag names it, and only when the opener runs (after the
// TPM and the store are up), so a bad TPM never leaves a dangling device.
func parseTransport(spec string) (func() (reportDevice, error), error) {
	switch {
	case spec == "":
		return nil, errors.New("--transport is required: uhid or udp:HOST:PORT")
	case isUHID(spec):
		path, _ := uhidPath(spec)
		if spec != "uhid" && path == "" {
			return nil, fmt.Errorf("--transport %q: want uhid or uhid:PATH", spec)
		}
		return func() (reportDevice, error) {
			// slog.Default: parseTransport has no access to the
			// daemon's logger.
			d, err := uhid.Open(uhid.Config{Path: path, Logger: slog.Default()})
			if err != nil {
				return nil, err // one line naming the fix, from uhid.Open
			}
			return d, nil
		}, nil
	case strings.HasPrefix(spec, "udp:"):
		addr := strings.TrimPrefix(spec, "udp:")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--transport %q: want udp:HOST:PORT", spec)
		}
		return func() (reportDevice, error) {
			d, err := ctaphid.ListenUDP(addr)
			if err != nil {
				return nil, fmt.Errorf("simulation transport: %w", err)
			}
			return d, nil
		}, nil
	default:
		return nil, fmt.Errorf("--transport %q: unknown transport (want uhid, uhid:PATH or udp:HOST:PORT)", spec)
	}
}

// approveAllDelay keeps approve-all slow enough that clients see at
// least one KEEPALIVE, as they would with a person.
const approveAllDelay = 150 * time.Millisecond

// parsePrompt turns --prompt into the backend that asks the person. With
// no way to ask anyone (no agent connected, no pinentry that can show),
// every backend but approve-all denies presence and UV, never grants them.
//
// session is the logind session polkit asks about (seat mode: the served
// user's); nil asks logind for seat0's active session each time.
func parsePrompt(o serveOptions, log *slog.Logger, session func() (string, bool)) (prompt.Prompter, error) {
	if o.pinentry != "" && o.prompt != "pinentry" {
		return nil, fmt.Errorf("--pinentry %q: only for --prompt pinentry", o.pinentry)
	}
	switch o.prompt {
	case "agent", "polkit+agent":
		if o.control == "" {
			return nil, fmt.Errorf("--prompt %s: needs the control socket (--control PATH) for the agent to connect to", o.prompt)
		}
		if o.owner == "" && session == nil {
			log.Warn("--prompt " + o.prompt + " without --owner: only an agent running as root is accepted")
		}
		agent := &prompt.Agent{Logger: log}
		if o.prompt == "agent" {
			return agent, nil
		}
		pk, err := polkitBackend(log, session, o.owner)
		if err != nil {
			// A server without D-Bus or polkit must still start: the
			// agent alone asks, as with prompt = "agent".
			log.Warn("--prompt polkit+agent: polkit is unavailable, asking through the agent only", "err", err)
			return agent, nil
		}
		return prompt.Both{Verifier: pk, Fallback: agent}, nil
	case "polkit":
		pk, err := polkitBackend(log, session, o.owner)
		if err != nil {
			return nil, fmt.Errorf("--prompt polkit: %w", err)
		}
		return pk, nil
	case "pinentry":
		return &pinentry.Prompter{Path: o.pinentry}, nil
	case "deny":
		return prompt.DenyAll{}, nil
	case "approve-all":
		log.Warn("--prompt approve-all: every request is approved without asking anyone; use only for tests")
		return prompt.ApproveAll{Delay: approveAllDelay, Logger: log}, nil
	default:
		return nil, fmt.Errorf("--prompt %q: want agent, pinentry, polkit, polkit+agent, deny or approve-all", o.prompt)
	}
}

// polkitBackend asks polkit on the system bus about session (nil, owner
// mode: the active session on seat0 as logind reports it, and only when
// it is the owner's, root's without an owner: the passkeys are theirs).
// polkitd must be on the bus or activatable: without it every check would
// fail at prompt time.
func polkitBackend(log *slog.Logger, session func() (string, bool), owner string) (*polkit.Backend, error) {
	uid := 0 // no owner: root only, as for the agent
	if session == nil {
		n, err := control.ParseOwner(owner)
		if err != nil {
			return nil, fmt.Errorf("--owner: %w", err)
		}
		uid = max(n, 0)
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("system bus: %w", err)
	}
	if err := polkitPresent(conn); err != nil {
		conn.Close()
		return nil, err
	}
	var subject func(context.Context) (polkit.Subject, error)
	if session == nil {
		subject = polkit.OnlyUser(polkit.LogindSubject(conn, polkit.Seat0Session(conn)), uint32(uid))
	} else {
		subject = polkit.LogindSubject(conn, session)
	}
	return &polkit.Backend{Conn: conn, Subject: subject, Logger: log}, nil
}

// polkitName is polkitd's well-known name on the system bus.
const polkitName = "org.freedesktop.PolicyKit1"

// polkitPresent checks that polkitd owns its name or can be activated.
func polkitPresent(conn *dbus.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bus := conn.BusObject()
	var owned bool
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, polkitName).Store(&owned); err != nil {
		return fmt.Errorf("system bus: NameHasOwner: %w", err)
	}
	if owned {
		return nil
	}
	var names []string
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&names); err != nil {
		return fmt.Errorf("system bus: ListActivatableNames: %w", err)
	}
	if slices.Contains(names, polkitName) {
		return nil
	}
	return fmt.Errorf("polkitd (%s) is not on the system bus", polkitName)
}

// sessionAgent is the session agent behind p, if p asks through one.
func sessionAgent(p prompt.Prompter) (*prompt.Agent, bool) {
	switch p := p.(type) {
	case *prompt.Agent:
		return p, true
	case prompt.Both:
		a, ok := p.Fallback.(*prompt.Agent)
		return a, ok
	}
	return nil, false
}
