package ctap2

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// Limits on entity fields. WebAuthn caps user.id at 64 bytes; names are
// kept whole up to 64 bytes (CTAP 2.1 §6.1.2 lets an authenticator
// truncate longer ones, which we do on a UTF-8 boundary).
const (
	maxUserIDLen   = 64
	maxNameLen     = 64
	clientHashLen  = sha256.Size
	credProtectExt = "credProtect"
)

// makeCredential is authenticatorMakeCredential (CTAP 2.1 §6.1.2): the
// steps of makeCredentialState in the section's order; the step numbers
// in the comments are that section's.
func (a *Authenticator) makeCredential(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	s := &makeCredentialState{a: a, ctx: ctx, tx: tx}
	if err := runSteps(
		func() error { return s.parse(params) },
		func() error {
			return a.pinUvAuthParamSteps(ctx, tx, s.rpID, s.req.PinUvAuthParam, s.req.PinUvAuthProtocol)
		},
		s.validate,
		s.authorize,
		s.checkExcludeList,
		s.checkCapacity,
		s.collectPresence, // generates the key meanwhile
		s.createCredential,
		s.attest,
		s.store,
	); err != nil {
		return nil, err
	}
	return s.respond()
}

// makeCredentialState is one makeCredential request on its way through
// the steps: the parsed parameters first, then what each step
// established.
type makeCredentialState struct {
	a   *Authenticator
	ctx context.Context
	tx  ctaphid.Transaction

	// Parameters (parse, validate).
	req      MakeCredentialRequest
	rpID     string
	rpIDHash []byte
	user     string // user.name, truncated
	alg      tpm.Algorithm
	rk       bool
	uvOption bool
	exts     mcExtensions

	auth     userAuth // authorize
	replaced [][]byte // checkCapacity: credentials the new one replaces
	key      chan createdKey

	// The credential (createCredential, attest).
	blob         tpm.KeyBlob
	pub          crypto.PublicKey
	credID       []byte
	largeBlobKey []byte
	authData     []byte
	attFmt       string
	attStmt      map[string]any
}

// createdKey is the outcome of the key generation.
type createdKey struct {
	blob tpm.KeyBlob
	pub  crypto.PublicKey
	err  error
}

// parse decodes the parameters and checks that the required ones are
// present and of the right length (§6.1.1).
func (s *makeCredentialState) parse(params []byte) error {
	req := &s.req
	if err := decodeParams(params, req); err != nil {
		return err
	}
	if req.ClientDataHash == nil || req.RP == nil || req.User == nil || req.PubKeyCredParams == nil {
		return ErrMissingParameter
	}
	if req.RP.ID == nil || req.User.ID == nil {
		return ErrMissingParameter
	}
	if len(req.ClientDataHash) != clientHashLen || len(req.User.ID) > maxUserIDLen {
		return ErrInvalidLength
	}
	s.rpID = *req.RP.ID
	h := sha256.Sum256([]byte(s.rpID))
	s.rpIDHash = h[:]
	s.user = truncate(req.User.Name, maxNameLen)
	return nil
}

// validate is steps 3-5 and 8, and the extension inputs: nothing is
// decided on the user's behalf yet.
func (s *makeCredentialState) validate() error {
	// Step 3: the first algorithm of the RP's list that the TPM can do.
	alg, err := s.a.chooseAlgorithm(s.req.PubKeyCredParams)
	if err != nil {
		return err
	}
	s.alg = alg
	// Steps 4-5: options.
	for name, v := range s.req.Options {
		switch name {
		case "rk":
			s.rk = v
		case "up":
			if !v {
				return ErrInvalidOption // up=false is meaningless for makeCredential
			}
		case "uv":
			s.uvOption = v
		}
	}
	// Step 8: this authenticator is not enterprise-attestation capable.
	if s.req.EnterpriseAttestation != nil {
		return ErrInvalidParameter
	}
	if s.exts, err = s.a.parseMCExtensions(s.req.Extensions); err != nil {
		return err
	}
	if s.exts.largeBlobKey && !s.rk {
		return ErrInvalidOption // a large-blob key needs a discoverable credential (§12.3)
	}
	return nil
}

// authorize is steps 5-6, 9-11: PIN/UV, decided by the PIN/UV
// authority. makeCredUvNotRqd: a protected authenticator still makes
// non-discoverable credentials without UV.
func (s *makeCredentialState) authorize() error {
	var err error
	s.auth, err = s.a.authorize(s.ctx, s.tx, authRequest{
		rpID:              s.rpID,
		clientDataHash:    s.req.ClientDataHash,
		pinUvAuthParam:    s.req.PinUvAuthParam,
		pinUvAuthProtocol: s.req.PinUvAuthProtocol,
		uvOption:          s.uvOption,
		permission:        pinuv.PermMakeCredential,
		uvRequired:        s.rk,
		prompt:            prompt.Request{Operation: prompt.OpRegister, RPID: s.rpID, UserName: s.user},
	})
	return err
}

// checkExcludeList is step 11. CREDENTIAL_EXCLUDED only after the person
// was present: refused, timed out or cancelled, a match answers what an
// unknown credential's refused prompt answers (step 14), so a page
// cannot probe silently for the credentials this key holds.
func (s *makeCredentialState) checkExcludeList() error {
	for _, d := range s.req.ExcludeList {
		if d.Type == nil || d.ID == nil {
			return ErrMissingParameter
		}
		if *d.Type != credentialTypePublicKey {
			continue
		}
		if _, ok := s.a.findCredential(d.ID, s.rpIDHash, s.auth.uv); ok {
			if !s.auth.up {
				if err := s.a.userPresence(s.ctx, s.tx, prompt.Request{Operation: prompt.OpExcluded, RPID: s.rpID, UserName: s.user}); err != nil {
					return err
				}
			}
			s.a.consumeToken(s.auth, false) // the token's presence is spent
			return ErrCredentialExcluded
		}
	}
	return nil
}

// checkCapacity is step 13, with step 18's rule that a discoverable
// credential for the same RP and user handle replaces the old one (which
// then needs no room).
func (s *makeCredentialState) checkCapacity() error {
	if !s.rk {
		return nil
	}
	a := s.a
	old, err := a.store.CredentialsByRP(s.rpID)
	if err != nil && !errors.Is(err, keystore.ErrCorrupt) {
		return fmt.Errorf("list credentials: %w", err)
	}
	for _, c := range old {
		if bytes.Equal(c.UserID, s.req.User.ID) {
			s.replaced = append(s.replaced, c.ID)
		}
	}
	if len(s.replaced) == 0 && a.store.CountCredentials() >= a.capacity {
		return ErrKeyStoreFull
	}
	return nil
}

// collectPresence is step 14: user presence, unless built-in UV or the
// token already established it; then step 15 clears the token's flags.
// Steps 16-17's key pair is generated inside the TPM while the person
// answers the prompt: RSA key generation takes seconds on a real TPM,
// and nobody should wait for it after touching. A refused prompt
// discards the key; nothing about it is stored.
func (s *makeCredentialState) collectPresence() error {
	a := s.a
	s.key = make(chan createdKey, 1)
	go func() {
		create := a.tpm.CreateKey
		if a.attestation == AttestationTPM {
			create = a.attester.CreateKey
		}
		blob, pub, err := create(s.alg)
		s.key <- createdKey{blob, pub, err}
	}()
	if !s.auth.up {
		if err := a.userPresence(s.ctx, s.tx, prompt.Request{Operation: prompt.OpRegister, RPID: s.rpID, UserName: s.user}); err != nil {
			return err
		}
	}
	a.consumeToken(s.auth, true)
	return nil
}

// createCredential is steps 16-17: the key pair, the credential ID that
// wraps it, and the authenticator data with the extension outputs.
func (s *makeCredentialState) createCredential() error {
	a := s.a
	k := <-s.key
	if k.err != nil {
		return fmt.Errorf("create credential key: %w", k.err)
	}
	s.blob, s.pub = k.blob, k.pub
	flags := byte(0)
	if s.rk {
		flags |= credFlagDiscoverable
	}
	if s.exts.hmacSecret {
		flags |= credFlagHMACSecret
	}
	var err error
	w := wrappedCredential{Flags: flags, CredProtect: byte(s.exts.credProtect), Alg: s.alg, KeyBlob: s.blob}
	if s.credID, err = a.secrets.wrapper.wrap(w, s.rpIDHash); err != nil {
		return err
	}
	cose, err := coseKey(s.alg, k.pub)
	if err != nil {
		return err
	}
	ad := authenticatorData{
		RPIDHash:     s.rpIDHash,
		Flags:        flagUP | flagAT | uvFlag(s.auth.uv),
		AAGUID:       AAGUID[:],
		CredentialID: s.credID,
		PublicKey:    cose,
	}
	extOut, err := a.mcExtensionOutputs(s.exts, s.rpID, s.rk, s.credID, s.auth.uv)
	if err != nil {
		return err
	}
	if err := ad.setExtensions(extOut); err != nil {
		return err
	}
	if s.exts.largeBlobKey {
		if s.largeBlobKey, err = newLargeBlobKey(); err != nil {
			return err
		}
	}
	if ad.SignCount, err = a.store.NextCounter(); err != nil {
		return fmt.Errorf("signature counter: %w", err)
	}
	s.authData = ad.marshal()
	return nil
}

// attest is step 19: the attestation statement.
func (s *makeCredentialState) attest() error {
	var err error
	s.attFmt, s.attStmt, err = s.a.attestationStatement(s.rpID, s.authData, s.req.ClientDataHash, s.blob, s.pub, s.alg)
	return err
}

// store is step 18: a discoverable credential is durable before we
// answer, and replaces the RP's credential for the same user handle.
func (s *makeCredentialState) store() error {
	if !s.rk {
		return nil
	}
	a, req := s.a, &s.req
	c := &keystore.Credential{
		ID:              s.credID,
		RPID:            s.rpID,
		RPName:          truncate(req.RP.Name, maxNameLen),
		UserID:          req.User.ID,
		UserName:        s.user,
		UserDisplayName: truncate(req.User.DisplayName, maxNameLen),
		Algorithm:       int(s.alg),
		KeyBlob:         s.blob,
		Discoverable:    true,
		CredProtect:     s.exts.credProtect,
		CreatedAt:       a.now().UTC(),
		HMACSecret:      s.exts.hmacSecret,
		LargeBlobKey:    s.largeBlobKey,
	}
	if s.exts.hasCredBlob && len(s.exts.credBlob) <= maxCredBlobLength {
		c.CredBlob = s.exts.credBlob
	}
	// One commit for the new credential and the replaced ones' removal:
	// a crash leaves the old account or the new one, never none, and a
	// registration costs one set of syncs.
	if err := a.store.PutCredential(c, s.replaced...); err != nil {
		return fmt.Errorf("store credential: %w", err)
	}
	return nil
}

// respond is the response map (§6.1.2 "On success").
func (s *makeCredentialState) respond() ([]byte, error) {
	s.a.log.Info("credential created", "alg", int(s.alg), "discoverable", s.rk)
	return marshal(MakeCredentialResponse{
		Fmt:          s.attFmt,
		AuthData:     s.authData,
		AttStmt:      s.attStmt,
		LargeBlobKey: s.largeBlobKey,
	})
}

// chooseAlgorithm implements step 3: validate every element, choose the
// first supported one.
func (a *Authenticator) chooseAlgorithm(params []CredentialParameters) (tpm.Algorithm, error) {
	var chosen tpm.Algorithm
	for _, p := range params {
		if p.Type == nil || p.Alg == nil {
			return 0, ErrMissingParameter
		}
		if chosen != 0 || *p.Type != credentialTypePublicKey {
			continue
		}
		for _, alg := range a.algorithm {
			if int64(alg) == *p.Alg {
				chosen = alg
			}
		}
	}
	if chosen == 0 {
		return 0, ErrUnsupportedAlgorithm
	}
	return chosen, nil
}

// parseCredProtect reads the credProtect extension input (CTAP 2.1
// §12.1): an unsigned integer 1..3. Other extensions are ignored, as the
// specification requires for unsupported ones.
func parseCredProtect(exts map[string]cbor.RawMessage) (int, error) {
	raw, ok := exts[credProtectExt]
	if !ok {
		return 0, nil
	}
	var level uint64
	if err := decMode.Unmarshal(raw, &level); err != nil {
		return 0, ErrCBORUnexpectedType
	}
	if level < 1 || level > 3 {
		return 0, ErrInvalidParameter
	}
	return int(level), nil
}

// truncate shortens s to at most n bytes without splitting a UTF-8
// sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}

func uvFlag(uv bool) byte {
	if uv {
		return flagUV
	}
	return 0
}

// runSteps runs a command's steps in order and stops at the first error:
// makeCredential and getAssertion read as their spec's numbered steps.
func runSteps(steps ...func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
