// Package manpage provides the hidden "man" command of passkeyd and
// passkeyctl: it writes the manual pages of the command it is added to,
// one roff page per command (passkeyctl.1, passkeyctl-list.1, ...). The
// package build (packaging/build.sh) runs it, so the pages always match
// the binaries they ship with and are never committed.
package manpage

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/passkeyd/passkeyd/internal/buildinfo"
)

// Command returns the hidden "man DIR" command. Hidden commands, this one
// included, get no page. The date on the pages is SOURCE_DATE_EPOCH when
// set (reproducible builds), else today.
func Command() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages (section 1) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			hdr := &doc.GenManHeader{
				Title:   strings.ToUpper(root.Name()),
				Section: "1",
				Source:  "passkeyd " + buildinfo.Version,
				Manual:  "passkeyd manual",
			}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("writing manual pages: %w", err)
			}
			return nil
		},
	}
}
