// Command passkeyctl manages the passkeys of a running passkeyd.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/cmd/internal/buildinfo"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "passkeyctl",
		Short:         "Manage the passkeys of passkeyd",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "passkeyctl", buildinfo.Version)
		},
	})
	return root
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "passkeyctl:", err)
		os.Exit(1)
	}
}
