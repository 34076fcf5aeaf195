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

// makeCredential is authenticatorMakeCredential (CTAP 2.1 §6.1.2); the
// step numbers below are that section's.
func (a *Authenticator) makeCredential(ctx context.Context, tx ctaphid.Transaction, params []byte) ([]byte, error) {
	var req MakeCredentialRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	if req.ClientDataHash == nil || req.RP == nil || req.User == nil || req.PubKeyCredParams == nil {
		return nil, ErrMissingParameter
	}
	if req.RP.ID == nil || req.User.ID == nil {
		return nil, ErrMissingParameter
	}
	if len(req.ClientDataHash) != clientHashLen || len(req.User.ID) > maxUserIDLen {
		return nil, ErrInvalidLength
	}
	// Step 3: the first algorithm of the RP's list that the TPM can do.
	alg, err := a.chooseAlgorithm(req.PubKeyCredParams)
	if err != nil {
		return nil, err
	}
	// Steps 4-5: options.
	rk, uvOption := false, false
	for name, v := range req.Options {
		switch name {
		case "rk":
			rk = v
		case "up":
			if !v {
				return nil, ErrInvalidOption // up=false is meaningless for makeCredential
			}
		case "uv":
			uvOption = v
		}
	}
	// Step 8: this authenticator is not enterprise-attestation capable.
	if req.EnterpriseAttestation != nil {
		return nil, ErrInvalidParameter
	}
	exts, err := a.parseMCExtensions(req.Extensions)
	if err != nil {
		return nil, err
	}
	credProtect := exts.credProtect
	if exts.largeBlobKey && !rk {
		return nil, ErrInvalidOption // a large-blob key needs a discoverable credential (§12.3)
	}
	rpID := *req.RP.ID
	rpIDHash := sha256.Sum256([]byte(rpID))
	user := truncate(req.User.Name, maxNameLen)

	// Steps 1-2, 5-6, 9-11: PIN/UV. makeCredUvNotRqd: a protected
	// authenticator still makes non-discoverable credentials without UV.
	auth, err := a.authorize(ctx, tx, authRequest{
		rpID:              rpID,
		clientDataHash:    req.ClientDataHash,
		pinUvAuthParam:    req.PinUvAuthParam,
		pinUvAuthProtocol: req.PinUvAuthProtocol,
		uvOption:          uvOption,
		permission:        pinuv.PermMakeCredential,
		uvRequired:        rk,
		prompt:            prompt.Request{Operation: prompt.OpRegister, RPID: rpID, UserName: user},
	})
	if err != nil {
		return nil, err
	}

	// Step 11: excludeList. CREDENTIAL_EXCLUDED only after the person
	// was present: refused, timed out or cancelled, a match answers what an
	// unknown credential's refused prompt answers (step 14), so a page
	// cannot probe silently for the credentials this key holds.
	for _, d := range req.ExcludeList {
		if d.Type == nil || d.ID == nil {
			return nil, ErrMissingParameter
		}
		if *d.Type != credentialTypePublicKey {
			continue
		}
		if _, ok := a.findCredential(d.ID, rpIDHash[:], auth.uv); ok {
			if !auth.up {
				if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpExcluded, RPID: rpID, UserName: user}); err != nil {
					return nil, err
				}
			}
			a.consumeToken(auth, false) // the token's presence is spent
			return nil, ErrCredentialExcluded
		}
	}
	// Step 13, and step 18's rule that a discoverable credential for the
	// same RP and user handle replaces the old one.
	var replaced [][]byte
	if rk {
		old, err := a.store.CredentialsByRP(rpID)
		if err != nil && !errors.Is(err, keystore.ErrCorrupt) {
			return nil, fmt.Errorf("list credentials: %w", err)
		}
		for _, c := range old {
			if bytes.Equal(c.UserID, req.User.ID) {
				replaced = append(replaced, c.ID)
			}
		}
		if len(replaced) == 0 && a.store.CountCredentials() >= a.capacity {
			return nil, ErrKeyStoreFull
		}
	}
	// Steps 16-17: the key pair, inside the TPM, generated while the
	// person answers the prompt: RSA key generation takes seconds on a
	// real TPM, and nobody should wait for it after touching. A refused
	// prompt discards the key; nothing about it is stored.
	type created struct {
		blob tpm.KeyBlob
		pub  crypto.PublicKey
		err  error
	}
	keyc := make(chan created, 1)
	go func() {
		create := a.tpm.CreateKey
		if a.attestation == AttestationTPM {
			create = a.attester.CreateKey
		}
		blob, pub, err := create(alg)
		keyc <- created{blob, pub, err}
	}()
	// Step 14: user presence, unless built-in UV or the token already
	// established it.
	if !auth.up {
		if err := a.userPresence(ctx, tx, prompt.Request{Operation: prompt.OpRegister, RPID: rpID, UserName: user}); err != nil {
			return nil, err
		}
	}
	a.consumeToken(auth, true)
	k := <-keyc
	if k.err != nil {
		return nil, fmt.Errorf("create credential key: %w", k.err)
	}
	blob, pub := k.blob, k.pub
	flags := byte(0)
	if rk {
		flags |= credFlagDiscoverable
	}
	if exts.hmacSecret {
		flags |= credFlagHMACSecret
	}
	credID, err := a.secrets.wrapper.wrap(wrappedCredential{Flags: flags, CredProtect: byte(credProtect), Alg: alg, KeyBlob: blob}, rpIDHash[:])
	if err != nil {
		return nil, err
	}
	cose, err := coseKey(alg, pub)
	if err != nil {
		return nil, err
	}
	ad := authenticatorData{
		RPIDHash:     rpIDHash[:],
		Flags:        flagUP | flagAT | uvFlag(auth.uv),
		AAGUID:       AAGUID[:],
		CredentialID: credID,
		PublicKey:    cose,
	}
	extOut, err := a.mcExtensionOutputs(exts, rpID, rk, credID, auth.uv)
	if err != nil {
		return nil, err
	}
	if err := ad.setExtensions(extOut); err != nil {
		return nil, err
	}
	var largeBlobKey []byte
	if exts.largeBlobKey {
		if largeBlobKey, err = newLargeBlobKey(); err != nil {
			return nil, err
		}
	}
	if ad.SignCount, err = a.store.NextCounter(); err != nil {
		return nil, fmt.Errorf("signature counter: %w", err)
	}
	authData := ad.marshal()
	attFmt, attStmt, err := a.attestationStatement(authData, req.ClientDataHash, blob, alg)
	if err != nil {
		return nil, err
	}
	// Step 18: a discoverable credential is durable before we answer.
	if rk {
		c := &keystore.Credential{
			ID:              credID,
			RPID:            rpID,
			RPName:          truncate(req.RP.Name, maxNameLen),
			UserID:          req.User.ID,
			UserName:        user,
			UserDisplayName: truncate(req.User.DisplayName, maxNameLen),
			Algorithm:       int(alg),
			KeyBlob:         blob,
			Discoverable:    true,
			CredProtect:     credProtect,
			CreatedAt:       a.now().UTC(),
			HMACSecret:      exts.hmacSecret,
			LargeBlobKey:    largeBlobKey,
		}
		if exts.hasCredBlob && len(exts.credBlob) <= maxCredBlobLength {
			c.CredBlob = exts.credBlob
		}
		if err := a.store.PutCredential(c); err != nil {
			return nil, fmt.Errorf("store credential: %w", err)
		}
		// The new credential is durable first: a crash in between leaves
		// two accounts, never none.
		for _, id := range replaced {
			if err := a.store.DeleteCredential(id); err != nil && !errors.Is(err, keystore.ErrNotFound) {
				return nil, fmt.Errorf("replace credential: %w", err)
			}
		}
	}
	a.log.Info("credential created", "alg", int(alg), "discoverable", rk)
	return marshal(MakeCredentialResponse{
		Fmt:          attFmt,
		AuthData:     authData,
		AttStmt:      attStmt,
		LargeBlobKey: largeBlobKey,
	})
}

// attestationStatement makes the statement the configuration asks for
// (WebAuthn §8): packed self attestation by default (signed by the
// credential's own key, so it proves possession and identifies nothing
// beyond the AAGUID), none, or tpm (an attestation key in the TPM
// certifies the credential key).
func (a *Authenticator) attestationStatement(authData, clientDataHash []byte, blob tpm.KeyBlob, alg tpm.Algorithm) (string, map[string]any, error) {
	switch a.attestation {
	case AttestationNone:
		return "none", map[string]any{}, nil
	case AttestationTPM:
		f, stmt, err := a.attester.Statement(authData, clientDataHash, blob)
		if err != nil {
			return "", nil, fmt.Errorf("tpm attestation: %w", err)
		}
		return f, stmt, nil
	}
	digest := sha256.Sum256(append(append([]byte{}, authData...), clientDataHash...))
	sig, err := a.tpm.Sign(blob, digest[:])
	if err != nil {
		return "", nil, fmt.Errorf("self attestation: %w", err)
	}
	return "packed", map[string]any{"alg": int64(alg), "sig": sig}, nil
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
