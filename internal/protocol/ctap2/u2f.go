package ctap2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/u2f"
)

// MSG executes a CTAP1/U2F command APDU (CTAPHID_MSG).
func (a *Authenticator) MSG(ctx context.Context, apdu []byte) []byte {
	a.mu.Lock()
	alwaysUV := a.pin.AlwaysUV()
	a.mu.Unlock()
	if alwaysUV {
		// U2F cannot verify the user, so alwaysUv switches it off
		// (CTAP 2.1 §6.11.2).
		sw := uint16(u2f.SWInsNotSupported)
		return []byte{byte(sw >> 8), byte(sw)}
	}
	return u2f.Handle(ctx, u2fBackend{a}, apdu)
}

// u2fBackend adapts the authenticator to u2f.Backend. U2F shares the
// CTAP2 credential-ID format, so a U2F registration works with CTAP2
// getAssertion for the RP whose SHA-256 is the application parameter, and
// vice versa.
type u2fBackend struct{ a *Authenticator }

// bogusAppParam is what browsers register with to make a key blink and
// learn which one the user touched (Chromium's kBogusAppParam). Such a
// registration must not create a key.
var bogusAppParam = bytes.Repeat([]byte{0x41}, 32)

// u2fPresenceValidity is how long a touch stays good for the next request:
// U2F clients poll, so presence is collected first and consumed on a retry.
const u2fPresenceValidity = 10 * time.Second

func (b u2fBackend) Register(_ context.Context, challenge, application []byte) (*u2f.RegisterResponse, error) {
	a := b.a
	a.mu.Lock()
	defer a.mu.Unlock()
	bogus := bytes.Equal(application, bogusAppParam)
	op := prompt.OpRegister
	if bogus {
		op = prompt.OpSelect
	}
	if !a.presence.take(a, prompt.Request{Operation: op}) {
		return nil, u2f.SWConditionsNotSatisfied
	}
	pub, keyHandle, err := b.registrationKey(application, bogus)
	if err != nil {
		return nil, err
	}
	resp := &u2f.RegisterResponse{KeyHandle: keyHandle, AttestationCert: a.secrets.u2fCert}
	point, err := pub.ECDH() // its Bytes are the uncompressed point U2F wants
	if err != nil {
		return nil, fmt.Errorf("U2F public key: %w", err)
	}
	copy(resp.PublicKey[:], point.Bytes())
	h := sha256.New()
	h.Write([]byte{0x00})
	h.Write(application)
	h.Write(challenge)
	h.Write(keyHandle)
	h.Write(resp.PublicKey[:])
	sig, err := a.tpm.Sign(a.secrets.u2fKey, h.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("U2F attestation signature: %w", err)
	}
	resp.Signature = sig
	if !bogus {
		a.log.Info("U2F credential registered")
	}
	return resp, nil
}

// registrationKey makes the key of a U2F registration (U2F raw message
// format §4.3): a TPM key wrapped into the key handle, or for a bogus
// registration a well-formed answer that names no key: the attestation
// public key and a random handle that will never unwrap.
func (b u2fBackend) registrationKey(application []byte, bogus bool) (*ecdsa.PublicKey, []byte, error) {
	a := b.a
	if bogus {
		keyHandle := make([]byte, 64)
		if _, err := rand.Read(keyHandle); err != nil {
			return nil, nil, err
		}
		return a.secrets.u2fPub, keyHandle, nil
	}
	blob, pk, err := a.tpm.CreateKey(tpm.ES256)
	if err != nil {
		return nil, nil, fmt.Errorf("create U2F key: %w", err)
	}
	pub, ok := pk.(*ecdsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("create U2F key: unexpected %T", pk)
	}
	keyHandle, err := a.secrets.wrapper.wrap(wrappedCredential{Flags: credFlagU2F, Alg: tpm.ES256, KeyBlob: blob}, application)
	if err != nil {
		return nil, nil, err
	}
	if len(keyHandle) > 255 {
		return nil, nil, fmt.Errorf("U2F key handle of %d bytes", len(keyHandle))
	}
	return pub, keyHandle, nil
}

func (b u2fBackend) Authenticate(_ context.Context, control byte, challenge, application, keyHandle []byte) (*u2f.AuthenticateResponse, error) {
	a := b.a
	a.mu.Lock()
	defer a.mu.Unlock()
	// credProtect level 3 credentials need UV, which U2F cannot carry: they
	// are "not ours" here (CTAP 2.1 §12.1).
	c, ok := a.findCredential(keyHandle, application, false)
	if !ok {
		return nil, u2f.SWWrongData
	}
	var flags byte
	switch control {
	case u2f.CheckOnly:
		return nil, u2f.SWConditionsNotSatisfied // "the key handle is ours"
	case u2f.EnforceUserPresenceAndSign:
		if !a.presence.take(a, prompt.Request{Operation: prompt.OpSignIn}) {
			return nil, u2f.SWConditionsNotSatisfied
		}
		flags = flagUP
	}
	counter, err := a.store.NextCounter()
	if err != nil {
		return nil, fmt.Errorf("signature counter: %w", err)
	}
	resp := &u2f.AuthenticateResponse{UserPresence: flags, Counter: counter}
	h := sha256.New()
	h.Write(application)
	h.Write([]byte{flags, byte(counter >> 24), byte(counter >> 16), byte(counter >> 8), byte(counter)})
	h.Write(challenge)
	if resp.Signature, err = a.tpm.Sign(c.blob, h.Sum(nil)); err != nil {
		return nil, fmt.Errorf("U2F signature: %w", err)
	}
	if c.stored != nil && flags&flagUP != 0 {
		// "Last used" is a signature made with presence, as in assert.
		a.store.TouchCredential(c.id, a.now().UTC())
	}
	return resp, nil
}

// u2fPresence is the "touch latch" of a U2F key: a request without a
// recent touch starts a prompt in the background and is answered
// SW_CONDITIONS_NOT_SATISFIED; the client retries and the next request
// consumes the touch.
type u2fPresence struct {
	mu        sync.Mutex
	pending   bool
	grantedAt time.Time
	granted   bool
	epoch     uint64 // bumped by clear, so an old prompt's answer is dropped
	// cancel withdraws the pending prompt: a key that loses power (a
	// switch of user unplugs it) leaves no prompt on the next screen.
	cancel context.CancelFunc
}

// take consumes a valid touch, or starts a prompt and reports false.
func (p *u2fPresence) take(a *Authenticator, req prompt.Request) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.granted && a.now().Sub(p.grantedAt) < u2fPresenceValidity {
		p.granted = false
		return true
	}
	p.granted = false
	if !p.pending {
		p.pending = true
		epoch := p.epoch
		ctx, cancel := context.WithTimeout(context.Background(), prompt.Timeout)
		p.cancel = cancel
		go func() {
			defer cancel()
			err := a.prompter.Confirm(ctx, req)
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.epoch != epoch {
				return
			}
			p.pending, p.cancel = false, nil
			if err == nil {
				p.granted, p.grantedAt = true, a.now()
			}
		}()
	}
	return false
}

// clear forgets any touch and withdraws a pending prompt (power cycle,
// reset).
func (p *u2fPresence) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.granted, p.pending = false, false
	p.epoch++
	if p.cancel != nil {
		p.cancel()
		p.cancel = nil
	}
}
