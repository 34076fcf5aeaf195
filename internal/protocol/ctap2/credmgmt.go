package ctap2

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// Command bytes of credential management (CTAP 2.1 §6.8; 0x41 is the
// prototype number CTAP 2.1-PRE platforms use).
const (
	CmdCredentialManagement        byte = 0x0A
	CmdCredentialManagementPreview byte = 0x41
)

// credentialManagement subcommands.
const (
	cmGetCredsMetadata                      = 0x01
	cmEnumerateRPsBegin                     = 0x02
	cmEnumerateRPsGetNextRP                 = 0x03
	cmEnumerateCredentialsBegin             = 0x04
	cmEnumerateCredentialsGetNextCredential = 0x05
	cmDeleteCredential                      = 0x06
	cmUpdateUserInformation                 = 0x07
)

// CredMgmtRequest is authenticatorCredentialManagement's parameter map.
type CredMgmtRequest struct {
	SubCommand        *uint64         `cbor:"1,keyasint"`
	SubCommandParams  cbor.RawMessage `cbor:"2,keyasint"`
	PinUvAuthProtocol *uint64         `cbor:"3,keyasint"`
	PinUvAuthParam    []byte          `cbor:"4,keyasint"`
}

type credMgmtParams struct {
	RPIDHash     []byte                `cbor:"1,keyasint"`
	CredentialID *CredentialDescriptor `cbor:"2,keyasint"`
	User         *UserEntity           `cbor:"3,keyasint"`
}

// CredMgmtResponse is its response map.
type CredMgmtResponse struct {
	ExistingResidentCredentialsCount             *int                     `cbor:"1,keyasint,omitempty"`
	MaxPossibleRemainingResidentCredentialsCount *int                     `cbor:"2,keyasint,omitempty"`
	RP                                           *rpEntityOut             `cbor:"3,keyasint,omitempty"`
	RPIDHash                                     []byte                   `cbor:"4,keyasint,omitempty"`
	TotalRPs                                     int                      `cbor:"5,keyasint,omitempty"`
	User                                         *userEntityOut           `cbor:"6,keyasint,omitempty"`
	CredentialID                                 *credentialDescriptorOut `cbor:"7,keyasint,omitempty"`
	PublicKey                                    cbor.RawMessage          `cbor:"8,keyasint,omitempty"`
	TotalCredentials                             int                      `cbor:"9,keyasint,omitempty"`
	CredProtect                                  int                      `cbor:"10,keyasint,omitempty"`
	// LargeBlobKey (CTAP 2.1 §6.8.4): the credential's largeBlobKey, for
	// platforms that find a credential's large blob by enumerating
	// (libfido2's fido2-token -S/-G/-D -b -n RPID).
	LargeBlobKey []byte `cbor:"11,keyasint,omitempty"`
}

type rpEntityOut struct {
	ID   string `cbor:"id"`
	Name string `cbor:"name,omitempty"`
}

// credMgmtState holds the enumerations in progress; any other command
// ends them (CTAP 2.1 §6.8.3, §6.8.5).
type credMgmtState struct {
	rps   []rpEntityOut
	creds []*keystore.Credential
	// channel is the CTAPHID channel that began the enumeration: only it
	// may continue it (the token that authorised it was someone's PIN).
	channel uint32
}

// credentialManagement is authenticatorCredentialManagement (CTAP 2.1 §6.8).
func (a *Authenticator) credentialManagement(params []byte, channel uint32) ([]byte, error) {
	var req CredMgmtRequest
	if err := decodeParams(params, &req); err != nil {
		return nil, err
	}
	if req.SubCommand == nil {
		return nil, ErrMissingParameter
	}
	sub := *req.SubCommand
	next := sub == cmEnumerateRPsGetNextRP || sub == cmEnumerateCredentialsGetNextCredential
	if next && a.cm.channel != channel {
		return nil, ErrNotAllowed // another channel's enumeration: left to its owner
	}
	if !next {
		a.cm = credMgmtState{channel: channel}
	}
	var p credMgmtParams
	if len(req.SubCommandParams) > 0 {
		if err := decodeParams(req.SubCommandParams, &p); err != nil {
			return nil, err
		}
	}
	switch sub {
	case cmEnumerateRPsGetNextRP:
		return a.cmNextRP()
	case cmEnumerateCredentialsGetNextCredential:
		return a.cmNextCredential()
	}
	// Parameters first, then authorisation (§6.8.2 ff.): every
	// subcommand that starts something is authorised by a token with the
	// cm permission over subCommand || subCommandParams.
	if err := p.validate(sub); err != nil {
		return nil, err
	}
	msg := append([]byte{byte(sub)}, req.SubCommandParams...)
	if err := a.pin.Authorize(pinuv.PermCredentialManagement, "", msg, req.PinUvAuthParam, req.PinUvAuthProtocol); err != nil {
		return nil, err
	}
	return a.cmStart(sub, &p)
}

// validate checks that sub is a subcommand that starts something and
// that its parameters are present (§6.8.2-6).
func (p *credMgmtParams) validate(sub uint64) error {
	switch sub {
	case cmGetCredsMetadata, cmEnumerateRPsBegin:
	case cmEnumerateCredentialsBegin:
		if p.RPIDHash == nil {
			return ErrMissingParameter
		}
	case cmDeleteCredential:
		if p.CredentialID == nil || p.CredentialID.ID == nil {
			return ErrMissingParameter
		}
	case cmUpdateUserInformation:
		if p.CredentialID == nil || p.CredentialID.ID == nil || p.User == nil || p.User.ID == nil {
			return ErrMissingParameter
		}
	default:
		return ErrInvalidSubcommand
	}
	return nil
}

// cmStart runs an authorised subcommand.
func (a *Authenticator) cmStart(sub uint64, p *credMgmtParams) ([]byte, error) {
	switch sub {
	case cmGetCredsMetadata, cmEnumerateRPsBegin:
		// Whole-authenticator views need a token not bound to one RP.
		if !a.pin.PermitsRP("") {
			return nil, ErrPinAuthInvalid
		}
		if sub == cmGetCredsMetadata {
			return a.cmMetadata()
		}
		return a.cmRPsBegin()
	case cmEnumerateCredentialsBegin:
		return a.cmCredentialsBegin(p.RPIDHash)
	case cmDeleteCredential:
		return nil, a.cmDelete(p.CredentialID.ID)
	default:
		return nil, a.cmUpdateUser(p.CredentialID.ID, p.User)
	}
}

func (a *Authenticator) cmMetadata() ([]byte, error) {
	n := a.store.CountCredentials()
	rem := max(0, a.capacity-n)
	return marshal(CredMgmtResponse{ExistingResidentCredentialsCount: &n, MaxPossibleRemainingResidentCredentialsCount: &rem})
}

// eachCredential walks the store a batch at a time (the enumerations
// hold what they return, never the whole store while they collect it);
// unreadable records are logged and skipped.
func (a *Authenticator) eachCredential(fn func(*keystore.Credential) error) error {
	err := a.store.ForEachCredential(fn)
	if errors.Is(err, keystore.ErrCorrupt) {
		a.log.Error("some credentials are unreadable", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("list credentials: %w", err)
	}
	return nil
}

// cmRPsBegin is enumerateRPsBegin (§6.8.3): the RPs in RP ID order, each
// with the name of its newest credential. It holds one entry per RP, not
// the credentials.
func (a *Authenticator) cmRPsBegin() ([]byte, error) {
	type rpSeen struct {
		name    string
		created time.Time
	}
	seen := map[string]rpSeen{}
	err := a.eachCredential(func(c *keystore.Credential) error {
		if old, ok := seen[c.RPID]; !ok || c.CreatedAt.After(old.created) {
			seen[c.RPID] = rpSeen{c.RPName, c.CreatedAt}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(seen) == 0 {
		return nil, ErrNoCredentials
	}
	rps := make([]rpEntityOut, 0, len(seen))
	for id, r := range seen {
		rps = append(rps, rpEntityOut{ID: id, Name: r.name})
	}
	sort.Slice(rps, func(i, j int) bool { return rps[i].ID < rps[j].ID })
	a.cm.rps = rps[1:]
	h := sha256.Sum256([]byte(rps[0].ID))
	return marshal(CredMgmtResponse{RP: &rps[0], RPIDHash: h[:], TotalRPs: len(rps)})
}

func (a *Authenticator) cmNextRP() ([]byte, error) {
	if len(a.cm.rps) == 0 {
		a.cm = credMgmtState{channel: a.cm.channel}
		return nil, ErrNotAllowed
	}
	rp := a.cm.rps[0]
	a.cm.rps = a.cm.rps[1:]
	h := sha256.Sum256([]byte(rp.ID))
	return marshal(CredMgmtResponse{RP: &rp, RPIDHash: h[:]})
}

// cmCredentialsBegin is enumerateCredentialsBegin (§6.8.4): the RP's
// credentials, newest first. Only the RP ID hash is given, so a walk
// finds the RP ID (stopping at the first match); the RP's index then
// reads its credentials alone.
func (a *Authenticator) cmCredentialsBegin(rpIDHash []byte) ([]byte, error) {
	// A token bound to another RP is refused before the lookup, which
	// would tell it whether this RP has credentials (§6.8.4: the RP ID
	// check precedes NO_CREDENTIALS).
	if !a.pin.PermitsRPIDHash(rpIDHash) {
		return nil, ErrPinAuthInvalid
	}
	rpID, found := "", false
	err := a.eachCredential(func(c *keystore.Credential) error {
		if h := sha256.Sum256([]byte(c.RPID)); bytes.Equal(h[:], rpIDHash) {
			rpID, found = c.RPID, true
			return keystore.ErrSkipAll
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var creds []*keystore.Credential
	if found {
		creds, err = a.store.CredentialsByRP(rpID)
		if err != nil && !errors.Is(err, keystore.ErrCorrupt) {
			return nil, fmt.Errorf("list credentials: %w", err)
		}
		if err != nil {
			a.log.Error("some credentials of this RP are unreadable", "err", err)
		}
	}
	if len(creds) == 0 {
		return nil, ErrNoCredentials
	}
	if !a.pin.PermitsRP(creds[0].RPID) {
		return nil, ErrPinAuthInvalid
	}
	a.cm.creds = creds[1:]
	resp, err := a.cmCredential(creds[0])
	if err != nil {
		return nil, err
	}
	resp.TotalCredentials = len(creds)
	return marshal(resp)
}

func (a *Authenticator) cmNextCredential() ([]byte, error) {
	if len(a.cm.creds) == 0 {
		a.cm = credMgmtState{channel: a.cm.channel}
		return nil, ErrNotAllowed
	}
	c := a.cm.creds[0]
	a.cm.creds = a.cm.creds[1:]
	resp, err := a.cmCredential(c)
	if err != nil {
		return nil, err
	}
	return marshal(resp)
}

func (a *Authenticator) cmCredential(c *keystore.Credential) (*CredMgmtResponse, error) {
	pub, alg, err := tpm.PublicKey(c.KeyBlob)
	if err != nil {
		return nil, fmt.Errorf("credential public key: %w", err)
	}
	cose, err := coseKey(alg, pub)
	if err != nil {
		return nil, err
	}
	return &CredMgmtResponse{
		User:         &userEntityOut{ID: c.UserID, Name: c.UserName, DisplayName: c.UserDisplayName},
		CredentialID: &credentialDescriptorOut{ID: c.ID, Type: credentialTypePublicKey},
		PublicKey:    cose,
		CredProtect:  max(c.CredProtect, credProtectUVOptional),
		LargeBlobKey: c.LargeBlobKey,
	}, nil
}

func (a *Authenticator) storedCredential(id []byte) (*keystore.Credential, error) {
	c, err := a.store.Credential(id)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, ErrNoCredentials
	}
	if err != nil {
		return nil, fmt.Errorf("read credential: %w", err)
	}
	if !a.pin.PermitsRP(c.RPID) {
		return nil, ErrPinAuthInvalid
	}
	return c, nil
}

func (a *Authenticator) cmDelete(id []byte) error {
	c, err := a.storedCredential(id)
	if err != nil {
		return err
	}
	if err := a.store.DeleteCredential(c.ID); err != nil {
		return fmt.Errorf("delete credential: %w", err)
	}
	a.log.Info("credential deleted")
	return nil
}

// cmUpdateUser is updateUserInformation (§6.8.6): the user handle must
// match; name and displayName are replaced (absent ones removed).
func (a *Authenticator) cmUpdateUser(id []byte, u *UserEntity) error {
	c, err := a.storedCredential(id)
	if err != nil {
		return err
	}
	if !bytes.Equal(c.UserID, u.ID) {
		return ErrInvalidParameter
	}
	c.UserName = truncate(u.Name, maxNameLen)
	c.UserDisplayName = truncate(u.DisplayName, maxNameLen)
	if err := a.store.PutCredential(c); err != nil {
		return fmt.Errorf("update credential: %w", err)
	}
	return nil
}
