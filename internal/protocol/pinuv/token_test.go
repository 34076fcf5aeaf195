package pinuv

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Token.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newToken(t *testing.T) (*Token, *fakeClock) {
	t.Helper()
	c := newClock()
	tok, err := NewToken(c.now)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

// assertStopped checks the initial values of §6.5.2.1 as the getters see
// them.
func assertStopped(t *testing.T, tok *Token) {
	t.Helper()
	if tok.InUse() {
		t.Error("token in use")
	}
	if tok.Permissions() != 0 {
		t.Errorf("permissions %#x", tok.Permissions())
	}
	if tok.RPID() != "" {
		t.Errorf("RP ID %q", tok.RPID())
	}
	if tok.UserPresent() || tok.UserVerified() {
		t.Errorf("flags up=%v uv=%v", tok.UserPresent(), tok.UserVerified())
	}
}

// sign makes a pinUvAuthParam with the token's value the way a platform
// does, and checks Token.Verify's answer.
func verify(t *testing.T, tok *Token, p Protocol) bool {
	t.Helper()
	plat := &platform{version: p.Version()}
	msg := []byte("clientDataHash")
	return tok.Verify(p, msg, plat.authenticate(tok.Value(), msg))
}

func TestNewToken(t *testing.T) {
	tok, _ := newToken(t)
	v := tok.Value()
	if len(v) != TokenSize || TokenSize != 32 {
		t.Fatalf("token of %d bytes", len(v))
	}
	if bytes.Equal(v, make([]byte, 32)) {
		t.Fatal("all-zero token")
	}
	assertStopped(t, tok)
	v[0] ^= 0xff
	if bytes.Equal(v, tok.Value()) {
		t.Fatal("Value returns the token's own bytes")
	}
	other, _ := newToken(t)
	if bytes.Equal(other.Value(), tok.Value()) {
		t.Fatal("two tokens share a value")
	}
}

func TestBeginAndReset(t *testing.T) {
	tok, _ := newToken(t)
	p := newP(t, 2)
	if verify(t, tok, p) {
		t.Fatal("a token not in use verifies")
	}
	tok.Begin(true, 0xff, "example.com")
	if !tok.InUse() || !tok.UserPresent() || !tok.UserVerified() {
		t.Fatalf("after Begin: inUse=%v up=%v uv=%v", tok.InUse(), tok.UserPresent(), tok.UserVerified())
	}
	if got, want := tok.Permissions(), Permission(0x3f); got != want {
		t.Fatalf("permissions %#x, want %#x (undefined bits dropped)", got, want)
	}
	if !tok.Permissions().Has(PermMakeCredential|PermAuthenticatorConfig) || tok.Permissions().Has(0x40) {
		t.Fatal("Has")
	}
	if tok.RPID() != "example.com" {
		t.Fatalf("RP ID %q", tok.RPID())
	}
	if !verify(t, tok, p) {
		t.Fatal("token in use does not verify")
	}

	old := tok.Value()
	if err := tok.Reset(); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(old, tok.Value()) {
		t.Fatal("Reset kept the value")
	}
	assertStopped(t, tok)
	// The old value no longer verifies, even once the new token is in use.
	tok.Begin(false, PermGetAssertion, "")
	msg := []byte("m")
	if tok.Verify(p, msg, p.Authenticate(old, msg)) {
		t.Fatal("the value before Reset verifies")
	}
	if tok.UserPresent() || !tok.UserVerified() || tok.RPID() != "" {
		t.Fatalf("Begin(false): up=%v uv=%v rpID=%q", tok.UserPresent(), tok.UserVerified(), tok.RPID())
	}
}

func TestInitialUsageTimeLimit(t *testing.T) {
	if InitialUsageTimeLimit != 30*time.Second || MaxUsageTimePeriod != 10*time.Minute || UserPresentTimeLimit != 30*time.Second {
		t.Fatal("time limits differ from the §6.5.2.1 USB defaults")
	}
	tok, c := newToken(t)
	tok.Begin(true, PermMakeCredential, "example.com")
	c.advance(InitialUsageTimeLimit - time.Nanosecond)
	if !tok.InUse() {
		t.Fatal("expired before the initial usage time limit")
	}
	c.advance(time.Nanosecond)
	assertStopped(t, tok)
	if verify(t, tok, newP(t, 1)) {
		t.Fatal("expired token verifies")
	}
}

func TestMaxUsageTimePeriod(t *testing.T) {
	for _, version := range []int{1, 2} {
		tok, c := newToken(t)
		p := newP(t, version)
		tok.Begin(false, PermGetAssertion, "example.com")
		c.advance(InitialUsageTimeLimit - time.Second)
		if !verify(t, tok, p) { // used within the initial usage time limit
			t.Fatal("does not verify")
		}
		c.advance(time.Minute)
		if !tok.InUse() {
			t.Fatal("a used token expired at the initial usage time limit")
		}
		c.advance(MaxUsageTimePeriod - InitialUsageTimeLimit - time.Minute)
		if !tok.InUse() || !verify(t, tok, p) {
			t.Fatal("expired before the max usage time period")
		}
		c.advance(time.Second)
		assertStopped(t, tok)
		if verify(t, tok, p) {
			t.Fatal("verifies after the max usage time period")
		}
		// Begin again starts a new period.
		tok.Begin(false, PermGetAssertion, "")
		if !tok.InUse() {
			t.Fatal("Begin after expiry")
		}
	}
}

// A failed verification is not a use: it does not extend the token.
func TestFailedVerifyIsNoUse(t *testing.T) {
	tok, c := newToken(t)
	p := newP(t, 2)
	tok.Begin(false, PermGetAssertion, "")
	if tok.Verify(p, []byte("m"), make([]byte, 32)) {
		t.Fatal("zero MAC verifies")
	}
	c.advance(InitialUsageTimeLimit)
	if tok.InUse() {
		t.Fatal("a failed Verify kept the token alive")
	}
}

func TestUserPresentTimeLimit(t *testing.T) {
	tok, c := newToken(t)
	tok.Begin(true, PermGetAssertion, "")
	c.advance(time.Second)
	if !verify(t, tok, newP(t, 2)) {
		t.Fatal("does not verify")
	}
	c.advance(UserPresentTimeLimit - time.Second - time.Nanosecond)
	if !tok.UserPresent() {
		t.Fatal("user presence expired early")
	}
	c.advance(time.Nanosecond)
	if tok.UserPresent() {
		t.Fatal("user presence outlived the user present time limit")
	}
	if !tok.InUse() || !tok.UserVerified() || tok.Permissions() != PermGetAssertion {
		t.Fatal("the user present time limit ended more than user presence")
	}
}

// authenticatorGetAssertion with a token consumes its cached user presence
// and user verification and all permissions but lbw.
func TestFlagsConsumed(t *testing.T) {
	tok, _ := newToken(t)
	tok.Begin(true, PermMakeCredential|PermGetAssertion|PermLargeBlobWrite, "example.com")
	tok.ClearUserPresent()
	if tok.UserPresent() || !tok.UserVerified() {
		t.Fatal("ClearUserPresent")
	}
	tok.ClearUserVerified()
	if tok.UserVerified() {
		t.Fatal("ClearUserVerified")
	}
	tok.ClearPermissionsExceptLbw()
	if got := tok.Permissions(); got != PermLargeBlobWrite {
		t.Fatalf("permissions %#x, want lbw", got)
	}
	if !tok.InUse() || tok.RPID() != "example.com" {
		t.Fatal("clearing flags stopped the token")
	}
	tok.ClearPermissionsExceptLbw()
	if tok.Permissions() != PermLargeBlobWrite {
		t.Fatal("lbw cleared")
	}
}

func TestSetRPID(t *testing.T) {
	tok, _ := newToken(t)
	tok.SetRPID("example.com")
	if tok.RPID() != "" {
		t.Fatal("SetRPID on a token not in use")
	}
	tok.Begin(false, PermMakeCredential, "")
	tok.SetRPID("example.com")
	if tok.RPID() != "example.com" {
		t.Fatalf("RP ID %q", tok.RPID())
	}
}

func TestStop(t *testing.T) {
	tok, _ := newToken(t)
	p := newP(t, 1)
	tok.Begin(true, PermMakeCredential, "example.com")
	v := tok.Value()
	tok.Stop()
	assertStopped(t, tok)
	if verify(t, tok, p) {
		t.Fatal("stopped token verifies")
	}
	if !bytes.Equal(v, tok.Value()) {
		t.Fatal("Stop changed the value")
	}
	// Clearing does nothing to a token not in use; Begin sets everything.
	tok.ClearUserVerified()
	tok.Begin(false, PermMakeCredential, "")
	if !tok.UserVerified() {
		t.Fatal("userVerified not set by Begin")
	}
}

func TestClockBackwards(t *testing.T) {
	tok, c := newToken(t)
	tok.Begin(true, PermMakeCredential, "")
	c.advance(-time.Nanosecond)
	assertStopped(t, tok)
}

func TestTokenVerifyLengths(t *testing.T) {
	tok, _ := newToken(t)
	tok.Begin(false, PermGetAssertion, "")
	msg := []byte("m")
	full := hmacSHA256(tok.Value(), msg)
	p1, p2 := newP(t, 1), newP(t, 2)
	for _, tc := range []struct {
		p     Protocol
		param []byte
		want  bool
	}{
		{p1, full[:16], true},
		{p1, full, false},
		{p1, full[:15], false},
		{p2, full, true},
		{p2, full[:16], false},
		{p2, nil, false},
		{nil, full, false},
	} {
		if got := tok.Verify(tc.p, msg, tc.param); got != tc.want {
			t.Errorf("Verify(%d-byte param) = %v, want %v", len(tc.param), got, tc.want)
		}
	}
}

func TestZeroToken(t *testing.T) {
	var tok Token // no value, real clock
	p := newP(t, 2)
	if tok.Value() != nil {
		t.Fatal("zero Token has a value")
	}
	tok.Begin(true, PermMakeCredential, "x")
	if !tok.InUse() {
		t.Fatal("Begin")
	}
	msg := []byte("m")
	if tok.Verify(p, msg, p.Authenticate(nil, msg)) || tok.Verify(p, msg, p.Authenticate(make([]byte, 32), msg)) {
		t.Fatal("zero Token verifies")
	}
	tok.ClearUserPresent()
	tok.ClearUserVerified()
	tok.ClearPermissionsExceptLbw()
	tok.SetRPID("y")
	tok.Stop()
	if err := tok.Reset(); err != nil || len(tok.Value()) != TokenSize {
		t.Fatalf("Reset on a zero Token: %v", err)
	}
}

func TestTokenConcurrent(t *testing.T) {
	tok, c := newToken(t)
	p := newP(t, 2)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				switch (i + j) % 5 {
				case 0:
					tok.Begin(true, PermGetAssertion, "example.com")
				case 1:
					verify(t, tok, p)
				case 2:
					c.advance(time.Second)
				case 3:
					_ = tok.UserPresent() && tok.InUse()
				case 4:
					tok.ClearPermissionsExceptLbw()
				}
			}
		}()
	}
	wg.Wait()
}
