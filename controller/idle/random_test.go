package idle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/proxy"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// X2: random interleavings of requests through the real routing proxy
// (proxy.Proxy: its own in-flight accounting, draining check and wake),
// pulls (through gpuctl's marker or seen only as growing partial blobs),
// wakes and cron runs of idle.Run (two cron schedules, so runs overlap) over
// 100 simulated minutes each, all in one synctest bubble. The box must never
// be powered off while its Ollama answers a forwarded request, while a pull
// runs or while it is being woken, and never twice per boot. Disabling the
// shutdown's last re-read of the proxy's in-flight count fails it.
//
// GPUCTL_IDLE_SEED sets the first seed (default 1; "time" picks one),
// GPUCTL_IDLE_N the number of interleavings (default 300, 50 with -short).
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
	n := 300
	if s := os.Getenv("GPUCTL_IDLE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("GPUCTL_IDLE_N=%q", s)
		}
		n = v
	} else if testing.Short() {
		n = 50
	}
	var st simStats
	for i := 0; i < n; i++ {
		s := seed + uint64(i)
		synctest.Test(t, func(t *testing.T) { interleaving(t, s, &st) })
		if t.Failed() {
			t.Fatalf("interleaving with seed %d failed (first seed %d, rerun with GPUCTL_IDLE_SEED=%d GPUCTL_IDLE_N=1)", s, seed, s)
		}
	}
	t.Logf("seed %d: %d interleavings, %d cron runs (%d found the lock held), %d requests (%d answered 200), %d pulls, %d wakes, %d boots, %d poweroffs, %d shutdowns aborted by a request",
		seed, n, st.crons.Load(), st.locked.Load(), st.requests.Load(), st.served.Load(), st.pulls.Load(), st.wakes.Load(), st.boots.Load(), st.poweroffs.Load(), st.aborted.Load())
	if st.poweroffs.Load() == 0 || st.locked.Load() == 0 || st.aborted.Load() == 0 {
		t.Fatal("the simulation never powered off, never overlapped runs or never had a shutdown aborted by a late request: it tests nothing")
	}
}

type simStats struct {
	crons, locked, requests, served, pulls, wakes, boots, poweroffs, aborted atomic.Int64
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
		serving   int // requests the box's Ollama is answering
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
			if serving > 0 {
				t.Errorf("seed %d: poweroff at %s while the box answered %d request(s) forwarded by the proxy", seed, time.Since(start), serving)
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
	lockAndWake := func() *statedir.Lock {
		l, err := statedir.LockHost(context.Background(), e.deps.StateDir, e.host.Name, statedir.LockWait)
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
	// Each run takes time, as over SSH: the check script and the unload
	// last seconds, which opens the window between the evaluation's read
	// of the proxy and the last re-read before poweroff.
	e.box.set(func(b *simBox) { b.scriptDelay = time.Second + time.Duration(rng.Int64N(int64(3*time.Second))) })
	unload, unloadDelay := e.deps.Unload, 2*time.Second+time.Duration(rng.Int64N(int64(4*time.Second)))
	e.deps.Unload = func(ctx context.Context, h *inventory.Host, names []string) error {
		time.Sleep(unloadDelay)
		return unload(ctx, h, names)
	}
	cron := func(offset time.Duration) {
		at(offset, func() {
			for next := offset; time.Since(start) < horizon+20*time.Minute; {
				out, err := e.cron()
				st.crons.Add(1)
				switch {
				case out.Action == ActLocked:
					st.locked.Add(1)
				case out.Action == ActBusy && strings.Contains(out.Reason, "while draining"):
					st.aborted.Add(1)
				case err != nil:
					t.Errorf("seed %d: cron at %s: %s: %v", seed, time.Since(start), out.Action, err)
				}
				for next <= time.Since(start) {
					next += 5 * time.Minute
				}
				time.Sleep(next - time.Since(start))
			}
		})
	}
	second := time.Duration(rng.Int64N(int64(5 * time.Minute)))
	cron(0)
	cron(second)

	// Proxied requests go through the real routing proxy (proxy.Proxy, as
	// gpuctl serve runs it) in this bubble: it counts each request, looks
	// for the draining marker, and wakes the box through backends that take
	// the host lock as the controller's wake does. The request side never
	// takes the host lock. Some requests land just after a cron run starts,
	// inside its evaluate → drain → re-read → poweroff window.
	p := newSimProxy(t, e, func() bool {
		l := lockAndWake()
		if l == nil {
			return false
		}
		l.Unlock()
		return true
	}, &serving, &work)
	defer p.Close()
	request := func(dur time.Duration) {
		st.requests.Add(1)
		req := httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(`{"model":"tiny","stream":false}`))
		req.Header.Set(simDurationHeader, dur.String())
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			st.served.Add(1)
		}
	}
	for i, n := 0, rng.IntN(8); i < n; i++ {
		begin := time.Duration(rng.Int64N(int64(horizon)))
		dur := time.Second + time.Duration(rng.Int64N(int64(15*time.Minute)))
		at(begin, func() { request(dur) })
	}
	for i, n := 0, rng.IntN(6); i < n; i++ {
		begin := time.Duration(rng.Int64N(int64(horizon/(5*time.Minute))))*5*time.Minute + time.Duration(rng.Int64N(int64(10*time.Second)))
		if rng.IntN(2) == 0 {
			begin += second
		}
		dur := time.Second + time.Duration(rng.Int64N(int64(time.Minute)))
		at(begin, func() { request(dur) })
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
				b.partials[path] = hostcmd.Partial{Path: path, Size: 1 << 30, MTime: time.Now()}
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

// simDurationHeader tells the simulated Ollama how long to answer a chat.
const simDurationHeader = "X-Sim-Duration"

// newSimProxy builds the real routing proxy for the simulated host (routed
// model "tiny", an always-on default host that is never used), sharing the
// env's activity tracker and state directory, so idle shutdown reads the
// proxy's own count and its draining marker is the one the proxy looks for.
// wake boots the box as the controller's wake does (under the host lock).
// The box's Ollama counts the requests it is answering in *serving
// (guarded by mu); a box that is off refuses connections.
func newSimProxy(t *testing.T, e *env, wake func() bool, serving *int, mu *sync.Mutex) *proxy.Proxy {
	t.Helper()
	serverURL := must(inventory.ParseURL("http://127.0.0.1:11434"))
	inv := &inventory.Inventory{
		Path:   "sim.toml",
		Hosts:  []inventory.Host{{Name: "server", Address: "127.0.0.1", OllamaURL: serverURL}, *e.host},
		Routes: []inventory.Route{{Models: []string{"tiny"}, Host: e.host.Name}},
	}
	inv.Serve.DefaultHost = "server"
	box := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/chat" {
			e.ollama.ServeHTTP(w, r)
			return
		}
		d, err := time.ParseDuration(r.Header.Get(simDurationHeader))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		*serving++
		mu.Unlock()
		_ = e.ollama.Load("tiny", 5*time.Minute)
		time.Sleep(d)
		_ = e.ollama.Load("tiny", 5*time.Minute) // expires_at refreshed at the end
		mu.Lock()
		*serving--
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		io.WriteString(w, `{"model":"tiny","message":{"role":"assistant","content":"hi"},"done":true}`)
	})
	p, err := proxy.New(proxy.Options{
		Inventory: inv,
		Backends:  simBackends{box: e.box, wake: wake},
		Tracker:   e.tracker,
		StateDir:  e.deps.StateDir,
		Transport: boxTransport{box: e.box, h: box},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// simBackends is the controller as the proxy sees it: Up asks the box,
// Wake boots it under the host lock.
type simBackends struct {
	box  *simBox
	wake func() bool
}

func (b simBackends) Up(ctx context.Context, host string) (bool, error) { return b.box.isUp(), nil }

func (b simBackends) Wake(ctx context.Context, host string) error {
	if !b.wake() {
		return errors.New("could not take the host lock")
	}
	return nil
}

// boxTransport answers from the box's Ollama while the box is up and
// refuses the connection while it is off.
type boxTransport struct {
	box *simBox
	h   http.Handler
}

func (t boxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.box.isUp() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	return handlerTransport{h: t.h}.RoundTrip(r)
}
