// Command passkeyctl manages the passkeys of a running passkeyd.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/cmd/internal/buildinfo"
	"github.com/passkeyd/passkeyd/ctap2/control"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	control string
}

func newRootCommand() *cobra.Command {
	var g globalOptions
	root := &cobra.Command{
		Use:   "passkeyctl",
		Short: "Manage the passkeys of passkeyd",
		Long: `passkeyctl manages the passkeys of the running passkeyd through its control
socket, like Settings > Accounts > Passkeys on Windows: list and filter them,
delete them, set the PIN, reset, and run the prompt agent of your session.

Exit codes: 0 success, 1 error, 2 usage, 3 passkeyd not running,
4 not allowed (by the daemon, at the prompt, or the PIN), 5 no such passkey.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.control, "control", control.DefaultPath, "control socket of the running passkeyd")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "passkeyctl", buildinfo.Version)
		},
	})
	root.AddCommand(newAgentCommand(&g), newPingCommand(&g), newListCommand(&g), newDeleteCommand(&g),
		newInfoCommand(&g), newPINCommand(&g), newResetCommand(&g), newAttestationCommand(&g))
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
