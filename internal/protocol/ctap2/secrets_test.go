package ctap2

import (
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
	"github.com/passkeyd/passkeyd/internal/testkit/tpmsim"
)

// TestDamagedSealedSecretIsNotBlamedOnTheTPM: a device secret whose sealed
// blob in the store is truncated or malformed makes New fail with "the
// store is damaged", never "the TPM was cleared" (which sends the admin
// after a TPM that is fine).
func TestDamagedSealedSecretIsNotBlamedOnTheTPM(t *testing.T) {
	for _, name := range []string{valueWrapKey, valueStoreKey} {
		for what, damage := range map[string]func([]byte) []byte{
			"truncated": func(b []byte) []byte { return b[:len(b)/2] },
			"garbage":   func(b []byte) []byte { return []byte(strings.Repeat("x", len(b))) },
		} {
			dir := t.TempDir()
			openEnv(t, dir).store.Close()
			st, err := keystore.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := st.Get(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Put(name, damage(blob)); err != nil {
				t.Fatal(err)
			}
			_, err = New(Config{TPM: tpmsim.TPM(), Store: st, Prompt: &testPrompter{}})
			st.Close()
			if err == nil {
				t.Fatalf("%s %s: New succeeded", what, name)
			}
			msg := err.Error()
			if strings.Contains(msg, "TPM was cleared") || !strings.Contains(msg, "is damaged, not the TPM") || !strings.Contains(msg, name) {
				t.Errorf("%s %s: %s", what, name, msg)
			}
		}
	}
}
