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

// wakeRun is the state of one wake.
type wakeRun struct {
	c     *Controller
	h     *inventory.Host
	emit  func(Progress)
	start time.Time
	rec   WakeRecord
	phase Phase
	since time.Time
	wait  string
	// stopErr is the permanent SSH error the wake stopped on.
	stopErr error
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

func (c *Controller) wake(ctx context.Context, h *inventory.Host, opts WakeOptions, emit func(Progress)) (*WakeResult, error) {
	start := c.now()
	w := &wakeRun{c: c, h: h, emit: emit, start: start, rec: WakeRecord{Host: h.Name, Started: start}}
	timeout := durOr(opts.Timeout, h.BootTimeout.D())
	if timeout <= 0 {
		timeout = inventory.DefaultBootTimeout.D()
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// One wake (or shutdown) of a host at a time, across processes.
	if c.StateDir != "" {
		lock, err := statedir.LockHost(bctx, c.StateDir, h.Name, statedir.LockTry)
		if errors.Is(err, statedir.ErrLocked) {
			w.enter(PhaseLock, "another gpuctl is waking or shutting down "+h.Name+"; waiting for it")
			waitStart := c.now()
			lock, err = statedir.LockHost(bctx, c.StateDir, h.Name, statedir.LockWait)
			if err == nil {
				if last, ok := c.lastWake(h.Name); ok && !last.Record.Finished.Before(waitStart) {
					lock.Unlock()
					last.Coalesced = true
					return last, nil
				}
			}
		}
		if err != nil {
			if bctx.Err() != nil && ctx.Err() == nil {
				return w.finish(nil, StateUnknown, fmt.Sprintf("the host stayed locked by another gpuctl for %s", timeout)), nil
			}
			return nil, err
		}
		defer lock.Unlock()
		if m, err := statedir.HoldWaking(c.StateDir, h.Name); err == nil {
			defer m.Unlock()
		}
	}

	// A host checked by HTTP alone (the always-on server) is never woken:
	// its Ollama says where it stands.
	if len(sshChecksFor(h)) == 0 {
		w.enter(PhaseChecks, "asking Ollama at "+h.OllamaURL.String())
		rep := c.checkHTTP(bctx, h)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return w.finish(&rep, "", ""), nil
	}

	// Up already?
	w.enter(PhaseProbe, "probing "+h.SSHAddr())
	// A host that is up answers TCP on its LAN within milliseconds; an off
	// one never does, so this probe is short: packets go out sooner.
	pctx, pcancel := context.WithTimeout(bctx, min(durOr(c.ProbeTimeout, DefaultProbeTimeout), wakeProbeTimeout))
	sshP, conn, other := c.reach(pctx, h)
	pcancel()
	var runner sshexec.Runner
	var closer io.Closer
	if conn != nil {
		if c.SSH == nil {
			conn.Close()
			return nil, fmt.Errorf("host %q: no SSH connector configured", h.Name)
		}
		cctx, ccancel := context.WithTimeout(bctx, durOr(c.ConnectTimeout, DefaultConnectTimeout))
		r, cl, err := c.SSH(cctx, h, conn)
		ccancel()
		if err != nil {
			conn.Close()
			if sshexec.IsPermanent(err) {
				return w.stop(err), nil
			}
		} else {
			runner, closer = r, cl
		}
	}
	if runner == nil && other != nil && other.Kind == sshexec.ProbeOK {
		return w.finish(nil, StateOtherOS, fmt.Sprintf("port %d answers while SSH does not: the PC runs its other OS; not waking it", h.OtherOSProbe)), nil
	}

	if runner == nil {
		// Boot it.
		var wolErr chan error
		stopWOL := func() {}
		if c.Waker != nil && Wakeable(h) {
			w.rec.Woke = true
			wctx, wcancel := context.WithCancel(bctx)
			wolErr = make(chan error, 1)
			go func() { wolErr <- c.Waker.Wake(wctx, h) }()
			stopWOL = func() {
				wcancel()
				if wolErr != nil {
					<-wolErr
				}
			}
			w.enter(PhaseBoot, WakeDescription(h)+"; waiting for SSH at "+h.SSHAddr())
		} else {
			w.enter(PhaseBoot, "waiting for SSH at "+h.SSHAddr()+" (no wake action: no mac and no wake command)")
		}
		var err error
		runner, closer, err = c.waitSSH(bctx, w, sshP, wolErr, func() { wolErr = nil })
		stopWOL()
		if err != nil {
			var se *stopError
			switch {
			case errors.As(err, &se) && se.err != nil:
				return w.stop(se.err), nil
			case errors.As(err, &se):
				return w.finish(nil, se.state, se.reason), nil
			case ctx.Err() != nil:
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
	defer closer.Close()
	w.rec.SSHAfterMS = ms(c.now().Sub(start))

	// Checks, retried while failures are transient.
	settle := bctx
	if !w.rec.Woke {
		var scancel context.CancelFunc
		settle, scancel = context.WithTimeout(bctx, durOr(opts.CheckSettle, 30*time.Second))
		defer scancel()
	}
	k := &checker{c: c, h: h, runner: runner}
	w.enter(PhaseChecks, "running checks")
	c.runChecksBounded(settle, k, nil)
	for {
		rep := k.report()
		retry, waitFor := retryable(rep)
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
		c.runChecksBounded(settle, k, retry)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep := k.report()
	var pulled []string
	if onlyModelsMissing(rep) {
		w.rec.ReadyAfterMS = ms(c.now().Sub(start))
		if !opts.NoPull && c.Puller != nil && rep.Ollama != nil && len(rep.Ollama.Missing) > 0 {
			missing := rep.Ollama.Missing
			w.enter(PhasePull, "pulling "+strings.Join(missing, ", "))
			names := make([]inventory.ModelName, 0, len(missing))
			for _, m := range missing {
				names = append(names, inventory.ModelName(m))
			}
			err := c.Puller.Pull(ctx, h, runner, names, func(line string) { w.enter(PhasePull, line) })
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err == nil {
				pulled = missing
			}
			cctx, ccancel := context.WithTimeout(ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
			k.run(cctx, []string{CheckOllama})
			ccancel()
			rep = k.report()
			if err != nil {
				rep.Checks = replaceCheck(rep.Checks, Check{Name: CheckModels, Detail: "pull failed: " + err.Error()})
			}
		}
	}
	res := w.finish(&rep, "", "")
	res.Pulled = pulled
	return res, nil
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
	h := w.h
	type attempt struct {
		p     Probe
		conn  net.Conn
		other bool
	}
	actx, cancelAll := context.WithCancel(ctx)
	results := make(chan attempt)
	inflight := 0
	launches := 0
	launch := func(other bool) {
		inflight++
		go func() {
			pctx, cancel := context.WithTimeout(actx, probeAttemptTimeout)
			defer cancel()
			if other {
				results <- attempt{p: c.probeOther(pctx, h), other: true}
				return
			}
			p, conn := probeTCP(pctx, c.dial(), c.now, h.SSHAddr())
			results <- attempt{p: p, conn: conn}
		}()
	}
	cleanup := func() {
		cancelAll()
		for inflight > 0 {
			a := <-results
			inflight--
			if a.conn != nil {
				a.conn.Close()
			}
		}
	}
	defer cleanup()

	last := first
	var lastSSHErr error
	describe := func() string {
		s := "SSH at " + h.SSHAddr() + ": " + string(last.Kind)
		if last.Kind == sshexec.ProbeRefused {
			s += " (host up, sshd not yet)"
		}
		if lastSSHErr != nil {
			s = "SSH handshake: " + lastSSHErr.Error()
		}
		return s
	}
	backoff := firstBackoff
	maxB := durOr(c.MaxBackoff, DefaultMaxBackoff)
	launch(false)
	launches++
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	for {
		select {
		case a := <-results:
			inflight--
			if a.other {
				if a.p.Kind == sshexec.ProbeOK {
					return nil, nil, &stopError{state: StateOtherOS, reason: fmt.Sprintf("port %d answers: the PC booted its other OS", h.OtherOSProbe)}
				}
				continue
			}
			if a.conn == nil {
				if a.p.Kind != sshexec.ProbeTimeout || last.Kind == sshexec.ProbeOK || last.Kind == "" {
					last = a.p
				}
				w.enter(PhaseBoot, describe())
				continue
			}
			last = a.p
			cctx, ccancel := context.WithTimeout(ctx, durOr(c.ConnectTimeout, DefaultConnectTimeout))
			r, cl, err := c.SSH(cctx, h, a.conn)
			ccancel()
			if err == nil {
				return r, cl, nil
			}
			a.conn.Close()
			if sshexec.IsPermanent(err) {
				return nil, nil, &stopError{state: StateUnknown, reason: "ssh: " + err.Error(), err: err}
			}
			lastSSHErr = err
			w.enter(PhaseBoot, describe())
		case <-timer.C:
			if inflight < maxProbesInFlight {
				launch(false)
				launches++
				if h.OtherOSProbe != 0 && launches%4 == 0 {
					launch(true)
				}
			}
			backoff = min(2*backoff, maxB)
			timer.Reset(backoff)
		case err := <-wolErr:
			wolDone()
			wolErr = nil
			if err != nil && ctx.Err() == nil {
				return nil, nil, fmt.Errorf("host %q: waking it failed: %w", h.Name, err)
			}
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				st := StateOff
				if last.Kind == sshexec.ProbeRefused || lastSSHErr != nil {
					st = StateBooting
				}
				return nil, nil, &stopError{state: st, reason: fmt.Sprintf("no SSH within the boot timeout; last: %s", describe())}
			}
			return nil, nil, ctx.Err()
		}
	}
}
