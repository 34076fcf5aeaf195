package ctap2

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// lastUsed returns which of the credentials have LastUsedAt set (the
// store's reads include the uses still waiting for its flusher).
func lastUsed(t *testing.T, e *testEnv, creds ...parsedAuthData) []bool {
	t.Helper()
	out := make([]bool, len(creds))
	for i, c := range creds {
		s, err := e.store.Credential(c.credID)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = !s.LastUsedAt.IsZero()
		if out[i] && !s.LastUsedAt.Equal(e.clock.Now()) {
			t.Errorf("credential %d: LastUsedAt %v, want %v", i, s.LastUsedAt, e.clock.Now())
		}
	}
	return out
}

func equalBools(a, b []bool) bool { return bytes.Equal(boolBytes(a), boolBytes(b)) }

func boolBytes(v []bool) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		if x {
			b[i] = 1
		}
	}
	return b
}

// TestLastUsedOnlyForReturnedAssertions: "last used" is recorded for a
// credential only when an assertion for it leaves the authenticator with
// user presence: the getAssertion response (the newest credential,
// §6.2.2 step 11) and each authenticatorGetNextAssertion (§6.3). A
// platform whose account chooser the person cancels after the first
// response marks only that one; up=false marks none. The uses cost no
// commit on the assertion's path (the store's flusher batches them).
func TestLastUsedOnlyForReturnedAssertions(t *testing.T) {
	setup := func(t *testing.T) (*testEnv, []parsedAuthData) {
		e := newEnv(t)
		var creds []parsedAuthData // oldest first
		for _, u := range []string{"alice", "bob", "carol"} {
			creds = append(creds, makeCred(t, e, "example.com", []byte(u), true))
		}
		e.clock.Advance(time.Hour)
		return e, creds
	}
	t.Run("chooser cancelled after the first response", func(t *testing.T) {
		e, creds := setup(t)
		before := e.store.Commits()
		st, m := e.call(t, CmdGetAssertion, gaParams("example.com"))
		if st != StatusOK || field[int](t, m, 5) != 3 {
			t.Fatalf("getAssertion: %v", st)
		}
		cred := field[map[string]any](t, m, 1)
		if !bytes.Equal(cred["id"].([]byte), creds[2].credID) {
			t.Fatal("first assertion is not for the newest credential")
		}
		if got := lastUsed(t, e, creds...); !equalBools(got, []bool{false, false, true}) {
			t.Errorf("marked as used (oldest first): %v, want only the returned one", got)
		}
		if n := e.store.Commits() - before; n != 0 {
			t.Errorf("the assertion committed to the store %d times on its path, want 0", n)
		}
		// Another command ends the enumeration: the others were never sent.
		e.call(t, CmdGetInfo, nil)
		if got := lastUsed(t, e, creds...); !equalBools(got, []bool{false, false, true}) {
			t.Errorf("after the enumeration ended: %v", got)
		}
	})
	t.Run("every assertion fetched", func(t *testing.T) {
		e, creds := setup(t)
		if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com")); st != StatusOK {
			t.Fatal(st)
		}
		if st, _ := e.call(t, CmdGetNextAssertion, nil); st != StatusOK {
			t.Fatal(st)
		}
		if got := lastUsed(t, e, creds...); !equalBools(got, []bool{false, true, true}) {
			t.Errorf("after one getNextAssertion: %v", got)
		}
		if st, _ := e.call(t, CmdGetNextAssertion, nil); st != StatusOK {
			t.Fatal(st)
		}
		if got := lastUsed(t, e, creds...); !equalBools(got, []bool{true, true, true}) {
			t.Errorf("after every assertion: %v", got)
		}
	})
	t.Run("up=false", func(t *testing.T) {
		e, creds := setup(t)
		p := gaParams("example.com")
		p[5] = map[string]bool{"up": false}
		if st, _ := e.call(t, CmdGetAssertion, p); st != StatusOK {
			t.Fatal(st)
		}
		for range 2 {
			if st, _ := e.call(t, CmdGetNextAssertion, nil); st != StatusOK {
				t.Fatal(st)
			}
		}
		if got := lastUsed(t, e, creds...); !equalBools(got, []bool{false, false, false}) {
			t.Errorf("silent assertions marked %v as used, want none", got)
		}
		// With an allow list too.
		p = gaParams("example.com", creds[0].credID)
		p[5] = map[string]bool{"up": false}
		if st, _ := e.call(t, CmdGetAssertion, p); st != StatusOK {
			t.Fatal(st)
		}
		if got := lastUsed(t, e, creds[0]); got[0] {
			t.Error("a silent assertion with an allow list marked its credential as used")
		}
	})
}

// TestRegistrationReplacingIsOneCommit: a discoverable makeCredential that
// replaces the RP's credential for the same user handle (§6.1.2 step 18)
// writes the new credential and removes the old one in one commit.
func TestRegistrationReplacingIsOneCommit(t *testing.T) {
	e := newEnv(t)
	old := makeCred(t, e, "example.com", []byte("alice"), true)
	before := e.store.Commits()
	repl := makeCred(t, e, "example.com", []byte("alice"), true)
	if n := e.store.Commits() - before; n != 1 {
		t.Errorf("replacing registration: %d commits, want 1", n)
	}
	if _, err := e.store.Credential(old.credID); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("replaced credential: %v, want ErrNotFound", err)
	}
	if _, err := e.store.Credential(repl.credID); err != nil {
		t.Errorf("new credential: %v", err)
	}
	if n := e.store.CountCredentials(); n != 1 {
		t.Errorf("%d credentials stored, want 1", n)
	}
}

// TestRightPINIsOneCommit: a PIN check commits once, the retry it spends,
// before the TPM sees the guess (§6.5.5.7: the counter is decremented
// first); the right PIN gives it back without a commit of its own. A
// wrong PIN's decrement is on disk.
func TestRightPINIsOneCommit(t *testing.T) {
	e, c := kitEnv(t, 2)
	if st := c.SetPIN(t, "1234"); st != 0 {
		t.Fatal(Status(st))
	}
	before := e.store.Commits()
	mustToken(t, c, "1234", pinuv.PermGetAssertion, "")
	if n := e.store.Commits() - before; n != 1 {
		t.Errorf("right PIN: %d commits, want 1 (the decrement before the check)", n)
	}
	wantRetries(t, c, maxPINRetries, false)
	if v, err := e.store.Get(valuePINRetries); err != nil || !bytes.Equal(v, []byte{maxPINRetries}) {
		t.Errorf("stored retries after the right PIN: %v, %v", v, err)
	}
	if _, st := c.PinTokenWithPermissions(t, "9999", byte(pinuv.PermGetAssertion), ""); Status(st) != ErrPinInvalid {
		t.Fatalf("wrong PIN: %v", Status(st))
	}
	if v, err := e.store.Get(valuePINRetries); err != nil || !bytes.Equal(v, []byte{maxPINRetries - 1}) {
		t.Errorf("stored retries after a wrong PIN: %v, %v", v, err)
	}
}
