package mgmt

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/daemon/users"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
)

var b64 = base64.RawURLEncoding

// Service describes what the info operation reports beyond the
// authenticator itself.
type Service struct {
	Auth      *ctap2.Authenticator
	TPM       tpm.Info
	Version   string
	StateDir  string
	Transport string
	Prompt    string
	// AttestationCA is the DER certificate of the "tpm" attestation CA;
	// nil when the daemon does not attest with the TPM.
	AttestationCA []byte
	// Settings are the daemon's effective settings with their sources.
	Settings []mgmtapi.Setting
	// Users are the per-user namespaces: root names one with
	// mgmtapi.UserArgs (list, export, remove). nil: the daemon has only
	// Auth's.
	Users *users.Users
	// PerUser lets every local user list and export their own namespace
	// (the peer's uid and account name select it); without it only root
	// and the owner may call, and reach Auth, as in single-owner mode.
	PerUser bool
	// Mode is mgmtapi.ModeSeat or ModeOwner, for info.
	Mode string
	// Seat, in seat mode, is the user the key serves now, uid and
	// logind's name for it (ok false: nobody). With it, info, delete, pin
	// set and reset act on the caller's own namespace (root's on Auth, as
	// before), and delete, pin set and reset are for the active user
	// only: their presence and PIN prompts go to the active session,
	// nobody else's.
	Seat func() (who users.Identity, active bool)
}

// errNotActive refuses a change from a user who is not at the seat.
var errNotActive = fmt.Errorf("%w: only the user of the active session at seat0 may change passkeys: the confirmation is asked in that session", ctap2.ErrManagementDenied)

// changeTarget is the namespace delete, pin set and reset act on: Auth
// in owner mode and for root, else (seat mode) the caller's own, and only
// while the caller is the active user, with ctx restricted to prompts
// the caller answers (prompt.ForUser).
func (s Service) changeTarget(ctx context.Context, peer control.Peer) (context.Context, *ctap2.Authenticator, error) {
	if s.Seat == nil || peer.UID == 0 {
		return ctx, s.Auth, nil
	}
	if who, ok := s.Seat(); !ok || who.UID != peer.UID {
		return ctx, nil, errNotActive
	}
	a, _, ok, err := s.target(peer, mgmtapi.UserArgs{})
	if err != nil {
		return ctx, nil, err
	}
	if !ok {
		return ctx, nil, fmt.Errorf("uid %d has no passkeys on this device", peer.UID)
	}
	// The change's prompt is the caller's to answer: should the seat
	// switch while it waits, the next user is not asked to confirm it.
	return prompt.ForUser(ctx, peer.UID), a, nil
}

// User database lookups; variables so that tests can stand in for
// /etc/passwd.
var (
	lookupUser = user.Lookup
	lookupUID  = user.LookupId
)

// caller is the account of a peer acting on its own namespace. The active
// user's is the one the key serves, with the name logind gave: the
// namespace the key opened, and no user database needed. The package's
// static build reads only /etc/passwd, where sssd, LDAP and systemd-homed
// accounts are not, so their owners could otherwise not reach their own
// passkeys. Anyone else comes from the user database.
func (s Service) caller(peer control.Peer) (users.Identity, error) {
	if s.Seat != nil {
		if who, ok := s.Seat(); ok && who.UID == peer.UID && who.Name != "" {
			return who, nil
		}
	}
	u, err := lookupUID(strconv.FormatUint(uint64(peer.UID), 10))
	if err != nil {
		return users.Identity{}, fmt.Errorf("%w: uid %d has no account name", ctap2.ErrManagementDenied, peer.UID)
	}
	return users.Identity{UID: peer.UID, Name: u.Username}, nil
}

// errNotRoot refuses a non-root caller that names a user.
var errNotRoot = fmt.Errorf("%w: only root may name a user (--user)", ctap2.ErrManagementDenied)

// target resolves whose namespace a request concerns: the named user's
// (root only), else the caller's own. ok is false for a user without a
// namespace (nothing to show, nothing created).
func (s Service) target(peer control.Peer, args mgmtapi.UserArgs) (auth *ctap2.Authenticator, id users.Identity, ok bool, err error) {
	if args.User == "" && args.UID == nil {
		if !s.PerUser || peer.UID == 0 || s.Users == nil {
			return s.Auth, users.Identity{}, true, nil
		}
		id, err = s.caller(peer)
		if err != nil {
			return nil, id, false, err
		}
	} else {
		if peer.UID != 0 {
			return nil, id, false, errNotRoot
		}
		if id, err = s.resolve(args); err != nil {
			return nil, id, false, err
		}
	}
	if s.Users == nil {
		return nil, id, false, errors.New("this daemon keeps no per-user namespaces")
	}
	auth, err = s.Users.Lookup(id)
	switch {
	case errors.Is(err, users.ErrNoNamespace):
		return nil, id, false, nil
	case err != nil:
		return nil, id, false, err
	}
	return auth, id, true, nil
}

// resolve turns UserArgs into an account: the name must be given; without
// a uid the user database supplies it, with one the database must agree
// (or no longer know the name: a removed account).
func (s Service) resolve(args mgmtapi.UserArgs) (users.Identity, error) {
	if args.User == "" {
		return users.Identity{}, errors.New("name the user (NAME, or NAME:UID for a removed account)")
	}
	u, err := lookupUser(args.User)
	if err != nil {
		if args.UID == nil {
			return users.Identity{}, fmt.Errorf("no user %q in the user database; for a removed account give its uid (NAME:UID)", args.User)
		}
		return users.Identity{UID: *args.UID, Name: args.User}, nil
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return users.Identity{}, fmt.Errorf("user %q has a non-numeric uid %q", args.User, u.Uid)
	}
	if args.UID != nil && uint32(uid) != *args.UID {
		return users.Identity{}, fmt.Errorf("user %q has uid %d, not %d", args.User, uid, *args.UID)
	}
	return users.Identity{UID: uint32(uid), Name: args.User}, nil
}

// userArgs decodes an operation's optional UserArgs.
func userArgs(op string, raw json.RawMessage) (mgmtapi.UserArgs, error) {
	var a mgmtapi.UserArgs
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &a); err != nil {
			return a, fmt.Errorf("%s: want {\"user\": NAME, \"uid\": UID} or nothing", op)
		}
	}
	return a, nil
}

// streamCredentials sends auth's credentials on st as ListMessages, each
// as the store's walk reads it (a batch at a time), then End. nil auth
// (a user without a namespace) is an empty stream. An error before the
// first message is returned unsent, so that the server refuses the
// operation with it; after that it ends the stream as Error.
func streamCredentials(st *control.Stream, auth *ctap2.Authenticator, sent int) error {
	n := 0
	if auth != nil {
		err := auth.EachCredential(func(c keystore.Credential) error {
			w := wireCredential(c)
			if err := st.Send(mgmtapi.ListMessage{Credential: &w}); err != nil {
				return errClientGone{err}
			}
			n++
			return nil
		})
		var gone errClientGone
		switch {
		case errors.As(err, &gone):
			return gone.err
		case err != nil && sent+n == 0:
			return err
		case err != nil:
			_ = st.Send(mgmtapi.ListMessage{Error: err.Error()})
			return err
		}
	}
	return st.Send(mgmtapi.ListMessage{End: true, Count: n})
}

// errClientGone is a failed send: nothing more can reach the client.
type errClientGone struct{ err error }

func (e errClientGone) Error() string { return e.err.Error() }

// Register adds passkeyctl's operations to the control socket. Listing is
// for the peers allowed admits (root and the owner); so are changes, and
// for those the authenticator additionally demands presence at the prompt
// and the PIN when one is set. In seat mode (Seat set) every user reaches
// their own namespace, and changes are the active user's and root's
// (changeTarget decides, with a reason).
func (s Service) Register(srv *control.Server, allowed func(control.Peer) bool) {
	auth := s.Auth
	public := allowed // info and the CA: in seat mode every user's own
	if s.Seat != nil {
		public = control.Anyone
	}
	srv.Handle(mgmtapi.OpInfo, public, func(_ context.Context, p control.Peer, _ json.RawMessage) (any, error) {
		return s.info(p)
	})
	// The CA certificate is public, but like the rest it is served to
	// root and the owner only: nobody else has business with this device.
	srv.Handle(mgmtapi.OpAttestationCA, public, func(context.Context, control.Peer, json.RawMessage) (any, error) {
		if s.AttestationCA == nil {
			return nil, fmt.Errorf("this daemon attests with %q: only --attestation tpm has a CA", auth.Info().Attestation)
		}
		return mgmtapi.AttestationCA{Certificate: s.AttestationCA}, nil
	})
	s.register(srv, allowed)
}

// info is the info operation for peer: in seat mode, of the caller's own
// namespace (the device-wide fields are everyone's).
func (s Service) info(p control.Peer) (mgmtapi.Info, error) {
	auth := s.Auth
	none := false // seat mode, and the caller has no namespace yet
	if s.Seat != nil {
		a, _, ok, err := s.target(p, mgmtapi.UserArgs{})
		if err != nil {
			return mgmtapi.Info{}, err
		}
		if ok {
			auth = a
		}
		none = !ok
	}
	in := auth.Info()
	if none {
		// The device namespace's PIN policy may have been changed
		// (toggleAlwaysUv, setMinPINLength): show what the caller's own
		// will start with.
		in = auth.InfoOfNew()
	}
	ti := s.TPM
	algs := make([]string, len(in.Algorithms))
	for i, a := range in.Algorithms {
		algs[i] = tpm.Algorithm(a).String()
	}
	out := mgmtapi.Info{
		Version: s.Version, AAGUID: formatAAGUID(in.AAGUID),
		TPM:    mgmtapi.TPM{Kind: ti.Kind, Manufacturer: ti.Manufacturer, Firmware: ti.FirmwareVersion, SRK: srkText(ti), Software: ti.Software},
		PINSet: in.PINSet, PINRetries: in.PINRetries, MinPINLength: in.MinPINLength, AlwaysUV: in.AlwaysUV,
		BuiltInUV: in.BuiltInUV, Credentials: in.Credentials, Capacity: in.Capacity, Algorithms: algs,
		Attestation: string(in.Attestation), StateDir: s.StateDir, Transport: s.Transport, Prompt: s.Prompt,
		Settings: s.Settings, Mode: s.Mode,
	}
	if out.Mode == "" {
		out.Mode = mgmtapi.ModeOwner
	}
	if s.Seat != nil {
		if who, ok := s.Seat(); ok {
			out.Serving = fmt.Sprintf("uid %d", who.UID)
			if who.Name != "" {
				out.Serving = fmt.Sprintf("%s (uid %d)", who.Name, who.UID)
			}
		}
	}
	if st := in.TPMLockout; st != nil {
		within, _ := st.RecoversWithin()
		out.TPMLockout = &mgmtapi.Lockout{
			InLockout: st.Locked(), FailedTries: st.Counter, MaxTries: st.MaxTries,
			RecoveryIntervalSeconds: int64(st.RecoveryTime / time.Second),
			RecoversWithinSeconds:   int64(within / time.Second),
		}
	}
	return out, nil
}

// register adds the operations on namespaces.
func (s Service) register(srv *control.Server, allowed func(control.Peer) bool) {
	own := allowed // list and export of the caller's own namespace
	if s.PerUser {
		own = control.Anyone
	}
	// Changes: in seat mode changeTarget admits root and the active user
	// and tells everyone else why not (a user at another session may be
	// active later), rather than a bare "not allowed".
	change := allowed
	if s.Seat != nil {
		change = control.Anyone
	}
	// Listings are streams: a credential goes out as soon as it is read,
	// so the daemon's memory does not grow with the number of passkeys.
	srv.HandleRefusableStream(mgmtapi.OpList, own, func(_ context.Context, p control.Peer, raw json.RawMessage, st *control.Stream) error {
		args, err := userArgs(mgmtapi.OpList, raw)
		if err != nil {
			return err
		}
		a, _, ok, err := s.target(p, args)
		if err != nil {
			return err
		}
		if !ok {
			a = nil
		}
		return streamCredentials(st, a, 0)
	})
	srv.HandleRefusableStream(mgmtapi.OpExport, own, func(_ context.Context, p control.Peer, raw json.RawMessage, st *control.Stream) error {
		args, err := userArgs(mgmtapi.OpExport, raw)
		if err != nil {
			return err
		}
		a, id, ok, err := s.target(p, args)
		if err != nil {
			return err
		}
		out := mgmtapi.Export{Credentials: []mgmtapi.Credential{}}
		if id.Name != "" {
			uid := id.UID
			out.User, out.UID = id.Name, &uid
		}
		if ok {
			out.Exists, out.Directory = true, s.StateDir
			if id.Name != "" {
				if out.Directory, err = s.Users.NamespaceDir(id); err != nil {
					return err
				}
			}
			in := a.Info()
			out.PINSet, out.PINRetries, out.MinPINLength, out.AlwaysUV = in.PINSet, in.PINRetries, in.MinPINLength, in.AlwaysUV
		} else {
			a = nil
		}
		if err := st.Send(mgmtapi.ListMessage{Export: &out}); err != nil {
			return err
		}
		return streamCredentials(st, a, 1)
	})
	srv.Handle(mgmtapi.OpRemoveNamespace, control.RootOnly, func(_ context.Context, _ control.Peer, raw json.RawMessage) (any, error) {
		args, err := userArgs(mgmtapi.OpRemoveNamespace, raw)
		if err != nil {
			return nil, err
		}
		if s.Users == nil {
			return nil, errors.New("this daemon keeps no per-user namespaces")
		}
		id, err := s.resolve(args)
		if err != nil {
			return nil, err
		}
		switch err := s.Users.Remove(id); {
		case errors.Is(err, users.ErrNoNamespace):
			return nil, fmt.Errorf("user %q has no passkey namespace", id.Name)
		case errors.Is(err, users.ErrDefault):
			return nil, fmt.Errorf("user %q owns this device: their passkeys are the device's own; remove them with passkeyctl reset (as %s)", id.Name, id.Name)
		case errors.Is(err, users.ErrActive):
			return nil, fmt.Errorf("user %q is being served now: remove the namespace once their session has ended", id.Name)
		case err != nil:
			return nil, err
		}
		return map[string]bool{"removed": true}, nil
	})
	srv.Handle(mgmtapi.OpDelete, change, func(ctx context.Context, p control.Peer, raw json.RawMessage) (any, error) {
		ctx, auth, err := s.changeTarget(ctx, p)
		if err != nil {
			return nil, err
		}
		var args mgmtapi.DeleteArgs
		if err := json.Unmarshal(raw, &args); err != nil || len(args.IDs) == 0 {
			return nil, errors.New("delete: want {\"ids\": [...]}")
		}
		ids := make([][]byte, len(args.IDs))
		for i, s := range args.IDs {
			id, err := b64.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("delete: credential ID %q is not base64url", s)
			}
			ids[i] = id
		}
		return map[string]int{"deleted": len(ids)}, auth.DeleteCredentials(ctx, ids, args.PIN)
	})
	srv.Handle(mgmtapi.OpSetPIN, change, func(ctx context.Context, p control.Peer, raw json.RawMessage) (any, error) {
		ctx, auth, err := s.changeTarget(ctx, p)
		if err != nil {
			return nil, err
		}
		var args mgmtapi.SetPINArgs
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, errors.New("pin.set: want {\"new\": ..., \"old\": ...}")
		}
		return nil, auth.SetPIN(ctx, args.Old, args.New)
	})
	srv.Handle(mgmtapi.OpReset, change, func(ctx context.Context, p control.Peer, raw json.RawMessage) (any, error) {
		ctx, auth, err := s.changeTarget(ctx, p)
		if err != nil {
			return nil, err
		}
		var args mgmtapi.ResetArgs
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &args); err != nil {
				return nil, errors.New("reset: want {\"pin\": ...}")
			}
		}
		return nil, auth.Reset(ctx, args.PIN)
	})
}

// wireCredential is the one conversion of a credential, as the
// authenticator lists it, to what passkeyctl shows.
func wireCredential(c keystore.Credential) mgmtapi.Credential {
	w := mgmtapi.Credential{
		CredentialID: b64.EncodeToString(c.ID), RPID: c.RPID, RPName: c.RPName,
		UserID: b64.EncodeToString(c.UserID), UserName: c.UserName, UserDisplayName: c.UserDisplayName,
		CreatedAt: c.CreatedAt, Algorithm: c.Algorithm, CredProtect: c.CredProtect, Discoverable: c.Discoverable,
	}
	if !c.LastUsedAt.IsZero() {
		used := c.LastUsedAt
		w.LastUsedAt = &used
	}
	return w
}

func formatAAGUID(a [16]byte) string {
	h := hex.EncodeToString(a[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// srkText is tpm.Info's SRK placement with its reason, for passkeyctl info.
func srkText(ti tpm.Info) string {
	if ti.SRKReason == "" {
		return ti.SRK
	}
	return ti.SRK + ": " + ti.SRKReason
}
