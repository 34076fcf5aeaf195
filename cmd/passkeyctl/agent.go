package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/pinentry"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
)

// exitConfig is the exit status for a refusal that retrying cannot fix
// (EX_CONFIG): the shipped unit has RestartPreventExitStatus=78 so that
// systemd does not restart an agent the daemon will never accept.
const exitConfig = 78

// exitError carries an exit status to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type agentOptions struct {
	pinentry string
	terminal bool
}

func newAgentCommand(g *globalOptions) *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Show passkeyd's prompts in this session (presence and PIN)",
		Long: `agent connects to passkeyd's control socket and shows each request of the
security key (register, sign in, PIN) to the person at this session:
through pinentry (the session's flavour), or on this terminal with
--terminal. It reconnects when the daemon restarts. In seat mode (the
default where logind runs) passkeyd accepts one agent per user, and only
the agent of the user whose session is active on seat0: another user's
agent is refused and keeps retrying until its user is at the seat again,
and a second agent of the same user exits with status 78. In owner mode
it accepts the agent of root and of the owner.

The agent in turn shows prompts only from a daemon it trusts: one running
as root, as you, as the system user "passkeyd" (the shipped unit's User=)
when that account exists, or as the user given to --daemon-user. A control
socket served by anyone else could be phishing for the PIN: the agent
refuses it and exits with status 78.`,
		Example: `  systemctl --user enable --now passkeyctl-agent.service
  passkeyctl agent --terminal
  passkeyctl agent --daemon-user 990    # a daemon running as uid 990`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.terminal && o.pinentry != "" {
				return errors.New("--terminal and --pinentry exclude each other")
			}
			var ui prompt.PINEntry
			if o.terminal {
				if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
					return errors.New("--terminal needs a terminal on standard input")
				}
				ui = &prompt.Terminal{In: os.Stdin, Out: cmd.OutOrStdout()}
			} else {
				ui = &pinentry.Prompter{Path: o.pinentry}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			trust, err := g.trust()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			err = runAgentTrusting(ctx, g.control, ui, log, trust)
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, control.ErrNotAllowed) || errors.Is(err, control.ErrUntrusted) || refusedAs(err, control.CodeAgentConnected) {
				// Retrying cannot help: the unit does not restart (78).
				return &exitError{code: exitConfig, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.pinentry, "pinentry", "", "pinentry program to show prompts with (default: pinentry on PATH)")
	f.BoolVar(&o.terminal, "terminal", false, "ask on this terminal instead of through pinentry")
	return cmd
}

// Reconnection backoff: quick at first, so that a prompt right after the
// daemon restarts finds the agent, and bounded, so that an agent waiting
// for a daemon that is not installed costs nothing.
var (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// runAgent is runAgentTrusting with the default trust (no --daemon-user).
func runAgent(ctx context.Context, path string, ui prompt.PINEntry, log *slog.Logger) error {
	return runAgentTrusting(ctx, path, ui, log, control.DefaultTrust())
}

// runAgentTrusting keeps an agent session with the daemon at path,
// reconnecting with backoff, until ctx is done, the daemon refuses the
// agent or the agent refuses the daemon (trust).
func runAgentTrusting(ctx context.Context, path string, ui prompt.PINEntry, log *slog.Logger, trust *control.Trust) error {
	backoff := minBackoff
	reported := ""
	for {
		connected, err := agentSession(ctx, path, ui, log, trust)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, control.ErrNotAllowed) || errors.Is(err, control.ErrUntrusted) || refusedAs(err, control.CodeAgentConnected) {
			return err
		}
		if connected {
			backoff = minBackoff
			reported = ""
		}
		// Say each kind of failure once, not on every retry.
		msg := "passkeyd closed the connection"
		if err != nil {
			msg = err.Error()
		}
		if msg != reported {
			log.Warn("not connected to passkeyd; retrying", "reason", msg)
			reported = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
		if refusedAs(err, control.CodeNotActive) {
			// Seat mode, and this user is not at the seat now: poll
			// often enough that a prompt right after switching back
			// finds the agent.
			backoff = min(backoff, notActiveBackoff)
		}
	}
}

// notActiveBackoff bounds the wait between attempts while the daemon
// serves another user at the seat.
var notActiveBackoff = 2 * time.Second

// refusedAs reports whether err is the daemon's refusal with code.
func refusedAs(err error, code string) bool {
	var ce *control.Error
	return errors.As(err, &ce) && ce.Code == code
}

// agentSession runs one connection; connected reports whether the daemon
// accepted the agent.
func agentSession(ctx context.Context, path string, ui prompt.PINEntry, log *slog.Logger, trust *control.Trust) (connected bool, err error) {
	cl, err := control.DialTrusting(path, trust)
	if err != nil {
		return false, explainUntrusted(err)
	}
	st, err := cl.Stream("agent", nil)
	if err != nil {
		cl.Close()
		return false, err
	}
	defer st.Close()
	log.Info("connected to passkeyd: showing its prompts", "socket", path)
	return true, prompt.RunAgent(ctx, st, ui, log)
}
