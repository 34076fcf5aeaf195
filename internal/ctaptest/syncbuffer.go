package ctaptest

import (
	"bytes"
	"sync"
)

// SyncBuffer collects output (a daemon's log, a test's slog handler) that
// several goroutines write, and lets the test read it safely.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
