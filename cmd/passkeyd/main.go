// Command passkeyd is the passkeyd daemon: a FIDO2/CTAP2 authenticator
// whose keys live in the TPM, presented to clients over a CTAPHID
// transport.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "passkeyd:", err)
		os.Exit(1)
	}
}
