package ctaptest_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
	"github.com/passkeyd/passkeyd/internal/protocol/pinuv"
)

// TestSessionAgreesWithPinuv: the kit's platform side and pinuv's
// authenticator side, two implementations of §6.5.6 and §6.5.7, derive
// the same secret and read each other's ciphertexts and MACs.
func TestSessionAgreesWithPinuv(t *testing.T) {
	for _, version := range []int{1, 2} {
		var p pinuv.Protocol
		var err error
		if version == 1 {
			p, err = pinuv.NewProtocolOne()
		} else {
			p, err = pinuv.NewProtocolTwo()
		}
		if err != nil {
			t.Fatal(err)
		}
		s, err := ctaptest.Encapsulate(version, ctaptest.COSEKey(p.PublicKey()), nil)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := p.Decapsulate(pinuv.COSEKey(s.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(secret.HMACKey(), s.HMACKey()) {
			t.Fatalf("protocol %d: HMAC keys differ", version)
		}
		pt := bytes.Repeat([]byte("0123456789abcdef"), 4)
		enc := s.MustEncrypt(t, pt)
		if got, err := p.Decrypt(secret, enc); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("protocol %d: pinuv decrypts the kit's ciphertext to %x (%v)", version, got, err)
		}
		enc, err = p.Encrypt(secret, pt)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.MustDecrypt(t, enc); !bytes.Equal(got, pt) {
			t.Fatalf("protocol %d: the kit decrypts pinuv's ciphertext to %x", version, got)
		}
		if !p.Verify(secret.HMACKey(), pt, s.Authenticate(s.HMACKey(), pt)) {
			t.Fatalf("protocol %d: pinuv refuses the kit's MAC", version)
		}
	}
}

// echo is a ctaphid handler that answers CBOR requests with their bytes
// reversed after delay.
type echo struct{ delay time.Duration }

func (e echo) CBOR(_ context.Context, t ctaphid.Transaction, req []byte) []byte {
	t.SetStatus(ctaphid.StatusUPNeeded)
	time.Sleep(e.delay)
	out := make([]byte, len(req))
	for i, b := range req {
		out[len(req)-1-i] = b
	}
	return out
}
func (echo) MSG(context.Context, ctaphid.Transaction, []byte) []byte { return []byte{0x6d, 0x00} }
func (echo) Wink()                                                   {}
func (echo) PowerCycle()                                             {}

// TestHIDChannel runs the host client against the real CTAPHID server: a
// 1000-byte message in and out (an initialisation packet and 16
// continuation packets each way), the keepalives of a slow request
// skipped and recorded, and an error frame as a HIDError.
func TestHIDChannel(t *testing.T) {
	p := ctaptest.NewPipe()
	srv := ctaphid.NewServer(echo{delay: 200 * time.Millisecond}, ctaphid.Config{Capabilities: ctaphid.CapCBOR})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, p); close(done) }()
	t.Cleanup(func() { cancel(); p.Close(); <-done })

	c, err := ctaptest.OpenHID(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.CID == 0 || c.CID == ctaptest.HIDBroadcastCID {
		t.Fatalf("allocated CID %08x", c.CID)
	}
	if n := len(ctaptest.HIDFrames(c.CID, ctaptest.HIDCmdCBOR, make([]byte, 1000))); n != 17 {
		t.Fatalf("1000 bytes in %d frames, want 17 (57 + 16×59 >= 1000)", n)
	}
	req := make([]byte, 1000)
	for i := range req {
		req[i] = byte(i)
	}
	resp, err := c.Transact(ctaptest.HIDCmdCBOR, req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range resp {
		if resp[i] != byte(999-i) {
			t.Fatalf("byte %d of the response is %02x, want %02x", i, resp[i], byte(999-i))
		}
	}
	if len(resp) != 1000 {
		t.Fatalf("response of %d bytes", len(resp))
	}
	if len(c.Keepalives) == 0 || c.Keepalives[len(c.Keepalives)-1] != ctaphid.StatusUPNeeded {
		t.Errorf("keepalives %v: want at least one, the last UPNEEDED (2)", c.Keepalives)
	}
	// CTAPHID_WINK is not advertised: ERR_INVALID_CMD (§11.2.9.1.6).
	if _, err := c.Transact(ctaptest.HIDCmdWink, nil); err != ctaptest.HIDError(ctaphid.ErrInvalidCmd) {
		t.Errorf("WINK without the capability: %v, want HIDError 0x01", err)
	}
	// Transport: the same bytes through CBOR.
	if got := c.CBOR(context.Background(), []byte{1, 2, 3}); !bytes.Equal(got, []byte{3, 2, 1}) {
		t.Errorf("CBOR = %x, want 030201", got)
	}
}
