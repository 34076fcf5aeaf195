package main

import (
	"errors"
	"testing"
)

// TestParseUser: --user NAME or NAME:UID; anything else is a usage error.
func TestParseUser(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		uid  int64 // -1: none
	}{
		{"alice", "alice", -1},
		{"olduser:1007", "olduser", 1007},
		{"root:0", "root", 0},
		{"a:b:42", "a:b", 42},
	} {
		a, err := parseUser(tc.in)
		if err != nil || a.User != tc.name || (a.UID == nil) != (tc.uid < 0) || (a.UID != nil && int64(*a.UID) != tc.uid) {
			t.Errorf("parseUser(%q) = %+v, %v; want %s uid %d", tc.in, a, err, tc.name, tc.uid)
		}
	}
	for _, bad := range []string{"alice:", "alice:x", ":1000", "alice:-1", "alice:4294967296"} {
		_, err := parseUser(bad)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitUsage {
			t.Errorf("parseUser(%q): %v, want a usage error", bad, err)
		}
	}
}
