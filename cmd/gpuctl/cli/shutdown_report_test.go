package cli

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/sshexec"
)

// The report printed after a poweroff (many seconds after the check) says
// how long the box had been idle when it was checked, with the same
// durations as the decision; not the time since then.
func TestIdleReportTimesAreTheChecks(t *testing.T) {
	checked := time.Now().Add(-8 * time.Second) // the poweroff took 8s
	since := checked.Add(-2800 * time.Millisecond)
	r := idle.Report{Host: "gaming-pc", Box: idle.BoxUp, Checked: checked, IdleSince: &since, IdleFor: 2800 * time.Millisecond,
		IdleAfter: 2 * time.Second, MinUptime: 20 * time.Minute, Uptime: 4*time.Minute + 10*time.Second + 300*time.Millisecond,
		Idle: true, Eligible: true, Decision: "idle for 2.8s (more than idle_after 2s): power off",
		Signals: []idle.Signal{{Name: idle.SigProxy, Value: "0 in flight", Since: &since}}}
	var b bytes.Buffer
	writeIdleReport(&b, r, true)
	out := b.String()
	t.Logf("\n%s", out)
	want := "idle since: " + since.Local().Format("2006-01-02 15:04:05") + " (idle for 2.8s at the check, " +
		checked.Local().Format("15:04:05") + "); idle_after 2s; uptime 4m10s, min_uptime 20m\n"
	if !strings.Contains(out, want) {
		t.Errorf("report lacks %q", want)
	}
	if strings.Contains(out, " ago") {
		t.Errorf("report measures from the printing time:\n%s", out)
	}
	if !strings.Contains(out, "decision: idle for 2.8s (more than idle_after 2s): power off\n") {
		t.Errorf("no decision line:\n%s", out)
	}
}

// Which outcomes cron hears about: with --if-idle, every way of leaving the
// host alone (requests arriving while it drained included) exits 0 and is
// only logged; an explicit shutdown says what happened, and one aborted by
// requests exits non-zero.
func TestShutdownOutcomes(t *testing.T) {
	cron, explicit := idle.Options{IfIdle: true}, idle.Options{}
	refused := fmt.Errorf("host %q: %w: 1 request(s) arrived through the routing proxy while draining", "gaming-pc", idle.ErrRefused)
	for _, tc := range []struct {
		action  idle.Action
		err     error
		opts    idle.Options
		code    int
		routine bool
	}{
		{idle.ActBusy, nil, cron, ExitOK, true},
		{idle.ActNotYet, nil, cron, ExitOK, true},
		{idle.ActLocked, idle.ErrLocked, cron, ExitOK, true},
		{idle.ActOtherOS, nil, cron, ExitOK, true},
		{idle.ActNotReady, nil, cron, ExitOK, true},
		{idle.ActAlreadyOff, nil, cron, ExitOK, true},
		{idle.ActPoweredOff, nil, cron, ExitOK, false},
		{idle.ActAlreadyOff, nil, explicit, ExitOK, false},
		{idle.ActRefused, refused, explicit, ExitFailure, false},
		{idle.ActLocked, idle.ErrLocked, explicit, ExitFailure, false},
		// A box that does not answer SSH in time: try again later (3).
		{idle.ActNotReady, fmt.Errorf("host %q: %w: timeout", "gaming-pc", idle.ErrRefused), explicit, ExitUnreachable, false},
		// A rejected host key is never routine, from cron or by hand (1).
		{idle.ActNotReady, fmt.Errorf("host %q: %w: %w", "gaming-pc", idle.ErrRefused, &sshexec.AuthError{}), explicit, ExitFailure, false},
		{idle.ActNotReady, fmt.Errorf("host %q: %w: %w", "gaming-pc", idle.ErrRefused, &sshexec.AuthError{}), cron, ExitFailure, true},
	} {
		if got := shutdownExit(idle.Outcome{Action: tc.action}, tc.err, tc.opts); got != tc.code {
			t.Errorf("%s (if-idle %v): exit %d, want %d", tc.action, tc.opts.IfIdle, got, tc.code)
		}
		if got := routineShutdown(tc.action, tc.opts); got != tc.routine {
			t.Errorf("%s (if-idle %v): routine %v, want %v", tc.action, tc.opts.IfIdle, got, tc.routine)
		}
	}
}

// Just past idle_after, the report line and the decision agree on the
// finer figure.
func TestIdleReportJustPastIdleAfter(t *testing.T) {
	checked := time.Now()
	since := checked.Add(-2030 * time.Millisecond)
	r := idle.Report{Host: "gaming-pc", Box: idle.BoxUp, Checked: checked, IdleSince: &since, IdleFor: 2030 * time.Millisecond,
		IdleAfter: 2 * time.Second, MinUptime: 2 * time.Second, Uptime: 3600 * time.Millisecond,
		Decision: "idle for 2.03s (more than idle_after 2s): power off"}
	var b bytes.Buffer
	writeIdleReport(&b, r, true)
	if !strings.Contains(b.String(), "(idle for 2.03s at the check, ") {
		t.Errorf("report:\n%s", b.String())
	}
}
