package prompt

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pipeStream is a Stream over one end of net.Pipe, with the same framing
// as the control socket (one JSON value per line).
type pipeStream struct {
	c   net.Conn
	dec *json.Decoder
	mu  sync.Mutex
}

func newPipe() (*pipeStream, *pipeStream) {
	a, b := net.Pipe()
	return &pipeStream{c: a, dec: json.NewDecoder(a)}, &pipeStream{c: b, dec: json.NewDecoder(b)}
}

func (p *pipeStream) Send(v any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return json.NewEncoder(p.c).Encode(v)
}
func (p *pipeStream) Recv(v any) error { return p.dec.Decode(v) }
func (p *pipeStream) Close() error     { return p.c.Close() }

// fakeUI is a session-side backend whose answers the test chooses.
type fakeUI struct {
	mu      sync.Mutex
	seen    []Request
	retries []int
	pin     string
	err     error
	block   bool          // wait for ctx instead of answering
	ctxErr  chan error    // the ctx error seen by a blocked prompt
	open    atomic.Int32  // prompts open right now
	maxOpen atomic.Int32  // most prompts open at once
	release chan struct{} // when non-nil, answers wait for it
	started chan struct{} // receives when a prompt opens
}

func (u *fakeUI) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func newFakeUI() *fakeUI {
	return &fakeUI{pin: "1234", ctxErr: make(chan error, 8), started: make(chan struct{}, 8)}
}

func (u *fakeUI) show(ctx context.Context, req Request, retries int) error {
	n := u.open.Add(1)
	defer u.open.Add(-1)
	for {
		m := u.maxOpen.Load()
		if n <= m || u.maxOpen.CompareAndSwap(m, n) {
			break
		}
	}
	u.mu.Lock()
	u.seen = append(u.seen, req)
	u.retries = append(u.retries, retries)
	block, err, release := u.block, u.err, u.release
	u.mu.Unlock()
	u.started <- struct{}{}
	if block {
		<-ctx.Done()
		u.ctxErr <- ctx.Err()
		return ctx.Err()
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (u *fakeUI) Confirm(ctx context.Context, req Request) error { return u.show(ctx, req, 0) }
func (u *fakeUI) EnterPIN(ctx context.Context, req Request, retries int) (string, error) {
	if err := u.show(ctx, req, retries); err != nil {
		return "", err
	}
	return u.pin, nil
}

// connect attaches a session agent running ui to a and returns a function
// that disconnects it.
func connect(t *testing.T, a *Agent, ui PINEntry) (disconnect func()) {
	t.Helper()
	d, s := newPipe()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	before := a.Agents()
	go func() { defer wg.Done(); _ = a.Attach(ctx, d) }()
	go func() { defer wg.Done(); _ = RunAgent(ctx, s, ui, nil) }()
	waitFor(t, func() bool { return a.Agents() == before+1 })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			s.Close()
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var req = Request{Operation: OpSignIn, RPID: "example.com", UserName: "alice"}

func TestAgentAbsent(t *testing.T) {
	var a Agent
	if err := a.Confirm(context.Background(), req); !errors.Is(err, ErrNoUser) {
		t.Errorf("Confirm = %v", err)
	}
	if pin, err := a.EnterPIN(context.Background(), req, 8); !errors.Is(err, ErrNoUser) || pin != "" {
		t.Errorf("EnterPIN = %q, %v", pin, err)
	}
	// After the only agent leaves, nobody can be asked again.
	ui := newFakeUI()
	disconnect := connect(t, &a, ui)
	if err := a.Confirm(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	disconnect()
	waitFor(t, func() bool { return a.Agents() == 0 })
	if err := a.Confirm(context.Background(), req); !errors.Is(err, ErrNoUser) {
		t.Errorf("Confirm after disconnect = %v", err)
	}
}

func TestAgentConfirmAndPIN(t *testing.T) {
	var a Agent
	ui := newFakeUI()
	ui.pin = "12%3 4ü\n"
	connect(t, &a, ui)
	if err := a.Confirm(context.Background(), req); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	pin, err := a.EnterPIN(context.Background(), Request{Operation: OpVerify, RPID: "x.example", Notice: "TPM locked out"}, 3)
	if err != nil || pin != ui.pin {
		t.Fatalf("EnterPIN = %q, %v", pin, err)
	}
	ui.mu.Lock()
	defer ui.mu.Unlock()
	if len(ui.seen) != 2 || ui.seen[0] != req || ui.seen[1].Operation != OpVerify || ui.seen[1].RPID != "x.example" || ui.seen[1].Notice != "TPM locked out" || ui.retries[1] != 3 {
		t.Errorf("the agent was shown %+v %v", ui.seen, ui.retries)
	}
}

func TestAgentRefusals(t *testing.T) {
	for _, tc := range []struct {
		uiErr error
		want  error
	}{
		{ErrDenied, ErrDenied},
		{ErrTimeout, ErrTimeout},
		{context.DeadlineExceeded, ErrTimeout},
		{ErrNoUser, ErrNoUser},
		{errors.New("pinentry exploded"), ErrNoUser},
	} {
		var a Agent
		ui := newFakeUI()
		ui.err = tc.uiErr
		connect(t, &a, ui)
		if err := a.Confirm(context.Background(), req); !errors.Is(err, tc.want) {
			t.Errorf("ui %v: Confirm = %v, want %v", tc.uiErr, err, tc.want)
		}
		if pin, err := a.EnterPIN(context.Background(), req, 8); !errors.Is(err, tc.want) || pin != "" {
			t.Errorf("ui %v: EnterPIN = %q, %v, want %v", tc.uiErr, pin, err, tc.want)
		}
	}
}

func TestAgentTimeoutCancelsPrompt(t *testing.T) {
	a := Agent{Timeout: 100 * time.Millisecond}
	ui := newFakeUI()
	ui.block = true
	connect(t, &a, ui)
	if err := a.Confirm(context.Background(), req); !errors.Is(err, ErrTimeout) {
		t.Errorf("Confirm = %v, want ErrTimeout", err)
	}
	// The daemon's cancel closed the agent's dialog.
	select {
	case err := <-ui.ctxErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the dialog ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dialog was not cancelled")
	}
}

func TestAgentContextCancel(t *testing.T) {
	var a Agent
	ui := newFakeUI()
	ui.block = true
	connect(t, &a, ui)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Confirm(ctx, req) }()
	<-ui.started
	cancel() // CTAPHID CANCEL
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Confirm = %v, want context.Canceled", err)
	}
	select {
	case <-ui.ctxErr:
	case <-time.After(5 * time.Second):
		t.Fatal("the dialog was not cancelled")
	}
	// The agent is still usable.
	ui.mu.Lock()
	ui.block = false
	ui.mu.Unlock()
	if err := a.Confirm(context.Background(), req); err != nil {
		t.Errorf("next Confirm = %v", err)
	}
}

func TestAgentDisconnectDuringPrompt(t *testing.T) {
	var a Agent
	ui := newFakeUI()
	ui.block = true
	disconnect := connect(t, &a, ui)
	done := make(chan error, 1)
	go func() { done <- a.Confirm(context.Background(), req) }()
	<-ui.started
	go disconnect()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNoUser) {
			t.Errorf("Confirm = %v, want ErrNoUser", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Confirm did not return when the agent left")
	}
}

func TestAgentMostRecent(t *testing.T) {
	var a Agent
	older, newer := newFakeUI(), newFakeUI()
	connect(t, &a, older)
	leave := connect(t, &a, newer)
	if err := a.Confirm(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if newer.count() != 1 || older.count() != 0 {
		t.Errorf("newer saw %d, older %d", newer.count(), older.count())
	}
	leave()
	waitFor(t, func() bool { return a.Agents() == 1 })
	if err := a.Confirm(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if older.count() != 1 {
		t.Errorf("the remaining agent was not asked")
	}
}

func TestAgentOnePromptAtATime(t *testing.T) {
	var a Agent
	ui := newFakeUI()
	ui.release = make(chan struct{})
	connect(t, &a, ui)
	const n = 3
	errs := make(chan error, n)
	for range n {
		go func() { errs <- a.Confirm(context.Background(), req) }()
	}
	for range n {
		<-ui.started
		// Only one dialog is open, and the others wait.
		time.Sleep(20 * time.Millisecond)
		if got := ui.open.Load(); got != 1 {
			t.Errorf("%d dialogs open", got)
		}
		ui.release <- struct{}{}
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if ui.maxOpen.Load() != 1 {
		t.Errorf("up to %d dialogs were open at once", ui.maxOpen.Load())
	}
	// A waiting request gives up with its own context.
	ui.mu.Lock()
	ui.block = true
	ui.mu.Unlock()
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- a.Confirm(ctx1, req) }()
	<-ui.started
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := a.Confirm(ctx2, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting Confirm = %v", err)
	}
	cancel1()
	<-first
}

// rawAgent attaches a hand-driven agent connection: the test plays the
// agent's side of the protocol.
func rawAgent(t *testing.T, a *Agent) (*pipeStream, chan error) {
	t.Helper()
	d, s := newPipe()
	attached := make(chan error, 1)
	go func() { attached <- a.Attach(context.Background(), d) }()
	waitFor(t, func() bool { return a.Agents() == 1 })
	t.Cleanup(func() { s.Close() })
	return s, attached
}

func TestAgentHostileAnswers(t *testing.T) {
	var a Agent
	s, attached := rawAgent(t, &a)
	go func() {
		var m AgentRequest
		// 1: a PIN prompt answered for the wrong id, then OK without a PIN.
		if s.Recv(&m) != nil || m.Prompt == nil || m.Prompt.Kind != KindPIN || m.Prompt.User != "alice" || m.Prompt.Retries != 2 {
			t.Errorf("first message %+v", m.Prompt)
			return
		}
		_ = s.Send(AgentAnswer{ID: m.Prompt.ID + 100, OK: true, PIN: new(string)})
		_ = s.Send(AgentAnswer{ID: m.Prompt.ID, OK: true})
		// 2: an unknown error word.
		if s.Recv(&m) != nil || m.Prompt == nil {
			return
		}
		_ = s.Send(AgentAnswer{ID: m.Prompt.ID, Error: "maybe"})
		// 3: garbage, which ends the connection.
		if s.Recv(&m) != nil || m.Prompt == nil {
			return
		}
		_, _ = s.c.Write([]byte("{\"id\": \"x\"}\n"))
	}()
	if pin, err := a.EnterPIN(context.Background(), req, 2); !errors.Is(err, ErrNoUser) || pin != "" {
		t.Errorf("OK without a PIN: %q, %v", pin, err)
	}
	if err := a.Confirm(context.Background(), req); !errors.Is(err, ErrNoUser) {
		t.Errorf("unknown error word: %v", err)
	}
	if err := a.Confirm(context.Background(), req); !errors.Is(err, ErrNoUser) {
		t.Errorf("garbage: %v", err)
	}
	if err := <-attached; err == nil {
		t.Error("Attach accepted garbage")
	}
	if a.Agents() != 0 {
		t.Error("the broken agent is still attached")
	}
}

func TestRunAgentHostileDaemon(t *testing.T) {
	d, s := newPipe()
	ui := newFakeUI()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- RunAgent(ctx, s, ui, nil) }()
	recv := func() AgentAnswer {
		var ans AgentAnswer
		if err := d.Recv(&ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	// An unknown kind is not shown and is answered "unavailable".
	_ = d.Send(AgentRequest{Prompt: &AgentPrompt{ID: 1, Kind: "telepathy", Operation: "x"}})
	if ans := recv(); ans.ID != 1 || ans.OK || ans.Error != AnswerUnavailable {
		t.Errorf("unknown kind: %+v", ans)
	}
	// Cancelling an unknown id, and an empty message, are harmless.
	_ = d.Send(AgentRequest{Cancel: 99})
	_ = d.Send(AgentRequest{})
	_ = d.Send(AgentRequest{Prompt: &AgentPrompt{ID: 2, Kind: KindPIN, Operation: "sign in"}})
	if ans := recv(); ans.ID != 2 || !ans.OK || ans.PIN == nil || *ans.PIN != "1234" {
		t.Errorf("pin: %+v", ans)
	}
	// A flood of prompts: some queue, the rest are refused, none granted
	// without being shown.
	ui.mu.Lock()
	ui.block = true
	ui.mu.Unlock()
	_ = d.Send(AgentRequest{Prompt: &AgentPrompt{ID: 10, Kind: KindConfirm, Operation: "sign in"}})
	<-ui.started // shown: the queue is empty again
	// net.Pipe has no buffer: send while reading the refusals.
	go func() {
		for id := uint64(11); id < 20; id++ {
			_ = d.Send(AgentRequest{Prompt: &AgentPrompt{ID: id, Kind: KindConfirm, Operation: "sign in"}})
		}
	}()
	refused := 0
	for refused < 10-1-agentQueue {
		if ans := recv(); ans.OK || ans.Error != AnswerUnavailable {
			t.Fatalf("flood: %+v", ans)
		}
		refused++
	}
	go func() {
		for id := uint64(10); id < 20; id++ {
			_ = d.Send(AgentRequest{Cancel: id})
		}
	}()
	for range 1 + agentQueue {
		if ans := recv(); ans.OK || ans.Error != AnswerCancelled {
			t.Fatalf("cancelled: %+v", ans)
		}
	}
	// A malformed message ends the session with an error.
	_, _ = d.c.Write([]byte("[1,2]\n"))
	select {
	case err := <-ran:
		if err == nil {
			t.Error("RunAgent accepted a malformed message")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunAgent did not stop")
	}
}
