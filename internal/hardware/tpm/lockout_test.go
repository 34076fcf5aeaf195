package tpm

import (
	"testing"
	"time"
)

// TestDAStatusRecoversWithin: in lockout, the TPM checks PINs again once
// the counter is below MaxTries, one failed try forgiven per RecoveryTime;
// with no recovery time only a reset helps.
func TestDAStatusRecoversWithin(t *testing.T) {
	const r = 1000 * time.Second
	for _, c := range []struct {
		st     DAStatus
		locked bool
		within time.Duration
		ok     bool
	}{
		{DAStatus{Counter: 0, MaxTries: 3, RecoveryTime: r}, false, 0, true},
		{DAStatus{Counter: 2, MaxTries: 3, RecoveryTime: r}, false, 0, true},
		{DAStatus{Counter: 3, MaxTries: 3, RecoveryTime: r, InLockout: true}, true, r, true},
		{DAStatus{Counter: 5, MaxTries: 3, RecoveryTime: r, InLockout: true}, true, 3 * r, true},
		// The counter says lockout even if the flag was read as clear.
		{DAStatus{Counter: 4, MaxTries: 3, RecoveryTime: r}, true, 2 * r, true},
		// The flag says lockout (parameters raised since): one interval.
		{DAStatus{Counter: 3, MaxTries: 32, RecoveryTime: r, InLockout: true}, true, r, true},
		{DAStatus{Counter: 3, MaxTries: 3, RecoveryTime: 0, InLockout: true}, true, 0, false},
		{DAStatus{Counter: 0, MaxTries: 0, RecoveryTime: r, InLockout: true}, true, 0, false},
	} {
		d, ok := c.st.RecoversWithin()
		if c.st.Locked() != c.locked || d != c.within || ok != c.ok {
			t.Errorf("%+v: Locked %v, RecoversWithin %v %v; want %v, %v %v", c.st, c.st.Locked(), d, ok, c.locked, c.within, c.ok)
		}
	}
}
