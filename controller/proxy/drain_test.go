package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
)

// shutdownSim is gpuctl shutdown's side of the draining interlock, against
// a proxy: it writes the marker, then reads the proxy's in-flight count, and
// powers the box off only when it is zero. The pc backend fails the test if
// it is sent a request while the box is off or going off.
type shutdownSim struct {
	t        *testing.T
	stateDir string
	p        *Proxy
	fb       *fakeBackends
	off      atomic.Bool // the poweroff command was sent
	badFwd   atomic.Int32
	clear    func() error
}

// begin writes the marker and makes the last read; it reports whether the
// shutdown goes ahead (nothing in flight).
func (s *shutdownSim) begin() bool {
	clear, err := statedir.MarkDraining(s.stateDir, "pc", time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	s.clear = clear
	if s.p.Tracker().InFlight("pc") > 0 {
		return false
	}
	s.off.Store(true)
	s.fb.setUp("pc", false)
	return true
}

func (s *shutdownSim) done() {
	if err := s.clear(); err != nil {
		s.t.Error(err)
	}
}

// pcBackend is the on-demand host's Ollama; it notes requests that reach
// it while its box is being powered off.
func (s *shutdownSim) pcBackend() *fakeOllama {
	return &fakeOllama{name: "pc", handle: func(w http.ResponseWriter, r *http.Request) {
		if s.off.Load() {
			s.badFwd.Add(1)
		}
		writeJSON(w, 200, map[string]any{"host": "pc", "done": true})
	}}
}

func drainBubble(t *testing.T, fb *fakeBackends) (*bubble, *shutdownSim) {
	dir := t.TempDir()
	s := &shutdownSim{t: t, stateDir: dir, fb: fb}
	b := newBubble(t, &fakeOllama{name: "server"}, s.pcBackend(), fb, func(o *Options) { o.StateDir = dir })
	s.p = b.p
	return b, s
}

func holds(t *testing.T, p *Proxy) float64 {
	return metricValue(t, p.met.drainHolds.WithLabelValues("pc"))
}

// The request is counted before the shutdown's last read: the shutdown
// sees it and aborts; the request, which then finds the marker still there
// (the shutdown removes it as it gives up), is held until it is gone and
// served by the box that stayed up, with no wake.
func TestDrainRequestCountedFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends("server", "pc")
		b, s := drainBubble(t, fb)
		defer b.close()
		var wg sync.WaitGroup
		b.p.drainCheckHook = func(host string) {
			b.p.drainCheckHook = nil
			if s.begin() {
				t.Error("the shutdown did not see the request counted before its read")
				return
			}
			wg.Go(func() {
				time.Sleep(5 * time.Second) // the abort: back to ready
				s.done()
			})
		}
		start := time.Now()
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"pc"`) {
			t.Fatalf("status %d: %s", res.StatusCode, body)
		}
		if d := time.Since(start); d < 5*time.Second {
			t.Errorf("served after %v, while the marker was there for 5s", d)
		}
		wg.Wait()
		if n := fb.wakes.Load(); n != 0 {
			t.Errorf("%d wakes of a box that stayed up", n)
		}
		if n := s.badFwd.Load(); n != 0 || s.off.Load() {
			t.Errorf("powered off: %v, %d request(s) forwarded while off", s.off.Load(), n)
		}
		if v := holds(t, b.p); v != 1 {
			t.Errorf("drain holds = %v, want 1", v)
		}
	})
}

// The marker is written and the last read made (nothing in flight) before
// the request arrives: the request is held, the box goes off, the marker is
// removed once it is off, and the request wakes the box (one wake for all
// held requests) and is served. Nothing reaches the box while it goes off.
func TestDrainMarkerFirstHoldsThenWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends("server", "pc")
		fb.wakeTime = 60 * time.Second
		b, s := drainBubble(t, fb)
		defer b.close()
		// The proxy has just seen pc up: without the marker the request
		// would go straight to it.
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("warm-up: %v %v", res, err)
		}
		readAll(t, res)
		// The handler ends the request (in flight -1) just after the client
		// has read the last byte: let it finish before the shutdown reads.
		synctest.Wait()
		if !s.begin() {
			t.Fatal("the shutdown saw a request in flight")
		}
		go func() {
			time.Sleep(20*time.Second - 100*time.Millisecond) // poweroff, two quiet probes
			s.off.Store(false)                                // off now: a request would fail to dial, not reach a dying box
			s.done()
		}()
		start := time.Now()
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() {
				res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
				if err != nil {
					t.Error(err)
					return
				}
				if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"pc"`) {
					t.Errorf("status %d: %s", res.StatusCode, body)
				}
			})
		}
		synctest.Wait()
		if n := b.p.Tracker().InFlight("pc"); n != 5 {
			t.Errorf("held requests in flight = %d, want 5", n)
		}
		wg.Wait()
		if d := time.Since(start); d != 80*time.Second {
			t.Errorf("held %v, want 20s draining + 60s wake", d)
		}
		if n := fb.wakes.Load(); n != 1 {
			t.Errorf("wakes = %d, want 1", n)
		}
		if n := s.badFwd.Load(); n != 0 {
			t.Errorf("%d request(s) forwarded to the box going off", n)
		}
		if v := holds(t, b.p); v != 5 {
			t.Errorf("drain holds = %v, want 5", v)
		}
	})
}

// A held request whose marker outlasts boot_timeout goes to its route's
// fallback, or gets 503 with Retry-After naming the reason; a client that
// leaves while held leaves the queue.
func TestDrainHoldBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends("server", "pc")
		b, s := drainBubble(t, fb)
		defer b.close()
		if !s.begin() {
			t.Fatal("in flight")
		}
		defer s.done()
		start := time.Now()
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"fb"}`)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"server"`) {
			t.Errorf("fallback: status %d: %s", res.StatusCode, body)
		}
		if d := time.Since(start); d != 180*time.Second {
			t.Errorf("held %v before the fallback, want boot_timeout 180s", d)
		}

		res, err = post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		var e struct{ Error, Host, Reason string }
		_ = json.Unmarshal([]byte(body), &e)
		if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || e.Reason != "powering_off" || e.Host != "pc" {
			t.Errorf("no fallback: status %d Retry-After %q: %s", res.StatusCode, res.Header.Get("Retry-After"), body)
		}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err := post(ctx, b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
			if err == nil {
				res.Body.Close()
				t.Error("answered after the client left")
			}
		}()
		time.Sleep(5 * time.Second)
		if n := b.p.Tracker().InFlight("pc"); n != 1 {
			t.Errorf("in flight while held = %d", n)
		}
		cancel()
		<-done
		synctest.Wait()
		if n := b.p.Tracker().InFlight("pc"); n != 0 {
			t.Errorf("in flight after the client left = %d", n)
		}
		if n := fb.wakes.Load(); n != 0 || s.badFwd.Load() != 0 {
			t.Errorf("wakes %d, forwarded while off %d", n, s.badFwd.Load())
		}
	})
}

// A marker left by a shutdown that died is ignored (and removed); so is a
// damaged one once stale. Always-on hosts never look.
func TestDrainDeadMarkerIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends("server", "pc")
		b, s := drainBubble(t, fb)
		defer b.close()
		p := statedir.DrainingPath(s.stateDir, "pc")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		old := statedir.Alive
		t.Cleanup(func() { statedir.Alive = old })
		statedir.Alive = func(pid int) bool { return pid != 4242 && old(pid) }
		if err := os.WriteFile(p, []byte(`{"host":"pc","pid":4242,"started":"2026-01-01T00:00:00Z"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%v %v", res, err)
		}
		readAll(t, res)
		if time.Since(start) != 0 {
			t.Errorf("held %v by a dead shutdown's marker", time.Since(start))
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("dead marker not removed: %v", err)
		}
		if v := holds(t, b.p); v != 0 {
			t.Errorf("drain holds = %v", v)
		}
	})
}
