// Package bench measures passkeyd's CTAP operations end to end (CTAPHID
// framing, CBOR, the store, the TPM) next to the raw TPM work they cannot
// avoid, measured in the same run on the same TPM, and reports the ratio.
//
// Each benchmark alternates one floor operation and one full operation per
// iteration, so both see the same machine load, and reports medians:
//
//	median-ns     the full operation through CTAPHID
//	floor-ns      the TPM floor for the same work
//	x-floor       median-ns / floor-ns
//
// Floors: getAssertion = Load+Sign+Flush of the credential key;
// makeCredential = Create + Load+Sign+Flush (the new key plus its packed
// self-attestation signature).
package bench

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/ctaptest"
	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/attest"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
	"github.com/passkeyd/passkeyd/internal/protocol/ctaphid"
)

type rig struct {
	tpm   *tpm.TPM
	store *keystore.Store
	auth  *ctap2.Authenticator
	kit   *ctaptest.Client // the platform, on a CTAPHID channel
	close func()           // idempotent
}

func newRig(b *testing.B) *rig { return newRigAttesting(b, ctap2.AttestationSelf) }

// newRigAttesting is newRig with an attestation mode (passkeyd serve
// --attestation).
func newRigAttesting(b *testing.B, mode ctap2.AttestationMode) *rig {
	b.Helper()
	return openRig(b, b.TempDir(), mode)
}

// openRig is a rig on the state dir dir (as passkeyd serve --state-dir
// lays it out). Its close, also run at the benchmark's end, releases the
// TPM and the store, so that a passkeyd process can take them over.
func openRig(b *testing.B, dir string, mode ctap2.AttestationMode) *rig {
	b.Helper()
	spec := os.Getenv("PASSKEYD_BENCH_TPM")
	if spec == "" {
		spec = "swtpm"
	}
	t, err := tpm.Open(tpm.Config{Spec: spec, StateDir: dir})
	if err != nil {
		b.Fatalf("open TPM: %v", err)
	}
	b.Cleanup(func() { t.Close() })
	st, err := keystore.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	// Presence granted at once: the benchmark measures the machine, not a
	// person.
	cfg := ctap2.Config{TPM: t, Store: st, Prompt: prompt.ApproveAll{}, Attestation: mode}
	if mode == ctap2.AttestationTPM {
		if cfg.Attester, err = attest.LoadTPMAttester(t, st, ctap2.AAGUID, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	a, err := ctap2.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	p := ctaptest.NewPipe()
	srv := ctaphid.NewServer(ctap2.HIDHandler(a), ctaphid.Config{Capabilities: ctaphid.CapCBOR | ctaphid.CapWink, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, p)
	b.Cleanup(func() { cancel(); p.Close() })
	c, err := ctaptest.OpenHID(p)
	if err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	close := func() {
		once.Do(func() {
			cancel()
			p.Close()
			st.Close()
			t.Close()
		})
	}
	b.Cleanup(close)
	return &rig{tpm: t, store: st, auth: a, kit: ctaptest.NewClient(c, 2), close: close}
}

func (r *rig) cbor(b *testing.B, cmd byte, params any) map[int]cbor.RawMessage {
	b.Helper()
	st, m := r.kit.Call(b, cmd, params)
	if st != ctaptest.StatusOK {
		b.Fatalf("command 0x%02x: %v", cmd, st)
	}
	return m // nil for a command with an empty response (setPIN)
}

func mcParams(rk bool) map[int]any {
	h := sha256.Sum256([]byte("client data"))
	return map[int]any{
		1: h[:],
		2: map[string]any{"id": "example.com"},
		3: map[string]any{"id": []byte("user"), "name": "alice"},
		4: []any{map[string]any{"type": "public-key", "alg": -7}},
		7: map[string]bool{"rk": rk},
	}
}

// interleaved runs floor and full alternately b.N times and reports the
// medians and their ratio.
func interleaved(b *testing.B, floor, full func()) {
	floor()
	full() // warm both paths
	fl := make([]time.Duration, 0, b.N)
	fu := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		floor()
		t1 := time.Now()
		full()
		t2 := time.Now()
		fl = append(fl, t1.Sub(t0))
		fu = append(fu, t2.Sub(t1))
	}
	b.StopTimer()
	slices.Sort(fl)
	slices.Sort(fu)
	mf, mu := fl[len(fl)/2], fu[len(fu)/2]
	b.ReportMetric(float64(mu.Nanoseconds()), "median-ns")
	b.ReportMetric(float64(mf.Nanoseconds()), "floor-ns")
	b.ReportMetric(float64(mu)/float64(mf), "x-floor")
}

func BenchmarkGetAssertion(b *testing.B) {
	r := newRig(b)
	m := r.cbor(b, ctap2.CmdMakeCredential, mcParams(false))
	var authData []byte
	cbor.Unmarshal(m[2], &authData)
	credID := authData[55 : 55+(int(authData[53])<<8|int(authData[54]))]
	blob, _, err := r.tpm.CreateKey(tpm.ES256)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256([]byte("client data"))
	ga := map[int]any{1: "example.com", 2: h[:], 3: []any{map[string]any{"type": "public-key", "id": credID}}}
	interleaved(b,
		func() {
			if _, err := r.tpm.Sign(blob, h[:]); err != nil {
				b.Fatal(err)
			}
		},
		func() { r.cbor(b, ctap2.CmdGetAssertion, ga) })
}

func benchmarkMakeCredential(b *testing.B, rk bool) {
	r := newRig(b)
	h := sha256.Sum256([]byte("client data"))
	interleaved(b,
		func() {
			blob, _, err := r.tpm.CreateKey(tpm.ES256)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.tpm.Sign(blob, h[:]); err != nil {
				b.Fatal(err)
			}
		},
		func() { r.cbor(b, ctap2.CmdMakeCredential, mcParams(rk)) })
}

func BenchmarkMakeCredential(b *testing.B) { benchmarkMakeCredential(b, false) }

// BenchmarkMakeCredentialDiscoverable includes the durable store write
// (an fsync) that a discoverable credential must cost.
func BenchmarkMakeCredentialDiscoverable(b *testing.B) { benchmarkMakeCredential(b, true) }

// BenchmarkMakeCredentialTPMAttestation: makeCredential with
// --attestation tpm. The floor is the TPM work a "tpm" statement needs:
// Create of the credential key, then Load of the attestation key and the
// new key, Certify, Flush of both.
func BenchmarkMakeCredentialTPMAttestation(b *testing.B) {
	r := newRigAttesting(b, ctap2.AttestationTPM)
	ak, _, err := r.tpm.CreateAttestationKey()
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256([]byte("authData || clientDataHash"))
	interleaved(b,
		func() {
			blob, _, err := r.tpm.CreateAttestableKey(tpm.ES256)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := r.tpm.Certify(ak, blob, h[:]); err != nil {
				b.Fatal(err)
			}
		},
		func() {
			m := r.cbor(b, ctap2.CmdMakeCredential, mcParams(false))
			if string(m[1]) != "\x63tpm" {
				b.Fatalf("fmt %x, want tpm", []byte(m[1]))
			}
		})
}

// BenchmarkGetAssertionUV: a sign-in with user verification through
// clientPIN, as browsers do it: getPinUvAuthTokenUsingPinWithPermissions
// (the TPM checks the PIN) and then getAssertion with the token (a token's
// UV is consumed by the assertion, CTAP 2.1 §6.2.2). The floor is the same
// TPM work: UnsealWithPIN of a PIN object, then Load+Sign+Flush.
func BenchmarkGetAssertionUV(b *testing.B) {
	r := newRig(b)
	m := r.cbor(b, ctap2.CmdMakeCredential, mcParams(false))
	var authData []byte
	cbor.Unmarshal(m[2], &authData)
	credID := authData[55 : 55+(int(authData[53])<<8|int(authData[54]))]
	const pin = "271828"
	setPINAndToken(b, r, pin, 0x02)
	p, st := r.kit.KeyAgreement(b)
	if st != ctaptest.StatusOK {
		b.Fatalf("getKeyAgreement: %v", st)
	}
	ph := sha256.Sum256([]byte(pin))
	tokenReq := map[int]any{1: 2, 2: 9, 3: p.PublicKey, 6: p.MustEncrypt(b, ph[:16]), 9: 0x02}

	blob, _, err := r.tpm.CreateKey(tpm.ES256)
	if err != nil {
		b.Fatal(err)
	}
	pinObj, err := r.tpm.CreatePINObject(ph[:16], make([]byte, 33))
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256([]byte("client data"))
	interleaved(b,
		func() {
			if _, err := r.tpm.UnsealWithPIN(pinObj, ph[:16]); err != nil {
				b.Fatal(err)
			}
			if _, err := r.tpm.Sign(blob, h[:]); err != nil {
				b.Fatal(err)
			}
		},
		func() {
			m := r.cbor(b, ctap2.CmdClientPIN, tokenReq)
			var tokenEnc []byte
			cbor.Unmarshal(m[2], &tokenEnc)
			token := p.MustDecrypt(b, tokenEnc)
			ga := map[int]any{1: "example.com", 2: h[:], 3: []any{map[string]any{"type": "public-key", "id": credID}},
				6: authenticate(token, h[:]), 7: 2}
			m = r.cbor(b, ctap2.CmdGetAssertion, ga)
			var ad []byte
			cbor.Unmarshal(m[2], &ad)
			if ad[32]&0x04 == 0 {
				b.Fatal("UV flag missing")
			}
		})
}

// BenchmarkGetAssertionHMACSecret: getAssertion with the hmac-secret
// extension (one salt). The floor is the credential key's Load+Sign+Flush
// plus the HMAC key's Load+HMAC+Flush that derives CredRandom.
func BenchmarkGetAssertionHMACSecret(b *testing.B) {
	r := newRig(b)
	params := mcParams(false)
	params[6] = map[string]any{"hmac-secret": true}
	m := r.cbor(b, ctap2.CmdMakeCredential, params)
	var authData []byte
	cbor.Unmarshal(m[2], &authData)
	credID := authData[55 : 55+(int(authData[53])<<8|int(authData[54]))]
	ext := map[string]any{"hmac-secret": r.kit.HMACSecretInput(b, make([]byte, 32)).Input}

	blob, _, err := r.tpm.CreateKey(tpm.ES256)
	if err != nil {
		b.Fatal(err)
	}
	hk, err := r.tpm.CreateHMACKey()
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256([]byte("client data"))
	ga := map[int]any{1: "example.com", 2: h[:], 3: []any{map[string]any{"type": "public-key", "id": credID}}, 4: ext}
	interleaved(b,
		func() {
			if _, err := r.tpm.Sign(blob, h[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := r.tpm.HMAC(hk, h[:]); err != nil {
				b.Fatal(err)
			}
		},
		func() {
			m := r.cbor(b, ctap2.CmdGetAssertion, ga)
			var ad []byte
			cbor.Unmarshal(m[2], &ad)
			if ad[32]&0x80 == 0 {
				b.Fatal("no extension output")
			}
		})
}
