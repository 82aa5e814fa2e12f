package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Phase is a step of a wake.
type Phase string

// Wake phases, in order.
const (
	PhaseLock   Phase = "lock"   // waiting for another wake or shutdown of the host
	PhaseProbe  Phase = "probe"  // is it up already?
	PhaseBoot   Phase = "boot"   // magic packets sent, waiting for SSH
	PhaseChecks Phase = "checks" // SSH answers, waiting for the checks to pass
	PhasePull   Phase = "pull"   // pulling missing declared models
	PhaseDone   Phase = "done"
)

// Progress is one update of a wake in progress.
type Progress struct {
	Host    string
	Phase   Phase
	Elapsed time.Duration
	// Waiting says what the wake waits for, in words.
	Waiting string
}

// WakeOptions tune one wake.
type WakeOptions struct {
	// Timeout replaces the host's boot_timeout when positive.
	Timeout time.Duration
	// NoPull leaves missing declared models missing (the host is then
	// degraded).
	NoPull bool
	// Progress receives updates (phase changes, new reasons to wait).
	Progress func(Progress)
	// CheckSettle bounds how long failing checks are retried when the host
	// was already up (no packets sent); default 30s. After a boot they are
	// retried until the timeout.
	CheckSettle time.Duration
}

// WakeResult is how a wake ended.
type WakeResult struct {
	Status HostStatus `json:"status"`
	Record WakeRecord `json:"wake"`
	// Coalesced reports that another wake did the work and this caller
	// only saw its result.
	Coalesced bool `json:"coalesced"`
	// Pulled are the models pulled during the wake.
	Pulled []string `json:"pulled,omitempty"`
	// Stopped is set when the wake stopped at once on an SSH error that
	// waiting cannot fix: StopHostKey, StopAuth or StopSSH. Status.Reason
	// then holds the error's text.
	Stopped string `json:"stopped,omitempty"`
	// Err is that error, for its details (fingerprints, keys offered); it
	// is not kept in JSON, so a coalesced result from another process has
	// only Stopped and Status.Reason.
	Err error `json:"-"`
}

// Why a wake stopped early (WakeResult.Stopped).
const (
	// StopHostKey: the host's key was rejected (changed, unknown or revoked).
	StopHostKey = "host-key"
	// StopAuth: the host refused every key offered.
	StopAuth = "auth"
	// StopSSH: another error the connector marked permanent.
	StopSSH = "ssh"
)

// stopKind classifies a permanent connector error.
func stopKind(err error) string {
	var hk *sshexec.HostKeyError
	var ae *sshexec.AuthError
	switch {
	case errors.As(err, &hk):
		return StopHostKey
	case errors.As(err, &ae):
		return StopAuth
	}
	return StopSSH
}

// stopWords says in a few words why a wake stopped, for its last progress
// line.
func stopWords(err error) string {
	var hk *sshexec.HostKeyError
	if errors.As(err, &hk) {
		switch hk.Kind {
		case sshexec.HostKeyMismatch:
			return "host key mismatch"
		case sshexec.HostKeyUnknown:
			return "host key not known"
		case sshexec.HostKeyRevoked:
			return "host key revoked"
		}
		return "host key rejected"
	}
	var ae *sshexec.AuthError
	if errors.As(err, &ae) {
		return "login refused"
	}
	return "SSH error"
}

// ExitCode maps the outcome to gpuctl wake's exit code: 0 ready, 4 degraded,
// 5 in its other OS, 1 stopped on an SSH error waiting cannot fix (Stopped:
// a rejected host key, a refused login), 3 not reachable by the timeout.
func (r *WakeResult) ExitCode() int {
	if r.Stopped != "" {
		return 1
	}
	switch r.Status.State {
	case StateReady:
		return 0
	case StateDegraded:
		return 4
	case StateOtherOS:
		return 5
	}
	return 3
}

type wakeCall struct {
	done    chan struct{}
	res     *WakeResult
	err     error
	waiters int
	cancel  context.CancelFunc

	pmu      sync.Mutex
	progress []func(Progress)
}

func (w *wakeCall) emit(p Progress) {
	w.pmu.Lock()
	fs := append([]func(Progress){}, w.progress...)
	w.pmu.Unlock()
	for _, f := range fs {
		f(p)
	}
}

func (w *wakeCall) addProgress(f func(Progress)) {
	if f == nil {
		return
	}
	w.pmu.Lock()
	w.progress = append(w.progress, f)
	w.pmu.Unlock()
}

// Wake brings h to ready: if it already is, it returns at once without
// sending a packet; otherwise it sends magic packets (and keeps re-sending),
// waits for SSH, runs the checks until they pass (retrying transient
// failures), and pulls missing declared models. Concurrent wakes of one host
// coalesce: within this process into one call, across processes through
// LockHost — later callers wait and get the first wake's result.
//
// The error is non-nil only when the wake could not be carried out (ctx
// cancelled, packets could not be sent, state_dir unusable); a host that
// did not come up or came up degraded is a result, see WakeResult.ExitCode.
func (c *Controller) Wake(ctx context.Context, h *inventory.Host, opts WakeOptions) (*WakeResult, error) {
	c.mu.Lock()
	if c.inflight == nil {
		c.inflight = map[string]*wakeCall{}
	}
	if call, ok := c.inflight[h.Name]; ok {
		call.waiters++
		call.addProgress(opts.Progress)
		c.mu.Unlock()
		return c.awaitCall(ctx, call, true)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	call := &wakeCall{done: make(chan struct{}), waiters: 1, cancel: cancel}
	call.addProgress(opts.Progress)
	c.inflight[h.Name] = call
	c.mu.Unlock()
	go func() {
		res, err := c.wake(wctx, h, opts, call.emit)
		c.mu.Lock()
		delete(c.inflight, h.Name)
		c.mu.Unlock()
		call.res, call.err = res, err
		close(call.done)
		cancel()
	}()
	return c.awaitCall(ctx, call, false)
}

func (c *Controller) awaitCall(ctx context.Context, call *wakeCall, joined bool) (*WakeResult, error) {
	select {
	case <-call.done:
		if call.res == nil {
			return nil, call.err
		}
		r := *call.res
		r.Coalesced = r.Coalesced || joined
		return &r, call.err
	case <-ctx.Done():
		c.mu.Lock()
		call.waiters--
		last := call.waiters == 0
		c.mu.Unlock()
		if last {
			// Nobody wants the result any more: stop the wake and wait
			// for it to wind down (it holds a lock and open files).
			call.cancel()
			<-call.done
		}
		return nil, ctx.Err()
	}
}

// wakeRun is the state of one wake, carried from phase to phase.
type wakeRun struct {
	c     *Controller
	h     *inventory.Host
	opts  WakeOptions
	emit  func(Progress)
	start time.Time
	rec   WakeRecord
	phase Phase
	since time.Time
	wait  string
	// stopErr is the permanent SSH error the wake stopped on.
	stopErr error

	// ctx is the caller's; bctx bounds it by timeout, the boot timeout.
	ctx, bctx context.Context
	timeout   time.Duration
	// held is what the wake releases when it ends, last taken first.
	held []func() error
	// sshP and other are what the first probe saw.
	sshP  Probe
	other *Probe
	// runner and closer are the SSH session, once open.
	runner sshexec.Runner
	closer io.Closer
	k      *checker
	rep    Report
	pulled []string
	// res and err are how the wake ended, once a phase has ended it.
	res *WakeResult
	err error
}

func (w *wakeRun) enter(p Phase, waiting string) {
	now := w.c.now()
	if w.phase != "" && w.phase != p {
		w.rec.Phases = append(w.rec.Phases, PhaseTiming{Name: string(w.phase),
			StartMS: ms(w.since.Sub(w.start)), DurationMS: ms(now.Sub(w.since))})
	}
	if w.phase != p {
		w.phase, w.since = p, now
	} else if waiting == w.wait {
		return
	}
	w.wait = waiting
	w.emit(Progress{Host: w.h.Name, Phase: p, Elapsed: now.Sub(w.start), Waiting: waiting})
}

// end ends the wake with res or err; phases return its true.
func (w *wakeRun) end(res *WakeResult, err error) bool {
	w.res, w.err = res, err
	return true
}

// hold keeps release for the end of the wake.
func (w *wakeRun) hold(release func() error) { w.held = append(w.held, release) }

// release releases what the wake holds, last taken first.
func (w *wakeRun) release() {
	for i := len(w.held) - 1; i >= 0; i-- {
		w.held[i]()
	}
}

// wake runs the phases of one wake in order; the first that ends the wake
// gives its result. The lock and the SSH session are held until the result
// is recorded.
func (c *Controller) wake(ctx context.Context, h *inventory.Host, opts WakeOptions, emit func(Progress)) (*WakeResult, error) {
	start := c.now()
	w := &wakeRun{c: c, h: h, opts: opts, emit: emit, start: start, rec: WakeRecord{Host: h.Name, Started: start}, ctx: ctx}
	w.timeout = durOr(opts.Timeout, h.BootTimeout.D())
	if w.timeout <= 0 {
		w.timeout = inventory.DefaultBootTimeout.D()
	}
	var cancel context.CancelFunc
	w.bctx, cancel = context.WithTimeout(ctx, w.timeout)
	defer cancel()
	defer w.release()

	phases := []func() bool{
		w.lockHost,    // one wake (or shutdown) of the host at a time
		w.checkByHTTP, // the always-on server: never woken, its Ollama says
		w.probe,       // up already? then SSH over that connection
		w.otherOS,     // running its other OS: not woken
		w.boot,        // the wake action, then wait for SSH
		w.checks,      // retried while failures are transient
		w.pull,        // the declared models missing
	}
	for _, phase := range phases {
		if phase() {
			return w.res, w.err
		}
	}
	res := w.finish(&w.rep, "", "")
	res.Pulled = w.pulled
	return res, nil
}

// lockHost lets one wake (or shutdown) of a host run at a time, across
// processes. A wake that waited for another wake ends with its result.
func (w *wakeRun) lockHost() bool {
	c, h := w.c, w.h
	if c.StateDir == "" {
		return false
	}
	lock, err := statedir.LockHost(w.bctx, c.StateDir, h.Name, statedir.LockTry)
	if errors.Is(err, statedir.ErrLocked) {
		w.enter(PhaseLock, "another gpuctl is waking or shutting down "+h.Name+"; waiting for it")
		waitStart := c.now()
		lock, err = statedir.LockHost(w.bctx, c.StateDir, h.Name, statedir.LockWait)
		if err == nil {
			if last, ok := c.lastWake(h.Name); ok && !last.Record.Finished.Before(waitStart) {
				lock.Unlock()
				last.Coalesced = true
				return w.end(last, nil)
			}
		}
	}
	if err != nil {
		if w.bctx.Err() != nil && w.ctx.Err() == nil {
			return w.end(w.finish(nil, StateUnknown, fmt.Sprintf("the host stayed locked by another gpuctl for %s", w.timeout)), nil)
		}
		return w.end(nil, err)
	}
	w.hold(lock.Unlock)
	if m, err := statedir.HoldWaking(c.StateDir, h.Name); err == nil {
		w.hold(m.Unlock)
	}
	return false
}

// checkByHTTP ends the wake of a host checked by HTTP alone (the always-on
// server): it is never woken, its Ollama says where it stands.
func (w *wakeRun) checkByHTTP() bool {
	h := w.h
	if len(sshChecksFor(h)) != 0 {
		return false
	}
	w.enter(PhaseChecks, "asking Ollama at "+h.OllamaURL.String())
	rep := w.c.checkHTTP(w.bctx, h)
	if w.ctx.Err() != nil {
		return w.end(nil, w.ctx.Err())
	}
	return w.end(w.finish(&rep, "", ""), nil)
}

// probe asks whether the host is up already, and opens SSH if it is.
func (w *wakeRun) probe() bool {
	c, h := w.c, w.h
	w.enter(PhaseProbe, "probing "+h.SSHAddr())
	// A host that is up answers TCP on its LAN within milliseconds; an off
	// one never does, so this probe is short: packets go out sooner.
	pctx, pcancel := context.WithTimeout(w.bctx, min(durOr(c.ProbeTimeout, DefaultProbeTimeout), wakeProbeTimeout))
	sshP, conn, other := c.reach(pctx, h)
	pcancel()
	w.sshP, w.other = sshP, other
	if conn == nil {
		return false
	}
	if c.SSH == nil {
		conn.Close()
		return w.end(nil, fmt.Errorf("host %q: no SSH connector configured", h.Name))
	}
	cctx, ccancel := context.WithTimeout(w.bctx, durOr(c.ConnectTimeout, DefaultConnectTimeout))
	r, cl, err := c.SSH(cctx, h, conn)
	ccancel()
	if err != nil {
		conn.Close()
		if sshexec.IsPermanent(err) {
			return w.end(w.stop(err), nil)
		}
		return false
	}
	w.connected(r, cl)
	return false
}

// connected keeps the SSH session until the wake ends.
func (w *wakeRun) connected(r sshexec.Runner, cl io.Closer) {
	w.runner, w.closer = r, cl
	w.hold(func() error { return w.closer.Close() })
}

// otherOS ends the wake of a host found running its other OS: it is not
// woken.
func (w *wakeRun) otherOS() bool {
	if w.runner != nil || w.other == nil || w.other.Kind != sshexec.ProbeOK {
		return false
	}
	return w.end(w.finish(nil, StateOtherOS, fmt.Sprintf("port %d answers while SSH does not: the PC runs its other OS; not waking it", w.h.OtherOSProbe)), nil)
}

// boot wakes a host that is not up and waits for its SSH.
func (w *wakeRun) boot() bool {
	if w.runner != nil {
		return false
	}
	s := w.sendWake()
	r, cl, err := w.c.waitSSH(w.bctx, w, w.sshP, s.errc, s.taken)
	s.stop()
	if err != nil {
		var se *stopError
		switch {
		case errors.As(err, &se) && se.err != nil:
			return w.end(w.stop(se.err), nil)
		case errors.As(err, &se):
			return w.end(w.finish(nil, se.state, se.reason), nil)
		case w.ctx.Err() != nil:
			return w.end(nil, w.ctx.Err())
		}
		return w.end(nil, err)
	}
	w.connected(r, cl)
	return false
}

// wakeSender runs a host's wake action (which keeps re-sending) while the
// wake waits for SSH.
type wakeSender struct {
	// errc gives the action's end; nil when none runs or waitSSH took it.
	errc   chan error
	cancel context.CancelFunc
}

// taken says waitSSH received the action's end.
func (s *wakeSender) taken() { s.errc = nil }

// stop stops the action and waits for it to end.
func (s *wakeSender) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if s.errc != nil {
		<-s.errc
	}
}

// sendWake starts the host's wake action, if it has one, and enters
// PhaseBoot.
func (w *wakeRun) sendWake() *wakeSender {
	c, h := w.c, w.h
	s := &wakeSender{}
	if c.Waker == nil || !Wakeable(h) {
		w.enter(PhaseBoot, "waiting for SSH at "+h.SSHAddr()+" (no wake action: no mac and no wake command)")
		return s
	}
	w.rec.Woke = true
	wctx, cancel := context.WithCancel(w.bctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Waker.Wake(wctx, h) }()
	s.errc, s.cancel = errc, cancel
	w.enter(PhaseBoot, WakeDescription(h)+"; waiting for SSH at "+h.SSHAddr())
	return s
}

// checks runs the checks over SSH, retried while failures are transient:
// after a boot until the timeout, on a host that was up for CheckSettle.
func (w *wakeRun) checks() bool {
	c := w.c
	w.rec.SSHAfterMS = ms(c.now().Sub(w.start))
	settle := w.bctx
	if !w.rec.Woke {
		var scancel context.CancelFunc
		settle, scancel = context.WithTimeout(w.bctx, durOr(w.opts.CheckSettle, 30*time.Second))
		defer scancel()
	}
	w.k = &checker{c: c, h: w.h, runner: w.runner}
	w.enter(PhaseChecks, "running checks")
	c.runChecksBounded(settle, w.k, nil)
	for {
		retry, waitFor := retryable(w.k.report())
		if len(retry) == 0 {
			break
		}
		w.enter(PhaseChecks, "waiting for "+strings.Join(waitFor, "; "))
		t := time.NewTimer(checkRetryInterval)
		select {
		case <-settle.Done():
			t.Stop()
		case <-t.C:
		}
		if settle.Err() != nil {
			break
		}
		c.runChecksBounded(settle, w.k, retry)
	}
	if w.ctx.Err() != nil {
		return w.end(nil, w.ctx.Err())
	}
	w.rep = w.k.report()
	return false
}

// pull pulls the declared models missing when nothing else fails, then
// checks Ollama again.
func (w *wakeRun) pull() bool {
	c, rep := w.c, w.rep
	if !onlyModelsMissing(rep) {
		return false
	}
	w.rec.ReadyAfterMS = ms(c.now().Sub(w.start))
	if w.opts.NoPull || c.Puller == nil || rep.Ollama == nil || len(rep.Ollama.Missing) == 0 {
		return false
	}
	missing := rep.Ollama.Missing
	w.enter(PhasePull, "pulling "+strings.Join(missing, ", "))
	names := make([]inventory.ModelName, 0, len(missing))
	for _, m := range missing {
		names = append(names, inventory.ModelName(m))
	}
	err := c.Puller.Pull(w.ctx, w.h, w.runner, names, func(line string) { w.enter(PhasePull, line) })
	if w.ctx.Err() != nil {
		return w.end(nil, w.ctx.Err())
	}
	if err == nil {
		w.pulled = missing
	}
	cctx, ccancel := context.WithTimeout(w.ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
	w.k.run(cctx, []string{CheckOllama})
	ccancel()
	w.rep = w.k.report()
	if err != nil {
		w.rep.Checks = replaceCheck(w.rep.Checks, Check{Name: CheckModels, Detail: "pull failed: " + err.Error()})
	}
	return false
}

// runChecksBounded runs checks within CheckTimeout and ctx.
func (c *Controller) runChecksBounded(ctx context.Context, k *checker, names []string) {
	cctx, cancel := context.WithTimeout(ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
	defer cancel()
	k.run(cctx, names)
}

// retryable lists the failing checks worth retrying; none when any failure
// is permanent (or only models are missing: the pull handles that).
func retryable(r Report) (names, why []string) {
	for _, ch := range r.Checks {
		if ch.OK || ch.Name == CheckModels {
			continue
		}
		if !ch.Transient {
			return nil, nil
		}
		names = append(names, ch.Name)
		why = append(why, ch.Name+" ("+ch.Detail+")")
	}
	return names, why
}

func onlyModelsMissing(r Report) bool {
	if r.Ollama == nil || len(r.Ollama.Missing) == 0 {
		return allOK(r)
	}
	for _, ch := range r.Checks {
		if !ch.OK && ch.Name != CheckModels {
			return false
		}
	}
	return true
}

func allOK(r Report) bool {
	for _, ch := range r.Checks {
		if !ch.OK {
			return false
		}
	}
	return true
}

// stop ends the wake on a permanent SSH error (see isPermanent).
func (w *wakeRun) stop(err error) *WakeResult {
	w.stopErr = err
	return w.finish(nil, StateUnknown, "ssh: "+err.Error())
}

// finish builds the result, records it and says so. With a report, the
// state comes from the checks; otherwise from st and reason.
func (w *wakeRun) finish(rep *Report, st State, reason string) *WakeResult {
	c := w.c
	now := c.now()
	hs := HostStatus{Name: w.h.Name, CheckedAt: now, Checks: []Check{}, GPU: []hostcmd.GPU{}, State: st, Reason: reason}
	if rep != nil {
		hs.fill(*rep)
	}
	done := string(hs.State)
	if w.stopErr != nil {
		done = "stopped: " + stopWords(w.stopErr)
	}
	w.enter(PhaseDone, done)
	w.rec.Finished = now
	w.rec.State, w.rec.Reason = hs.State, hs.Reason
	w.rec.Failed = hs.Failing()
	if hs.State != StateReady {
		w.rec.ReadyAfterMS = 0
	} else if w.rec.ReadyAfterMS == 0 {
		w.rec.ReadyAfterMS = ms(now.Sub(w.start))
	}
	if err := c.appendHistory(w.rec); err != nil {
		c.logger().Warn("cannot record wake history", "host", w.h.Name, "err", err)
	}
	hs.finish(c, w.h, w.start)
	res := &WakeResult{Status: hs, Record: w.rec}
	if w.stopErr != nil {
		res.Stopped, res.Err = stopKind(w.stopErr), w.stopErr
	}
	if c.StateDir != "" {
		if err := statedir.WriteJSON(statedir.LastWakeFile(c.StateDir, w.h.Name), res); err != nil {
			c.logger().Warn("cannot record wake result", "host", w.h.Name, "err", err)
		}
	}
	return res
}

// lastWake reads the result of the host's last wake.
func (c *Controller) lastWake(host string) (*WakeResult, bool) {
	var r WakeResult
	if err := statedir.ReadJSON(statedir.LastWakeFile(c.StateDir, host), &r); err != nil {
		return nil, false
	}
	return &r, true
}

// stopError ends the wait for SSH with a final state, or with a permanent
// SSH error (err set).
type stopError struct {
	state  State
	reason string
	err    error
}

func (e *stopError) Error() string { return e.reason }

// waitSSH probes h's SSH port with backoff (25 ms doubling to MaxBackoff),
// several probes in flight so a slow timeout never delays noticing the host,
// and opens SSH over the first connection that succeeds.
func (c *Controller) waitSSH(ctx context.Context, w *wakeRun, first Probe, wolErr <-chan error, wolDone func()) (sshexec.Runner, io.Closer, error) {
	s := &sshWait{c: c, w: w, h: w.h, results: make(chan sshAttempt), last: first}
	s.actx, s.cancelAll = context.WithCancel(ctx)
	defer s.cleanup()

	backoff := firstBackoff
	maxB := durOr(c.MaxBackoff, DefaultMaxBackoff)
	s.launch(false)
	s.launches++
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	for {
		select {
		case a := <-s.results:
			s.inflight--
			if done, err := s.handle(ctx, a); done {
				return s.runner, s.closer, err
			}
		case <-timer.C:
			s.more()
			backoff = min(2*backoff, maxB)
			timer.Reset(backoff)
		case err := <-wolErr:
			wolDone()
			wolErr = nil
			if err != nil && ctx.Err() == nil {
				return nil, nil, fmt.Errorf("host %q: waking it failed: %w", s.h.Name, err)
			}
		case <-ctx.Done():
			return nil, nil, s.timedOut(ctx)
		}
	}
}

// sshWait is the state of one waitSSH: the probes in flight and what the
// last ones saw.
type sshWait struct {
	c *Controller
	w *wakeRun
	h *inventory.Host
	// actx is the probes' context, cancelAll ends them.
	actx      context.Context
	cancelAll context.CancelFunc
	results   chan sshAttempt
	inflight  int
	launches  int
	last      Probe
	// lastSSHErr is the last error of an SSH handshake waiting may fix.
	lastSSHErr error
	// runner and closer are the SSH session opened.
	runner sshexec.Runner
	closer io.Closer
}

// sshAttempt is what one probe saw: of the SSH port (with its connection
// when it answered), or of the other OS's port.
type sshAttempt struct {
	p     Probe
	conn  net.Conn
	other bool
}

// launch starts one probe of the SSH port, or of the other OS's port.
func (s *sshWait) launch(other bool) {
	s.inflight++
	c, h, actx, results := s.c, s.h, s.actx, s.results
	go func() {
		pctx, cancel := context.WithTimeout(actx, probeAttemptTimeout)
		defer cancel()
		if other {
			results <- sshAttempt{p: c.probeOther(pctx, h), other: true}
			return
		}
		p, conn := probeTCP(pctx, c.dial(), c.now, h.SSHAddr())
		results <- sshAttempt{p: p, conn: conn}
	}()
}

// more launches another SSH probe unless enough are in flight; every fourth
// also probes the other OS's port.
func (s *sshWait) more() {
	if s.inflight >= maxProbesInFlight {
		return
	}
	s.launch(false)
	s.launches++
	if s.h.OtherOSProbe != 0 && s.launches%4 == 0 {
		s.launch(true)
	}
}

// cleanup stops the probes in flight and closes the connections they
// still bring.
func (s *sshWait) cleanup() {
	s.cancelAll()
	for s.inflight > 0 {
		a := <-s.results
		s.inflight--
		if a.conn != nil {
			a.conn.Close()
		}
	}
}

// handle takes one probe's result: done when it ends the wait, with the
// SSH session open (s.runner) or with the error that ends it.
func (s *sshWait) handle(ctx context.Context, a sshAttempt) (done bool, err error) {
	h := s.h
	if a.other {
		if a.p.Kind == sshexec.ProbeOK {
			return true, &stopError{state: StateOtherOS, reason: fmt.Sprintf("port %d answers: the PC booted its other OS", h.OtherOSProbe)}
		}
		return false, nil
	}
	if a.conn == nil {
		if a.p.Kind != sshexec.ProbeTimeout || s.last.Kind == sshexec.ProbeOK || s.last.Kind == "" {
			s.last = a.p
		}
		s.w.enter(PhaseBoot, s.describe())
		return false, nil
	}
	s.last = a.p
	cctx, ccancel := context.WithTimeout(ctx, durOr(s.c.ConnectTimeout, DefaultConnectTimeout))
	r, cl, err := s.c.SSH(cctx, h, a.conn)
	ccancel()
	if err == nil {
		s.runner, s.closer = r, cl
		return true, nil
	}
	a.conn.Close()
	if sshexec.IsPermanent(err) {
		return true, &stopError{state: StateUnknown, reason: "ssh: " + err.Error(), err: err}
	}
	s.lastSSHErr = err
	s.w.enter(PhaseBoot, s.describe())
	return false, nil
}

// describe says what the last probe or handshake saw.
func (s *sshWait) describe() string {
	str := "SSH at " + s.h.SSHAddr() + ": " + string(s.last.Kind)
	if s.last.Kind == sshexec.ProbeRefused {
		str += " (host up, sshd not yet)"
	}
	if s.lastSSHErr != nil {
		str = "SSH handshake: " + s.lastSSHErr.Error()
	}
	return str
}

// timedOut is how the wait ends once ctx is done: at the boot timeout, off
// or booting (the host answered); otherwise ctx's error.
func (s *sshWait) timedOut(ctx context.Context) error {
	if ctx.Err() != context.DeadlineExceeded {
		return ctx.Err()
	}
	st := StateOff
	if s.last.Kind == sshexec.ProbeRefused || s.lastSSHErr != nil {
		st = StateBooting
	}
	return &stopError{state: st, reason: fmt.Sprintf("no SSH within the boot timeout; last: %s", s.describe())}
}
