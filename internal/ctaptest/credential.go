package ctaptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// Registered is a credential makeCredential made: its ID and ES256 public
// key, from the attested credential data (WebAuthn §6.5.1).
type Registered struct {
	ID        []byte
	PublicKey *ecdsa.PublicKey
}

// MakeES256 registers user at rp with an ES256 key, discoverable when rk,
// asking for presence only (CTAP 2.1 §6.1), and fails tb unless the
// authenticator answers CTAP2_OK with an ES256 credential.
func (c *Client) MakeES256(tb testing.TB, clientDataHash []byte, rp, user string, rk bool) Registered {
	tb.Helper()
	st, m := c.Call(tb, CmdMakeCredential, map[int]any{
		1: clientDataHash, 2: map[string]any{"id": rp}, 3: map[string]any{"id": []byte(user), "name": user},
		4: []map[string]any{{"alg": -7, "type": "public-key"}}, 7: map[string]bool{"rk": rk},
	})
	if st != StatusOK {
		tb.Fatalf("ctaptest: makeCredential %s at %s: %v", user, rp, st)
	}
	ad := Field[[]byte](tb, m, 2)
	// rpIdHash 32, flags 1, signCount 4, AAGUID 16, credentialIdLength 2.
	if len(ad) < 55 || ad[32]&0x40 == 0 {
		tb.Fatalf("ctaptest: makeCredential authData without attested credential data: %x", ad)
	}
	n := int(binary.BigEndian.Uint16(ad[53:55]))
	if len(ad) < 55+n {
		tb.Fatalf("ctaptest: makeCredential authData shorter than its credential ID: %x", ad)
	}
	var key COSEKey // an EC2 P-256 key has the key agreement key's fields
	if err := cbor.NewDecoder(bytes.NewReader(ad[55+n:])).Decode(&key); err != nil || key.Kty != 2 || key.Alg != -7 || key.Crv != 1 {
		tb.Fatalf("ctaptest: credential public key %+v: %v", key, err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, key.X...), key.Y...))
	if err != nil {
		tb.Fatalf("ctaptest: credential public key: %v", err)
	}
	return Registered{ID: ad[55 : 55+n], PublicKey: pub}
}

// Assertion is getAssertion's answer (§6.2): the status, and on success
// the credential's ID, the authenticator data and the signature.
type Assertion struct {
	Status    Status
	ID        []byte
	AuthData  []byte
	Signature []byte
}

// GetAssertion asks for an assertion at rp, of the credentials in allow
// (none: the discoverable ones), with presence only.
func (c *Client) GetAssertion(tb testing.TB, clientDataHash []byte, rp string, allow ...[]byte) Assertion {
	tb.Helper()
	req := map[int]any{1: rp, 2: clientDataHash}
	if len(allow) > 0 {
		var l []map[string]any
		for _, id := range allow {
			l = append(l, map[string]any{"id": id, "type": "public-key"})
		}
		req[3] = l
	}
	st, m := c.Call(tb, CmdGetAssertion, req)
	if st != StatusOK {
		return Assertion{Status: st}
	}
	cred := Field[map[string]any](tb, m, 1)
	id, _ := cred["id"].([]byte)
	return Assertion{Status: st, ID: id, AuthData: Field[[]byte](tb, m, 2), Signature: Field[[]byte](tb, m, 3)}
}

// Verifies reports whether the signature is pub's over authData ||
// clientDataHash (WebAuthn §6.3.3 step 11).
func (a Assertion) Verifies(pub *ecdsa.PublicKey, clientDataHash []byte) bool {
	d := sha256.Sum256(append(append([]byte(nil), a.AuthData...), clientDataHash...))
	return pub != nil && ecdsa.VerifyASN1(pub, d[:], a.Signature)
}
