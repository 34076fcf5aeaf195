package ctap2

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// hmacSecretIn builds a valid hmac-secret input (CTAP 2.1 §12.5) over PIN
// protocol two, as a platform would (internal/ctaptest): key agreement
// with the authenticator, the salt encrypted and authenticated.
func hmacSecretIn(t *testing.T, a *Authenticator, salt []byte) map[int]any {
	t.Helper()
	return ctaptest.NewClient(a, 2).HMACSecretInput(t, salt).Input
}

// TestSilentAssertionReleasesNoSecret: with up=false, hmac-secret is
// refused with CTAP2_ERR_UNSUPPORTED_OPTION (0x2B) before any credential
// is looked up, even when every prompt is denied, and credBlob and
// largeBlobKey are omitted; with presence all three are returned.
func TestSilentAssertionReleasesNoSecret(t *testing.T) {
	e := newEnv(t)
	mc := mcParams("prf.example", []byte("u-prf"), true)
	mc[6] = map[string]any{"hmac-secret": true, "credBlob": []byte("blob"), "largeBlobKey": true}
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatalf("makeCredential: %v", st)
	}
	id := parseAuthData(t, field[[]byte](t, m, 2)).credID
	salt := bytes.Repeat([]byte{7}, 32)

	e.prompt.answer = errors.New("denied") // --prompt deny: nobody approves
	asked := e.prompt.count()
	for _, allow := range [][][]byte{{id}, nil} {
		p := gaParams("prf.example", allow...)
		p[4] = map[string]any{"hmac-secret": hmacSecretIn(t, e.a, salt)}
		p[5] = map[string]bool{"up": false}
		if got := rawCall(t, e.a, CmdGetAssertion, p); !bytes.Equal(got, []byte{byte(ErrUnsupportedOption)}) {
			t.Errorf("up=false hmac-secret (allow list %v): response %x, want 2b", allow != nil, got)
		}
	}
	// An unknown RP answers the same: no oracle either.
	p := gaParams("unknown.example")
	p[4] = map[string]any{"hmac-secret": hmacSecretIn(t, e.a, salt)}
	p[5] = map[string]bool{"up": false}
	if got := rawCall(t, e.a, CmdGetAssertion, p); !bytes.Equal(got, []byte{byte(ErrUnsupportedOption)}) {
		t.Errorf("up=false hmac-secret on an unknown RP: %x, want 2b", got)
	}
	if e.prompt.count() != asked {
		t.Error("a silent request prompted")
	}

	// credBlob and largeBlobKey: omitted without presence.
	p = gaParams("prf.example", id)
	p[4] = map[string]any{"credBlob": true, "largeBlobKey": true}
	p[5] = map[string]bool{"up": false}
	st, m = e.call(t, CmdGetAssertion, p)
	if st != StatusOK {
		t.Fatalf("up=false getAssertion: %v", st)
	}
	ad := parseAuthData(t, field[[]byte](t, m, 2))
	if ad.flags != 0 || ad.ext != nil {
		t.Errorf("up=false: flags %02x, extensions %v; want 0 and none", ad.flags, ad.ext)
	}
	if _, ok := m[7]; ok {
		t.Error("up=false returned the largeBlobKey")
	}

	// With presence: all three.
	e.prompt.answer = nil
	p = gaParams("prf.example", id)
	p[4] = map[string]any{"hmac-secret": hmacSecretIn(t, e.a, salt), "credBlob": true, "largeBlobKey": true}
	st, m = e.call(t, CmdGetAssertion, p)
	if st != StatusOK {
		t.Fatalf("getAssertion with presence: %v", st)
	}
	ad = parseAuthData(t, field[[]byte](t, m, 2))
	if ad.flags&flagUP == 0 || len(ad.ext["hmac-secret"].([]byte)) != 48 || !bytes.Equal(ad.ext["credBlob"].([]byte), []byte("blob")) {
		t.Errorf("with presence: flags %02x, extensions %v", ad.flags, ad.ext)
	}
	if len(field[[]byte](t, m, 7)) != 32 {
		t.Error("no largeBlobKey with presence")
	}
}

// TestExcludeListNoOracle (CTAP 2.1 §6.1.2 step 11): CREDENTIAL_EXCLUDED
// only after presence was granted. A refused, timed-out or cancelled
// prompt answers exactly what an unknown credential's does.
func TestExcludeListNoOracle(t *testing.T) {
	e := newEnv(t)
	cred := makeCred(t, e, "ex.example", []byte("u"), false)
	excluded := mcParams("ex.example", []byte("u"), false)
	excluded[5] = []any{map[string]any{"type": "public-key", "id": cred.credID}}
	unknown := mcParams("ex.example", []byte("u"), false)
	unknown[5] = []any{map[string]any{"type": "public-key", "id": bytes.Repeat([]byte{1}, len(cred.credID))}}

	for _, tc := range []struct {
		name   string
		answer error
		want   Status
	}{
		{"denied", errors.New("no"), ErrOperationDenied},
		{"timed out", prompt.ErrTimeout, ErrUserActionTimeout},
	} {
		e.prompt.answer = tc.answer
		for name, p := range map[string]map[int]any{"excluded": excluded, "unknown": unknown} {
			if got := rawCall(t, e.a, CmdMakeCredential, p); !bytes.Equal(got, []byte{byte(tc.want)}) {
				t.Errorf("%s, %s credential: %x, want %02x", tc.name, name, got, byte(tc.want))
			}
		}
	}
	// Cancelled: KEEPALIVE_CANCEL for both.
	e.prompt.answer, e.prompt.block = nil, true
	for name, p := range map[string]map[int]any{"excluded": excluded, "unknown": unknown} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		req, _ := cbor.Marshal(p)
		if got := e.a.CBOR(ctx, append([]byte{CmdMakeCredential}, req...)); !bytes.Equal(got, []byte{byte(ErrKeepaliveCancel)}) {
			t.Errorf("cancelled, %s credential: %x, want 2d", name, got)
		}
		cancel()
	}
	// Granted: CREDENTIAL_EXCLUDED (0x19).
	e.prompt.block = false
	if got := rawCall(t, e.a, CmdMakeCredential, excluded); !bytes.Equal(got, []byte{byte(ErrCredentialExcluded)}) {
		t.Errorf("granted presence: %x, want 19", got)
	}
}

// TestZeroLengthPinUvAuthParam (CTAP 2.1 §6.1.2 and §6.2.2, step 1): after
// a touch, PIN_NOT_SET (0x35) without a PIN and PIN_INVALID (0x31) with one.
func TestZeroLengthPinUvAuthParam(t *testing.T) {
	e := newEnv(t)
	mc := mcParams("probe.example", []byte("u"), false)
	mc[8], mc[9] = []byte{}, 2
	ga := gaParams("probe.example")
	ga[6], ga[7] = []byte{}, 2
	for _, tc := range []struct {
		pin  bool
		want Status
	}{{false, ErrPinNotSet}, {true, ErrPinInvalid}} {
		if tc.pin {
			if err := e.a.pin.installPIN("123456"); err != nil {
				t.Fatal(err)
			}
		}
		for name, c := range map[string]struct {
			cmd byte
			p   map[int]any
		}{"makeCredential": {CmdMakeCredential, mc}, "getAssertion": {CmdGetAssertion, ga}} {
			n := e.prompt.count()
			if got := rawCall(t, e.a, c.cmd, c.p); !bytes.Equal(got, []byte{byte(tc.want)}) {
				t.Errorf("%s, PIN set %v: %x, want %02x", name, tc.pin, got, byte(tc.want))
			}
			if e.prompt.count() != n+1 {
				t.Errorf("%s: answered without a touch", name)
			}
		}
	}
}

// TestSetPINWhenSet (CTAP 2.1 §6.5.5.5): setPIN on an authenticator that
// has a PIN is CTAP2_ERR_PIN_AUTH_INVALID (0x33).
func TestSetPINWhenSet(t *testing.T) {
	e := newEnv(t)
	if err := e.a.pin.installPIN("123456"); err != nil {
		t.Fatal(err)
	}
	resp := rawCall(t, e.a, CmdClientPIN, map[int]any{1: 2, 2: pinGetKeyAgreement})
	var ka struct {
		Key pinuv.COSEKey `cbor:"1,keyasint"`
	}
	if err := cbor.Unmarshal(resp[1:], &ka); err != nil {
		t.Fatal(err)
	}
	platform, _ := pinuv.NewProtocolTwo()
	secret, err := platform.Decapsulate(ka.Key)
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, 64)
	copy(padded, "654321")
	enc, _ := platform.Encrypt(secret, padded)
	got := rawCall(t, e.a, CmdClientPIN, map[int]any{1: 2, 2: pinSetPIN, 3: platform.PublicKey(), 4: platform.Authenticate(secret.HMACKey(), enc), 5: enc})
	if !bytes.Equal(got, []byte{byte(ErrPinAuthInvalid)}) {
		t.Fatalf("setPIN with a PIN set: %x, want 33", got)
	}
	// The old PIN still stands.
	if err := e.a.pin.CheckPIN("123456"); err != nil {
		t.Errorf("the PIN changed: %v", err)
	}
}

// TestLargeBlobsParameters (CTAP 2.1 §6.10.2): a missing offset, neither or
// both of get and set, and a get carrying pinUvAuthParam or
// pinUvAuthProtocol are all CTAP1_ERR_INVALID_PARAMETER (0x02).
func TestLargeBlobsParameters(t *testing.T) {
	e := newEnv(t)
	for name, p := range map[string]map[int]any{
		"no offset, get":            {1: 10},
		"no offset, set":            {2: []byte{1}, 4: 1},
		"neither get nor set":       {3: 0},
		"both get and set":          {1: 10, 2: []byte{1}, 3: 0},
		"get with pinUvAuthParam":   {1: 10, 3: 0, 5: make([]byte, 32)},
		"get with protocol":         {1: 10, 3: 0, 6: 2},
		"get with param and proto":  {1: 10, 3: 0, 5: make([]byte, 32), 6: 2},
		"get with length":           {1: 10, 3: 0, 4: 10},
		"get with empty parameters": {1: 10, 3: 0, 5: []byte{}},
	} {
		if got := rawCall(t, e.a, CmdLargeBlobs, p); !bytes.Equal(got, []byte{byte(ErrInvalidParameter)}) {
			t.Errorf("%s: %x, want 02", name, got)
		}
	}
	// A plain get still works: the initial array, 17 bytes.
	got := rawCall(t, e.a, CmdLargeBlobs, map[int]any{1: 64, 3: 0})
	if Status(got[0]) != StatusOK {
		t.Fatalf("get: %x", got)
	}
	var r struct {
		Config []byte `cbor:"1,keyasint"`
	}
	if err := cbor.Unmarshal(got[1:], &r); err != nil || !bytes.Equal(r.Config, emptyLargeBlobArray()) {
		t.Errorf("get: %x (%v)", r.Config, err)
	}
}

// TestEmptyUserID: a discoverable credential whose user.id is empty comes
// back with user.id as an empty byte string (0x40), not CBOR null, from
// getAssertion and from credential management, also after a restart.
func TestEmptyUserID(t *testing.T) {
	e := newEnv(t)
	p := mcParams("empty.example", []byte{}, true)
	if st, _ := e.call(t, CmdMakeCredential, p); st != StatusOK {
		t.Fatalf("makeCredential: %v", st)
	}
	check := func(e *testEnv) {
		t.Helper()
		resp := rawCall(t, e.a, CmdGetAssertion, gaParams("empty.example"))
		if Status(resp[0]) != StatusOK {
			t.Fatalf("getAssertion: %x", resp)
		}
		var m map[int]cbor.RawMessage
		if err := cbor.Unmarshal(resp[1:], &m); err != nil {
			t.Fatal(err)
		}
		var user map[string]cbor.RawMessage
		if err := cbor.Unmarshal(m[4], &user); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(user["id"], []byte{0x40}) {
			t.Errorf("user.id encoded as %x, want 40 (an empty byte string)", []byte(user["id"]))
		}
	}
	check(e)
	dir := e.dir
	e.store.Close()
	check(openEnv(t, dir))
}

// hidChannel is one application's CTAPHID channel on an in-memory device
// (internal/ctaptest).
type hidChannel struct {
	c *ctaptest.HIDChannel
}

// cbor sends one CTAPHID_CBOR request and returns the response, status
// byte first.
func (c *hidChannel) cbor(t *testing.T, ctapCmd byte, params any) []byte {
	t.Helper()
	return ctaptest.NewClient(c.c, 2).Raw(t, ctapCmd, params)
}

// serveHID runs a real CTAPHID server for a in front of a pipe device and
// opens n channels on it.
func serveHID(t *testing.T, a *Authenticator, n int) []*hidChannel {
	t.Helper()
	p := ctaptest.NewPipe()
	srv := ctaphid.NewServer(HIDHandler(a), ctaphid.Config{Capabilities: ctaphid.CapCBOR})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, p); close(done) }()
	t.Cleanup(func() { cancel(); p.Close(); <-done })
	var chans []*hidChannel
	for range n {
		c, err := ctaptest.OpenHID(p)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, &hidChannel{c})
	}
	return chans
}

// TestContinuationsBelongToTheirChannel: getNextAssertion (CTAP 2.1 §6.3)
// and the credential-management enumerations (§6.8.3, §6.8.4) continue
// only on the channel that began them; another channel gets NOT_ALLOWED
// (0x30) and does not end the owner's state.
func TestContinuationsBelongToTheirChannel(t *testing.T) {
	e := openEnv(t, t.TempDir())
	p := &pinPrompter{pin: "271828"}
	a, err := New(Config{TPM: tpmsim.TPM(), Store: e.store, Prompt: p, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.a, e.prompt = a, &p.testPrompter
	for _, u := range []string{"ann", "bob", "cy"} {
		makeRK(t, e, "chan.example", []byte("u-"+u), u, nil)
	}
	makeRK(t, e, "other.example", []byte("u-dee"), "dee", nil)
	if err := a.pin.installPIN(p.pin); err != nil {
		t.Fatal(err)
	}
	ch := serveHID(t, a, 2)
	owner, intruder := ch[0], ch[1]
	notAllowed := []byte{byte(ErrNotAllowed)}

	// getNextAssertion.
	resp := owner.cbor(t, CmdGetAssertion, map[int]any{1: "chan.example", 2: cdh("ga")})
	if Status(resp[0]) != StatusOK {
		t.Fatalf("getAssertion: %x", resp)
	}
	if got := intruder.cbor(t, CmdGetNextAssertion, nil); !bytes.Equal(got, notAllowed) {
		t.Errorf("getNextAssertion from another channel: %x, want 30", got)
	}
	for i := range 2 {
		if got := owner.cbor(t, CmdGetNextAssertion, nil); Status(got[0]) != StatusOK {
			t.Errorf("owner's getNextAssertion %d after the intrusion: %x", i+2, got)
		}
	}

	// Credential management: enumerateRPs, then enumerateCredentials.
	tok := uvToken(t, a, pinuv.PermCredentialManagement, "")
	pr, _ := pinuv.NewProtocolTwo()
	cm := func(c *hidChannel, sub byte, params []byte) []byte {
		req := map[int]any{1: sub}
		if params != nil {
			req[2] = cbor.RawMessage(params)
		}
		if sub == cmEnumerateRPsBegin || sub == cmEnumerateCredentialsBegin {
			req[3], req[4] = 2, pr.Authenticate(tok, append([]byte{sub}, params...))
		}
		return c.cbor(t, CmdCredentialManagement, req)
	}
	if got := cm(owner, cmEnumerateRPsBegin, nil); Status(got[0]) != StatusOK {
		t.Fatalf("enumerateRPsBegin: %x", got)
	}
	if got := cm(intruder, cmEnumerateRPsGetNextRP, nil); !bytes.Equal(got, notAllowed) {
		t.Errorf("enumerateRPsGetNextRP from another channel: %x, want 30", got)
	}
	if got := cm(owner, cmEnumerateRPsGetNextRP, nil); Status(got[0]) != StatusOK {
		t.Errorf("owner's enumerateRPsGetNextRP after the intrusion: %x", got)
	}
	params, _ := cbor.Marshal(map[int]any{1: cdh("chan.example")})
	if got := cm(owner, cmEnumerateCredentialsBegin, params); Status(got[0]) != StatusOK {
		t.Fatalf("enumerateCredentialsBegin: %x", got)
	}
	if got := cm(intruder, cmEnumerateCredentialsGetNextCredential, nil); !bytes.Equal(got, notAllowed) {
		t.Errorf("enumerateCredentialsGetNextCredential from another channel: %x, want 30", got)
	}
	for i := range 2 {
		if got := cm(owner, cmEnumerateCredentialsGetNextCredential, nil); Status(got[0]) != StatusOK {
			t.Errorf("owner's next credential %d: %x", i+2, got)
		}
	}
	if got := cm(owner, cmEnumerateCredentialsGetNextCredential, nil); !bytes.Equal(got, notAllowed) {
		t.Errorf("past the end: %x, want 30", got)
	}
}
