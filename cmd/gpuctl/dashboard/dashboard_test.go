package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustURL(t *testing.T, s string) inventory.URL {
	t.Helper()
	u, err := inventory.ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// world is a page over an always-on "server" and an on-demand "pc" whose
// status the test sets; the pc's Ollama records every request it gets.
type world struct {
	d        *Dashboard
	mu       sync.Mutex
	pcState  controller.State
	statuses atomic.Int32
	wakes    chan string
	release  chan struct{}
	ollama   atomic.Int32
	stateDir string
}

func newWorld(t *testing.T, actions bool) *world { return newWorldWith(t, actions, true) }

// newWorldWith: without ollama, the pc's Ollama is a closed port (inside a
// synctest bubble, where a listening socket never blocks durably).
func newWorldWith(t *testing.T, actions, ollama bool) *world {
	t.Helper()
	w := &world{pcState: controller.StateOff, wakes: make(chan string, 10), release: make(chan struct{}), stateDir: t.TempDir()}
	olURL := "http://127.0.0.1:1"
	if ollama {
		ol := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w.ollama.Add(1)
			if r.URL.Path != "/api/ps" {
				http.NotFound(rw, r)
				return
			}
			io.WriteString(rw, `{"models":[{"name":"llama3.3:70b","model":"llama3.3:70b","size":45000000000,"size_vram":42000000000,`+
				`"context_length":8192,"expires_at":"2030-01-01T00:00:00Z"}]}`)
		}))
		t.Cleanup(ol.Close)
		olURL = ol.URL
	}
	inv := &inventory.Inventory{Serve: inventory.Serve{DefaultHost: "server", PageActions: actions},
		Hosts: []inventory.Host{
			{Name: "server", OllamaURL: mustURL(t, "http://127.0.0.1:1")},
			{Name: "pc", OnDemand: true, OllamaURL: mustURL(t, olURL), IdleAfter: inventory.Duration(30 * time.Minute),
				MinUptime: inventory.Duration(10 * time.Minute), BootTimeout: inventory.Duration(time.Minute)},
		}}
	d, err := New(Options{Inventory: inv, StateDir: w.stateDir, Tracker: activity.NewTracker(nil),
		Status: func(ctx context.Context, hosts []*inventory.Host) []controller.HostStatus {
			w.statuses.Add(1)
			w.mu.Lock()
			defer w.mu.Unlock()
			var out []controller.HostStatus
			for _, h := range hosts {
				st := controller.HostStatus{Name: h.Name, State: controller.StateReady, Checks: []controller.Check{{Name: "ollama", OK: true}}, GPU: []hostcmd.GPU{}}
				if h.Name == "pc" {
					st.State = w.pcState
					if w.pcState != controller.StateReady {
						st.Checks = []controller.Check{}
					}
				}
				out = append(out, st)
			}
			return out
		},
		History: func(host string) ([]controller.WakeRecord, error) {
			if host != "pc" {
				return nil, nil
			}
			var recs []controller.WakeRecord
			for i := range 7 {
				recs = append(recs, controller.WakeRecord{Host: "pc", State: controller.StateReady, Woke: true,
					ReadyAfterMS: int64(60000 + 1000*i), Phases: []controller.PhaseTiming{{Name: "boot", DurationMS: 60000}}})
			}
			return recs, nil
		},
		Wake: func(ctx context.Context, host string) error {
			w.wakes <- host
			select {
			case <-w.release:
			case <-ctx.Done():
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	w.d = d
	return w
}

func (w *world) set(s controller.State) {
	w.mu.Lock()
	w.pcState = s
	w.mu.Unlock()
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func status(t *testing.T, h http.Handler) (Page, map[string]any) {
	t.Helper()
	rec := get(t, h, "/gpuctl/api/status")
	if rec.Code != http.StatusOK {
		t.Fatalf("api/status: %d %s", rec.Code, rec.Body)
	}
	var p Page
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(rec.Body.Bytes(), &raw)
	return p, raw
}

// The JSON endpoint is `gpuctl status --json`'s HOST objects plus the
// page's fields; a sleeping host's Ollama is never asked (no /api/ps), an
// up one's is, and nothing is woken.
func TestStatusNeverReachesSleepingHost(t *testing.T) {
	w := newWorld(t, true)
	p, raw := status(t, w.d)
	if len(p.Hosts) != 2 || p.Hosts[1].Name != "pc" || p.Hosts[1].State != controller.StateOff {
		t.Fatalf("hosts: %+v", p.Hosts)
	}
	if n := w.ollama.Load(); n != 0 {
		t.Errorf("the page sent %d requests to the sleeping pc's Ollama", n)
	}
	if len(w.wakes) != 0 {
		t.Error("reading the page woke a host")
	}
	pc := raw["hosts"].([]any)[1].(map[string]any)
	for _, k := range []string{"name", "state", "reason", "since", "checked_at", "duration_ms", "probe", "checks", "gpu",
		"container", "mount", "ollama", "boot_eta", "on_demand", "loaded", "wakes", "in_flight"} {
		if _, ok := pc[k]; !ok {
			t.Errorf("host object lacks %q (status --json's schema plus the page's)", k)
		}
	}
	if eta := p.Hosts[1].BootETA; eta == nil || eta.Samples != 7 || eta.MedianMS != 63000 {
		t.Errorf("boot ETA %+v, want the median of 7 wakes (63s)", eta)
	}
	if len(p.Hosts[1].Wakes) != DefaultWakes || p.Hosts[1].Wakes[0].ReadyAfterMS != 66000 {
		t.Errorf("wakes: want the last %d, newest first: %+v", DefaultWakes, p.Hosts[1].Wakes)
	}

	// Up: /api/ps is asked, once per refresh.
	w.set(controller.StateReady)
	w.d.mu.Lock()
	w.d.snap = nil
	w.d.mu.Unlock()
	p, _ = status(t, w.d)
	if l := p.Hosts[1].Loaded; len(l) != 1 || l[0].Name != "llama3.3:70b" || l[0].VRAMBytes != 42000000000 || l[0].ContextLength != 8192 {
		t.Errorf("loaded: %+v", l)
	}
	if n := w.ollama.Load(); n != 1 {
		t.Errorf("/api/ps asked %d times, want 1", n)
	}
}

// Status is refreshed only when a viewer asks and the last one is older
// than RefreshInterval; every viewer shares one refresh.
func TestRefreshOnlyWhenWatchedAndStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, false, false)
		for range 5 {
			status(t, w.d)
		}
		synctest.Wait()
		if n := w.statuses.Load(); n != 1 {
			t.Fatalf("5 polls within the interval ran status %d times, want 1", n)
		}
		time.Sleep(time.Hour) // nobody looks: nothing runs
		synctest.Wait()
		if n := w.statuses.Load(); n != 1 {
			t.Fatalf("status ran %d times while nobody looked", n)
		}
		// Long unwatched: the old snapshot is not shown, the fresh one is
		// waited for.
		w.set(controller.StateBooting)
		p, _ := status(t, w.d)
		if n := w.statuses.Load(); n != 2 || p.Hosts[1].State != controller.StateBooting {
			t.Errorf("after an hour unwatched: %d status runs, state %s, want a fresh booting", n, p.Hosts[1].State)
		}
		// Slightly stale: answered at once, refreshed behind.
		time.Sleep(DefaultRefreshInterval + time.Second)
		w.set(controller.StateReady)
		p, _ = status(t, w.d)
		if p.Hosts[1].State != controller.StateBooting {
			t.Errorf("stale answer %s, want the last snapshot's booting", p.Hosts[1].State)
		}
		synctest.Wait()
		p, _ = status(t, w.d)
		if n := w.statuses.Load(); n != 3 || p.Hosts[1].State != controller.StateReady {
			t.Errorf("after the refresh: %d status runs, state %s", n, p.Hosts[1].State)
		}
	})
}

func post(t *testing.T, h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}"))
	req.Host = "gpu.example:8080"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// The wake button's POST: refused unless page_actions is on and the
// request comes from the page's own origin.
func TestWakeSameOrigin(t *testing.T) {
	off := newWorld(t, false)
	if rec := post(t, off.d, "/gpuctl/api/wake/pc", map[string]string{"Sec-Fetch-Site": "same-origin"}); rec.Code != http.StatusForbidden ||
		!strings.Contains(rec.Body.String(), "page_actions") {
		t.Errorf("actions off: %d %s", rec.Code, rec.Body)
	}
	if p, _ := status(t, off.d); p.Actions {
		t.Error("actions off but the page offers them")
	}
	w := newWorld(t, true)
	for _, c := range []struct {
		name string
		hdr  map[string]string
	}{
		{"no origin at all", nil},
		{"null origin", map[string]string{"Origin": "null"}},
		{"other origin", map[string]string{"Origin": "http://evil.example"}},
		{"other port", map[string]string{"Origin": "http://gpu.example:9999"}},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://gpu.example:8080"}},
		{"same-site fetch", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"forwarded host mismatch", map[string]string{"Origin": "https://evil.example", "X-Forwarded-Host": "gpu.example"}},
	} {
		if rec := post(t, w.d, "/gpuctl/api/wake/pc", c.hdr); rec.Code != http.StatusForbidden {
			t.Errorf("%s: HTTP %d, want 403", c.name, rec.Code)
		}
	}
	if len(w.wakes) != 0 {
		t.Fatal("a refused POST woke the host")
	}
	if rec := get(t, w.d, "/gpuctl/api/wake/pc"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET wake: %d, want 405", rec.Code)
	}
	if rec := post(t, w.d, "/gpuctl/api/wake/server", map[string]string{"Sec-Fetch-Site": "same-origin"}); rec.Code != http.StatusConflict {
		t.Errorf("waking the always-on host: %d, want 409", rec.Code)
	}
	if rec := post(t, w.d, "/gpuctl/api/wake/nope", map[string]string{"Sec-Fetch-Site": "same-origin"}); rec.Code != http.StatusNotFound {
		t.Errorf("waking an unknown host: %d, want 404", rec.Code)
	}
	if rec := post(t, w.d, "/gpuctl/api/wake/pc", map[string]string{"Sec-Fetch-Site": "same-origin"}); rec.Code != http.StatusAccepted {
		t.Fatalf("same-origin fetch: %d %s", rec.Code, rec.Body)
	}
	if h := <-w.wakes; h != "pc" {
		t.Fatalf("woke %q", h)
	}
	// A second press while it runs joins it.
	if rec := post(t, w.d, "/gpuctl/api/wake/pc", map[string]string{"Origin": "http://gpu.example:8080"}); rec.Code != http.StatusAccepted ||
		!strings.Contains(rec.Body.String(), `"coalesced": true`) {
		t.Errorf("second press: %d %s", rec.Code, rec.Body)
	}
	if p, _ := status(t, w.d); p.Hosts[1].PageWake == nil || p.Hosts[1].PageWake.Finished != nil {
		t.Errorf("the page does not show its wake in progress: %+v", p.Hosts[1].PageWake)
	}
	close(w.release)
	// Behind a reverse proxy that keeps its own Host, X-Forwarded-Host
	// names the origin.
	waitFinished(t, w)
	if rec := post(t, w.d, "/gpuctl/api/wake/pc", map[string]string{"Origin": "https://gpu.home.example", "X-Forwarded-Host": "gpu.home.example"}); rec.Code != http.StatusAccepted {
		t.Errorf("origin matching X-Forwarded-Host: %d %s", rec.Code, rec.Body)
	}
	<-w.wakes
}

func waitFinished(t *testing.T, w *world) {
	t.Helper()
	for {
		w.d.mu.Lock()
		pw := w.d.wakes["pc"]
		done := pw != nil && pw.Finished != nil
		w.d.mu.Unlock()
		if done {
			return
		}
		select {
		case <-t.Context().Done():
			t.Fatal("the page's wake never finished")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The idle view: every signal, idle since, and when a shutdown run would
// power the box off (idle_since + idle_after, not before boot + min_uptime).
func TestIdleView(t *testing.T) {
	w := newWorld(t, false)
	now := time.Now()
	since := now.Add(-5 * time.Minute)
	boot := now.Add(-6 * time.Minute)
	st := idle.State{Host: "pc", IdleSince: &since, LastCheck: now.Add(-time.Minute), Phase: idle.PhaseReady,
		Since: map[string]time.Time{idle.SigProxy: since, idle.SigUptime: boot}, Failed: []string{idle.SigGPU}}
	if err := statedir.WriteJSON(statedir.IdleFile(w.stateDir, "pc"), st); err != nil {
		t.Fatal(err)
	}
	p, _ := status(t, w.d)
	v := p.Hosts[1].IdleView
	if v == nil || len(v.Signals) != len(idle.SignalNames()) {
		t.Fatalf("idle view %+v", v)
	}
	byName := map[string]IdleSignal{}
	for _, s := range v.Signals {
		byName[s.Name] = s
	}
	if s := byName[idle.SigProxy]; s.IdleSince == nil || !s.IdleSince.Equal(since) {
		t.Errorf("proxy signal %+v", s)
	}
	if s := byName[idle.SigOllama]; s.IdleSince != nil {
		t.Errorf("a signal missing from the state must show busy: %+v", s)
	}
	if s := byName[idle.SigGPU]; !s.Failed {
		t.Errorf("gpu failed: %+v", s)
	}
	// idle_since + 30m = now+25m; boot + 10m = now+4m: the later wins.
	if want := since.Add(30 * time.Minute); v.PowerOffAfter == nil || !v.PowerOffAfter.Equal(want) {
		t.Errorf("power off after %v, want %v", v.PowerOffAfter, want)
	}
	if p.Hosts[0].IdleView != nil {
		t.Error("an always-on host got an idle view")
	}
}

// The page's files use only relative URLs (so a reverse proxy's path
// prefix survives), never inline script (the CSP forbids it), and set
// text from hosts only as textContent.
func TestRelativeURLsOnly(t *testing.T) {
	abs := regexp.MustCompile(`(?:href|src|action)="/|fetch\(\s*["'` + "`" + `]/|url\(\s*/`)
	err := fs.WalkDir(static, "static", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := static.ReadFile(path)
		if err != nil {
			return err
		}
		if m := abs.Find(b); m != nil {
			t.Errorf("%s uses an absolute URL: %s", path, m)
		}
		if strings.Contains(string(b), "innerHTML") {
			t.Errorf("%s uses innerHTML", path)
		}
		if strings.HasSuffix(path, ".html") && regexp.MustCompile(`<script>|<script [^>]*>[^<]`).Match(b) {
			t.Errorf("%s has inline script", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, false)
	rec := get(t, w.d, "/gpuctl")
	if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "gpuctl/" {
		t.Errorf("/gpuctl: %d Location %q, want a relative redirect to gpuctl/", rec.Code, rec.Header().Get("Location"))
	}
	rec = get(t, w.d, "/gpuctl/")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `src="app.js"`) ||
		!strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("/gpuctl/: %d %q %s", rec.Code, rec.Header(), rec.Body)
	}
	for _, f := range []string{"app.js", "style.css"} {
		if rec := get(t, w.d, "/gpuctl/"+f); rec.Code != http.StatusOK {
			t.Errorf("/gpuctl/%s: %d", f, rec.Code)
		}
	}
	if rec := get(t, w.d, "/gpuctl/api/nope"); rec.Code != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d", rec.Code)
	}
}
