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
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/internal/buildinfo"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmt"
	"github.com/passkeyd/passkeyd/internal/daemon/pinentry"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
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
	stateDir    string
	tpmSpec     string
	transport   string
	prompt      string
	pinentry    string
	control     string
	owner       string
	attestation string
	logLevel    string
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the authenticator",
		Example: `  # The simulation transport, with a private swtpm, for tests:
  passkeyd serve --state-dir /tmp/pk --tpm swtpm --transport udp:127.0.0.1:8111 --prompt approve-all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return serve(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.stateDir, "state-dir", "/var/lib/passkeyd", "directory holding the credential store and TPM-sealed device secrets")
	f.StringVar(&o.tpmSpec, "tpm", "auto", "TPM to use: auto (the TPM device /dev/tpmrm0, never a software TPM), device-or-swtpm (the device if it opens, else a private swtpm in the state dir), a device path, unix:PATH (raw-command socket), swtpm (private swtpm in the state dir), sim (in-process simulator). With a private swtpm, a copy of the state dir is a copy of every passkey")
	f.StringVar(&o.transport, "transport", "uhid", "CTAPHID transport: uhid (a USB FIDO key on /dev/hidrawN, through /dev/uhid), uhid:PATH (another uhid node), udp:HOST:PORT (simulation transport for test suites)")
	f.StringVar(&o.prompt, "prompt", "agent", "how to ask for user presence and the PIN: agent (passkeyctl agent in the owner's session, through the control socket), pinentry (run pinentry directly: the daemon runs in a user session), deny (nobody to ask: refuse), approve-all (tests only: grants everything, never gives a PIN)")
	f.StringVar(&o.pinentry, "pinentry", "", "pinentry program for --prompt pinentry (default: pinentry on PATH)")
	f.StringVar(&o.control, "control", control.DefaultPath, "control socket for passkeyctl and the prompt agent; empty disables it")
	f.StringVar(&o.owner, "owner", "", "user (name or uid) this device serves: may connect a prompt agent and manage passkeys; default none (root only)")
	f.StringVar(&o.attestation, "attestation", string(ctap2.AttestationSelf), "makeCredential's attestation: self (packed, signed by the new key: identifies nothing beyond the model), none, or tpm (a TPM attestation key certifies the new key; its certificate is issued by a local CA that `passkeyctl attestation ca` exports)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
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
	prompter, err := parsePrompt(o, log)
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
		log.Warn(mgmt.SoftwareTPMWarning, "tpm", t.Info().Kind, "state_dir", o.stateDir,
			"why", "the TPM's seeds are files in the state dir: a copy of it signs as every passkey without the PIN, and short PINs can be guessed offline")
	}
	cfg := ctap2.Config{TPM: t, Store: store, Prompt: prompter, Logger: log, Attestation: ctap2.AttestationMode(o.attestation)}
	var attester *attest.TPMAttester
	if cfg.Attestation == ctap2.AttestationTPM {
		// Created once (the CA and the attestation key) and kept across
		// restarts and resets: a fleet trusts the CA certificate.
		if attester, err = attest.LoadTPMAttester(t, store, ctap2.AAGUID, time.Now()); err != nil {
			return fmt.Errorf("--attestation tpm: %w", err)
		}
		cfg.Attester = attester
	}
	auth, err := ctap2.New(cfg)
	if err != nil {
		return err
	}
	// The control socket after the store's lock, so that a second daemon
	// stops there and never touches the first one's socket. Only the
	// agent prompt cannot do without it.
	var ctl *net.UnixListener
	if o.control != "" {
		ctl, err = control.Listen(o.control)
		if err != nil {
			if _, agent := prompter.(*prompt.Agent); agent {
				return fmt.Errorf("--control: %w", err)
			}
			log.Warn("no control socket: passkeyctl cannot reach this daemon", "err", err)
		} else {
			defer ctl.Close()
		}
	}
	dev, err := open()
	if err != nil {
		return err
	}
	defer dev.Close()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		dev.Close() // unblocks ReadReport
	}()
	if ctl != nil {
		csrv := control.NewServer(log)
		// Root and the owner keep slots that other users cannot take.
		csrv.Reserve(control.OwnerOrRoot(owner))
		csrv.Handle("version", control.Anyone, func(context.Context, control.Peer, json.RawMessage) (any, error) {
			return map[string]string{"version": buildinfo.Version}, nil
		})
		svc := mgmt.Service{Auth: auth, TPM: t.Info(), Version: buildinfo.Version, StateDir: o.stateDir,
			Transport: o.transport, Prompt: o.prompt}
		if attester != nil {
			svc.AttestationCA = attester.CACertificate()
		}
		svc.Register(csrv, control.OwnerOrRoot(owner))
		if a, ok := prompter.(*prompt.Agent); ok {
			csrv.HandleStream("agent", control.OwnerOrRoot(owner), func(ctx context.Context, p control.Peer, _ json.RawMessage, s *control.Stream) error {
				log.Info("prompt agent connected", "uid", p.UID, "pid", p.PID)
				defer log.Info("prompt agent disconnected", "uid", p.UID, "pid", p.PID)
				return a.Attach(ctx, s)
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
	log.Info("passkeyd serving", "version", buildinfo.Version, "transport", o.transport, "tpm", info.Kind, "state_dir", o.stateDir)
	srv := ctaphid.NewServer(auth, ctaphid.Config{
		Capabilities: ctaphid.CapWink | ctaphid.CapCBOR,
		Version:      [3]byte{0, 1, 0},
		Logger:       log,
	})
	err = srv.Serve(ctx, dev)
	if ctx.Err() != nil {
		log.Info("passkeyd stopping")
		return nil
	}
	return err
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
	case spec == "uhid" || strings.HasPrefix(spec, "uhid:"):
		path := strings.TrimPrefix(strings.TrimPrefix(spec, "uhid"), ":")
		if strings.HasPrefix(spec, "uhid:") && path == "" {
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
func parsePrompt(o serveOptions, log *slog.Logger) (prompt.Prompter, error) {
	if o.pinentry != "" && o.prompt != "pinentry" {
		return nil, fmt.Errorf("--pinentry %q: only for --prompt pinentry", o.pinentry)
	}
	switch o.prompt {
	case "agent":
		if o.control == "" {
			return nil, errors.New("--prompt agent: needs the control socket (--control PATH) for the agent to connect to")
		}
		if o.owner == "" {
			log.Warn("--prompt agent without --owner: only an agent running as root is accepted")
		}
		return &prompt.Agent{Logger: log}, nil
	case "pinentry":
		return &pinentry.Prompter{Path: o.pinentry}, nil
	case "deny":
		return prompt.DenyAll{}, nil
	case "approve-all":
		log.Warn("--prompt approve-all: every request is approved without asking anyone; use only for tests")
		return prompt.ApproveAll{Delay: approveAllDelay, Logger: log}, nil
	default:
		return nil, fmt.Errorf("--prompt %q: want agent, pinentry, deny or approve-all", o.prompt)
	}
}
