package prompt

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDisplay(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"example.com", 64, "example.com"},
		{"a\nb\rc\x1b[2Jd", 64, "a\uFFFDb\uFFFDc\uFFFD[2Jd"},
		{"\u202eevil\u2066x\u200f", 64, "\uFFFDevil\uFFFDx\uFFFD"},
		{"line\u2028sep", 64, "line\uFFFDsep"},
		{"bad\xffutf8", 64, "bad\uFFFDutf8"},
		{"ünïcödé ✓ 日本", 64, "ünïcödé ✓ 日本"},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefg…"},
		{"日本語日本語", 10, "日本…"},
		{"abc", 2, ""},
	} {
		got := Display(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("Display(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if len(got) > tc.max || !utf8.ValidString(got) {
			t.Errorf("Display(%q, %d) = %q: too long or invalid", tc.in, tc.max, got)
		}
	}
}

func TestDescribe(t *testing.T) {
	got := Request{Operation: OpSignIn, RPID: "example.com", UserName: "alice"}.Describe(DisplayMax)
	want := []string{"passkeyd asks you to sign in.", "Site: example.com", "Account: alice"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Describe = %q", got)
	}
	got = Request{Operation: OpVerify, Notice: "The TPM is in lockout.\x1b[2J"}.Describe(DisplayMax)
	if len(got) != 2 || got[1] != "The TPM is in lockout.\ufffd[2J" {
		t.Errorf("Describe with a notice = %q, want it as the last line, made safe", got)
	}
	got = Request{Operation: OpReset}.Describe(DisplayMax)
	if len(got) != 1 || !strings.Contains(got[0], "reset") {
		t.Errorf("Describe without RP and user = %q", got)
	}
	if RetriesLine(0) != "" || !strings.Contains(RetriesLine(1), "Last") || !strings.Contains(RetriesLine(7), "7 PIN attempts") {
		t.Error("RetriesLine")
	}
}

func FuzzDisplay(f *testing.F) {
	f.Add("example.com", 20)
	f.Add("\x1b\u202e日本", 5)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1000 {
			return
		}
		got := Display(s, max)
		if len(got) > max || !utf8.ValidString(got) {
			t.Fatalf("Display(%q, %d) = %q", s, max, got)
		}
		for _, r := range got {
			if unsafeRune(r) {
				t.Fatalf("Display(%q) kept %U", s, r)
			}
		}
	})
}
