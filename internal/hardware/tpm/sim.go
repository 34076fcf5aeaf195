//go:build tpmsim

// The reference simulator is C (the Microsoft TPM 2.0 reference code linked
// against OpenSSL), so it lives behind the tpmsim tag: production binaries
// build without cgo, gcc or libssl-dev, and cannot be started on a TPM whose
// seeds die with the process. nosim.go is the untagged side.

package tpm

import (
	"fmt"
	"sync/atomic"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// simInUse guards the reference simulator, which is one global C object per
// process. go-tpm-tools' simulator.Get blocks until the holder closes it;
// we fail fast instead, because a daemon or test that blocks there hangs.
var simInUse atomic.Bool

// simTPM is the in-process simulator as a transport; Close also releases the
// singleton.
type simTPM struct {
	transport.TPMCloser
}

// openSimulator starts a freshly manufactured reference TPM. Its seeds are
// random per Open, so blobs do not survive Close.
func openSimulator() (transport.TPMCloser, error) {
	if !simInUse.CompareAndSwap(false, true) {
		return nil, errSimInUse
	}
	sim, err := simulator.Get()
	if err != nil {
		simInUse.Store(false)
		// Without cgo this is "using the simulator requires building with CGO".
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	return &simTPM{transport.FromReadWriteCloser(sim)}, nil
}

// Close shuts the simulator down (simulator.Close sends TPM2_Shutdown) and
// lets the next Open have it.
func (s *simTPM) Close() error {
	err := s.TPMCloser.Close()
	simInUse.Store(false)
	if err != nil {
		return fmt.Errorf("close simulator: %w", err)
	}
	return nil
}
