package ctap2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// credProtect levels (CTAP 2.1 §12.1).
const (
	credProtectUVOptional         = 1
	credProtectUVOptionalWithList = 2
	credProtectUVRequired         = 3
)

// assertionCredential is a credential selected for an assertion.
type assertionCredential struct {
	id         []byte
	blob       tpm.KeyBlob
	hmacSecret bool                 // created with hmac-secret
	stored     *keystore.Credential // nil for non-discoverable credentials
}

// assertionState is what getNextAssertion needs (CTAP 2.1 §6.3).
type assertionState struct {
	remaining      []assertionCredential
	rpIDHash       []byte
	clientDataHash []byte
	flags          byte
	uv             bool
	exts           gaExtensions
	expires        time.Time
	channel        uint32 // the CTAPHID channel of the getAssertion
}

// findCredential resolves a credential ID presented for rpIDHash.
// Discoverable credentials must still be in the store (a deleted passkey
// stops working even if the RP kept its ID). credProtect level 3 hides a
// credential unless the user was verified.
func (a *Authenticator) findCredential(id, rpIDHash []byte, uv bool) (assertionCredential, bool) {
	w, err := a.secrets.wrapper.unwrap(id, rpIDHash)
	if err != nil {
		return assertionCredential{}, false
	}
	if w.CredProtect == credProtectUVRequired && !uv {
		return assertionCredential{}, false
	}
	c := assertionCredential{id: id, blob: w.KeyBlob, hmacSecret: w.Flags&credFlagHMACSecret != 0}
	if w.discoverable() {
		stored, err := a.store.Credential(id)
		if err != nil {
			if !errors.Is(err, keystore.ErrNotFound) {
				a.log.Error("read credential", "err", err)
			}
			return assertionCredential{}, false
		}
		c.stored = stored
	}
	return c, true
}

// soleAccount returns the RP's discoverable credential when it has exactly
// one with a user name a prompt can show, else nil.
func (a *Authenticator) soleAccount(rpID string) *keystore.Credential {
	stored, err := a.store.CredentialsByRP(rpID)
	if err != nil || len(stored) != 1 || stored[0].UserName == "" {
		return nil
	}
	return stored[0]
}

// getAssertion is authenticatorGetAssertion (CTAP 2.1 §6.2.2).
func (a *Authenticator) getAssertion(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	var req GetAssertionRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	if req.RPID == nil || req.ClientDataHash == nil {
		return nil, ErrMissingParameter
	}
	if len(req.ClientDataHash) != clientHashLen {
		return nil, ErrInvalidLength
	}
	up, uvOption := true, false
	for name, v := range req.Options {
		switch name {
		case "rk":
			return nil, ErrUnsupportedOption // step 5: rk is not a getAssertion option
		case "up":
			up = v
		case "uv":
			uvOption = v
		}
	}
	rpID := *req.RPID
	rpIDHash := sha256.Sum256([]byte(rpID))
	exts, err := a.parseGAExtensions(req.Extensions)
	if err != nil {
		return nil, err
	}
	// A silent assertion (up=false) proves that a credential exists and
	// releases nothing bound to it. hmac-secret is the key LUKS, age and
	// password managers use: deriving it without a touch would let any
	// process that can open the device take it, so the request fails
	// (as OpenSK does) before any credential is looked up.
	if !up && exts.hmacSecret != nil {
		return nil, ErrUnsupportedOption
	}
	// Without an allow list the RP's discoverable credentials are read
	// before the PIN/UV steps, so that a UV prompt can name the account
	// when there is only one.
	discoverable := len(req.AllowList) == 0
	var stored []*keystore.Credential
	if discoverable {
		stored, err = a.store.CredentialsByRP(rpID)
		if err != nil {
			// A damaged record costs only itself: serve the readable ones.
			if !errors.Is(err, keystore.ErrCorrupt) {
				return nil, fmt.Errorf("list credentials: %w", err)
			}
			a.log.Error("some credentials of this RP are unreadable", "err", err)
		}
	}
	uvPrompt := prompt.Request{Operation: prompt.OpSignIn, RPID: rpID}
	if len(stored) == 1 {
		uvPrompt.UserName = stored[0].UserName
	}
	auth, err := a.authorize(ctx, tx, authRequest{
		rpID:              rpID,
		clientDataHash:    req.ClientDataHash,
		pinUvAuthParam:    req.PinUvAuthParam,
		pinUvAuthProtocol: req.PinUvAuthProtocol,
		uvOption:          uvOption,
		permission:        pinuv.PermGetAssertion,
		prompt:            uvPrompt,
	})
	if err != nil {
		return nil, err
	}
	uv := auth.uv

	// Step 7: locate the applicable credentials.
	var creds []assertionCredential
	if !discoverable {
		for _, d := range req.AllowList {
			if d.Type == nil || d.ID == nil {
				return nil, ErrMissingParameter
			}
			if *d.Type != credentialTypePublicKey || len(creds) > 0 {
				continue
			}
			if c, ok := a.findCredential(d.ID, rpIDHash[:], uv); ok {
				creds = append(creds, c)
			}
		}
	} else {
		for _, s := range stored {
			// Without an allow list, credProtect 2 and 3 both need UV.
			if s.CredProtect >= credProtectUVOptionalWithList && !uv {
				continue
			}
			creds = append(creds, assertionCredential{id: s.ID, blob: s.KeyBlob, hmacSecret: s.HMACSecret, stored: s})
		}
	}
	if len(creds) == 0 {
		return nil, ErrNoCredentials
	}
	// Step 9: user presence, unless the RP asked for a silent assertion.
	// selected: the presence came from a prompt that named the one
	// account found, approved by a person (CTAP 2.1 userSelected).
	one := discoverable && len(creds) == 1 && creds[0].stored != nil
	selected := false
	flags := uvFlag(uv)
	if up && auth.up {
		flags |= flagUP
		if auth.tokenUsed {
			selected = one && bytes.Equal(a.pin.TokenAccount(), creds[0].id)
		} else {
			selected = one && uvPrompt.UserName != "" && bytes.Equal(stored[0].ID, creds[0].id)
		}
	} else if up {
		name := ""
		if len(creds) == 1 && creds[0].stored != nil {
			name = creds[0].stored.UserName
		}
		if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpSignIn, RPID: rpID, UserName: name}); err != nil {
			return nil, err
		}
		flags |= flagUP
		selected = one && name != ""
	}
	if up {
		a.consumeToken(auth, false)
	}
	if _, approveAll := a.prompter.(prompt.ApproveAll); approveAll {
		selected = false // it asks nobody: nothing was chosen
	}
	resp, err := a.assert(creds[0], rpIDHash[:], req.ClientDataHash, flags, uv, exts)
	if err != nil {
		return nil, err
	}
	resp.UserSelected = selected
	// numberOfCredentials "defaults to one" (CTAP 2.1 §6.2.2): sent only
	// when the platform has to pick among several accounts.
	if discoverable {
		if len(creds) > 1 {
			resp.NumberOfCredentials = len(creds)
			a.next = &assertionState{
				remaining:      creds[1:],
				rpIDHash:       rpIDHash[:],
				clientDataHash: req.ClientDataHash,
				flags:          flags,
				uv:             uv,
				exts:           exts,
				expires:        a.now().Add(nextAssertionTimeout),
				channel:        tx.Channel(),
			}
		}
	}
	return marshal(resp)
}

// getNextAssertion is authenticatorGetNextAssertion (CTAP 2.1 §6.3). Only
// the channel that ran the getAssertion may continue it; another channel
// is refused and leaves the state to its owner.
func (a *Authenticator) getNextAssertion(channel uint32) ([]byte, error) {
	st := a.next
	if st != nil && st.channel != channel {
		return nil, ErrNotAllowed
	}
	if st == nil || len(st.remaining) == 0 || a.now().After(st.expires) {
		a.next = nil
		return nil, ErrNotAllowed
	}
	c := st.remaining[0]
	st.remaining = st.remaining[1:]
	resp, err := a.assert(c, st.rpIDHash, st.clientDataHash, st.flags, st.uv, st.exts)
	if err != nil {
		return nil, err
	}
	return marshal(resp)
}

// assert signs one assertion: exactly one TPM Load and one Sign.
func (a *Authenticator) assert(c assertionCredential, rpIDHash, clientDataHash []byte, flags byte, uv bool, exts gaExtensions) (*GetAssertionResponse, error) {
	counter, err := a.store.NextCounter()
	if err != nil {
		return nil, fmt.Errorf("signature counter: %w", err)
	}
	ad := authenticatorData{RPIDHash: rpIDHash, Flags: flags, SignCount: counter}
	extOut, err := a.gaExtensionOutputs(exts, c, flags&flagUP != 0, uv)
	if err != nil {
		return nil, err
	}
	if err := ad.setExtensions(extOut); err != nil {
		return nil, err
	}
	authData := ad.marshal()
	h := sha256.New()
	h.Write(authData)
	h.Write(clientDataHash)
	sig, err := a.tpm.Sign(c.blob, h.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("sign assertion: %w", err)
	}
	resp := &GetAssertionResponse{
		Credential: credentialDescriptorOut{ID: c.id, Type: credentialTypePublicKey},
		AuthData:   authData,
		Signature:  sig,
	}
	if c.stored != nil {
		// User identifiable information only after user verification
		// (CTAP 2.1 §6.2.2 step 12); the user handle always, since
		// WebAuthn needs it for discoverable credentials.
		resp.User = &userEntityOut{ID: c.stored.UserID}
		if uv {
			resp.User.Name = c.stored.UserName
			resp.User.DisplayName = c.stored.UserDisplayName
		}
		a.store.TouchCredential(c.id, a.now().UTC())
		// largeBlobKey decrypts the RP's entry in the large-blob array,
		// which anyone may read (§6.10.2): only with presence.
		if exts.largeBlobKey && flags&flagUP != 0 {
			resp.LargeBlobKey = c.stored.LargeBlobKey
		}
	}
	return resp, nil
}
