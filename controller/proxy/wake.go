package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// WakeError is why an on-demand host could not be brought up; requests for
// it get 503 with Retry-After (or go to their route's fallback host).
type WakeError struct {
	Host string
	// Reason is short and machine-readable: "boot_timeout", "wake_failed",
	// "powering_off" (gpuctl shutdown was still draining the host when the
	// request's hold ran out), "shutting_down" (gpuctl serve is stopping),
	// "pulling" (the host is up but still pulling the declared model the
	// request is for) or "pull_failed" (that pull failed).
	Reason     string
	Err        error
	RetryAfter time.Duration
}

func (e *WakeError) Error() string {
	switch e.Reason {
	case "boot_timeout":
		return fmt.Sprintf("host %q did not become ready within its boot_timeout: %v; check it with gpuctl status %s", e.Host, e.Err, e.Host)
	case "shutting_down":
		return fmt.Sprintf("host %q was not woken: gpuctl serve is shutting down", e.Host)
	case "pulling", "pull_failed":
		return fmt.Sprintf("host %q is up, but %v; retry shortly, or see gpuctl serve's log", e.Host, e.Err)
	case "powering_off":
		return fmt.Sprintf("host %q is being powered off by gpuctl shutdown and could not be woken again in time: %v; retry shortly, or check it with gpuctl status %s", e.Host, e.Err, e.Host)
	}
	return fmt.Sprintf("host %q could not be woken: %v; check it with gpuctl status %s", e.Host, e.Err, e.Host)
}

func (e *WakeError) Unwrap() error { return e.Err }

// upCall is one check-then-wake of a host, shared by every request that
// arrives while it runs (single flight).
type upCall struct {
	done    chan struct{}
	err     error
	retry   time.Time // a failed call is reused (fails fast) until then
	started time.Time
}

// ensureUp returns once host can take a request: at once for always-on
// hosts and for on-demand hosts seen up within StateTTL; otherwise it joins
// (or starts) the host's single check-and-wake and waits for it or for ctx.
func (p *Proxy) ensureUp(ctx context.Context, host string) error {
	h := p.hosts[host]
	if !h.OnDemand || p.o.Backends == nil {
		return nil
	}
	now := p.o.Now()
	p.mu.Lock()
	if s, ok := p.states[host]; ok && s.up && now.Sub(s.at) < p.o.StateTTL {
		p.mu.Unlock()
		return nil
	}
	c := p.flight[host]
	if c != nil {
		select {
		case <-c.done:
			if c.err == nil || !now.Before(c.retry) {
				c = nil
			}
		default:
		}
	}
	if c == nil {
		c = &upCall{done: make(chan struct{}), started: now}
		p.flight[host] = c
		p.bg.Add(1)
		go p.bringUp(h, c)
	}
	p.mu.Unlock()
	select {
	case <-c.done:
		if c.err != nil {
			var we *WakeError
			if errors.As(c.err, &we) {
				cp := *we
				cp.RetryAfter = max(c.retry.Sub(p.o.Now()), time.Second)
				return &cp
			}
		}
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bringUp asks whether host is up and wakes it if not. It runs detached
// from the requests that wait for it, bounded by the host's boot_timeout,
// so a client that gives up does not cancel the wake for the others.
func (p *Proxy) bringUp(h *inventory.Host, c *upCall) {
	defer p.bg.Done()
	var err error
	defer func() {
		p.mu.Lock()
		c.err = err
		if err != nil {
			c.retry = p.o.Now().Add(p.o.WakeBackoff)
		}
		p.mu.Unlock()
		close(c.done)
	}()
	uctx, cancel := context.WithTimeout(p.baseCtx, listTimeout)
	up, uerr := p.o.Backends.Up(uctx, h.Name)
	cancel()
	if uerr == nil && up {
		// Seen up as of the probe's start: a request held by a draining
		// marker distrusts answers older than the box's poweroff.
		p.setStateAt(h.Name, true, c.started)
		return
	}
	if p.baseCtx.Err() != nil {
		err = &WakeError{Host: h.Name, Reason: "shutting_down", Err: p.baseCtx.Err()}
		return
	}
	boot := h.BootTimeout.D()
	if boot <= 0 {
		boot = inventory.DefaultBootTimeout.D()
	}
	p.log.Info("waking host for a request", "host", h.Name, "boot_timeout", boot)
	start := p.o.Now()
	wctx, cancel := context.WithTimeout(p.baseCtx, boot)
	b := p.boards[h.Name]
	defer b.begin()()
	b.post(fmt.Sprintf("waking %s (boot_timeout %s)", h.Name, boot))
	var werr error
	if pw, ok := p.o.Backends.(ProgressWaker); ok {
		werr = pw.WakeProgress(wctx, h.Name, func(text string) { b.post(h.Name + ": " + text) })
	} else {
		werr = p.o.Backends.Wake(wctx, h.Name)
	}
	timedOut := wctx.Err() == context.DeadlineExceeded
	cancel()
	took := p.o.Now().Sub(start)
	if werr == nil {
		p.met.wakes.WithLabelValues(h.Name, "ok").Inc()
		p.met.wakeSeconds.WithLabelValues(h.Name).Observe(took.Seconds())
		p.setState(h.Name, true)
		p.log.Info("host is ready", "host", h.Name, "took", took)
		b.post(fmt.Sprintf("%s is ready after %s", h.Name, took.Round(time.Second)))
		if len(h.Models) > 0 {
			// Reads its model list and starts pulling the declared models
			// it lacks, before the held requests are released.
			p.startPulls(h)
			return
		}
		// Its model list may have changed while it slept.
		p.bg.Add(1)
		go func() {
			defer p.bg.Done()
			ctx, cancel := context.WithTimeout(p.baseCtx, listTimeout)
			defer cancel()
			_ = p.refreshHost(ctx, h.Name)
		}()
		return
	}
	reason := "wake_failed"
	switch {
	case p.baseCtx.Err() != nil:
		reason = "shutting_down"
	case timedOut:
		reason = "boot_timeout"
		werr = fmt.Errorf("not ready after %s: %w", boot, werr)
	}
	p.met.wakes.WithLabelValues(h.Name, "failed").Inc()
	p.setState(h.Name, false)
	err = &WakeError{Host: h.Name, Reason: reason, Err: werr}
	p.log.Warn("wake failed", "host", h.Name, "reason", reason, "took", took, "err", werr)
}

// setState records whether host is up (from a probe, a wake, or a backend
// that answered or could not be dialled).
func (p *Proxy) setState(host string, up bool) { p.setStateAt(host, up, p.o.Now()) }

func (p *Proxy) setStateAt(host string, up bool, at time.Time) {
	p.mu.Lock()
	p.states[host] = hostState{up: up, at: at}
	p.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	p.met.backendUp.WithLabelValues(host).Set(v)
}

// seenUp reports whether host answered within maxAge (for listings, which
// never wake and should not wait on a sleeping host's dial timeout).
func (p *Proxy) seenUp(host string, maxAge time.Duration) bool {
	if !p.hosts[host].OnDemand {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.states[host]
	return ok && s.up && p.o.Now().Sub(s.at) < maxAge
}

// ready returns once host can take a request that is already counted in
// flight (Proxy.begin): the host is up (ensureUp) and no gpuctl shutdown is
// draining it. The order matters: the shutdown writes its draining marker
// before its last read of the in-flight count, and this request was counted
// before it looks for the marker, so either the shutdown sees the request
// and aborts, or the request sees the marker here. Then it is held, neither
// forwarded to the dying box nor waking it: it waits until the marker is
// gone (the box is off, or the shutdown aborted) and then treats the host
// as asleep, so the usual single-flight check-and-wake brings it back. The
// marker is looked for before the host is readied and again after (a
// forced shutdown ignores the in-flight count). The hold, wake included,
// is bounded by the host's boot_timeout; a client that goes away leaves.
func (p *Proxy) ready(ctx context.Context, host string) error {
	h := p.hosts[host]
	if !h.OnDemand || p.o.StateDir == "" {
		return p.ensureUp(ctx, host)
	}
	boot := h.BootTimeout.D()
	if boot <= 0 {
		boot = inventory.DefaultBootTimeout.D()
	}
	wctx := ctx
	for held := false; ; {
		if p.drainCheckHook != nil {
			p.drainCheckHook(host)
		}
		d, draining := p.draining(host)
		if !draining {
			err := p.ensureUp(wctx, host)
			if err != nil {
				if held && ctx.Err() == nil && wctx.Err() != nil {
					return &WakeError{Host: host, Reason: "boot_timeout", Err: fmt.Errorf("not ready within %s of its poweroff by gpuctl shutdown", boot), RetryAfter: p.o.WakeBackoff}
				}
				return err
			}
			if d, draining = p.draining(host); !draining {
				return nil
			}
		}
		if !held {
			held = true
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, boot)
			defer cancel()
			p.met.drainHolds.WithLabelValues(host).Inc()
			p.log.Info("gpuctl shutdown is powering the host off; holding the request until it is off, then waking it",
				"host", host, "shutdown_pid", d.PID, "boot_timeout", boot)
		}
		gone, err := p.waitDrained(wctx, host)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &WakeError{Host: host, Reason: "powering_off", Err: fmt.Errorf("gpuctl shutdown (pid %d) still held its draining marker %s after %s", d.PID, statedir.DrainingPath(p.o.StateDir, host), boot), RetryAfter: p.o.WakeBackoff}
		}
		_ = p.forgetUp(wctx, host, gone) // on error, ensureUp reports the context's end
	}
}

// draining looks for host's draining marker (one stat when there is none).
func (p *Proxy) draining(host string) (statedir.Drain, bool) {
	d, draining, err := statedir.Draining(p.o.StateDir, host)
	if err != nil {
		// The shutdown's own last read of the in-flight count still sees
		// this request; only the interlock's second half is lost.
		p.log.Warn("cannot read the draining marker; forwarding", "host", host, "err", err)
		return d, false
	}
	return d, draining
}

// waitDrained polls host's draining marker until it is gone, and returns
// when it saw it gone.
func (p *Proxy) waitDrained(ctx context.Context, host string) (time.Time, error) {
	t := time.NewTicker(p.o.DrainPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
		if _, draining := p.draining(host); !draining {
			return p.o.Now(), nil
		}
	}
}

// forgetUp drops what the proxy believed about host before gone (when a
// draining marker was seen gone): an Up answer from before the poweroff,
// and a check-and-wake started before it (waited for first, so its answer
// cannot land later). The next ensureUp then probes afresh and wakes the
// host if it is off.
func (p *Proxy) forgetUp(ctx context.Context, host string, gone time.Time) error {
	p.mu.Lock()
	c := p.flight[host]
	p.mu.Unlock()
	if c != nil && c.started.Before(gone) {
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	if c != nil && c.started.Before(gone) && p.flight[host] == c {
		delete(p.flight, host)
	}
	if s, ok := p.states[host]; ok && s.at.Before(gone) {
		p.states[host] = hostState{up: false, at: gone}
	}
	p.mu.Unlock()
	return nil
}
