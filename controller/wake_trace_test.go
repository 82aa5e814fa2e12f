package controller

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// traceWake wakes pc's host and returns the result and every progress
// update, one "phase: waiting" line each.
func traceWake(t *testing.T, pc *fakePC, opts WakeOptions) (*WakeResult, string) {
	t.Helper()
	var mu sync.Mutex
	var lines []string
	opts.Progress = func(p Progress) {
		mu.Lock()
		lines = append(lines, string(p.Phase)+": "+p.Waiting)
		mu.Unlock()
	}
	res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), opts)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return res, strings.Join(lines, "\n")
}

// recordPhases lists the phases a wake's record times, "name@start+duration"
// in milliseconds.
func recordPhases(rec WakeRecord) string {
	var s []string
	for _, p := range rec.Phases {
		s = append(s, fmt.Sprintf("%s@%d+%d", p.Name, p.StartMS, p.DurationMS))
	}
	return strings.Join(s, ",")
}

// A wake that boots the PC says each step as it happens (the lines gpuctl
// wake prints), and its record times the phases.
func TestWakeProgressTrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		res, trace := traceWake(t, pc, WakeOptions{})
		want := strings.Join([]string{
			"probe: probing 192.0.2.10:22",
			"boot: magic packets sent to 00:11:22:33:44:55; waiting for SSH at 192.0.2.10:22",
			"boot: SSH at 192.0.2.10:22: timeout",
			"boot: SSH at 192.0.2.10:22: refused (host up, sshd not yet)",
			"checks: running checks",
			"done: ready",
		}, "\n")
		if trace != want {
			t.Errorf("progress:\n%s\nwant:\n%s", trace, want)
		}
		if got, want := recordPhases(res.Record), "probe@0+500,boot@500+60125,checks@60625+0"; got != want {
			t.Errorf("record phases %s, want %s", got, want)
		}
		if res.Record.SSHAfterMS != 60625 || res.Record.ReadyAfterMS != 60625 || !res.Record.Woke {
			t.Errorf("record %+v", res.Record)
		}
	})
}

// A PC that answers but whose SSH never does is booting at the timeout,
// with the last thing the wait saw as the reason; one that never answers
// is off.
func TestWakeTimeoutSaysWhatItSawLast(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(pc *fakePC)
		state  State
		reason string
	}{
		{"off", func(pc *fakePC) { pc.never = true }, StateOff,
			"no SSH within the boot timeout; last: SSH at 192.0.2.10:22: timeout"},
		{"refused", func(pc *fakePC) { pc.sshIn = time.Hour }, StateBooting,
			"no SSH within the boot timeout; last: SSH at 192.0.2.10:22: refused (host up, sshd not yet)"},
		{"handshake", func(pc *fakePC) {
			pc.connErr = &sshexec.OpError{Op: "handshake", Addr: sshAddr, Err: fmt.Errorf("connection reset by peer")}
		}, StateBooting, "no SSH within the boot timeout; last: SSH handshake: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pc := newFakePC(t)
				tc.setup(pc)
				res, trace := traceWake(t, pc, WakeOptions{Timeout: 90 * time.Second})
				if res.Status.State != tc.state || !strings.HasPrefix(res.Status.Reason, tc.reason) || res.ExitCode() != 3 || res.Stopped != "" {
					t.Errorf("got %s (exit %d, stopped %q): %s\nwant %s: %s", res.Status.State, res.ExitCode(), res.Stopped, res.Status.Reason, tc.state, tc.reason)
				}
				if last := trace[strings.LastIndex(trace, "\n")+1:]; last != "done: "+string(tc.state) {
					t.Errorf("last progress %q\n%s", last, trace)
				}
			})
		})
	}
}
