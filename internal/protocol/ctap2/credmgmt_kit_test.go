package ctap2

// Black-box tests of authenticatorCredentialManagement (CTAP 2.1 §6.8)
// with tokens from internal/ctaptest.

import (
	"bytes"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// subcommandRequest is the request map of a command with subcommands
// (credential management §6.8, authenticatorConfig §6.11): subCommand
// (1), subCommandParams (2, canonical CBOR; nil: none) and, when tok is
// not nil, pinUvAuthProtocol (3) and pinUvAuthParam (4) over msg(sub,
// subCommandParams).
func subcommandRequest(t *testing.T, c *ctaptest.Client, tok []byte, sub byte, params map[int]any, msg func(byte, []byte) []byte) map[int]any {
	t.Helper()
	req := map[int]any{1: sub}
	var raw []byte
	if params != nil {
		var err error
		if raw, err = encMode.Marshal(params); err != nil {
			t.Fatal(err)
		}
		req[2] = cbor.RawMessage(raw)
	}
	if tok != nil {
		req[3], req[4] = c.Version, c.Param(tok, msg(sub, raw))
	}
	return req
}

// cmCall sends credential-management subcommand sub with params (nil:
// none), authorised by tok (nil: no pinUvAuthParam).
func cmCall(t *testing.T, e *testEnv, c *ctaptest.Client, tok []byte, sub byte, params map[int]any) (Status, map[int]cbor.RawMessage) {
	t.Helper()
	return e.call(t, CmdCredentialManagement, subcommandRequest(t, c, tok, sub, params, ctaptest.CredMgmtMessage))
}

// TestKitCredMgmt walks credential management: metadata (§6.8.2), the RP
// and credential enumerations (§6.8.3-4), deleteCredential (§6.8.5) and
// updateUserInformation (§6.8.6), with the authorisation failures of each
// and RP-bound tokens refused for whole-authenticator views.
func TestKitCredMgmt(t *testing.T) {
	e, c := kitEnv(t, 2)
	ann := makeRK(t, e, "a.example", []byte("u-ann"), "ann", nil)
	bob := makeRK(t, e, "a.example", []byte("u-bob"), "bob", nil)
	cy := makeRK(t, e, "c.example", []byte("u-cy"), "cy", nil)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	tok := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "")

	// Authorisation (§6.8.2 steps 1-4).
	if st, _ := cmCall(t, e, c, nil, cmGetCredsMetadata, nil); st != ErrPUATRequired {
		t.Errorf("metadata without pinUvAuthParam: %v, want PUAT_REQUIRED (0x36)", st)
	}
	bad := bytes.Clone(tok)
	bad[0] ^= 1
	if st, _ := cmCall(t, e, c, bad, cmGetCredsMetadata, nil); st != ErrPinAuthInvalid {
		t.Errorf("metadata with another token's param: %v, want PIN_AUTH_INVALID", st)
	}
	if st, _ := e.call(t, CmdCredentialManagement, map[int]any{1: cmGetCredsMetadata, 3: 1, 4: ctaptest.Authenticate(1, tok, []byte{cmGetCredsMetadata})}); st != ErrPinAuthInvalid {
		t.Errorf("protocol-two token used over protocol one: %v, want PIN_AUTH_INVALID", st)
	}
	if st, _ := e.call(t, CmdCredentialManagement, map[int]any{1: cmGetCredsMetadata, 4: c.Param(tok, []byte{cmGetCredsMetadata})}); st != ErrMissingParameter {
		t.Errorf("no pinUvAuthProtocol: %v, want MISSING_PARAMETER", st)
	}
	if st, _ := e.call(t, CmdCredentialManagement, map[int]any{2: []byte{}}); st != ErrMissingParameter {
		t.Errorf("no subcommand: %v, want MISSING_PARAMETER", st)
	}
	if st, _ := cmCall(t, e, c, tok, 0x20, nil); st != ErrInvalidSubcommand {
		t.Errorf("subcommand 0x20: %v, want INVALID_SUBCOMMAND", st)
	}
	gaTok := mustToken(t, c, "1234", pinuv.PermGetAssertion, "")
	if st, _ := cmCall(t, e, c, gaTok, cmGetCredsMetadata, nil); st != ErrPinAuthInvalid {
		t.Errorf("token without cm: %v, want PIN_AUTH_INVALID", st)
	}

	// getCredsMetadata: exactly {1: 3, 2: capacity-3}.
	tok = mustToken(t, c, "1234", pinuv.PermCredentialManagement, "")
	want, _ := encMode.Marshal(map[int]int{1: 3, 2: DefaultCapacity - 3})
	raw, _ := encMode.Marshal(map[int]any{1: cmGetCredsMetadata, 3: 2, 4: c.Param(tok, []byte{cmGetCredsMetadata})})
	if got := c.Raw(t, CmdCredentialManagement, raw); !bytes.Equal(got, append([]byte{0}, want...)) {
		t.Errorf("metadata response %x, want 00%x", got, want)
	}

	// enumerateRPs: sorted, with rpIDHash and totalRPs, then NOT_ALLOWED.
	st, m := cmCall(t, e, c, tok, cmEnumerateRPsBegin, nil)
	if st != StatusOK || field[map[string]any](t, m, 3)["id"] != "a.example" || !bytes.Equal(field[[]byte](t, m, 4), cdh("a.example")) || field[int](t, m, 5) != 2 {
		t.Fatalf("enumerateRPsBegin: %v %v", st, m)
	}
	st, m = e.call(t, CmdCredentialManagement, map[int]any{1: cmEnumerateRPsGetNextRP})
	if st != StatusOK || field[map[string]any](t, m, 3)["id"] != "c.example" || !bytes.Equal(field[[]byte](t, m, 4), cdh("c.example")) {
		t.Fatalf("enumerateRPsGetNextRP: %v %v", st, m)
	}
	if _, ok := m[5]; ok {
		t.Error("getNextRP repeats totalRPs")
	}
	if st, _ := e.call(t, CmdCredentialManagement, map[int]any{1: cmEnumerateRPsGetNextRP}); st != ErrNotAllowed {
		t.Errorf("past the last RP: %v, want NOT_ALLOWED", st)
	}

	// enumerateCredentials for a.example: both, each with its user and a
	// public key that verifies the credential's assertions.
	if st, _ := cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{}); st != ErrMissingParameter {
		t.Errorf("enumerateCredentialsBegin without rpIDHash: %v, want MISSING_PARAMETER", st)
	}
	if st, _ := cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh("none.example")}); st != ErrNoCredentials {
		t.Errorf("enumerateCredentialsBegin of an unknown RP: %v, want NO_CREDENTIALS", st)
	}
	st, m = cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh("a.example")})
	if st != StatusOK || field[int](t, m, 9) != 2 {
		t.Fatalf("enumerateCredentialsBegin: %v, totalCredentials %v", st, m[9])
	}
	seen := map[string][]byte{}
	for i := 0; ; i++ {
		user := field[map[string]any](t, m, 6)
		id := field[map[string]any](t, m, 7)["id"].([]byte)
		seen[user["name"].(string)] = id
		if field[int](t, m, 10) != credProtectUVOptional {
			t.Errorf("credProtect %d, want 1", field[int](t, m, 10))
		}
		var pk map[int]any
		if err := cbor.Unmarshal(m[8], &pk); err != nil || pk[3] != int64(-7) {
			t.Errorf("publicKey %v (%v)", pk, err)
		}
		if i == 1 {
			break
		}
		if st, m = e.call(t, CmdCredentialManagement, map[int]any{1: cmEnumerateCredentialsGetNextCredential}); st != StatusOK {
			t.Fatalf("getNextCredential: %v", st)
		}
	}
	if !bytes.Equal(seen["ann"], ann) || !bytes.Equal(seen["bob"], bob) {
		t.Errorf("enumerated %x, want ann %x and bob %x", seen, ann, bob)
	}
	if st, _ := e.call(t, CmdCredentialManagement, map[int]any{1: cmEnumerateCredentialsGetNextCredential}); st != ErrNotAllowed {
		t.Errorf("past the last credential: %v, want NOT_ALLOWED", st)
	}

	// An RP-bound token: its RP only (§6.8: "pinUvAuthToken's permissions
	// RP ID" must match).
	bound := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "c.example")
	for name, sub := range map[string]byte{"metadata": cmGetCredsMetadata, "enumerateRPs": cmEnumerateRPsBegin} {
		if st, _ := cmCall(t, e, c, bound, sub, nil); st != ErrPinAuthInvalid {
			t.Errorf("RP-bound token, %s: %v, want PIN_AUTH_INVALID", name, st)
		}
	}
	if st, _ := cmCall(t, e, c, bound, cmEnumerateCredentialsBegin, map[int]any{1: cdh("a.example")}); st != ErrPinAuthInvalid {
		t.Errorf("RP-bound token, another RP's credentials: %v, want PIN_AUTH_INVALID", st)
	}
	desc := func(id []byte) map[string]any { return map[string]any{"type": "public-key", "id": id} }
	if st, _ := cmCall(t, e, c, bound, cmDeleteCredential, map[int]any{2: desc(ann)}); st != ErrPinAuthInvalid {
		t.Errorf("RP-bound token, deleting another RP's credential: %v, want PIN_AUTH_INVALID", st)
	}
	if st, _ := cmCall(t, e, c, bound, cmEnumerateCredentialsBegin, map[int]any{1: cdh("c.example")}); st != StatusOK {
		t.Errorf("RP-bound token, its RP's credentials: %v", st)
	}

	// updateUserInformation (§6.8.6): the user handle must match; name and
	// displayName are replaced, an absent displayName removed. The token
	// from before is gone: issuing one replaces the last (§6.5.5.7).
	if st, _ := cmCall(t, e, c, tok, cmGetCredsMetadata, nil); st != ErrPinAuthInvalid {
		t.Errorf("a replaced token: %v, want PIN_AUTH_INVALID", st)
	}
	tok = mustToken(t, c, "1234", pinuv.PermCredentialManagement, "")
	if st, _ := cmCall(t, e, c, tok, cmUpdateUserInformation, map[int]any{2: desc(cy)}); st != ErrMissingParameter {
		t.Errorf("update without user: %v, want MISSING_PARAMETER", st)
	}
	if st, _ := cmCall(t, e, c, tok, cmUpdateUserInformation, map[int]any{2: desc(cy), 3: map[string]any{"id": []byte("u-other"), "name": "x"}}); st != ErrInvalidParameter {
		t.Errorf("update with another user handle: %v, want INVALID_PARAMETER", st)
	}
	if st, m := cmCall(t, e, c, tok, cmUpdateUserInformation, map[int]any{2: desc(cy), 3: map[string]any{"id": []byte("u-cy"), "name": "cy@new"}}); st != StatusOK || m != nil {
		t.Fatalf("updateUserInformation: %v %v, want OK and no body", st, m)
	}
	st, m = cmCall(t, e, c, tok, cmEnumerateCredentialsBegin, map[int]any{1: cdh("c.example")})
	if u := field[map[string]any](t, m, 6); st != StatusOK || u["name"] != "cy@new" || u["displayName"] != nil || !bytes.Equal(u["id"].([]byte), []byte("u-cy")) {
		t.Errorf("after the update: %v, user %v; want name cy@new, no displayName", st, u)
	}

	// deleteCredential (§6.8.5).
	if st, _ := cmCall(t, e, c, tok, cmDeleteCredential, map[int]any{}); st != ErrMissingParameter {
		t.Errorf("delete without credentialId: %v, want MISSING_PARAMETER", st)
	}
	if st, _ := cmCall(t, e, c, tok, cmDeleteCredential, map[int]any{2: desc([]byte("no such credential"))}); st != ErrNoCredentials {
		t.Errorf("delete of an unknown credential: %v, want NO_CREDENTIALS", st)
	}
	if st, m := cmCall(t, e, c, tok, cmDeleteCredential, map[int]any{2: desc(bob)}); st != StatusOK || m != nil {
		t.Fatalf("deleteCredential: %v %v", st, m)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("a.example", bob)); st != ErrNoCredentials {
		t.Errorf("getAssertion with the deleted credential: %v, want NO_CREDENTIALS", st)
	}
	if st, m := cmCall(t, e, c, tok, cmGetCredsMetadata, nil); st != StatusOK || field[int](t, m, 1) != 2 {
		t.Errorf("metadata after the delete: %v %v, want 2 credentials", st, m)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("a.example", ann)); st != StatusOK {
		t.Errorf("the other credential of the RP: %v", st)
	}
}

// TestKitCredMgmtNoCredentials: enumerateRPsBegin on an authenticator
// without discoverable credentials is NO_CREDENTIALS (§6.8.3).
func TestKitCredMgmtNoCredentials(t *testing.T) {
	e, c := kitEnv(t, 1)
	if st := c.SetPIN(t, "1234"); st != ctaptest.StatusOK {
		t.Fatal(Status(st))
	}
	tok := mustToken(t, c, "1234", pinuv.PermCredentialManagement, "")
	if st, _ := cmCall(t, e, c, tok, cmEnumerateRPsBegin, nil); st != ErrNoCredentials {
		t.Errorf("enumerateRPsBegin: %v, want NO_CREDENTIALS", st)
	}
}
