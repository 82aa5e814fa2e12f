package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
	"github.com/ollamalive/gpuctl/inventory"
)

// TestRealFreshDrivePullsOnWake: the on-demand host's Ollama (the real
// server) has an empty drive and declares tiny. The first chat for tiny
// through serve wakes the host, serve pulls tiny onto it (from the test
// registry, a real pull), holds the chat meanwhile, and the chat is
// answered with real tokens.
func TestRealFreshDrivePullsOnWake(t *testing.T) {
	reg := realollama.StartRegistry(t)
	if _, err := reg.AddModel("tiny", realollama.Tiny); err != nil {
		t.Fatal(err)
	}
	pc := realollama.Start(t, realollama.Options{Registry: reg})
	server := httptest.NewServer(&fakeOllama{name: "server"})
	t.Cleanup(server.Close)

	inv := testInventory(t, server.URL, pc.URL.String())
	inv.Hosts[1].Models = []inventory.ModelName{"tiny"}
	fb := newFakeBackends() // pc asleep until woken
	reg2 := prometheus.NewRegistry()
	p := newProxy(t, Options{Inventory: inv, Backends: fb, Registry: reg2, StateDir: t.TempDir()})
	ts := serveProxy(t, p)
	u, _ := url.Parse(ts.URL)
	client := api.NewClient(u, testClient(t))

	reply, chunks, err := realollama.Chat(t.Context(), client, "tiny", "hello")
	if err != nil {
		t.Fatalf("chat through serve: %v", err)
	}
	if chunks == 0 || reply == "" {
		t.Errorf("chat answered %d chunks %q; want real tokens", chunks, reply)
	}
	if fb.wakes.Load() != 1 {
		t.Errorf("wakes: %d, want 1", fb.wakes.Load())
	}
	mres, err := testClient(t).Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if m := readAll(t, mres); !strings.Contains(m, `gpuctl_proxy_model_pulls_total{host="pc",model="tiny:latest",result="ok"} 1`) {
		t.Errorf("/metrics has no successful pull of tiny on pc:\n%s", m)
	}
	list, err := pc.Client.List(t.Context())
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "tiny:latest" {
		t.Errorf("pc's models after the wake: %+v %v; want tiny pulled onto its drive", list, err)
	}
	// A model already there proceeds at once; the pull is not repeated.
	if _, _, err := realollama.Chat(t.Context(), client, "tiny", "again"); err != nil {
		t.Fatal(err)
	}
	pulls := 0
	for _, r := range reg.Requests() {
		if strings.Contains(r, "/manifests/") {
			pulls++
		}
	}
	if pulls != 1 {
		t.Errorf("registry manifest requests: %d, want 1 (%v)", pulls, reg.Requests())
	}
}

// TestPullHoldTimesOut: a request for a declared model whose pull does not
// finish within the host's boot_timeout gets 503 with Retry-After and the
// reason; a request for a model already on the host proceeds at once.
func TestPullHoldTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		pc := &fakeOllama{name: "pc", models: []string{"have:latest=1"}, handle: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/pull" {
				writeJSON(w, 200, map[string]any{"host": "pc", "done": true})
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Write([]byte(`{"status":"pulling manifest"}` + "\n"))
			w.(http.Flusher).Flush()
			<-release
			w.Write([]byte(`{"status":"success"}` + "\n"))
		}}
		b := newBubble(t, &fakeOllama{name: "server"}, pc, newFakeBackends(), func(o *Options) {
			o.Inventory.Hosts[1].Models = []inventory.ModelName{"want", "have"}
			o.Inventory.Hosts[1].BootTimeout = inventory.Duration(90 * time.Second)
			o.WakeBackoff = 7 * time.Second
		})
		defer b.close()
		start := time.Now()
		// Not streamed: a held stream gets 200 and its progress (held_test.go).
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"want","stream":false}`)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != 503 || res.Header.Get("Retry-After") != "7" || !strings.Contains(body, `"reason":"pulling"`) || !strings.Contains(body, "still being pulled") {
			t.Errorf("chat for a model being pulled: %d Retry-After %q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
		}
		if held := time.Since(start); held != 90*time.Second {
			t.Errorf("held %s, want the host's boot_timeout (90s)", held)
		}
		start = time.Now()
		res, err = post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"have"}`)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"host":"pc"`) || time.Since(start) != 0 {
			t.Errorf("chat for a model on the host: %d %s after %s", res.StatusCode, body, time.Since(start))
		}
		close(release)
		synctest.Wait()
		// Pulled: the next request for it is forwarded.
		res, err = post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"want"}`)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"host":"pc"`) {
			t.Errorf("chat after the pull: %d %s", res.StatusCode, body)
		}
	})
}
