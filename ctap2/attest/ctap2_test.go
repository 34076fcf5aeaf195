package attest_test

import (
	"github.com/passkeyd/passkeyd/ctap2"
	"github.com/passkeyd/passkeyd/ctap2/attest"
	"github.com/passkeyd/passkeyd/tpm"
)

// The attester plugs into ctap2 as its "tpm" Attester, over the real TPM.
var (
	_ ctap2.Attester = (*attest.TPMAttester)(nil)
	_ attest.TPM     = (*tpm.TPM)(nil)
)
