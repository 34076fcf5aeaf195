// Command passkeyctl manages the passkeys of a running passkeyd.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/internal/buildinfo"
	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/manpage"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	control    string
	daemonUser string
}

// trust is who may serve the control socket: root, you, the passkeyd
// account and --daemon-user.
func (g *globalOptions) trust() (*control.Trust, error) {
	t := control.DefaultTrust()
	if g.daemonUser != "" {
		if err := t.Add(g.daemonUser); err != nil {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("--daemon-user: %w", err)}
		}
	}
	return t, nil
}

// connect opens the control socket for a command. Every command goes
// through it, so every one checks who serves the socket before it sends
// anything (a request, a PIN) or believes an answer.
func (g *globalOptions) connect() (*control.Client, error) {
	trust, err := g.trust()
	if err != nil {
		return nil, err
	}
	cl, err := control.DialTrusting(g.control, trust)
	switch {
	case err == nil:
		return cl, nil
	case errors.Is(err, control.ErrNotRunning):
		return nil, &exitError{code: exitNotRunning, err: err}
	case errors.Is(err, control.ErrUntrusted):
		return nil, &exitError{code: exitNotAllowed, err: explainUntrusted(err)}
	}
	return nil, err
}

// explainUntrusted adds what to do about a socket served by an untrusted
// user, when that is err.
func explainUntrusted(err error) error {
	if !errors.Is(err, control.ErrUntrusted) {
		return err
	}
	return fmt.Errorf("%w; if passkeyd really runs as that user, pass --daemon-user", err)
}

func newRootCommand() *cobra.Command {
	var g globalOptions
	root := &cobra.Command{
		Use:   "passkeyctl",
		Short: "Manage the passkeys of passkeyd",
		Long: `passkeyctl manages the passkeys of the running passkeyd through its control
socket, like Settings > Accounts > Passkeys on Windows: list and filter them,
delete them, set the PIN, reset, and run the prompt agent of your session.

Whose passkeys: in seat mode (passkeyd's default where logind runs) each
user has their own, and every command acts on yours: the passkeys the key
holds while you are the user at the seat. delete, pin and reset need you
to be that user, since their confirmation appears in the active session.
In owner mode there is one set, the owner's, which only root and the owner
reach. As root, --user NAME names a user's passkeys (list, export, reset).
"passkeyctl info" shows the mode.

Every command first checks who serves the control socket: root, you, the
system user "passkeyd" when that account exists, or the user given to
--daemon-user. A socket served by anyone else could be phishing for the PIN:
passkeyctl sends it nothing and exits with status 4 (78 for agent).

Exit codes: 0 success, 1 error, 2 usage, 3 passkeyd not running,
4 not allowed (by the daemon, at the prompt, or the PIN; or an untrusted
control socket), 5 no such passkey.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.control, "control", control.DefaultPath, "control socket of the running passkeyd")
	root.PersistentFlags().StringVar(&g.daemonUser, "daemon-user", "", "also trust a control socket served by this user (name or uid); root, you and the \""+control.ServiceUser+"\" account are always trusted")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "passkeyctl", buildinfo.Version)
		},
	})
	root.AddCommand(newAgentCommand(&g), newPingCommand(&g), newListCommand(&g), newDeleteCommand(&g),
		newInfoCommand(&g), newPINCommand(&g), newResetCommand(&g), newAttestationCommand(&g),
		newExportCommand(&g))
	// Hidden: the package build writes the manual pages with it.
	root.AddCommand(manpage.Command())
	return root
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "passkeyctl:", err)
		code := exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if strings.Contains(err.Error(), "unknown command") || strings.Contains(err.Error(), "flag") || strings.Contains(err.Error(), "arg(s)") {
			code = exitUsage
		}
		os.Exit(code)
	}
}
