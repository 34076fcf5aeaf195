package ctap2

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// authenticatorConfig subcommands (CTAP 2.1 §6.11).
const (
	cfgEnableEnterpriseAttestation = 0x01
	cfgToggleAlwaysUv              = 0x02
	cfgSetMinPINLength             = 0x03
	cfgVendorPrototype             = 0xFF
)

// maxMinPINLengthRPIDs bounds setMinPINLength's RP list (getInfo 0x10).
const maxMinPINLengthRPIDs = 8

const valueConfig = "config"

// deviceConfig is the durable configuration authenticatorConfig changes.
type deviceConfig struct {
	MinPINLength      int      `cbor:"1,keyasint"`
	ForcePINChange    bool     `cbor:"2,keyasint"`
	MinPINLengthRPIDs []string `cbor:"3,keyasint,omitempty"`
	AlwaysUV          bool     `cbor:"4,keyasint"`
}

func (a *Authenticator) loadConfig() error {
	a.cfg = deviceConfig{MinPINLength: defaultMinPINLength}
	b, err := a.store.Get(valueConfig)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	var c deviceConfig
	if err := decMode.Unmarshal(b, &c); err != nil || c.MinPINLength < defaultMinPINLength || c.MinPINLength > maxPINBytes {
		return fmt.Errorf("configuration in the store is damaged: %v", err)
	}
	a.cfg = c
	return nil
}

func (a *Authenticator) saveConfig() error {
	b, err := marshal(a.cfg)
	if err != nil {
		return err
	}
	if err := a.store.Put(valueConfig, b); err != nil {
		return fmt.Errorf("store configuration: %w", err)
	}
	return nil
}

// ConfigRequest is authenticatorConfig's parameter map.
type ConfigRequest struct {
	SubCommand        *uint64         `cbor:"1,keyasint"`
	SubCommandParams  cbor.RawMessage `cbor:"2,keyasint"`
	PinUvAuthProtocol *uint64         `cbor:"3,keyasint"`
	PinUvAuthParam    []byte          `cbor:"4,keyasint"`
}

// setMinPINLengthParams is setMinPINLength's subCommandParams.
type setMinPINLengthParams struct {
	NewMinPINLength   *uint64  `cbor:"1,keyasint"`
	MinPinLengthRPIDs []string `cbor:"2,keyasint"`
	ForceChangePin    *bool    `cbor:"3,keyasint"`
}

// authenticatorConfig is CTAP 2.1 §6.11.
func (a *Authenticator) authenticatorConfig(params []byte) error {
	var req ConfigRequest
	if err := decodeParams(params, &req); err != nil {
		return err
	}
	if req.SubCommand == nil {
		return ErrMissingParameter
	}
	// A protected authenticator changes its configuration only for a
	// pinUvAuthToken with the acfg permission, over
	// 32×0xff || 0x0d || subCommand || subCommandParams.
	if a.pinSet() || a.cfg.AlwaysUV || req.PinUvAuthParam != nil {
		if req.PinUvAuthParam == nil {
			return ErrPUATRequired
		}
		p, err := a.protocol(req.PinUvAuthProtocol)
		if err != nil {
			return err
		}
		msg := append(bytes.Repeat([]byte{0xff}, 32), CmdConfig, byte(*req.SubCommand))
		msg = append(msg, req.SubCommandParams...)
		if p.Version() != a.pin.tokenProtocol || !a.pin.token.Verify(p, msg, req.PinUvAuthParam) || a.pin.token.Permissions()&pinuv.PermAuthenticatorConfig == 0 {
			return ErrPinAuthInvalid
		}
	}
	switch *req.SubCommand {
	case cfgToggleAlwaysUv:
		a.cfg.AlwaysUV = !a.cfg.AlwaysUV
		a.log.Info("alwaysUv toggled", "alwaysUv", a.cfg.AlwaysUV)
		return a.saveConfig()
	case cfgSetMinPINLength:
		return a.setMinPINLength(req.SubCommandParams)
	default:
		// Enterprise attestation and vendor prototypes are not
		// implemented.
		return ErrInvalidSubcommand
	}
}

// setMinPINLength is §6.11.4.
func (a *Authenticator) setMinPINLength(raw []byte) error {
	var p setMinPINLengthParams
	if len(raw) > 0 {
		if err := decodeParams(raw, &p); err != nil {
			return err
		}
	}
	newMin := a.cfg.MinPINLength
	if p.NewMinPINLength != nil {
		if *p.NewMinPINLength > maxPINBytes {
			return ErrPinPolicyViolation
		}
		newMin = int(*p.NewMinPINLength)
	}
	// The minimum only ever grows (reset restores the default).
	if newMin < a.cfg.MinPINLength {
		return ErrPinPolicyViolation
	}
	if len(p.MinPinLengthRPIDs) > maxMinPINLengthRPIDs {
		return ErrKeyStoreFull
	}
	force := p.ForceChangePin != nil && *p.ForceChangePin
	if force && !a.pinSet() {
		return ErrPinNotSet
	}
	a.cfg.MinPINLength = newMin
	if p.MinPinLengthRPIDs != nil {
		a.cfg.MinPINLengthRPIDs = p.MinPinLengthRPIDs
	}
	// The PIN's length is known from its last check (a token needed it);
	// a PIN shorter than the new minimum must be changed.
	if force || (a.pinSet() && a.pin.length < newMin) {
		a.cfg.ForcePINChange = true
	}
	a.log.Info("PIN policy changed", "minPINLength", newMin, "forcePINChange", a.cfg.ForcePINChange)
	return a.saveConfig()
}
