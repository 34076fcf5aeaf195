package session

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/passkeyd/passkeyd/internal/testkit/dbustest"
)

// The logind tests run the tracker against a real dbus-daemon on a private
// bus, with python3-dbusmock's logind template as logind (package
// dbustest). The booted-Debian VM test runs the same code against the real
// logind.

const waitLong = dbustest.Wait

// soRef is logind's (so) pair: a session or seat id and its object.
type soRef struct {
	ID   string
	Path dbus.ObjectPath
}

// uoRef is logind's (uo) pair: a uid and its user object.
type uoRef struct {
	UID  uint32
	Path dbus.ObjectPath
}

// watcher consumes a tracker's States, checking that no State repeats.
type watcher struct {
	t  *testing.T
	tr *Tracker
	ch <-chan State

	mu     sync.Mutex
	traced []State // every State published, before coalescing
	last   *State
}

func track(t *testing.T, b *dbustest.Bus) *watcher {
	t.Helper()
	w := &watcher{t: t}
	// ctx ends as soon as New returns: the tracker must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	tr, err := New(ctx, Options{Address: b.Addr, retryMin: 20 * time.Millisecond, trace: w.record})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	w.tr, w.ch = tr, tr.States()
	t.Cleanup(func() { tr.Close() })
	return w
}

func (w *watcher) record(s State) {
	w.mu.Lock()
	w.traced = append(w.traced, s)
	w.mu.Unlock()
}

func (w *watcher) tracedSince(n int) []State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]State(nil), w.traced[n:]...)
}

func (w *watcher) tracedLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.traced)
}

// next is the next State on the stream.
func (w *watcher) next() State {
	w.t.Helper()
	select {
	case s, ok := <-w.ch:
		if !ok {
			w.t.Fatal("States closed")
		}
		if w.last != nil && *w.last == s {
			w.t.Errorf("the same State twice in a row: %+v", s)
		}
		w.last = &s
		return s
	case <-time.After(waitLong):
		w.t.Fatalf("no State within %v (last %+v)", waitLong, w.last)
	}
	panic("unreachable")
}

// await reads States until one satisfies ok.
func (w *watcher) await(what string, ok func(State) bool) State {
	w.t.Helper()
	deadline := time.After(waitLong)
	var seen []State
	for {
		select {
		case s, open := <-w.ch:
			if !open {
				w.t.Fatalf("States closed waiting for %s; saw %+v", what, seen)
			}
			if w.last != nil && *w.last == s {
				w.t.Errorf("the same State twice in a row: %+v", s)
			}
			w.last = &s
			seen = append(seen, s)
			if ok(s) {
				return s
			}
		case <-deadline:
			w.t.Fatalf("no State with %s within %v; saw %+v", what, waitLong, seen)
		}
	}
}

func (w *watcher) awaitUser(uid uint32) State {
	w.t.Helper()
	return w.await(fmt.Sprintf("user %d active", uid), func(s State) bool { return s.Active && s.UID == uid })
}

func (w *watcher) awaitNoUser(reason string) State {
	w.t.Helper()
	s := w.await("no user ("+reason+")", func(s State) bool {
		return !s.Active && strings.Contains(s.Reason, reason)
	})
	if s.UID != 0 || s.UserName != "" {
		w.t.Errorf("no user, but the State names one: %+v", s)
	}
	return s
}
