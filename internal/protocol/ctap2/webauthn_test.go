package ctap2

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// TestGoWebAuthnRelyingParty has go-webauthn, a relying-party library no
// one here wrote, verify a registration (packed self attestation) and two
// sign-ins, and reject a tampered one.
func TestGoWebAuthnRelyingParty(t *testing.T) {
	e := newEnv(t)
	b64 := base64.RawURLEncoding.EncodeToString
	const origin = "https://example.com"
	clientData := func(typ, challenge string) []byte {
		b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
		return b
	}
	params := []protocol.CredentialParameter{{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgES256}}

	// Registration.
	regChallenge := b64([]byte("registration challenge 0123456789"))
	cdj := clientData("webauthn.create", regChallenge)
	h := sha256.Sum256(cdj)
	mc := mcParams("example.com", []byte("user-handle"), true)
	mc[1] = h[:]
	st, m := e.call(t, CmdMakeCredential, mc)
	if st != StatusOK {
		t.Fatal(st)
	}
	attObj, err := cbor.Marshal(map[string]cbor.RawMessage{"fmt": m[1], "authData": m[2], "attStmt": m[3]})
	if err != nil {
		t.Fatal(err)
	}
	credID := parseAuthData(t, field[[]byte](t, m, 2)).credID
	reg, _ := json.Marshal(map[string]any{
		"id": b64(credID), "rawId": b64(credID), "type": "public-key",
		"response": map[string]string{"clientDataJSON": b64(cdj), "attestationObject": b64(attObj)},
	})
	pcc, err := protocol.ParseCredentialCreationResponseBytes(reg)
	if err != nil {
		t.Fatalf("parse registration: %v", err)
	}
	if _, err := pcc.Verify(regChallenge, "example.com", []string{origin}, nil, nil, protocol.TopOriginExplicitVerificationMode,
		false, false, true, nil, params, protocol.AttestationPolicy{}, protocol.SignaturePolicy{}); err != nil {
		t.Fatalf("go-webauthn rejected the registration: %v", err)
	}
	if pcc.Response.AttestationObject.Format != "packed" {
		t.Errorf("format %q", pcc.Response.AttestationObject.Format)
	}
	pubKey := pcc.Response.AttestationObject.AuthData.AttData.CredentialPublicKey

	// Sign-in, without and with an allow list.
	for i, allow := range [][]byte{nil, credID} {
		challenge := b64([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
		cdj := clientData("webauthn.get", challenge)
		h := sha256.Sum256(cdj)
		ga := gaParams("example.com")
		if allow != nil {
			ga = gaParams("example.com", allow)
		}
		ga[2] = h[:]
		st, m := e.call(t, CmdGetAssertion, ga)
		if st != StatusOK {
			t.Fatal(st)
		}
		user := field[map[string]any](t, m, 4)
		resp := map[string]string{
			"clientDataJSON": b64(cdj), "authenticatorData": b64(field[[]byte](t, m, 2)),
			"signature": b64(field[[]byte](t, m, 3)), "userHandle": b64(user["id"].([]byte)),
		}
		verify := func(resp map[string]string) error {
			body, _ := json.Marshal(map[string]any{"id": b64(credID), "rawId": b64(credID), "type": "public-key", "response": resp})
			par, err := protocol.ParseCredentialRequestResponseBytes(body)
			if err != nil {
				return err
			}
			return par.Verify(challenge, "example.com", "", []string{origin}, nil, nil, protocol.TopOriginExplicitVerificationMode,
				false, false, true, pubKey, protocol.SignaturePolicy{})
		}
		if err := verify(resp); err != nil {
			t.Fatalf("go-webauthn rejected sign-in %d: %v", i, err)
		}
		sig := field[[]byte](t, m, 3)
		sig[len(sig)-1] ^= 0x01
		resp["signature"] = b64(sig)
		if err := verify(resp); err == nil {
			t.Fatal("go-webauthn accepted a tampered signature")
		}
	}
}
