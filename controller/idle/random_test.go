package idle

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/inventory"
)

// X2: random interleavings of proxied requests, pulls (through gpuctl's
// marker or seen only as growing partial blobs), wakes and cron runs (two
// cron schedules, so runs overlap) over 100 simulated minutes each. The box
// must never be powered off while a request or a pull is in flight or while
// it is being woken, and never twice per boot.
//
// GPUCTL_IDLE_SEED sets the first seed (default 1; "time" picks one),
// GPUCTL_IDLE_N the number of interleavings (default 1000).
func TestRandomInterleavings(t *testing.T) {
	seed := uint64(1)
	if s := os.Getenv("GPUCTL_IDLE_SEED"); s == "time" {
		seed = uint64(time.Now().UnixNano())
	} else if s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GPUCTL_IDLE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	n := 1000
	if s := os.Getenv("GPUCTL_IDLE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("GPUCTL_IDLE_N=%q", s)
		}
		n = v
	} else if testing.Short() {
		n = 100
	}
	var st simStats
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		synctest.Test(t, func(t *testing.T) { interleaving(t, s, &st) })
		if t.Failed() {
			t.Fatalf("interleaving with seed %d failed (first seed %d, rerun with GPUCTL_IDLE_SEED=%d GPUCTL_IDLE_N=1)", s, seed, s)
		}
	}
	t.Logf("seed %d: %d interleavings, %d cron runs (%d found the lock held), %d requests, %d pulls, %d wakes, %d boots, %d poweroffs",
		seed, n, st.crons.Load(), st.locked.Load(), st.requests.Load(), st.pulls.Load(), st.wakes.Load(), st.boots.Load(), st.poweroffs.Load())
	if st.poweroffs.Load() == 0 || st.locked.Load() == 0 {
		t.Fatal("the simulation never powered off or never overlapped runs: it tests nothing")
	}
}

type simStats struct {
	crons, locked, requests, pulls, wakes, boots, poweroffs atomic.Int64
}

func interleaving(t *testing.T, seed uint64, st *simStats) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	e := newEnv(t)
	e.host.IdleAfter = inventory.Duration(time.Duration(2+rng.IntN(4)) * time.Minute)
	e.host.MinUptime = inventory.Duration(time.Duration(1+rng.IntN(3)) * time.Minute)
	e.deps.OffPoll = time.Second
	if rng.IntN(3) == 0 {
		e.box.set(func(b *simBox) { b.up = false })
	} else {
		st.boots.Add(1)
	}
	const horizon = 100 * time.Minute
	start := time.Now()

	var (
		work      sync.Mutex // guards the counters the invariant reads
		waking    bool
		pulling   int
		bootsSeen = 0
		offs      = 0
	)
	if e.box.isUp() {
		bootsSeen = 1
	}
	e.box.set(func(b *simBox) {
		b.onPoweroff = func() {
			work.Lock()
			defer work.Unlock()
			offs++
			st.poweroffs.Add(1)
			if n := e.tracker.InFlight(e.host.Name); n > 0 {
				t.Errorf("seed %d: poweroff at %s with %d request(s) in flight", seed, time.Since(start), n)
			}
			if pulling > 0 {
				t.Errorf("seed %d: poweroff at %s with %d pull(s) running", seed, time.Since(start), pulling)
			}
			if waking {
				t.Errorf("seed %d: poweroff at %s while waking", seed, time.Since(start))
			}
			if offs > bootsSeen {
				t.Errorf("seed %d: poweroff #%d after %d boot(s): two poweroffs", seed, offs, bootsSeen)
			}
		}
	})

	// lockAndWake takes the host lock as a wake does, boots the box if it
	// is off (45 s during which SSH refuses), and returns the lock held.
	lockAndWake := func() *controller.Lock {
		l, err := controller.LockHost(context.Background(), e.deps.StateDir, e.host.Name, controller.LockWait)
		if err != nil {
			t.Errorf("seed %d: lock: %v", seed, err)
			return nil
		}
		if !e.box.isUp() {
			work.Lock()
			waking = true
			work.Unlock()
			e.box.set(func(b *simBox) { b.booting = true })
			time.Sleep(45 * time.Second)
			e.box.boot()
			st.boots.Add(1)
			work.Lock()
			waking = false
			bootsSeen++
			work.Unlock()
		}
		return l
	}

	var wg sync.WaitGroup
	at := func(d time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(d)
			f()
		}()
	}
	// Two cron schedules: every 5 minutes, and a second one offset by a
	// random amount (a second crontab line, a run that hung).
	cron := func(offset time.Duration) {
		at(offset, func() {
			for time.Since(start) < horizon+20*time.Minute {
				out, err := e.cron()
				st.crons.Add(1)
				switch {
				case out.Action == ActLocked:
					st.locked.Add(1)
				case err != nil:
					t.Errorf("seed %d: cron at %s: %s: %v", seed, time.Since(start), out.Action, err)
				}
				time.Sleep(5 * time.Minute)
			}
		})
	}
	cron(0)
	cron(time.Duration(rng.Int64N(int64(5 * time.Minute))))

	// Proxied requests: the proxy wakes the box under the host lock and
	// counts the request before letting go of it.
	for i, n := 0, rng.IntN(8); i < n; i++ {
		begin := time.Duration(rng.Int64N(int64(horizon)))
		dur := time.Second + time.Duration(rng.Int64N(int64(15*time.Minute)))
		at(begin, func() {
			st.requests.Add(1)
			l := lockAndWake()
			if l == nil {
				return
			}
			end := e.tracker.Begin(e.host.Name)
			_ = e.ollama.Load("tiny", 5*time.Minute)
			l.Unlock()
			time.Sleep(dur)
			_ = e.ollama.Load("tiny", 5*time.Minute) // expires_at refreshed at the end
			end()
		})
	}
	// Pulls: half announce themselves with gpuctl's marker, the rest are
	// seen only as a growing partial blob; some are interrupted and leave
	// a stale partial behind.
	for i, n := 0, rng.IntN(4); i < n; i++ {
		begin := time.Duration(rng.Int64N(int64(horizon)))
		dur := 30*time.Second + time.Duration(rng.Int64N(int64(20*time.Minute)))
		marker, interrupted := rng.IntN(2) == 0, rng.IntN(3) == 0
		path := fmt.Sprintf("/mnt/models/ollama/blobs/sha256-%04d-partial", i)
		at(begin, func() {
			st.pulls.Add(1)
			l := lockAndWake()
			if l == nil {
				return
			}
			work.Lock()
			pulling++
			work.Unlock()
			if marker {
				e.pull(path, 1)
			}
			e.box.set(func(b *simBox) {
				b.partials[path] = Partial{Path: path, Size: 1 << 30, MTime: time.Now()}
				b.writing[path] = true
			})
			l.Unlock()
			time.Sleep(dur)
			e.box.set(func(b *simBox) {
				delete(b.writing, path)
				if !interrupted {
					delete(b.partials, path) // renamed to the finished blob
				}
			})
			if marker {
				e.pull(path, -1)
			}
			work.Lock()
			pulling--
			work.Unlock()
		})
	}
	// Explicit wakes.
	for i, n := 0, rng.IntN(3); i < n; i++ {
		at(time.Duration(rng.Int64N(int64(horizon))), func() {
			st.wakes.Add(1)
			if l := lockAndWake(); l != nil {
				l.Unlock()
			}
		})
	}
	wg.Wait()
	if e.box.poweroffCount() != offs {
		t.Errorf("seed %d: %d poweroff commands, %d seen", seed, e.box.poweroffCount(), offs)
	}
}
