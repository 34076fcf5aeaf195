package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/passkeyd/passkeyd/internal/daemon/control"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmt"
	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/hardware/tpm"
	"github.com/passkeyd/passkeyd/internal/protocol/ctap2"
)

// BenchmarkScale10k fills the store with 10,000 discoverable credentials
// over 1,000 RPs (one with 50 accounts) and measures, through CTAPHID:
//
//	ga50-ms      getAssertion without an allow list for the 50-account RP
//	enumRPs-ms   credential management: token, enumerateRPsBegin and every
//	             enumerateRPsGetNextRP (1,000 RPs)
//	list-ms      passkeyctl list's operation on the control socket: all
//	             10,000 credentials decrypted, encoded and received
//	heap-MB      live heap of the whole authenticator after a GC
func BenchmarkScale10k(b *testing.B) {
	r := newRig(b)
	blob, _, err := r.tpm.CreateKey(tpm.ES256)
	if err != nil {
		b.Fatal(err)
	}
	// Populated straight into the store: 10,000 TPM key creations would
	// measure the TPM, not the scale. Every record has a real key blob.
	start := time.Now()
	const total, rps, target = 10000, 1000, 50
	for i := 0; i < total; i++ {
		rp := fmt.Sprintf("rp%03d.example", i%(rps-1)+1)
		if i < target {
			rp = "big.example"
		}
		err := r.store.PutCredential(&keystore.Credential{
			ID: []byte(fmt.Sprintf("cred-%05d", i)), RPID: rp, RPName: rp,
			UserID: []byte(fmt.Sprintf("user-%05d", i)), UserName: fmt.Sprintf("user%05d@%s", i, rp), UserDisplayName: "User",
			Algorithm: int(tpm.ES256), KeyBlob: blob, Discoverable: true, CreatedAt: time.Now(),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("populated %d credentials in %v", total, time.Since(start).Round(time.Millisecond))
	setPINAndToken(b, r, "271828", 0x04)
	h := sha256.Sum256([]byte("client data"))
	sock := filepath.Join(b.TempDir(), "control.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	csrv := control.NewServer(nil)
	mgmt.Service{Auth: r.auth}.Register(csrv, control.Anyone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go csrv.Serve(ctx, ln)
	var ga, enum, list []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m := r.cbor(b, ctap2.CmdGetAssertion, map[int]any{1: "big.example", 2: h[:]})
		ga = append(ga, time.Since(t0))
		var n int
		cbor.Unmarshal(m[5], &n)
		if n != target {
			b.Fatalf("numberOfCredentials = %d, want %d", n, target)
		}

		t0 = time.Now()
		tok := setPINAndTokenAgain(b, r, "271828", 0x04)
		params := []byte{0x02}
		m = r.cbor(b, ctap2.CmdCredentialManagement, map[int]any{1: 2, 3: 2, 4: authenticate(tok, params)})
		var totalRPs int
		cbor.Unmarshal(m[5], &totalRPs)
		for j := 1; j < totalRPs; j++ {
			r.cbor(b, ctap2.CmdCredentialManagement, map[int]any{1: 3})
		}
		enum = append(enum, time.Since(t0))

		t0 = time.Now()
		cl, err := control.Dial(sock)
		if err != nil {
			b.Fatal(err)
		}
		var creds []mgmtapi.Credential
		if err := cl.Call(mgmtapi.OpList, nil, &creds); err != nil || len(creds) != total {
			b.Fatalf("list: %d credentials, %v", len(creds), err)
		}
		cl.Close()
		list = append(list, time.Since(t0))
		if totalRPs != rps {
			b.Fatalf("totalRPs = %d, want %d", totalRPs, rps)
		}
	}
	b.StopTimer()
	slices.Sort(ga)
	slices.Sort(enum)
	slices.Sort(list)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ga[len(ga)/2].Microseconds())/1000, "ga50-ms")
	b.ReportMetric(float64(enum[len(enum)/2].Microseconds())/1000, "enumRPs-ms")
	b.ReportMetric(float64(list[len(list)/2].Microseconds())/1000, "list-ms")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
}
