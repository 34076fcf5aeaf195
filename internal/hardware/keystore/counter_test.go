package keystore

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crash stops the store the way kill -9 would, as far as the file can tell:
// no flush, no last writes, just the lock released.
func (s *Store) crash() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		s.closeErr = s.db.Close()
	})
}

func TestCounterSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	var last uint32
	var resumeAt uint64 // first value the next open must hand out; 0 = unknown
	// Stop at a range boundary, mid-range, across two ranges, right after
	// opening (nothing handed out), and once gracefully.
	tests := []struct {
		take     int
		graceful bool
	}{
		{counterReserve, false},
		{1, false},
		{counterReserve + 44, false},
		{0, false},
		{5, true},
		{1, false},
	}
	for round, tc := range tests {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.take {
			v, err := s.NextCounter()
			if err != nil {
				t.Fatal(err)
			}
			if v <= last {
				t.Fatalf("round %d, call %d: counter %d after %d", round, i, v, last)
			}
			if i == 0 && resumeAt != 0 && uint64(v) != resumeAt {
				t.Errorf("round %d: resumed at %d, want %d (end of last reserved range + 1)", round, v, resumeAt)
			}
			last = v
		}
		resumeAt = s.ctrLimit + 1
		if tc.graceful {
			mustClose(t, s)
		} else {
			s.crash()
		}
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.NextCounter(); err != nil || v <= last || uint64(v) != resumeAt {
		t.Errorf("after crashes: %d, %v; want %d (> %d)", v, err, resumeAt, last)
	}
}

func TestCounterStopsAtMax(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.ctrMu.Lock()
	s.ctrNext = math.MaxUint32 - 1
	s.ctrMu.Unlock()
	for _, want := range []uint32{math.MaxUint32 - 1, math.MaxUint32} {
		if v, err := s.NextCounter(); err != nil || v != want {
			t.Fatalf("NextCounter = %d, %v; want %d", v, err, want)
		}
	}
	if v, err := s.NextCounter(); err == nil {
		t.Fatalf("NextCounter wrapped to %d", v)
	}
}

const crashDirEnv = "PASSKEYD_KEYSTORE_CRASH_DIR"

// TestKillNine runs a child process that stores credentials and takes
// counters, printing each acknowledgement, and SIGKILLs it mid-flight.
// Everything acknowledged must be there afterwards and the counter must
// resume above every value the child handed out.
func TestKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillNineChild$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var creds []string
	var maxCtr uint64
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(60 * time.Second)
	for sc.Scan() && (len(creds) < 30 || maxCtr < 2*counterReserve+10) {
		if time.Now().After(deadline) {
			break
		}
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "ACK-CRED":
			creds = append(creds, f[1])
		case len(f) == 2 && f[0] == "ACK-CTR":
			v, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			maxCtr = max(maxCtr, v)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(creds) < 30 {
		t.Fatalf("child acknowledged only %d credentials", len(creds))
	}

	s := openStore(t, dir)
	defer s.Close()
	for _, id := range creds {
		if _, err := s.Credential([]byte(id)); err != nil {
			t.Errorf("acknowledged credential %s lost: %v", id, err)
		}
	}
	if v, err := s.NextCounter(); err != nil || uint64(v) <= maxCtr {
		t.Errorf("counter after kill -9 = %d, %v; want > %d", v, err, maxCtr)
	}
	t.Logf("child acknowledged %d credentials, counter %d", len(creds), maxCtr)
}

func TestKillNineChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKillNine")
	}
	s := openStore(t, dir)
	// Runs until killed; the bound only matters if the parent dies first.
	for i := range 100000 {
		id := fmt.Sprintf("cred-%d", i)
		if err := s.PutCredential(cred(id, "rp.example", true)); err != nil {
			t.Fatal(err)
		}
		fmt.Println("ACK-CRED", id)
		for range 10 {
			v, err := s.NextCounter()
			if err != nil {
				t.Fatal(errors.Join(err, s.Close()))
			}
			fmt.Println("ACK-CTR", v)
		}
	}
}
