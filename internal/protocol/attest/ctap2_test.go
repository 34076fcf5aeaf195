package attest_test

import (
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/attest"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
)

// The attester plugs into ctap2 as its "tpm" Attester, over the real TPM.
var (
	_ ctap2.Attester = (*attest.TPMAttester)(nil)
	_ attest.TPM     = (*tpm.TPM)(nil)
)
