package prompt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// The prompt-agent protocol. Once the control socket has accepted an
// "agent" request, the connection carries one JSON message per line:
//
//	daemon -> agent  {"prompt": {"id": 7, "kind": "confirm"|"pin", "operation": "sign in",
//	                             "rp": "example.com", "user": "alice", "retries": 8,
//	                             "notice": "The TPM is in dictionary-attack lockout ..."}}
//	daemon -> agent  {"cancel": 7}
//	agent -> daemon  {"id": 7, "ok": true, "pin": "1234"}        ("pin" only for kind "pin")
//	agent -> daemon  {"id": 7, "ok": false, "error": "denied"|"timeout"|"cancelled"|"unavailable"}
//
// The daemon sends one prompt at a time and cancels it (CTAPHID CANCEL,
// its own timeout) with "cancel"; an answer to an id the daemon no longer
// waits for is ignored. Unknown fields are ignored on both sides so that
// either can grow.

// Prompt kinds on the wire.
const (
	KindConfirm = "confirm"
	KindPIN     = "pin"
)

// Answer errors on the wire.
const (
	AnswerDenied      = "denied"
	AnswerTimeout     = "timeout"
	AnswerCancelled   = "cancelled"
	AnswerUnavailable = "unavailable"
)

// AgentPrompt is one request shown by the agent.
type AgentPrompt struct {
	ID        uint64 `json:"id"`
	Kind      string `json:"kind"`
	Operation string `json:"operation"`
	RP        string `json:"rp,omitempty"`
	User      string `json:"user,omitempty"`
	Retries   int    `json:"retries,omitempty"`
	Notice    string `json:"notice,omitempty"`
}

// AgentRequest is a message from the daemon to the agent: a prompt or
// the cancellation of one (prompt ids start at 1).
type AgentRequest struct {
	Prompt *AgentPrompt `json:"prompt,omitempty"`
	Cancel uint64       `json:"cancel,omitempty"`
}

// AgentAnswer is the agent's answer to one prompt.
type AgentAnswer struct {
	ID    uint64  `json:"id"`
	OK    bool    `json:"ok"`
	PIN   *string `json:"pin,omitempty"`
	Error string  `json:"error,omitempty"`
}

// Stream is one agent connection: whole JSON messages each way. Recv is
// called from one goroutine; Send may be called concurrently with Recv and
// with itself. Close unblocks Recv. The control socket's Stream
// implements it.
type Stream interface {
	Send(msg any) error
	Recv(msg any) error
	Close() error
}

// Refusals of AttachUID: the connection is not served and not closed, so
// that the caller can answer it with the reason.
var (
	// ErrAgentNotActive: Admit refused the agent's user (in seat mode,
	// not the user of the active session).
	ErrAgentNotActive = errors.New("prompt agent refused")
	// ErrAgentConnected: OnePerUser, and this user already has an agent.
	ErrAgentConnected = errors.New("prompt agent refused: another agent of this user is connected")
)

// maxAgents bounds the agents connected at once; an agent is one
// connection per session, so a handful is plenty.
const maxAgents = 16

// Agent is the daemon side of the session agent: a PINEntry that forwards
// each request to the most recently connected agent (passkeyctl agent in
// the user's session), which shows it through pinentry or a terminal.
//
// One prompt is shown at a time: a second request waits until the first
// one is answered, for as long as its own context allows (CTAPHID handles
// one transaction at a time, so the only overlap is a U2F touch request
// in the background; making it wait keeps both answerable instead of
// failing one). With no agent connected, or when the agent goes away
// during a prompt, the answer is ErrNoUser: never a grant.
//
// The zero value is ready to use.
type Agent struct {
	// Timeout bounds one prompt once shown; zero means Timeout (30 s).
	Timeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Admit, when set, decides from the peer's uid whether an agent may
	// attach (AttachUID) and be asked: seat mode admits the active user
	// only. Its error is returned, wrapped in ErrAgentNotActive by the
	// caller's choice; nil Admit admits everyone, as in owner mode. It
	// runs under the Agent's lock and must not call the Agent.
	Admit func(uid uint32) error
	// OnePerUser refuses a second agent of a uid while one is connected
	// (ErrAgentConnected) instead of asking the newest: a stray agent
	// must not silently take over the prompts of the user's session.
	OnePerUser bool

	once    sync.Once
	turn    chan struct{} // one prompt at a time
	mu      sync.Mutex
	conns   []*agentConn // in connection order; the last one is asked
	nextID  uint64
	refused map[uint32]string // the refusal last logged per uid, until admitted
}

// maxRefusedUIDs bounds the uids whose last refusal is remembered (any
// local user can connect); beyond it the memory starts over.
const maxRefusedUIDs = 64

// logRefusal logs that uid's agent was refused, at INFO the first time
// for this reason and at DEBUG while the same refusal repeats: an agent
// whose user is not at the seat retries every few seconds for as long as
// the other user stays, and must not fill the journal with one line per
// try (the control socket logs its refusals the same way: once, then
// counted).
func (a *Agent) logRefusal(uid uint32, err error) {
	a.mu.Lock()
	first := a.refused[uid] != err.Error()
	if first {
		if a.refused == nil || len(a.refused) >= maxRefusedUIDs {
			a.refused = make(map[uint32]string)
		}
		a.refused[uid] = err.Error()
	}
	a.mu.Unlock()
	if first {
		a.log().Info("prompt agent refused", "uid", uid, "why", err)
	} else {
		a.log().Debug("prompt agent refused", "uid", uid, "why", err)
	}
}

type agentConn struct {
	s       Stream
	uid     uint32
	hasUID  bool // attached with AttachUID
	sendMu  sync.Mutex
	mu      sync.Mutex
	pending map[uint64]chan AgentAnswer
	done    chan struct{} // closed when the connection has ended
}

func (a *Agent) init() {
	a.once.Do(func() { a.turn = make(chan struct{}, 1) })
}

func (a *Agent) log() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Attach serves one agent connection until it ends or ctx is done, then
// closes s. The agent is asked from now on, until a newer one attaches.
// It knows no peer: Admit and OnePerUser do not apply (use AttachUID).
func (a *Agent) Attach(ctx context.Context, s Stream) error {
	return a.attach(ctx, &agentConn{s: s})
}

// AttachUID is Attach for an agent running as uid. When Admit refuses uid
// (ErrAgentNotActive) or OnePerUser finds another agent of uid connected
// (ErrAgentConnected), it returns at once without closing s, so that the
// caller can tell the agent why; the refusal is logged (once while it
// repeats: logRefusal).
func (a *Agent) AttachUID(ctx context.Context, s Stream, uid uint32) error {
	return a.attach(ctx, &agentConn{s: s, uid: uid, hasUID: true})
}

func (a *Agent) attach(ctx context.Context, c *agentConn) error {
	a.init()
	s := c.s
	c.pending, c.done = make(map[uint64]chan AgentAnswer), make(chan struct{})
	// Admit under the lock Restrict takes: an agent admitted just before
	// a switch is then recorded before the switch's Restrict looks, and
	// dropped by it, rather than appended after it ran.
	a.mu.Lock()
	if c.hasUID && a.Admit != nil {
		if err := a.Admit(c.uid); err != nil {
			a.mu.Unlock()
			a.logRefusal(c.uid, err)
			return err
		}
	}
	if c.hasUID && a.OnePerUser {
		for _, x := range a.conns {
			if x.hasUID && x.uid == c.uid {
				a.mu.Unlock()
				a.logRefusal(c.uid, ErrAgentConnected)
				return ErrAgentConnected
			}
		}
	}
	if len(a.conns) >= maxAgents {
		a.mu.Unlock()
		s.Close()
		return fmt.Errorf("prompt agent: %d agents already connected", maxAgents)
	}
	a.conns = append(a.conns, c)
	if c.hasUID {
		delete(a.refused, c.uid) // a later refusal is news again
	}
	a.mu.Unlock()
	// Admitted: the one line operators (and the VM tests) look for.
	a.log().Info("prompt agent connected", "uid", c.uid)
	defer func() {
		a.mu.Lock()
		for i, x := range a.conns {
			if x == c {
				a.conns = append(a.conns[:i], a.conns[i+1:]...)
				break
			}
		}
		a.mu.Unlock()
		close(c.done)
		s.Close()
	}()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		var ans AgentAnswer
		if err := s.Recv(&ans); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("prompt agent: %w", err)
		}
		c.mu.Lock()
		ch, ok := c.pending[ans.ID]
		delete(c.pending, ans.ID)
		c.mu.Unlock()
		if !ok {
			// An answer to a prompt already cancelled or timed out.
			a.log().Debug("prompt agent answered a prompt nobody waits for", "id", ans.ID)
			continue
		}
		ch <- ans // buffered, and each id is delivered once
	}
}

// Restrict disconnects every agent but those of uid (all of them when
// active is false): after a switch of user at the seat, prompts must not
// reach the previous user's session. Agents attached without a uid are
// kept (owner mode never calls it).
func (a *Agent) Restrict(active bool, uid uint32) {
	a.mu.Lock()
	var drop []*agentConn
	for _, c := range a.conns {
		if c.hasUID && (!active || c.uid != uid) {
			drop = append(drop, c)
		}
	}
	a.mu.Unlock()
	for _, c := range drop {
		// Attach's loop sees the closed stream and removes the agent;
		// a prompt waiting on it ends with ErrNoUser.
		c.s.Close()
	}
}

// Agents reports how many agents are connected.
func (a *Agent) Agents() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}

// Confirm implements Prompter.
func (a *Agent) Confirm(ctx context.Context, req Request) error {
	_, err := a.ask(ctx, KindConfirm, req, 0)
	return err
}

// EnterPIN implements PINEntry.
func (a *Agent) EnterPIN(ctx context.Context, req Request, retries int) (string, error) {
	return a.ask(ctx, KindPIN, req, retries)
}

func (a *Agent) ask(ctx context.Context, kind string, req Request, retries int) (string, error) {
	a.init()
	select {
	case a.turn <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-a.turn }()

	a.mu.Lock()
	var c *agentConn
	if n := len(a.conns); n > 0 {
		c = a.conns[n-1]
	}
	a.nextID++
	id := a.nextID
	a.mu.Unlock()
	if c == nil {
		return "", ErrNoUser
	}
	if c.hasUID && a.Admit != nil && a.Admit(c.uid) != nil {
		// The seat changed user since the agent attached and Restrict
		// has not run yet: never show the prompt in the old session.
		return "", ErrNoUser
	}
	if want, ok := UserFrom(ctx); ok && c.hasUID && c.uid != want {
		// A user's own request, and the seat has another user now.
		return "", ErrNoUser
	}

	ch := make(chan AgentAnswer, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	msg := AgentRequest{Prompt: &AgentPrompt{
		ID: id, Kind: kind, Operation: string(req.Operation), RP: req.RPID, User: req.UserName, Retries: retries,
		Notice: req.Notice,
	}}
	if err := c.send(msg); err != nil {
		a.log().Warn("prompt agent unreachable", "err", err)
		return "", ErrNoUser
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = Timeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case ans := <-ch:
		return answer(kind, ans)
	case <-c.done:
		return "", ErrNoUser
	case <-timer.C:
		c.cancel(id)
		return "", ErrTimeout
	case <-ctx.Done():
		c.cancel(id)
		return "", ctx.Err()
	}
}

// answer turns an agent's answer into EnterPIN's results. Anything but an
// explicit approval (with a PIN when one was asked) is a refusal.
func answer(kind string, ans AgentAnswer) (string, error) {
	if !ans.OK {
		switch ans.Error {
		case AnswerDenied:
			return "", ErrDenied
		case AnswerTimeout:
			return "", ErrTimeout
		default:
			return "", ErrNoUser
		}
	}
	if kind == KindPIN {
		if ans.PIN == nil {
			return "", ErrNoUser
		}
		return *ans.PIN, nil
	}
	return "", nil
}

func (c *agentConn) send(msg AgentRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.s.Send(msg)
}

// cancel tells the agent to close prompt id; a failure means the agent is
// gone, which the caller's answer already covers.
func (c *agentConn) cancel(id uint64) {
	_ = c.send(AgentRequest{Cancel: id})
}

// agentQueue bounds the prompts an agent holds (one shown, the rest
// waiting); the daemon sends one at a time, so more means a broken peer.
const agentQueue = 4

type agentJob struct {
	p      AgentPrompt
	ctx    context.Context
	cancel context.CancelFunc
}

// RunAgent is the session side: it shows each prompt arriving on s through
// ui, one at a time, and answers it, until s ends (nil at a clean end of
// stream) or ctx is done. Each prompt is bounded by Timeout and closed
// when the daemon cancels it. Errors of ui are logged (never the PIN) and
// answered "unavailable", which the daemon treats as nobody to ask.
func RunAgent(ctx context.Context, s Stream, ui PINEntry, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()

	var (
		mu   sync.Mutex
		jobs = make(map[uint64]*agentJob)
	)
	queue := make(chan *agentJob, agentQueue)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var j *agentJob
			select {
			case j = <-queue:
			case <-ctx.Done():
				return
			}
			ans := show(j.ctx, ui, j.p, log)
			j.cancel()
			mu.Lock()
			delete(jobs, j.p.ID)
			mu.Unlock()
			if err := s.Send(ans); err != nil {
				log.Debug("answer not delivered", "id", j.p.ID, "err", err)
			}
		}
	}()
	defer wg.Wait()
	defer cancelAll()

	for {
		var m AgentRequest
		if err := s.Recv(&m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if m.Cancel != 0 {
			mu.Lock()
			if j, ok := jobs[m.Cancel]; ok {
				j.cancel()
			}
			mu.Unlock()
		}
		if m.Prompt == nil {
			continue
		}
		p := *m.Prompt
		jctx, jcancel := context.WithTimeout(ctx, Timeout)
		j := &agentJob{p: p, ctx: jctx, cancel: jcancel}
		mu.Lock()
		_, dup := jobs[p.ID]
		if !dup {
			jobs[p.ID] = j
		}
		mu.Unlock()
		if dup {
			jcancel()
			continue // the first one with this id gets the answer
		}
		select {
		case queue <- j:
		default:
			jcancel()
			mu.Lock()
			delete(jobs, p.ID)
			mu.Unlock()
			_ = s.Send(AgentAnswer{ID: p.ID, Error: AnswerUnavailable})
		}
	}
}

// show asks through ui and builds the answer.
func show(ctx context.Context, ui PINEntry, p AgentPrompt, log *slog.Logger) AgentAnswer {
	ans := AgentAnswer{ID: p.ID}
	if ctx.Err() != nil { // cancelled while queued: never shown
		ans.Error = AnswerCancelled
		return ans
	}
	req := Request{Operation: Operation(p.Operation), RPID: p.RP, UserName: p.User, Notice: p.Notice}
	var err error
	switch p.Kind {
	case KindConfirm:
		err = ui.Confirm(ctx, req)
	case KindPIN:
		var pin string
		pin, err = ui.EnterPIN(ctx, req, p.Retries)
		if err == nil {
			ans.PIN = &pin
		}
	default:
		err = fmt.Errorf("unknown prompt kind %q", Display(p.Kind, 32))
	}
	if err == nil {
		ans.OK = true
		return ans
	}
	ans.PIN = nil
	switch {
	case errors.Is(err, ErrDenied):
		ans.Error = AnswerDenied
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		ans.Error = AnswerTimeout
	case errors.Is(err, context.Canceled):
		ans.Error = AnswerCancelled
	default:
		log.Warn("could not show the prompt", "operation", p.Operation, "err", err)
		ans.Error = AnswerUnavailable
	}
	return ans
}
