package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/passkeyd/passkeyd/internal/daemon/mgmtapi"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	root := newRootCommand()
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "passkeyctl ") {
		t.Errorf("output %q", out.String())
	}
	root = newRootCommand()
	root.SetArgs([]string{"version", "extra"})
	root.SetErr(&bytes.Buffer{})
	if err := root.Execute(); err == nil {
		t.Error("version accepted an argument")
	}
}

// TestLockoutLine: info says whether the TPM is in lockout and, if so,
// when it recovers and that no PIN retry is used.
func TestLockoutLine(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.Local)
	for _, c := range []struct {
		l    mgmtapi.Lockout
		want []string
	}{
		{mgmtapi.Lockout{FailedTries: 1, MaxTries: 3, RecoveryIntervalSeconds: 1000},
			[]string{"no (1 of 3 failed tries, TPM-wide; one forgiven per 16m40s)"}},
		{mgmtapi.Lockout{InLockout: true, FailedTries: 3, MaxTries: 3, RecoveryIntervalSeconds: 1000, RecoversWithinSeconds: 1000},
			[]string{"YES", "dictionary-attack lockout (3 of 3 failed tries", "recovers within 16m40s (by about 12:16)", "No PIN retry is used"}},
		{mgmtapi.Lockout{InLockout: true, FailedTries: 3, MaxTries: 3},
			[]string{"dictionary-attack lockout", "only its lockout authority ends it", "No PIN retry is used"}},
	} {
		got := lockoutLine(&c.l, now)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("lockoutLine(%+v) = %q, want %q in it", c.l, got, w)
			}
		}
	}
}

// TestHelpTexts: every flag of every command shows its value type (pflag
// takes a `quoted` word of a usage as the value's name), and the overview
// says whose passkeys the commands act on in seat mode, the default.
func TestHelpTexts(t *testing.T) {
	root := newRootCommand()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); f.Value.Type() != "bool" && name != f.Value.Type() {
				t.Errorf("%s --%s shows its value as %q, not %q", c.CommandPath(), f.Name, name, f.Value.Type())
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"in seat mode", "every command acts on yours", "In owner mode there is one set"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("passkeyctl --help lacks %q:\n%s", want, out.String())
		}
	}
}
