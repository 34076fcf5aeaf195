package main

import (
	"context"
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

	"github.com/passkeyd/passkeyd/cmd/internal/buildinfo"
	"github.com/passkeyd/passkeyd/ctap2"
	"github.com/passkeyd/passkeyd/ctap2/ctaphid"
	"github.com/passkeyd/passkeyd/ctap2/prompt"
	"github.com/passkeyd/passkeyd/keystore"
	"github.com/passkeyd/passkeyd/tpm"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "passkeyd",
		Short:         "A FIDO2 security key backed by the TPM",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version,
	}
	root.AddCommand(newServeCommand())
	return root
}

type serveOptions struct {
	stateDir  string
	tpmSpec   string
	transport string
	prompt    string
	logLevel  string
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
	f.StringVar(&o.tpmSpec, "tpm", "auto", "TPM to use: auto, a device path (/dev/tpmrm0), unix:PATH (raw-command socket), swtpm (private swtpm in the state dir), sim (in-process simulator)")
	f.StringVar(&o.transport, "transport", "", "CTAPHID transport: udp:HOST:PORT (simulation transport)")
	f.StringVar(&o.prompt, "prompt", "deny", "how to ask for user presence: deny (nobody to ask: refuse), approve-all (tests only: grants everything)")
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
	prompter, err := parsePrompt(o.prompt, log)
	if err != nil {
		return err
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
	auth, err := ctap2.New(ctap2.Config{TPM: t, Store: store, Prompt: prompter, Logger: log})
	if err != nil {
		return err
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

// parseTransport turns --transport into an opener. Nothing is bound
// unless the flag names it.
func parseTransport(spec string) (func() (reportDevice, error), error) {
	switch {
	case spec == "":
		return nil, errors.New("--transport is required: udp:HOST:PORT")
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
		return nil, fmt.Errorf("--transport %q: unknown transport (want udp:HOST:PORT)", spec)
	}
}

// approveAllDelay keeps approve-all slow enough that clients see at
// least one KEEPALIVE, as they would with a person.
const approveAllDelay = 150 * time.Millisecond

func parsePrompt(name string, log *slog.Logger) (prompt.Prompter, error) {
	switch name {
	case "deny":
		return prompt.DenyAll{}, nil
	case "approve-all":
		log.Warn("--prompt approve-all: every request is approved without asking anyone; use only for tests")
		return prompt.ApproveAll{Delay: approveAllDelay, Logger: log}, nil
	default:
		return nil, fmt.Errorf("--prompt %q: want deny or approve-all", name)
	}
}
