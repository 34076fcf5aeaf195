package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

// ErrNoLogind: there is no logind to follow (no system bus socket, or
// org.freedesktop.login1 neither owned nor activatable). The daemon keeps
// its explicit single-owner mode. Test with errors.Is.
var ErrNoLogind = errors.New("session: logind (org.freedesktop.login1) is not on the system bus")

// State is who is at seat0. It is comparable; the stream never repeats a
// State twice in a row.
type State struct {
	// Active: a local user's unlocked session is in the foreground on
	// seat0. UID and UserName are set only then: never act on them when
	// Active is false.
	Active   bool
	UID      uint32
	UserName string
	// SessionID and SessionPath name seat0's foreground session when
	// there is one (also when it is not a user's, for the log).
	SessionID   string
	SessionPath dbus.ObjectPath
	// Locked: the foreground session is a user's but its screen is locked
	// (or locking was asked for); Active is then false.
	Locked bool
	// Reason says in a few words why Active is false; "" when Active.
	Reason string
}

// Options configure New. The zero value follows the system bus.
type Options struct {
	// Address is the bus address; "" is the system bus
	// (DBUS_SYSTEM_BUS_ADDRESS or /run/dbus/system_bus_socket).
	Address string
	// Logger receives reconnections and rejected answers; nil discards.
	Logger *slog.Logger

	// Tests: the reconnection backoff's floor (default 250ms, ceiling 30s)
	// and a hook that sees every State published, before coalescing.
	retryMin time.Duration
	trace    func(State)
}

const (
	callTimeout = 5 * time.Second
	retryMax    = 30 * time.Second
)

// Tracker follows logind. Its methods are safe for concurrent use.
type Tracker struct {
	addr     string
	log      *slog.Logger
	retryMin time.Duration
	trace    func(State)

	out    chan State
	notify chan struct{}
	done   chan struct{}
	ctx    context.Context // cancelled by Close: aborts calls in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex
	latest State
	conn   *dbus.Conn // the current connection, for Close and tests
}

// New connects to the bus, checks that logind is there, reads the current
// state and follows it. The first State on States is the current one.
// ctx bounds only the connection and the first read; Close ends the
// tracker. Errors: one matching ErrNoLogind when there is no logind, any
// other is transient.
func New(ctx context.Context, opts Options) (*Tracker, error) {
	t := &Tracker{
		addr:     opts.Address,
		log:      opts.Logger,
		retryMin: opts.retryMin,
		trace:    opts.trace,
		out:      make(chan State),
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.retryMin <= 0 {
		t.retryMin = 250 * time.Millisecond
	}
	// t.ctx is the connections' lifetime (godbus closes a connection when
	// its context ends): not ctx, which only bounds New.
	t.ctx, t.cancel = context.WithCancel(context.Background())
	conn, err := t.dial(ctx)
	if err != nil {
		t.cancel()
		if errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("%w (no system bus: %v)", ErrNoLogind, err)
		}
		return nil, fmt.Errorf("session: connecting to the system bus: %w", err)
	}
	present, err := logindPresent(ctx, conn)
	if err != nil {
		t.cancel()
		conn.Close()
		return nil, fmt.Errorf("session: asking the bus for logind: %w", err)
	}
	if !present {
		t.cancel()
		conn.Close()
		return nil, ErrNoLogind
	}
	w, err := t.attach(ctx, conn)
	if err != nil {
		t.cancel()
		conn.Close()
		return nil, fmt.Errorf("session: following logind: %w", err)
	}
	t.publish(w.read(ctx))
	t.wg.Add(2)
	go t.deliver()
	go t.run(w)
	return t, nil
}

// States is the stream of States: the current one first, then each change,
// never the same State twice in a row. A consumer that falls behind skips
// intermediate States but always gets the latest. Closed by Close.
func (t *Tracker) States() <-chan State { return t.out }

// Current is the latest State (the one States delivers last).
func (t *Tracker) Current() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.latest
}

// Close stops following logind, closes the connection and the States
// channel. It is safe to call more than once.
func (t *Tracker) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.cancel()
		t.mu.Lock()
		if t.conn != nil {
			t.conn.Close()
		}
		t.mu.Unlock()
		t.wg.Wait()
	})
	return nil
}

func (t *Tracker) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// publish records a new State and wakes deliver.
func (t *Tracker) publish(s State) {
	t.mu.Lock()
	same := s == t.latest
	t.latest = s
	t.mu.Unlock()
	if t.trace != nil && !same {
		t.trace(s)
	}
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// deliver sends the latest State to the consumer, never the same one twice
// in a row, coalescing what the consumer has not taken yet.
func (t *Tracker) deliver() {
	defer t.wg.Done()
	defer close(t.out)
	var last State
	sent := false
	for {
		select {
		case <-t.notify:
		case <-t.done:
			return
		}
		for {
			s := t.Current()
			if sent && s == last {
				break
			}
			select {
			case <-t.notify:
				continue // already replaced: take the newer one
			default:
			}
			select {
			case t.out <- s:
				last, sent = s, true
				continue
			case <-t.notify:
				continue // a newer State: send that one instead
			case <-t.done:
				return
			}
		}
	}
}

// dial connects to the bus for the tracker's lifetime (t.ctx), giving up
// waiting when bound ends or after callTimeout: a bus that accepts the
// socket but never answers the handshake must not hang New.
func (t *Tracker) dial(bound context.Context) (*dbus.Conn, error) {
	bound, cancel := context.WithTimeout(bound, callTimeout)
	defer cancel()
	type result struct {
		conn *dbus.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		addr := t.addr
		if addr == "" {
			addr = systemBusAddress()
		}
		r.conn, r.err = dbus.Connect(addr, dbus.WithContext(t.ctx))
		ch <- r
	}()
	select {
	case r := <-ch:
		return r.conn, r.err
	case <-bound.Done():
		go func() {
			// The handshake ends at the latest when t.ctx does (Close).
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connecting: %w", bound.Err())
	}
}

// logindPresent: logind owns its name or the bus can start it.
func logindPresent(ctx context.Context, conn *dbus.Conn) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var has bool
	if err := conn.BusObject().CallWithContext(ctx, busName+".NameHasOwner", 0, logindName).Store(&has); err != nil {
		return false, err
	}
	if has {
		return true, nil
	}
	var names []string
	if err := conn.BusObject().CallWithContext(ctx, busName+".ListActivatableNames", 0).Store(&names); err != nil {
		return false, err
	}
	for _, n := range names {
		if n == logindName {
			return true, nil
		}
	}
	return false, nil
}

// watch is one connection's view of logind.
type watch struct {
	t           *Tracker
	conn        *dbus.Conn
	sigs        chan *dbus.Signal
	owner       string          // logind's unique name, "" while it is gone
	session     dbus.ObjectPath // seat0's foreground session as last read
	lockPending bool            // a Lock signal not answered yet
	lockSeq     dbus.Sequence   // the last Lock/Unlock/LockedHint signal's
	failures    int             // consecutive failed reads, for the backoff
}

// attach subscribes to logind's signals on conn and learns logind's
// unique name. The subscriptions come first so that no change between
// them and the first read is missed.
func (t *Tracker) attach(ctx context.Context, conn *dbus.Conn) (*watch, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	w := &watch{t: t, conn: conn, sigs: make(chan *dbus.Signal, 256)}
	conn.Signal(w.sigs)
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(busName), dbus.WithMatchInterface(busName),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, logindName)},
		{dbus.WithMatchSender(logindName), dbus.WithMatchObjectPath(seatPath),
			dbus.WithMatchInterface(propsIface), dbus.WithMatchMember("PropertiesChanged")},
		{dbus.WithMatchSender(logindName), dbus.WithMatchPathNamespace(sessionRoot)},
	}
	for _, r := range rules {
		if err := conn.AddMatchSignalContext(ctx, r...); err != nil {
			return nil, err
		}
	}
	var owner string
	err := conn.BusObject().CallWithContext(ctx, busName+".GetNameOwner", 0, logindName).Store(&owner)
	switch {
	case err == nil:
		if len(owner) > maxPathLen {
			return nil, malformed("logind's unique name is %d bytes", len(owner))
		}
		w.owner = owner
	case dbusErrorName(err) == busName+".Error.NameHasNoOwner":
		// Activatable but not running: the first read starts it, and its
		// NameOwnerChanged tells us its unique name.
		w.owner = ""
	default:
		return nil, err
	}
	t.mu.Lock()
	t.conn = conn
	t.mu.Unlock()
	return w, nil
}

// read asks logind for seat0's foreground session and decides the State.
// Signals are never trusted for values: this is the only source.
func (w *watch) read(ctx context.Context) State {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	body, err := call(ctx, w.conn.Object(logindName, seatPath), propsIface+".Get", seatIface, "ActiveSession")
	if err != nil {
		return w.failed("reading seat0", err)
	}
	ref, err := parseActiveSessionReply(body)
	if err != nil {
		return w.failed("seat0", err)
	}
	if ref.Path != w.session {
		// Another session (or none): a pending Lock was the old one's.
		w.session, w.lockPending = ref.Path, false
	}
	if ref.none() {
		w.failures = 0
		w.session = ""
		return State{Reason: "no session on seat0"}
	}
	body, err = call(ctx, w.conn.Object(logindName, ref.Path), propsIface+".GetAll", sessionIface)
	if err != nil {
		st := w.failed("reading session "+ref.ID, err)
		st.SessionID, st.SessionPath = ref.ID, ref.Path
		return st
	}
	info, err := parseSessionReply(body)
	if err != nil {
		st := w.failed("session "+ref.ID, err)
		st.SessionID, st.SessionPath = ref.ID, ref.Path
		return st
	}
	w.failures = 0
	return decide(ref, info, w.lockPending)
}

// failed is the State after a failed read: no user, and a retry is due
// (a malformed answer may be a transient inconsistency too).
func (w *watch) failed(what string, err error) State {
	w.failures++
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	w.t.log.Warn("session: logind", "what", what, "err", msg)
	return State{Reason: "logind: " + what + ": " + msg}
}

// backoff is the delay before retry number n (n >= 1).
func (t *Tracker) backoff(n int) time.Duration {
	d := t.retryMin
	for i := 1; i < n && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// run follows logind until Close, reconnecting when the bus goes away.
func (t *Tracker) run(w *watch) {
	defer t.wg.Done()
	for {
		w.follow()
		w.conn.Close()
		if t.closed() {
			return
		}
		t.publish(State{Reason: "system bus connection lost"})
		t.log.Warn("session: lost the system bus; reconnecting")
		w = t.reconnect()
		if w == nil {
			return
		}
		t.log.Info("session: reconnected to the system bus")
		t.publish(w.refresh())
	}
}

// reconnect dials until it has a connection with logind's signals
// subscribed, or Close. logind need not be there: its NameOwnerChanged
// will say when it is.
func (t *Tracker) reconnect() *watch {
	for n := 1; ; n++ {
		select {
		case <-time.After(t.backoff(n)):
		case <-t.done:
			return nil
		}
		conn, err := t.dial(t.ctx)
		if err != nil {
			t.log.Debug("session: reconnecting", "err", err)
			continue
		}
		w, err := t.attach(t.ctx, conn)
		if err != nil {
			conn.Close()
			t.log.Debug("session: reconnecting", "err", err)
			continue
		}
		if t.closed() {
			// Close may have run before attach stored conn.
			conn.Close()
			return nil
		}
		return w
	}
}

// refresh reads the state, or reports logind's absence.
func (w *watch) refresh() State {
	if w.owner == "" {
		// Not running (perhaps activatable): a read starts it if the bus
		// can, and NameOwnerChanged then names it.
		ctx, cancel := context.WithTimeout(w.t.ctx, callTimeout)
		defer cancel()
		has, err := logindPresent(ctx, w.conn)
		if err != nil || !has {
			w.session, w.lockPending = "", false
			return State{Reason: "logind is not on the bus"}
		}
	}
	return w.read(w.t.ctx)
}

// follow handles signals until the connection drops or Close.
func (w *watch) follow() {
	t := w.t
	var retry <-chan time.Time
	if w.failures > 0 {
		retry = time.After(t.backoff(w.failures))
	}
	for {
		dirty := false
		select {
		case <-t.done:
			return
		case s, ok := <-w.sigs:
			if !ok {
				return
			}
			dirty = w.handle(s)
			// Coalesce a burst into one read.
			for more := true; more; {
				select {
				case s, ok := <-w.sigs:
					if !ok {
						return
					}
					dirty = w.handle(s) || dirty
				default:
					more = false
				}
			}
		case <-retry:
			dirty = true
		}
		if !dirty {
			continue
		}
		st := w.refresh()
		t.publish(st)
		retry = nil
		if w.failures > 0 {
			retry = time.After(t.backoff(w.failures))
		}
	}
}

// handle applies one signal; true when the state must be re-read.
func (w *watch) handle(s *dbus.Signal) bool {
	kind, newOwner := classify(s, w.owner, w.session)
	if kind == sigLock || kind == sigUnlock || kind == sigSessionLockH {
		// The signal handler may deliver out of order under load; a lock
		// signal older than the last one applied says nothing new.
		if s.Sequence < w.lockSeq {
			return true
		}
		w.lockSeq = s.Sequence
	}
	switch kind {
	case sigIgnore:
		return false
	case sigOwner:
		if newOwner != w.owner {
			w.t.log.Info("session: logind changed owner", "old", w.owner, "new", newOwner)
		}
		w.owner = newOwner
		w.session, w.lockPending, w.failures = "", false, 0
	case sigLock:
		w.lockPending = true
	case sigUnlock, sigSessionLockH:
		w.lockPending = false
	}
	return true
}

// dbusErrorName is the D-Bus error name of a call's error, "" for others.
func dbusErrorName(err error) string {
	var v dbus.Error
	if errors.As(err, &v) {
		return v.Name
	}
	var p *dbus.Error
	if errors.As(err, &p) && p != nil {
		return p.Name
	}
	return ""
}

// call makes a method call and returns the reply's body as decoded, not
// through godbus's Store, which re-wraps variants inside containers and
// loses their signatures (a "(uo)" would come back as "av").
func call(ctx context.Context, obj dbus.BusObject, method string, args ...any) ([]any, error) {
	c := obj.CallWithContext(ctx, method, 0, args...)
	if c.Err != nil {
		return nil, c.Err
	}
	return c.Body, nil
}

// defaultSystemBus is the system bus's well-known address (D-Bus
// specification, "Well-known Message Bus Instances").
const defaultSystemBus = "unix:path=/var/run/dbus/system_bus_socket"

// systemBusAddress is DBUS_SYSTEM_BUS_ADDRESS, else the well-known
// address. Resolved here rather than by godbus's ConnectSystemBus, which
// answers a bare "system bus not found" when the socket is missing: dialing
// the well-known path instead fails with ENOENT, which New reports as
// ErrNoLogind (a container or an initramfs without D-Bus: users = "auto"
// falls back to the owner), while a socket that refuses stays transient.
func systemBusAddress() string {
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return a
	}
	return defaultSystemBus
}
