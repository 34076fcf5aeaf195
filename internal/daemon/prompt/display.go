package prompt

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DisplayMax bounds, in bytes, each field of a request as shown to the
// person. RP IDs are DNS names (at most 253 bytes) and CTAP truncates user
// names to 64 bytes, so real values fit; the bound only stops a hostile
// client from pushing the rest of the prompt off the screen.
const DisplayMax = 256

// Display returns s made safe to show in a prompt: invalid UTF-8, control
// characters (a newline could forge extra lines, an escape sequence could
// rewrite a terminal) and bidirectional overrides (which can make
// "evil.example" read as something else) become U+FFFD, and the result is
// cut to max bytes at a character boundary, ending in "…" when cut.
func Display(s string, max int) string {
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				r = unicode.ReplacementChar
			}
		}
		if unsafeRune(r) {
			r = unicode.ReplacementChar
		}
		if b.Len()+utf8.RuneLen(r) > max {
			return cut(b.String(), max)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cut shortens s (already safe) so that s+"…" fits in max bytes.
func cut(s string, max int) string {
	const ellipsis = "…"
	limit := max - len(ellipsis)
	if limit < 0 {
		return ""
	}
	for len(s) > limit {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s + ellipsis
}

func unsafeRune(r rune) bool {
	switch {
	case unicode.IsControl(r), unicode.In(r, unicode.Zl, unicode.Zp):
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, // ALM, LRM, RLM
		r >= 0x202a && r <= 0x202e, // LRE, RLE, PDF, LRO, RLO
		r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// Describe returns what req asks and for whom, one line per item, each
// field made safe by Display and cut to max bytes. Every backend shows
// these same lines so that the person sees the same facts everywhere.
func (r Request) Describe(max int) []string {
	op := Display(string(r.Operation), max)
	if op == "" {
		op = "use the security key"
	}
	lines := []string{"passkeyd asks you to " + op + "."}
	if r.RPID != "" {
		lines = append(lines, "Site: "+Display(r.RPID, max))
	}
	if r.UserName != "" {
		lines = append(lines, "Account: "+Display(r.UserName, max))
	}
	if r.Notice != "" {
		lines = append(lines, Display(r.Notice, max))
	}
	return lines
}

// RetriesLine tells the person how many PIN attempts are left, or "" when
// the count is unknown (retries <= 0).
func RetriesLine(retries int) string {
	switch {
	case retries <= 0:
		return ""
	case retries == 1:
		return "Last attempt: a wrong PIN now blocks the PIN."
	default:
		return strconv.Itoa(retries) + " PIN attempts left."
	}
}
