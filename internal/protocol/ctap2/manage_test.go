package ctap2

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/passkeyd/passkeyd/internal/daemon/prompt"
	"github.com/passkeyd/passkeyd/internal/hardware/keystore"
)

// listCredentials collects a's EachCredential.
func listCredentials(t *testing.T, a *Authenticator) []keystore.Credential {
	t.Helper()
	var out []keystore.Credential
	if err := a.EachCredential(func(c keystore.Credential) error { out = append(out, c); return nil }); err != nil {
		t.Fatalf("list: %v", err)
	}
	return out
}

func TestManagementAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a1 := makeCred(t, e, "example.com", []byte("alice"), true)
	makeCred(t, e, "example.org", []byte("bob"), true)
	makeCred(t, e, "example.com", []byte("carol"), false) // not listed

	list := listCredentials(t, e.a)
	if len(list) != 2 {
		t.Fatalf("list: %v", list)
	}
	slices.SortFunc(list, func(a, b keystore.Credential) int { return strings.Compare(a.RPID, b.RPID) })
	if list[1].RPID != "example.org" || list[0].UserName != "alice@example.com" || list[0].CredProtect != 1 || !list[0].Discoverable {
		t.Errorf("list = %+v", list)
	}
	for _, c := range list {
		if c.KeyBlob != nil || c.CredBlob != nil || c.LargeBlobKey != nil {
			t.Errorf("listing shows key material: %+v", c)
		}
	}
	info := e.a.Info()
	if info.PINSet || info.Credentials != 2 || info.PINRetries != 8 || len(info.Algorithms) == 0 {
		t.Errorf("info = %+v", info)
	}

	// Delete needs presence.
	e.prompt.answer = prompt.ErrDenied
	if err := e.a.DeleteCredentials(ctx, [][]byte{a1.credID}, ""); !errors.Is(err, ErrManagementDenied) {
		t.Fatalf("delete without presence: %v", err)
	}
	e.prompt.answer = nil
	if err := e.a.DeleteCredentials(ctx, [][]byte{[]byte("nope")}, ""); err == nil {
		t.Fatal("deleted an unknown credential")
	}
	if err := e.a.DeleteCredentials(ctx, [][]byte{a1.credID}, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.call(t, CmdGetAssertion, gaParams("example.com", a1.credID)); st != ErrNoCredentials {
		t.Errorf("deleted credential still signs: %v", st)
	}

	// PIN: set, then every destructive call needs it, counted like clientPIN.
	if err := e.a.SetPIN(ctx, "", "12"); err == nil || !strings.Contains(err.Error(), "4 to 63") {
		t.Fatalf("short PIN: %v", err)
	}
	if err := e.a.SetPIN(ctx, "", "2468"); err != nil {
		t.Fatal(err)
	}
	if !e.a.Info().PINSet {
		t.Fatal("PIN not set")
	}
	if err := e.a.Reset(ctx, ""); err == nil || !strings.Contains(err.Error(), "give the PIN") {
		t.Fatalf("reset without PIN: %v", err)
	}
	if err := e.a.Reset(ctx, "0000"); err == nil || !strings.Contains(err.Error(), "wrong PIN (7 tries left)") {
		t.Fatalf("reset with a wrong PIN: %v", err)
	}
	if err := e.a.SetPIN(ctx, "2468", "13579"); err != nil {
		t.Fatalf("change PIN: %v", err)
	}
	if err := e.a.Reset(ctx, "13579"); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if info := e.a.Info(); info.PINSet || info.Credentials != 0 {
		t.Errorf("after reset: %+v", info)
	}
}
