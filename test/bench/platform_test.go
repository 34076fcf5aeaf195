package bench

import (
	"testing"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
)

// The platform side (PIN/UV auth protocol two, CTAP 2.1 §6.5.7) and the
// CTAPHID host are internal/ctaptest's: r.kit is a ctaptest.Client on a
// CTAPHID channel.

// authenticate is a pinUvAuthParam over msg with protocol two.
func authenticate(key, msg []byte) []byte { return ctaptest.Authenticate(2, key, msg) }

// setPINAndToken sets pin and returns a pinUvAuthToken with permissions.
func setPINAndToken(b *testing.B, r *rig, pin string, permissions int) []byte {
	b.Helper()
	if st := r.kit.SetPIN(b, pin); st != ctaptest.StatusOK {
		b.Fatalf("setPIN: %v", st)
	}
	return setPINAndTokenAgain(b, r, pin, permissions)
}

// setPINAndTokenAgain gets a new token for an already set PIN
// (getPinUvAuthTokenUsingPinWithPermissions).
func setPINAndTokenAgain(b *testing.B, r *rig, pin string, permissions int) []byte {
	b.Helper()
	tok, st := r.kit.PinTokenWithPermissions(b, pin, byte(permissions), "")
	if st != ctaptest.StatusOK {
		b.Fatalf("getPinUvAuthTokenUsingPinWithPermissions: %v", st)
	}
	return tok
}
