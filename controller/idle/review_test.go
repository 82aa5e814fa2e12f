package idle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/statedir"
)

// A `gpuctl pull` takes no host lock, so one can start after the shutdown
// evaluated the signals. The shutdown looks at the pull markers again once
// its draining marker is down, and aborts.
func TestPullStartedWhileDraining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		read := e.deps.Activity
		var calls atomic.Int32
		e.deps.Activity = func(ctx context.Context) (activity.Reading, error) {
			if calls.Add(1) == 2 {
				// The shutdown's last look at the proxy: a pull has
				// just begun (its marker written after the evaluation).
				e.pull("tiny (pid 4242)", 1)
			}
			return read(ctx)
		}
		out, err := e.cron()
		if n := e.box.poweroffCount(); n != 0 {
			t.Fatalf("powered off during a pull (%d poweroffs)", n)
		}
		wantAction(t, out, err, ActBusy)
		if err != nil || !strings.Contains(out.Reason, "gpuctl is pulling tiny") {
			t.Fatalf("reason %q, err %v", out.Reason, err)
		}
		st := e.state()
		if st.Phase != PhaseReady || st.IdleSince != nil {
			t.Errorf("state %+v", st)
		}
		if _, ok := st.Since[SigPulls]; ok {
			t.Errorf("the pulls clock survived the abort: %+v", st.Since)
		}
		if _, draining, _ := statedir.Draining(e.deps.StateDir, e.host.Name); draining {
			t.Error("the aborted shutdown left its draining marker")
		}
	})
}

// The pull side of the interlock: MarkPull refuses while a shutdown drains
// the host, and leaves no marker behind.
func TestMarkPullRefusesWhileDraining(t *testing.T) {
	dir := t.TempDir()
	clear, err := statedir.MarkDraining(dir, "gaming-pc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	done, err := statedir.MarkPull(dir, "gaming-pc", "tiny")
	if !errors.Is(err, statedir.ErrDraining) || done != nil {
		t.Fatalf("MarkPull while draining: %v", err)
	}
	if !strings.Contains(err.Error(), "gaming-pc") || !strings.Contains(err.Error(), "gpuctl wake gaming-pc") {
		t.Errorf("error %q does not name the host and what to do", err)
	}
	if ps, err := statedir.ActivePulls(dir, "gaming-pc"); err != nil || len(ps) != 0 {
		t.Fatalf("refused pull left a marker: %v %v", ps, err)
	}
	if err := clear(); err != nil {
		t.Fatal(err)
	}
	done, err = statedir.MarkPull(dir, "gaming-pc", "tiny")
	if err != nil {
		t.Fatalf("MarkPull after the drain: %v", err)
	}
	defer done()
	if ps, _ := statedir.ActivePulls(dir, "gaming-pc"); len(ps) != 1 {
		t.Fatalf("pulls %v", ps)
	}
}

// A pull that died between creating its marker and writing it leaves an
// empty PID-*.json; once that process is gone it must not count as a pull
// forever. One whose process lives still counts.
func TestEmptyPullMarkerOfDeadProcess(t *testing.T) {
	dir := t.TempDir()
	pd := statedir.PullsDir(dir, "gaming-pc")
	if err := os.MkdirAll(pd, 0o700); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(pd, "2147483646-123.json") // no such pid
	live := filepath.Join(pd, "1-456.json")          // init lives
	for _, p := range []string{dead, live} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := statedir.ActivePulls(dir, "gaming-pc")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0] != "1-456.json" {
		t.Fatalf("active pulls %v, want only the live process's marker", ps)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead process's empty marker is still there (%v)", err)
	}
}

// While the box cannot be observed (the network between it and the server
// down, its sshd refusing), nothing is known of what ran on it: the idle
// clock of the sampled signals must restart when it is seen again, not
// span the gap. Here the box never rebooted, so its uptime does not reset
// the clock either.
func TestIdleClockDoesNotSpanAnUnobservedGap(t *testing.T) {
	for _, tc := range []struct {
		name string
		gap  func(b *simBox)
		want Action
	}{
		{"unreachable", func(b *simBox) { b.up = false }, ActAlreadyOff},
		{"ssh refused", func(b *simBox) { b.booting = true }, ActNotReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t)
				out, err := e.cron()
				wantAction(t, out, err, ActNotYet)
				e.box.set(tc.gap)
				time.Sleep(30 * time.Minute)
				out, err = e.cron()
				wantAction(t, out, err, tc.want)
				// Seen again, without a reboot (bootAt unchanged).
				e.box.set(func(b *simBox) { b.up, b.booting = true, false })
				time.Sleep(time.Minute)
				seen := time.Now()
				out, err = e.cron()
				wantAction(t, out, err, ActNotYet)
				if e.box.poweroffCount() != 0 {
					t.Fatal("powered off right after a gap in which the box could not be observed")
				}
				if out.Report.IdleSince == nil || !out.Report.IdleSince.Equal(seen) {
					t.Fatalf("idle_since %v, want %v (the first check after the gap)", out.Report.IdleSince, seen)
				}
				time.Sleep(5*time.Minute + time.Nanosecond)
				out, err = e.cron()
				wantAction(t, out, err, ActPoweredOff)
			})
		})
	}
}
