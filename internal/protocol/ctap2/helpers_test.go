package ctap2

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

func TestMain(m *testing.M) { tpmsim.Main(m) }

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testPrompter answers every prompt with answer (after honouring ctx when
// block is set) and records what was asked.
type testPrompter struct {
	mu     sync.Mutex
	answer error
	block  bool
	asked  []prompt.Request
}

func (p *testPrompter) Confirm(ctx context.Context, req prompt.Request) error {
	p.mu.Lock()
	p.asked = append(p.asked, req)
	answer, block := p.answer, p.block
	p.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return answer
}

func (p *testPrompter) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.asked) }

type testEnv struct {
	a      *Authenticator
	store  *keystore.Store
	clock  *fakeClock
	prompt *testPrompter
	dir    string
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	dir := t.TempDir()
	return openEnv(t, dir)
}

func openEnv(t testing.TB, dir string) *testEnv {
	t.Helper()
	st, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &testEnv{store: st, clock: &fakeClock{now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}, prompt: &testPrompter{}, dir: dir}
	e.a, err = New(Config{TPM: tpmsim.TPM(), Store: st, Prompt: e.prompt, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// call sends command cmd with params (CBOR-encoded unless already []byte)
// and returns the status and the decoded response map.
func (e *testEnv) call(t testing.TB, cmd byte, params any) (Status, map[int]cbor.RawMessage) {
	t.Helper()
	return e.callCtx(context.Background(), t, cmd, params)
}

func (e *testEnv) callCtx(ctx context.Context, t testing.TB, cmd byte, params any) (Status, map[int]cbor.RawMessage) {
	t.Helper()
	req := []byte{cmd}
	switch p := params.(type) {
	case nil:
	case []byte:
		req = append(req, p...)
	default:
		b, err := cbor.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		req = append(req, b...)
	}
	resp := e.a.CBOR(ctx, req)
	if len(resp) == 0 {
		t.Fatal("empty response")
	}
	st := Status(resp[0])
	if st != StatusOK {
		if len(resp) != 1 {
			t.Fatalf("error %v with a body", st)
		}
		return st, nil
	}
	// Responses must be CTAP2 canonical: re-encoding changes nothing.
	var m map[int]cbor.RawMessage
	if len(resp) > 1 {
		if err := cbor.Unmarshal(resp[1:], &m); err != nil {
			t.Fatalf("response is not a CBOR map: %v", err)
		}
		assertCanonical(t, resp[1:])
	}
	return st, m
}

func assertCanonical(t testing.TB, b []byte) {
	t.Helper()
	var v any
	if err := cbor.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(b) {
		t.Fatalf("response is not canonical CBOR:\n got %x\nwant %x", b, again)
	}
}

func cdh(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func mcParams(rpID string, userID []byte, rk bool) map[int]any {
	p := map[int]any{
		1: cdh("mc-" + rpID),
		2: map[string]any{"id": rpID, "name": "Example"},
		3: map[string]any{"id": userID, "name": "alice@" + rpID, "displayName": "Alice"},
		4: []any{map[string]any{"type": "public-key", "alg": -7}},
	}
	if rk {
		p[7] = map[string]any{"rk": true}
	}
	return p
}

func gaParams(rpID string, allow ...[]byte) map[int]any {
	p := map[int]any{1: rpID, 2: cdh("ga-" + rpID)}
	if len(allow) > 0 {
		var l []any
		for _, id := range allow {
			l = append(l, map[string]any{"type": "public-key", "id": id})
		}
		p[3] = l
	}
	return p
}

// parsedAuthData is a decoded authenticator data.
type parsedAuthData struct {
	rpIDHash []byte
	flags    byte
	counter  uint32
	aaguid   []byte
	credID   []byte
	pub      *ecdsa.PublicKey
	ext      map[string]any
}

func parseAuthData(t testing.TB, b []byte) parsedAuthData {
	t.Helper()
	if len(b) < 37 {
		t.Fatalf("authData of %d bytes", len(b))
	}
	p := parsedAuthData{rpIDHash: b[:32], flags: b[32], counter: uint32(b[33])<<24 | uint32(b[34])<<16 | uint32(b[35])<<8 | uint32(b[36])}
	rest := b[37:]
	if p.flags&flagAT != 0 {
		p.aaguid = rest[:16]
		n := int(rest[16])<<8 | int(rest[17])
		p.credID = rest[18 : 18+n]
		rest = rest[18+n:]
		var key map[int]cbor.RawMessage
		dec := cbor.NewDecoder(bytesReader(rest))
		if err := dec.Decode(&key); err != nil {
			t.Fatalf("COSE key: %v", err)
		}
		rest = rest[dec.NumBytesRead():]
		var x, y []byte
		cbor.Unmarshal(key[-2], &x)
		cbor.Unmarshal(key[-3], &y)
		if len(x) != 32 || len(y) != 32 {
			t.Fatalf("COSE key coordinates of %d/%d bytes", len(x), len(y))
		}
		der := append([]byte{0x04}, append(x, y...)...)
		pk, err := x509.ParsePKIXPublicKey(pkixP256(der))
		if err != nil {
			t.Fatal(err)
		}
		p.pub = pk.(*ecdsa.PublicKey)
	}
	if p.flags&flagED != 0 {
		if err := cbor.Unmarshal(rest, &p.ext); err != nil {
			t.Fatalf("extensions: %v", err)
		}
		rest = nil
	}
	if len(rest) != 0 {
		t.Fatalf("%d trailing bytes in authData", len(rest))
	}
	return p
}

func field[T any](t testing.TB, m map[int]cbor.RawMessage, k int) T {
	t.Helper()
	var v T
	raw, ok := m[k]
	if !ok {
		t.Fatalf("response has no key %d", k)
	}
	if err := cbor.Unmarshal(raw, &v); err != nil {
		t.Fatalf("key %d: %v", k, err)
	}
	return v
}

func verifySig(t testing.TB, pub *ecdsa.PublicKey, authData, clientDataHash, sig []byte) {
	t.Helper()
	h := sha256.Sum256(append(append([]byte{}, authData...), clientDataHash...))
	if !ecdsa.VerifyASN1(pub, h[:], sig) {
		t.Fatal("signature does not verify")
	}
}
