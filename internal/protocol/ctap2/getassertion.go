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

// getAssertion is authenticatorGetAssertion (CTAP 2.1 §6.2.2): the steps
// of getAssertionState in the section's order; the step numbers in the
// comments are that section's.
func (a *Authenticator) getAssertion(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	s := &getAssertionState{a: a, ctx: ctx, tx: tx}
	if err := runSteps(
		func() error { return s.parse(params) },
		func() error {
			return a.pinUvAuthParamSteps(ctx, tx, s.rpID, s.req.PinUvAuthParam, s.req.PinUvAuthProtocol)
		},
		s.validate,
		s.readDiscoverable,
		s.authorize,
		s.locateCredentials,
		s.collectPresence,
	); err != nil {
		return nil, err
	}
	return s.respond()
}

// getAssertionState is one getAssertion request on its way through the
// steps: the parsed parameters first, then what each step established.
type getAssertionState struct {
	a   *Authenticator
	ctx context.Context
	tx  ctaphid.Transaction

	// Parameters (parse, validate).
	req      GetAssertionRequest
	rpID     string
	rpIDHash []byte
	up       bool // the up option (default true)
	uvOption bool
	exts     gaExtensions

	// discoverable: no allow list, so the RP's discoverable credentials
	// (stored) are the candidates.
	discoverable bool
	stored       []*keystore.Credential
	uvPrompt     prompt.Request

	auth     userAuth              // authorize
	creds    []assertionCredential // locateCredentials
	flags    byte                  // collectPresence: UP and UV
	selected bool                  // collectPresence: userSelected
}

// parse decodes the parameters and checks that the required ones are
// present and of the right length (§6.2.1).
func (s *getAssertionState) parse(params []byte) error {
	if err := decodeParams(params, &s.req); err != nil {
		return err
	}
	if s.req.RPID == nil || s.req.ClientDataHash == nil {
		return ErrMissingParameter
	}
	if len(s.req.ClientDataHash) != clientHashLen {
		return ErrInvalidLength
	}
	s.rpID = *s.req.RPID
	h := sha256.Sum256([]byte(s.rpID))
	s.rpIDHash = h[:]
	return nil
}

// validate is step 5 (options) and the extension inputs.
func (s *getAssertionState) validate() error {
	s.up = true
	for name, v := range s.req.Options {
		switch name {
		case "rk":
			return ErrUnsupportedOption // step 5: rk is not a getAssertion option
		case "up":
			s.up = v
		case "uv":
			s.uvOption = v
		}
	}
	var err error
	if s.exts, err = s.a.parseGAExtensions(s.req.Extensions); err != nil {
		return err
	}
	// A silent assertion (up=false) proves that a credential exists and
	// releases nothing bound to it. hmac-secret is the key LUKS, age and
	// password managers use: deriving it without a touch would let any
	// process that can open the device take it, so the request fails
	// (as OpenSK does) before any credential is looked up.
	if !s.up && s.exts.hmacSecret != nil {
		return ErrUnsupportedOption
	}
	return nil
}

// readDiscoverable reads, without an allow list, the RP's discoverable
// credentials before the PIN/UV steps, so that a UV prompt can name the
// account when there is only one.
func (s *getAssertionState) readDiscoverable() error {
	s.discoverable = len(s.req.AllowList) == 0
	s.uvPrompt = prompt.Request{Operation: prompt.OpSignIn, RPID: s.rpID}
	if !s.discoverable {
		return nil
	}
	var err error
	s.stored, err = s.a.store.CredentialsByRP(s.rpID)
	if err != nil {
		// A damaged record costs only itself: serve the readable ones.
		if !errors.Is(err, keystore.ErrCorrupt) {
			return fmt.Errorf("list credentials: %w", err)
		}
		s.a.log.Error("some credentials of this RP are unreadable", "err", err)
	}
	if len(s.stored) == 1 {
		s.uvPrompt.UserName = s.stored[0].UserName
	}
	return nil
}

// authorize is steps 5-6: PIN/UV, decided by the PIN/UV
// authority.
func (s *getAssertionState) authorize() error {
	var err error
	s.auth, err = s.a.authorize(s.ctx, s.tx, authRequest{
		rpID:              s.rpID,
		clientDataHash:    s.req.ClientDataHash,
		pinUvAuthParam:    s.req.PinUvAuthParam,
		pinUvAuthProtocol: s.req.PinUvAuthProtocol,
		uvOption:          s.uvOption,
		permission:        pinuv.PermGetAssertion,
		prompt:            s.uvPrompt,
	})
	return err
}

// locateCredentials is step 7: the first usable credential of the allow
// list, or the RP's discoverable credentials that credProtect lets out.
func (s *getAssertionState) locateCredentials() error {
	uv := s.auth.uv
	if !s.discoverable {
		for _, d := range s.req.AllowList {
			if d.Type == nil || d.ID == nil {
				return ErrMissingParameter
			}
			if *d.Type != credentialTypePublicKey || len(s.creds) > 0 {
				continue
			}
			if c, ok := s.a.findCredential(d.ID, s.rpIDHash, uv); ok {
				s.creds = append(s.creds, c)
			}
		}
	} else {
		for _, c := range s.stored {
			// Without an allow list, credProtect 2 and 3 both need UV.
			if c.CredProtect >= credProtectUVOptionalWithList && !uv {
				continue
			}
			s.creds = append(s.creds, assertionCredential{id: c.ID, blob: c.KeyBlob, hmacSecret: c.HMACSecret, stored: c})
		}
	}
	if len(s.creds) == 0 {
		return ErrNoCredentials
	}
	return nil
}

// collectPresence is step 9: user presence, unless the RP asked for a
// silent assertion, and the token's flags cleared after it. selected: the
// presence came from a prompt that named the one account found, approved
// by a person (CTAP 2.1 userSelected).
func (s *getAssertionState) collectPresence() error {
	a := s.a
	one := s.discoverable && len(s.creds) == 1 && s.creds[0].stored != nil
	s.flags = uvFlag(s.auth.uv)
	switch {
	case s.up && s.auth.up:
		s.flags |= flagUP
		if s.auth.tokenUsed {
			s.selected = one && bytes.Equal(a.pin.TokenAccount(), s.creds[0].id)
		} else {
			s.selected = one && s.uvPrompt.UserName != "" && bytes.Equal(s.stored[0].ID, s.creds[0].id)
		}
	case s.up:
		name := ""
		if len(s.creds) == 1 && s.creds[0].stored != nil {
			name = s.creds[0].stored.UserName
		}
		if err := a.userPresence(s.ctx, s.tx, prompt.Request{Operation: prompt.OpSignIn, RPID: s.rpID, UserName: name}); err != nil {
			return err
		}
		s.flags |= flagUP
		s.selected = one && name != ""
	}
	if s.up {
		// Step 9.4: clearUserPresentFlag(), clearUserVerifiedFlag() and
		// clearPinUvAuthTokenPermissionsExceptLbw(), as in makeCredential.
		a.consumeToken(s.auth, true)
	}
	if _, approveAll := a.prompter.(prompt.ApproveAll); approveAll {
		s.selected = false // it asks nobody: nothing was chosen
	}
	return nil
}

// respond is steps 10-13: the first assertion, and the others kept for
// getNextAssertion, bound to this request's channel.
func (s *getAssertionState) respond() ([]byte, error) {
	a := s.a
	resp, err := a.assert(s.creds[0], s.rpIDHash, s.req.ClientDataHash, s.flags, s.auth.uv, s.exts)
	if err != nil {
		return nil, err
	}
	resp.UserSelected = s.selected
	// numberOfCredentials "defaults to one" (CTAP 2.1 §6.2.2): sent only
	// when the platform has to pick among several accounts.
	if s.discoverable && len(s.creds) > 1 {
		resp.NumberOfCredentials = len(s.creds)
		a.next = &assertionState{
			remaining:      s.creds[1:],
			rpIDHash:       s.rpIDHash,
			clientDataHash: s.req.ClientDataHash,
			flags:          s.flags,
			uv:             s.auth.uv,
			exts:           s.exts,
			expires:        a.now().Add(nextAssertionTimeout),
			channel:        s.tx.Channel(),
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
	st.expires = a.now().Add(nextAssertionTimeout) // step 7: reset the timer
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
		if flags&flagUP != 0 {
			// "Last used" is an assertion that leaves the authenticator
			// with user presence: this one, the response to getAssertion
			// or to one getNextAssertion. Credentials the platform never
			// fetched, and silent (up=false) assertions, are not uses.
			// The store batches the write: no sync on this path.
			a.store.TouchCredential(c.id, a.now().UTC())
		}
		// largeBlobKey decrypts the RP's entry in the large-blob array,
		// which anyone may read (§6.10.2): only with presence.
		if exts.largeBlobKey && flags&flagUP != 0 {
			resp.LargeBlobKey = c.stored.LargeBlobKey
		}
	}
	return resp, nil
}
