package tpm

import (
	"slices"
	"testing"
	"time"
)

// The "TPM floor": what the TPM work of makeCredential (CreateKey) and
// getAssertion (Load+Sign+Flush) costs on swtpm over its unix socket, for
// comparison with benchmarks of the full CTAP path. Other packages open the
// same TPM with Open(Config{Spec: "swtpm", StateDir: b.TempDir()}).
//
// Besides ns/op (a mean) each reports p50-ns and p95-ns per operation.

func openBenchSwtpm(b *testing.B) *TPM {
	b.Helper()
	needSwtpm(b)
	tp, err := Open(Config{Spec: "swtpm", StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tp.Close(); err != nil {
			b.Error(err)
		}
	})
	return tp
}

// BenchmarkFloorCreate is TPM2_Create of an ES256 key under the SRK.
func BenchmarkFloorCreate(b *testing.B) {
	tp := openBenchSwtpm(b)
	var lat latencies
	for b.Loop() {
		start := time.Now()
		if _, _, err := tp.CreateKey(ES256); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}

// BenchmarkFloorLoadSignFlush is one Sign: TPM2_Load + TPM2_Sign +
// TPM2_FlushContext of an ES256 key, plus blob parsing and DER encoding.
func BenchmarkFloorLoadSignFlush(b *testing.B) {
	tp := openBenchSwtpm(b)
	blob, _, err := tp.CreateKey(ES256)
	if err != nil {
		b.Fatal(err)
	}
	d := digestOf("clientDataHash")
	// The first Sign after swtpm starts gets TPM_RC_RETRY once; keep that
	// start-up cost out of the steady state.
	if _, err := tp.Sign(blob, d); err != nil {
		b.Fatal(err)
	}
	var lat latencies
	for b.Loop() {
		start := time.Now()
		if _, err := tp.Sign(blob, d); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}

type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	pct := func(p int) float64 { return float64(l[(len(l)-1)*p/100].Nanoseconds()) }
	b.ReportMetric(pct(50), "p50-ns")
	b.ReportMetric(pct(95), "p95-ns")
}

// BenchmarkFloorUnsealWithPIN is one PIN check: TPM2_Load of the PIN object,
// TPM2_StartAuthSession salted to the (ECC) SRK, TPM2_Unseal authorised by
// the session's HMAC with response encryption, TPM2_FlushContext.
func BenchmarkFloorUnsealWithPIN(b *testing.B) {
	tp := openBenchSwtpm(b)
	pin := digestOf("1234")[:16]
	blob, err := tp.CreatePINObject(pin, []byte("secret"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tp.UnsealWithPIN(blob, pin); err != nil {
		b.Fatal(err)
	}
	var lat latencies
	for b.Loop() {
		start := time.Now()
		if _, err := tp.UnsealWithPIN(blob, pin); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}

// BenchmarkFloorCreatePINObject is setting or changing the PIN:
// TPM2_StartAuthSession salted to the SRK plus TPM2_Create with parameter
// encryption.
func BenchmarkFloorCreatePINObject(b *testing.B) {
	tp := openBenchSwtpm(b)
	pin := digestOf("1234")[:16]
	var lat latencies
	for b.Loop() {
		start := time.Now()
		if _, err := tp.CreatePINObject(pin, []byte("secret")); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	lat.report(b)
}
