package idle

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/statedir"
)

// interlockEnv is an idle env whose proxy read can run a request at the
// shutdown's last look at the proxy (the read made while the draining
// marker is down), and whose box checks that nothing is forwarded to it
// while it powers off.
type interlockEnv struct {
	*env
	forwarding atomic.Int32 // requests being served by the box now
	badOff     atomic.Int32 // poweroffs with a request forwarded
	// atLastRead runs during the read made with the marker down: before
	// the snapshot is taken when beforeRead, else after.
	atLastRead func()
	beforeRead bool
	lastReads  atomic.Int32
}

func newInterlockEnv(t *testing.T) *interlockEnv {
	e := &interlockEnv{env: idleEnv(t)}
	read := e.deps.Activity
	e.deps.Activity = func(ctx context.Context) (activity.Reading, error) {
		_, draining, err := statedir.Draining(e.deps.StateDir, e.host.Name)
		if err != nil {
			t.Errorf("draining marker: %v", err)
		}
		if !draining || e.atLastRead == nil {
			return read(ctx)
		}
		e.lastReads.Add(1)
		if e.beforeRead {
			e.atLastRead()
			return read(ctx)
		}
		r, err := read(ctx)
		e.atLastRead()
		return r, err
	}
	e.box.set(func(b *simBox) {
		b.onPoweroff = func() {
			if e.forwarding.Load() > 0 {
				e.badOff.Add(1)
			}
		}
	})
	return e
}

// request is the routing proxy's side of the interlock for one request
// (what proxy.ready does): counted in flight first, then the marker looked
// for; while it is there the request is held; once it is gone a box that
// is off is woken; then the request is forwarded. It reports whether it was
// held. begun is closed once the request is counted and has looked.
func (e *interlockEnv) request(t *testing.T, begun chan<- bool) {
	end := e.tracker.Begin(e.host.Name)
	defer end()
	_, draining, err := statedir.Draining(e.deps.StateDir, e.host.Name)
	if err != nil {
		t.Error(err)
	}
	begun <- draining
	for draining {
		time.Sleep(250 * time.Millisecond)
		_, draining, _ = statedir.Draining(e.deps.StateDir, e.host.Name)
	}
	if !e.box.isUp() {
		time.Sleep(90 * time.Second) // the wake
		e.box.boot()
	}
	e.forwarding.Add(1)
	defer e.forwarding.Add(-1)
	if !e.box.isUp() {
		t.Error("request forwarded to a box that is off")
	}
	time.Sleep(10 * time.Second) // the generation
}

// The request is counted before the shutdown's last read of the proxy:
// the shutdown sees it, aborts (back to ready) and removes its marker; the
// request, held by the marker meanwhile, is then served by the box that
// stayed up.
func TestInterlockRequestBeforeLastRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newInterlockEnv(t)
		begun := make(chan bool, 1)
		var wg sync.WaitGroup
		e.beforeRead = true
		e.atLastRead = func() {
			e.atLastRead = nil
			wg.Go(func() { e.request(t, begun) })
			if held := <-begun; !held {
				t.Error("the request did not see the draining marker the shutdown wrote before its read")
			}
		}
		out, err := e.cron()
		// Busy again: a routine outcome for cron, not a failure.
		wantAction(t, out, err, ActBusy)
		if err != nil || !strings.Contains(out.Reason, "1 request(s) arrived through the routing proxy while draining") {
			t.Errorf("reason %q, err %v", out.Reason, err)
		}
		if e.lastReads.Load() != 1 {
			t.Fatalf("%d reads with the marker down, want 1", e.lastReads.Load())
		}
		if _, draining, _ := statedir.Draining(e.deps.StateDir, e.host.Name); draining {
			t.Error("the aborted shutdown left its draining marker")
		}
		if st := e.state(); st.Phase != PhaseReady {
			t.Errorf("phase %q after the abort, want ready", st.Phase)
		}
		wg.Wait()
		if n := e.box.poweroffCount(); n != 0 {
			t.Errorf("%d poweroffs", n)
		}
		if !e.box.isUp() {
			t.Error("box off")
		}
	})
}

// The marker is down and the shutdown has read the proxy (nothing in
// flight) before the request is counted: the request sees the marker and is
// held; the box goes off; the marker is removed once the box is confirmed
// off; the request then wakes the box and is served. Nothing is forwarded
// while the box powers off.
func TestInterlockMarkerBeforeRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newInterlockEnv(t)
		begun := make(chan bool, 1)
		var wg sync.WaitGroup
		e.atLastRead = func() {
			e.atLastRead = nil
			wg.Go(func() { e.request(t, begun) })
			if held := <-begun; !held {
				t.Error("the request came after the marker but did not see it")
			}
		}
		start := time.Now()
		out, err := e.cron()
		wantAction(t, out, err, ActPoweredOff)
		if _, draining, _ := statedir.Draining(e.deps.StateDir, e.host.Name); draining {
			t.Error("the draining marker outlived the confirmed poweroff")
		}
		offAt := time.Now()
		wg.Wait()
		if n := e.box.poweroffCount(); n != 1 {
			t.Errorf("%d poweroffs, want 1", n)
		}
		if n := e.badOff.Load(); n != 0 {
			t.Errorf("%d poweroff(s) with a request forwarded", n)
		}
		if !e.box.isUp() {
			t.Error("the held request did not wake the box again")
		}
		// Held through the poweroff (two quiet probes), then the wake and
		// the generation.
		if d := time.Since(start); d < offAt.Sub(start)+100*time.Second {
			t.Errorf("request done %v after the shutdown started; the box was off at %v", d, offAt.Sub(start))
		}
	})
}

// The marker is written before the final read even when the shutdown then
// fails (poweroff refused by sudo): it is removed and the host is ready.
func TestInterlockMarkerRemovedOnFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newInterlockEnv(t)
		e.box.set(func(b *simBox) { b.poweroffExit = 1 })
		saw := false
		e.atLastRead = func() { saw = true }
		out, err := e.cron()
		wantAction(t, out, err, ActFailed)
		if !saw {
			t.Fatal("the final read did not happen with the marker down")
		}
		if _, draining, _ := statedir.Draining(e.deps.StateDir, e.host.Name); draining {
			t.Error("the failed shutdown left its draining marker")
		}
	})
}
