package main

import (
	"encoding/pem"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
)

func newAttestationCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attestation",
		Short: "Export the TPM attestation CA (passkeyd serve --attestation tpm)",
	}
	var out string
	var der bool
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Print the local attestation CA certificate",
		Long: `Print the certificate of this machine's attestation CA. With
--attestation tpm, every registration carries an AIK certificate issued by
it (the CA itself is not sent: it is the relying party's trust anchor):
relying parties that trust it know the passkey's key was made inside this
machine's TPM.`,
		Example: `  # Collect the CA of each machine for the relying party's trust store:
  passkeyctl attestation ca > $(hostname)-passkeyd-ca.pem
  openssl x509 -noout -text -in $(hostname)-passkeyd-ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res mgmtapi.AttestationCA
			if err := call(cmd.Context(), g, mgmtapi.OpAttestationCA, nil, &res); err != nil {
				return err
			}
			b := res.Certificate
			if !der {
				b = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate})
			}
			if out == "" {
				_, err := cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			return nil
		},
	}
	ca.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	ca.Flags().BoolVar(&der, "der", false, "DER instead of PEM")
	cmd.AddCommand(ca)
	return cmd
}
