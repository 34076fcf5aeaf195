package keystore

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	benchCreds  = 10000
	benchRPs    = 1000
	benchTarget = 50 // credentials on the RP the benchmark asks for
)

// fillStore loads benchCreds credentials over benchRPs RPs in one
// transaction (one fsync), benchTarget of them on "target.example".
func fillStore(b *testing.B) *Store {
	b.Helper()
	s := openStore(b, b.TempDir())
	b.Cleanup(func() { s.Close() })
	err := s.update(func(tx *bolt.Tx) error {
		for i := range benchCreds {
			rp := fmt.Sprintf("rp%d.example", i%(benchRPs-1))
			if i < benchTarget {
				rp = "target.example"
			}
			c := cred(fmt.Sprintf("credential-%06d", i), rp, true)
			c.UserDisplayName = "Some User Display Name"
			c.KeyBlob = make([]byte, 300) // about a TPM ECC key blob
			c.CreatedAt = time.Now()
			if _, err := putCredential(tx, s.k, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	s.count.Store(benchCreds)
	return s
}

func BenchmarkCredentialsByRP(b *testing.B) {
	s := fillStore(b)
	for b.Loop() {
		cs, err := s.CredentialsByRP("target.example")
		if err != nil || len(cs) != benchTarget {
			b.Fatalf("got %d, %v", len(cs), err)
		}
	}
}

func BenchmarkCredentials(b *testing.B) {
	s := fillStore(b)
	for b.Loop() {
		cs, err := s.Credentials()
		if err != nil || len(cs) != benchCreds {
			b.Fatalf("got %d, %v", len(cs), err)
		}
	}
}

// BenchmarkForEachCredential is the walk that listings stream from: the
// same records as Credentials, a batch at a time, releasing the file's
// pages after each batch.
func BenchmarkForEachCredential(b *testing.B) {
	s := fillStore(b)
	for b.Loop() {
		n := 0
		if err := s.ForEachCredential(func(*Credential) error { n++; return nil }); err != nil || n != benchCreds {
			b.Fatalf("got %d, %v", n, err)
		}
	}
}

// BenchmarkPutCredential includes the fsync that makes each put durable.
func BenchmarkPutCredential(b *testing.B) {
	s := openStore(b, b.TempDir())
	defer s.Close()
	c := cred("", "rp.example", true)
	c.KeyBlob = make([]byte, 300)
	i := 0
	for b.Loop() {
		c.ID = fmt.Appendf(nil, "credential-%d", i)
		i++
		if err := s.PutCredential(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNextCounter(b *testing.B) {
	s := openStore(b, b.TempDir())
	defer s.Close()
	for b.Loop() {
		if _, err := s.NextCounter(); err != nil {
			b.Fatal(err)
		}
	}
}
