package control

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// refusalInterval is how often the counts of refusals are logged. A peer
// can be refused tens of thousands of times a second: a line for each
// would flood the journal, so only the first refusal of a uid is logged
// as it happens, and the rest as one count per uid per interval.
const refusalInterval = time.Minute

// maxRefusalUIDs bounds the uids counted one by one in an interval (a
// user with subordinate uids has thousands); the rest share one count.
const maxRefusalUIDs = 256

type refusalCount struct {
	notAllowed int // operations refused by their policy
	busy       int // connections refused by the limits
}

func (c *refusalCount) add(op string) {
	if op == "" {
		c.busy++
	} else {
		c.notAllowed++
	}
}

// refusalLog aggregates the log lines about refused peers.
type refusalLog struct {
	log *slog.Logger

	mu    sync.Mutex
	uids  map[uint32]*refusalCount // refused since the last report, counts after the first
	other refusalCount             // uids beyond maxRefusalUIDs
	since time.Time                // the last report
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, uids: make(map[uint32]*refusalCount), since: time.Now()}
}

// note records a refusal of peer: of op, or of a connection over the
// limits when op is empty.
func (l *refusalLog) note(peer Peer, op string) {
	l.mu.Lock()
	c, seen := l.uids[peer.UID]
	switch {
	case seen:
		c.add(op)
	case len(l.uids) >= maxRefusalUIDs:
		l.other.add(op)
		seen = true // counted, not logged now
	default:
		l.uids[peer.UID] = &refusalCount{}
	}
	l.mu.Unlock()
	if seen {
		return
	}
	// The first refusal of this uid in a while: logged at once, so that
	// whoever asks why they were refused finds it.
	if op == "" {
		l.log.Info("control socket: connection refused: too many", "uid", peer.UID, "pid", peer.PID)
	} else {
		l.log.Info("control socket: operation refused", "op", op, "uid", peer.UID, "pid", peer.PID)
	}
}

// run reports the counts every refusalInterval until ctx is done; the
// returned channel is closed when it has stopped.
func (l *refusalLog) run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(refusalInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				l.flush()
			}
		}
	}()
	return done
}

// flush logs one line per uid refused again since the first refusal or
// the last report, and forgets the uids that were not: their next
// refusal is logged at once again.
func (l *refusalLog) flush() {
	type line struct {
		uid uint32
		refusalCount
	}
	l.mu.Lock()
	var lines []line
	for uid, c := range l.uids {
		if *c == (refusalCount{}) {
			delete(l.uids, uid)
			continue
		}
		lines = append(lines, line{uid, *c})
		*c = refusalCount{}
	}
	other := l.other
	l.other = refusalCount{}
	since := time.Since(l.since).Round(time.Second)
	l.since = time.Now()
	l.mu.Unlock()
	slices.SortFunc(lines, func(a, b line) int { return int(int64(a.uid) - int64(b.uid)) })
	for _, c := range lines {
		l.log.Info("control socket: more requests refused", "uid", c.uid, "not_allowed", c.notAllowed, "busy", c.busy, "within", since.String())
	}
	if other != (refusalCount{}) {
		l.log.Info("control socket: more requests refused from other uids", "not_allowed", other.notAllowed, "busy", other.busy, "within", since.String())
	}
}
