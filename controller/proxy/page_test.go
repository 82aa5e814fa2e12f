package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
)

// TestPageRoute: with Options.Page, /gpuctl and everything under /gpuctl/
// but the activity snapshot go to the page; Ollama's paths do not.
func TestPageRoute(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Page", "1") })
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	p := newProxy(t, Options{Inventory: testInventory(t, backend.URL, backend.URL), Backends: newFakeBackends("pc"), Page: page})
	for path, want := range map[string]bool{"/gpuctl": true, "/gpuctl/": true, "/gpuctl/api/status": true, "/gpuctl/app.js": true,
		activity.Path: false, "/api/version": false, "/api/tags": false, "/": false, "/gpuctlx": false, "/healthz": false} {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if got := rec.Header().Get("X-Page") == "1"; got != want {
			t.Errorf("GET %s reached the page: %v, want %v", path, got, want)
		}
	}
	// Without a page, /gpuctl/ is not served.
	p2 := newProxy(t, Options{Inventory: testInventory(t, backend.URL, backend.URL), Backends: newFakeBackends("pc")})
	rec := httptest.NewRecorder()
	p2.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/gpuctl/", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /gpuctl/ without a page: %d, want 404", rec.Code)
	}
}

// TestWakeForPage: Proxy.Wake shares the one wake with requests, counts
// itself in flight while it waits (so a shutdown deciding now aborts), and
// refuses hosts the inventory does not have.
func TestWakeForPage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends()
		fb.wakeTime = 40 * time.Second
		b := newBubble(t, &fakeOllama{name: "server"}, &fakeOllama{name: "pc"}, fb, nil)
		defer b.close()
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- b.p.Wake(context.Background(), "pc") }()
		}
		synctest.Wait()
		if n := b.p.Tracker().InFlight("pc"); n != 2 {
			t.Errorf("in flight while waking: %d, want 2", n)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n := fb.wakes.Load(); n != 1 {
			t.Errorf("two page wakes woke %d times, want 1", n)
		}
		if n := b.p.Tracker().InFlight("pc"); n != 0 {
			t.Errorf("in flight after the wake: %d", n)
		}
		if err := b.p.Wake(context.Background(), "nope"); err == nil {
			t.Error("waking a host not in the inventory succeeded")
		}
	})
}
