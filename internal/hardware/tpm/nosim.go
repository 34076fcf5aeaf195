//go:build !tpmsim

package tpm

import "github.com/google/go-tpm/tpm2/transport"

// openSimulator refuses: the simulator is compiled in only with the tpmsim
// tag (sim.go), which production builds leave out.
func openSimulator() (transport.TPMCloser, error) { return nil, ErrNoSimulator }
