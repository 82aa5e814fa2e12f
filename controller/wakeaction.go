package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/wake"
)

// maxWakeOutput bounds what is kept of a wake command's stdout and stderr.
const maxWakeOutput = 16 << 10

// ActionWaker wakes a host by its wake actions (inventory.Host.Wake), in
// order: Wake-on-LAN through WOL, which keeps re-sending until the wake
// stops waiting, and each command once, without a shell, bounded by the
// host's wake_timeout, its output logged (secrets redacted). It fails early
// only when every action failed; a failed command is logged while
// Wake-on-LAN goes on.
type ActionWaker struct {
	// WOL sends the magic packets (a PlanWaker).
	WOL Waker
	// Getenv and ReadFile expand ${env:…} and ${file:…} in commands
	// (os.Getenv and os.ReadFile when nil).
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
	Logger   *slog.Logger
}

// Wakeable reports whether h has a wake action that can run: a command, or
// Wake-on-LAN with a MAC.
func Wakeable(h *inventory.Host) bool {
	for _, a := range wakeActions(h) {
		if !a.WOL || !h.MAC.IsZero() {
			return true
		}
	}
	return false
}

// WakeDescription says how h is being woken, for the boot phase's line.
func WakeDescription(h *inventory.Host) string {
	var parts []string
	for _, a := range wakeActions(h) {
		switch {
		case a.WOL && !h.MAC.IsZero():
			parts = append(parts, "magic packets sent to "+h.MAC.String())
		case !a.WOL:
			parts = append(parts, "running wake command `"+a.String()+"`")
		}
	}
	return strings.Join(parts, ", ")
}

func wakeActions(h *inventory.Host) inventory.WakeActions {
	if len(h.Wake) == 0 {
		return inventory.WakeActions{{WOL: true}}
	}
	return h.Wake
}

// Wake implements Waker.
func (a *ActionWaker) Wake(ctx context.Context, h *inventory.Host) error {
	var (
		wolDone chan error
		failed  []error
		ok      bool
	)
	actions := wakeActions(h)
	for _, act := range actions {
		if act.WOL {
			if h.MAC.IsZero() || a.WOL == nil {
				failed = append(failed, errors.New("Wake-on-LAN: the host has no mac"))
				continue
			}
			wolDone = make(chan error, 1)
			go func() { wolDone <- a.WOL.Wake(ctx, h) }()
			continue
		}
		err := a.run(ctx, h, act)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			failed = append(failed, err)
			if len(actions) > 1 { // alone, the wake's own error says it
				a.log().Warn("wake command failed; trying the other wake actions", "host", h.Name, "command", act.String(), "err", err)
			}
			continue
		}
		ok = true
	}
	if wolDone != nil {
		err := <-wolDone
		if err == nil {
			return nil // the wake stopped waiting
		}
		failed = append(failed, fmt.Errorf("sending magic packets: %w", err))
	}
	if !ok && ctx.Err() == nil {
		return errors.Join(failed...)
	}
	<-ctx.Done()
	return nil
}

// run runs one wake command and returns why it failed.
func (a *ActionWaker) run(ctx context.Context, h *inventory.Host, act inventory.WakeAction) error {
	getenv, readFile := a.Getenv, a.ReadFile
	if getenv == nil {
		getenv = os.Getenv
	}
	argv, secrets, err := act.Expand(getenv, readFile)
	if err != nil {
		return fmt.Errorf("wake command `%s`: %w", act, err)
	}
	timeout := h.WakeTimeout.D()
	if timeout <= 0 {
		timeout = inventory.DefaultWakeTimeout.D()
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Stdin = nil
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Run()
	redact := func(b []byte) string {
		s := strings.TrimSpace(string(b))
		for _, v := range secrets {
			if v != "" {
				s = strings.ReplaceAll(s, v, "[redacted]")
			}
		}
		return s
	}
	out, errOut := redact(stdout.Bytes()), redact(stderr.Bytes())
	a.log().Info("wake command ran", "host", h.Name, "command", act.String(), "duration", time.Since(start).Round(time.Millisecond),
		"err", err, "stdout", out, "stderr", errOut)
	switch {
	case err == nil:
		return nil
	case cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil:
		return fmt.Errorf("wake command `%s` did not finish within wake_timeout %s", act, timeout)
	}
	var ee *exec.ExitError
	msg := err.Error()
	if errors.As(err, &ee) {
		msg = fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if errOut != "" {
		msg += ": " + lastLine(errOut)
	}
	return fmt.Errorf("wake command `%s` failed: %s", act, msg)
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func (a *ActionWaker) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// capped keeps the first maxWakeOutput bytes written to it.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxWakeOutput - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

var _ io.Writer = (*capped)(nil)

// PlanWaker is the Waker over package wake: a burst at once (a wake fails
// when not one packet could be sent), then a burst every Every until the
// wake stops waiting.
type PlanWaker struct {
	// Planner computes where packets go; the zero value uses the real
	// interfaces.
	Planner wake.Planner
	// Transport, when set, replaces the real network (tests, simulators).
	Transport wake.Transport
	// Every is the gap between bursts; wake.DefaultEvery when 0.
	Every time.Duration
}

// Wake implements Waker.
func (p *PlanWaker) Wake(ctx context.Context, h *inventory.Host) error {
	plan, err := p.Planner.Plan(ctx, h)
	if err != nil {
		return err
	}
	if p.Transport != nil {
		plan.Transport = p.Transport
	}
	sent, err := plan.Burst(ctx, wake.DefaultCount, wake.DefaultInterval)
	if sent == 0 && err != nil && ctx.Err() == nil {
		return err
	}
	every := durOr(p.Every, wake.DefaultEvery)
	t := time.NewTimer(every)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	s := &wake.Sender{Plan: plan, Every: every}
	return s.Run(ctx)
}
