package mgmt

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
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
}

// Register adds passkeyctl's operations to the control socket. Listing is
// for the peers allowed admits (root and the owner); so are changes, and
// for those the authenticator additionally demands presence at the prompt
// and the PIN when one is set.
func (s Service) Register(srv *control.Server, allowed func(control.Peer) bool) {
	auth := s.Auth
	srv.Handle(mgmtapi.OpInfo, allowed, func(context.Context, control.Peer, json.RawMessage) (any, error) {
		in := auth.Info()
		ti := s.TPM
		algs := make([]string, len(in.Algorithms))
		for i, a := range in.Algorithms {
			algs[i] = tpm.Algorithm(a).String()
		}
		out := mgmtapi.Info{
			Version: s.Version, AAGUID: formatAAGUID(in.AAGUID),
			TPM:    mgmtapi.TPM{Kind: ti.Kind, Manufacturer: ti.Manufacturer, Firmware: ti.FirmwareVersion, Software: ti.Software},
			PINSet: in.PINSet, PINRetries: in.PINRetries, MinPINLength: in.MinPINLength, AlwaysUV: in.AlwaysUV,
			BuiltInUV: in.BuiltInUV, Credentials: in.Credentials, Capacity: in.Capacity, Algorithms: algs,
			Attestation: string(in.Attestation), StateDir: s.StateDir, Transport: s.Transport, Prompt: s.Prompt,
			Settings: s.Settings,
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
	})
	// The CA certificate is public, but like the rest it is served to
	// root and the owner only: nobody else has business with this device.
	srv.Handle(mgmtapi.OpAttestationCA, allowed, func(context.Context, control.Peer, json.RawMessage) (any, error) {
		if s.AttestationCA == nil {
			return nil, fmt.Errorf("this daemon attests with %q: only --attestation tpm has a CA", auth.Info().Attestation)
		}
		return mgmtapi.AttestationCA{Certificate: s.AttestationCA}, nil
	})
	srv.Handle(mgmtapi.OpList, allowed, func(context.Context, control.Peer, json.RawMessage) (any, error) {
		creds, err := auth.ListCredentials()
		if err != nil {
			return nil, err
		}
		out := make([]mgmtapi.Credential, 0, len(creds))
		for _, c := range creds {
			out = append(out, wireCredential(c))
		}
		return out, nil
	})
	srv.Handle(mgmtapi.OpDelete, allowed, func(ctx context.Context, _ control.Peer, raw json.RawMessage) (any, error) {
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
	srv.Handle(mgmtapi.OpSetPIN, allowed, func(ctx context.Context, _ control.Peer, raw json.RawMessage) (any, error) {
		var args mgmtapi.SetPINArgs
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, errors.New("pin.set: want {\"new\": ..., \"old\": ...}")
		}
		return nil, auth.SetPIN(ctx, args.Old, args.New)
	})
	srv.Handle(mgmtapi.OpReset, allowed, func(ctx context.Context, _ control.Peer, raw json.RawMessage) (any, error) {
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
