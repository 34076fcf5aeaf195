package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/passkeyd/passkeyd/ctap2/control"
	"github.com/passkeyd/passkeyd/ctap2/prompt"
	"github.com/passkeyd/passkeyd/ctap2/prompt/pinentry"
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
	pinentry   string
	terminal   bool
	daemonUser string
}

func newAgentCommand(g *globalOptions) *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Show passkeyd's prompts in this session (presence and PIN)",
		Long: `agent connects to passkeyd's control socket and shows each request of the
security key (register, sign in, PIN) to the person at this session:
through pinentry (the session's flavour), or on this terminal with
--terminal. It reconnects when the daemon restarts. passkeyd accepts the
agent only from root and from the user given to its --owner flag.

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
			trust, err := newServerTrust(o.daemonUser)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			err = runAgentTrusting(ctx, g.control, ui, log, trust)
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, control.ErrNotAllowed) || errors.Is(err, errUntrusted) {
				return &exitError{code: exitConfig, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.pinentry, "pinentry", "", "pinentry program to show prompts with (default: pinentry on PATH)")
	f.BoolVar(&o.terminal, "terminal", false, "ask on this terminal instead of through pinentry")
	f.StringVar(&o.daemonUser, "daemon-user", "", "also trust a daemon running as this user (name or uid); root, you and the \""+serviceUser+"\" account are always trusted")
	return cmd
}

// errUntrusted: the socket is served by a user the agent does not trust.
// Such a process could be phishing for the PIN, so nothing is shown.
var errUntrusted = errors.New("untrusted control socket")

// serviceUser is the account the shipped system unit runs passkeyd as
// (cmd/passkeyd/dist: User=passkeyd, created by sysusers.d).
const serviceUser = "passkeyd"

// lookupUser resolves a user name; a variable so that tests can stand in
// for /etc/passwd.
var lookupUser = user.Lookup

// trustedUID is a uid the agent shows prompts for, and why.
type trustedUID struct {
	uid  uint32
	what string
}

// serverTrust decides which users a control socket may be served by for
// the agent to show its prompts: root, the agent's own user, the service
// account and an explicitly named daemon user.
type serverTrust struct {
	self    uint32
	daemons []trustedUID
}

// newServerTrust is the trust of `passkeyctl agent --daemon-user
// daemonUser` (empty: none given): root, this process's user, the
// "passkeyd" account when it exists, and daemonUser, which must resolve.
func newServerTrust(daemonUser string) (serverTrust, error) {
	t := serverTrust{self: uint32(os.Getuid())}
	if u, err := lookupUser(serviceUser); err == nil {
		if uid, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			t.daemons = append(t.daemons, trustedUID{uint32(uid), "the " + serviceUser + " service user"})
		}
	}
	if daemonUser != "" {
		uid, err := resolveUser(daemonUser)
		if err != nil {
			return serverTrust{}, fmt.Errorf("--daemon-user: %w", err)
		}
		t.daemons = append(t.daemons, trustedUID{uid, "--daemon-user " + daemonUser})
	}
	return t, nil
}

// resolveUser turns a user name or a numeric uid into a uid. A number is
// taken as a uid whether or not an account has it (a unit's User= may be
// dynamic, a container's user unnamed).
func resolveUser(s string) (uint32, error) {
	if uid, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(uid), nil
	}
	u, err := lookupUser(s)
	if err != nil {
		return 0, fmt.Errorf("no user %q", s)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has a non-numeric uid %q", s, u.Uid)
	}
	return uint32(uid), nil
}

// check returns nil when a socket at path served by uid is trusted, and
// errUntrusted naming who would be trusted otherwise.
func (t serverTrust) check(path string, uid uint32) error {
	if uid == 0 || uid == t.self {
		return nil
	}
	trusted := []string{"root", fmt.Sprintf("you (uid %d)", t.self)}
	for _, d := range t.daemons {
		if uid == d.uid {
			return nil
		}
		trusted = append(trusted, fmt.Sprintf("%s (uid %d)", d.what, d.uid))
	}
	return fmt.Errorf("%w: %s is served by uid %d; trusted are %s: refusing to show its prompts (if passkeyd really runs as that user, pass --daemon-user)",
		errUntrusted, path, uid, strings.Join(trusted, ", "))
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
	trust, err := newServerTrust("")
	if err != nil {
		return err
	}
	return runAgentTrusting(ctx, path, ui, log, trust)
}

// runAgentTrusting keeps an agent session with the daemon at path,
// reconnecting with backoff, until ctx is done, the daemon refuses the
// agent or the agent refuses the daemon (trust).
func runAgentTrusting(ctx context.Context, path string, ui prompt.PINEntry, log *slog.Logger, trust serverTrust) error {
	backoff := minBackoff
	reported := ""
	for {
		connected, err := agentSession(ctx, path, ui, log, trust)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, control.ErrNotAllowed) || errors.Is(err, errUntrusted) {
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
	}
}

// agentSession runs one connection; connected reports whether the daemon
// accepted the agent.
func agentSession(ctx context.Context, path string, ui prompt.PINEntry, log *slog.Logger, trust serverTrust) (connected bool, err error) {
	cl, err := control.Dial(path)
	if err != nil {
		return false, err
	}
	if err := trust.check(path, cl.Server().UID); err != nil {
		cl.Close()
		return false, err
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
