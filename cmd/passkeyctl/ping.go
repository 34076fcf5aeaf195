package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// VersionResult is the daemon's answer to "version".
type versionResult struct {
	Version string `json:"version"`
}

func newPingCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Check that passkeyd is running and print its version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := g.connect()
			if err != nil {
				return err
			}
			defer cl.Close()
			var v versionResult
			if err := cl.CallContext(cmd.Context(), "version", nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "passkeyd %s is running (%s)\n", v.Version, g.control)
			return nil
		},
	}
}
