package ctap2

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

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

// pinPolicy is the durable configuration authenticatorConfig changes; all
// of it is PIN/UV policy (§6.11.2 alwaysUv, §6.11.4 setMinPINLength), so
// the PIN/UV authority owns it. The store value keeps its CBOR layout.
type pinPolicy struct {
	MinPINLength      int      `cbor:"1,keyasint"`
	ForcePINChange    bool     `cbor:"2,keyasint"`
	MinPINLengthRPIDs []string `cbor:"3,keyasint,omitempty"`
	AlwaysUV          bool     `cbor:"4,keyasint"`
}

func (c *clientPIN) loadPolicy() error {
	c.policy = pinPolicy{MinPINLength: defaultMinPINLength}
	b, err := c.store.Get(c.values.Policy)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	var p pinPolicy
	if err := decMode.Unmarshal(b, &p); err != nil || p.MinPINLength < defaultMinPINLength || p.MinPINLength > maxPINBytes {
		return fmt.Errorf("configuration in the store is damaged: %v", err)
	}
	c.policy = p
	return nil
}

func (c *clientPIN) savePolicy() error {
	b, err := marshal(c.policy)
	if err != nil {
		return err
	}
	if err := c.store.Put(c.values.Policy, b); err != nil {
		return fmt.Errorf("store configuration: %w", err)
	}
	return nil
}

// AlwaysUV is the alwaysUv option (§7.2.2).
func (c *clientPIN) AlwaysUV() bool { return c.policy.AlwaysUV }

// MinPINLength is the current minimum PIN length in code points (§6.11.4).
func (c *clientPIN) MinPINLength() int { return c.policy.MinPINLength }

// ForcePINChange: the PIN must be changed before a token is issued
// (getInfo 0x0C).
func (c *clientPIN) ForcePINChange() bool { return c.policy.ForcePINChange }

// MinPINLengthFor is the minPinLength extension's output for rpID: the
// minimum, when setMinPINLength or the administrator listed the RP
// (§12.4).
func (c *clientPIN) MinPINLengthFor(rpID string) (int, bool) {
	if slices.Contains(c.policy.MinPINLengthRPIDs, rpID) || slices.Contains(c.floor.MinPINLengthRPs, rpID) {
		return c.policy.MinPINLength, true
	}
	return 0, false
}

// applyFloor raises the stored policy to the administrator's floor and
// stores it when that changed anything. A raised minimum forces a PIN set
// before it to be changed: its length is not known until it is typed, and
// a fleet's rule must hold for PINs chosen under the old one.
func (c *clientPIN) applyFloor() error {
	changed := false
	if c.floor.AlwaysUV && !c.policy.AlwaysUV {
		c.policy.AlwaysUV, changed = true, true
	}
	if c.floor.MinPINLength > c.policy.MinPINLength {
		c.policy.MinPINLength, changed = c.floor.MinPINLength, true
		if c.IsSet() {
			c.policy.ForcePINChange = true
		}
	}
	if !changed {
		return nil
	}
	c.log.Info("administrator's PIN policy applied", "alwaysUv", c.policy.AlwaysUV,
		"minPINLength", c.policy.MinPINLength, "forcePINChange", c.policy.ForcePINChange)
	return c.savePolicy()
}

// Protected: a PIN is set, the system verifies (built-in UV without a
// PIN), or alwaysUv is on, so commands that change the authenticator need
// a pinUvAuthToken (§6.10.3, §6.11).
func (c *clientPIN) Protected() bool { return c.IsSet() || c.SystemUV() || c.policy.AlwaysUV }

func (c *clientPIN) setForcePINChange(v bool) error {
	c.policy.ForcePINChange = v
	return c.savePolicy()
}

// ToggleAlwaysUV is toggleAlwaysUv (§6.11.2). Under an administrator's
// alwaysUv it cannot be turned off: OPERATION_DENIED, the answer §6.11.2
// gives an authenticator that does not support disabling it.
func (c *clientPIN) ToggleAlwaysUV() error {
	if c.floor.AlwaysUV && c.policy.AlwaysUV {
		return ErrOperationDenied
	}
	c.policy.AlwaysUV = !c.policy.AlwaysUV
	c.log.Info("alwaysUv toggled", "alwaysUv", c.policy.AlwaysUV)
	return c.savePolicy()
}

// SetMinPINLength is setMinPINLength (§6.11.4).
func (c *clientPIN) SetMinPINLength(p setMinPINLengthParams) error {
	newMin := c.policy.MinPINLength
	if p.NewMinPINLength != nil {
		if *p.NewMinPINLength > maxPINBytes {
			return ErrPinPolicyViolation
		}
		newMin = int(*p.NewMinPINLength)
	}
	// The minimum only ever grows (reset restores the default).
	if newMin < c.policy.MinPINLength {
		return ErrPinPolicyViolation
	}
	if len(p.MinPinLengthRPIDs) > maxMinPINLengthRPIDs {
		return ErrKeyStoreFull
	}
	force := p.ForceChangePin != nil && *p.ForceChangePin
	if force && !c.IsSet() {
		return ErrPinNotSet
	}
	c.policy.MinPINLength = newMin
	if p.MinPinLengthRPIDs != nil {
		c.policy.MinPINLengthRPIDs = p.MinPinLengthRPIDs
	}
	// The PIN's length is known from its last check (a token needed it);
	// a PIN shorter than the new minimum must be changed.
	if force || (c.IsSet() && c.length < newMin) {
		c.policy.ForcePINChange = true
	}
	c.log.Info("PIN policy changed", "minPINLength", newMin, "forcePINChange", c.policy.ForcePINChange)
	return c.savePolicy()
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
	if a.pin.Protected() || req.PinUvAuthParam != nil {
		msg := append(bytes.Repeat([]byte{0xff}, 32), CmdConfig, byte(*req.SubCommand))
		msg = append(msg, req.SubCommandParams...)
		if err := a.pin.Authorize(pinuv.PermAuthenticatorConfig, "", msg, req.PinUvAuthParam, req.PinUvAuthProtocol); err != nil {
			return err
		}
	}
	switch *req.SubCommand {
	case cfgToggleAlwaysUv:
		return a.pin.ToggleAlwaysUV()
	case cfgSetMinPINLength:
		var p setMinPINLengthParams
		if len(req.SubCommandParams) > 0 {
			if err := decodeParams(req.SubCommandParams, &p); err != nil {
				return err
			}
		}
		return a.pin.SetMinPINLength(p)
	default:
		// Enterprise attestation and vendor prototypes are not
		// implemented.
		return ErrInvalidSubcommand
	}
}
