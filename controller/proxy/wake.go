package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

// WakeError is why an on-demand host could not be brought up; requests for
// it get 503 with Retry-After (or go to their route's fallback host).
type WakeError struct {
	Host string
	// Reason is short and machine-readable: "boot_timeout", "wake_failed"
	// or "shutting_down".
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
	}
	return fmt.Sprintf("host %q could not be woken: %v; check it with gpuctl status %s", e.Host, e.Err, e.Host)
}

func (e *WakeError) Unwrap() error { return e.Err }

// upCall is one check-then-wake of a host, shared by every request that
// arrives while it runs (single flight).
type upCall struct {
	done  chan struct{}
	err   error
	retry time.Time // a failed call is reused (fails fast) until then
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
		c = &upCall{done: make(chan struct{})}
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
		p.setState(h.Name, true)
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
	werr := p.o.Backends.Wake(wctx, h.Name)
	timedOut := wctx.Err() == context.DeadlineExceeded
	cancel()
	took := p.o.Now().Sub(start)
	if werr == nil {
		p.met.wakes.WithLabelValues(h.Name, "ok").Inc()
		p.met.wakeSeconds.WithLabelValues(h.Name).Observe(took.Seconds())
		p.setState(h.Name, true)
		p.log.Info("host is ready", "host", h.Name, "took", took)
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
func (p *Proxy) setState(host string, up bool) {
	p.mu.Lock()
	p.states[host] = hostState{up: up, at: p.o.Now()}
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
