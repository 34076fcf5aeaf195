// Command passkeyctl manages the passkeys of a running passkeyd.
package main

import (
	"errors"
	"fmt"
	"os"

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
		Use:           "passkeyctl",
		Short:         "Manage the passkeys of passkeyd",
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
	root.AddCommand(newAgentCommand(&g), newPingCommand(&g))
	return root
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "passkeyctl:", err)
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}
