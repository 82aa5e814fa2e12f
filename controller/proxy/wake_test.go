package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither a counter nor a gauge", m.Desc())
	return 0
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFiftyRequestsOneWake is W9: 50 requests for a sleeping host's model
// cause exactly one wake; all are held through the boot and served.
func TestFiftyRequestsOneWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends()
		fb.wakeTime = 70 * time.Second
		pc := &fakeOllama{name: "pc"}
		b := newBubble(t, &fakeOllama{name: "server"}, pc, fb, nil)
		defer b.close()
		start := time.Now()
		var wg sync.WaitGroup
		var ok atomic.Int32
		for range 50 {
			wg.Go(func() {
				res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big","messages":[{"role":"user","content":"hi"}]}`)
				if err != nil {
					t.Error(err)
					return
				}
				body := readAll(t, res)
				if res.StatusCode != 200 || !strings.Contains(body, `"pc"`) {
					t.Errorf("status %d body %s", res.StatusCode, body)
					return
				}
				ok.Add(1)
			})
		}
		synctest.Wait()
		if n := b.p.Tracker().InFlight("pc"); n != 50 {
			t.Errorf("while waking: in flight for pc = %d, want 50 (held requests count)", n)
		}
		wg.Wait()
		if n := fb.wakes.Load(); n != 1 {
			t.Errorf("wakes = %d, want exactly 1", n)
		}
		if n := ok.Load(); n != 50 {
			t.Errorf("%d of 50 requests succeeded", n)
		}
		if n := pc.hits.Load(); n != 50 {
			t.Errorf("pc served %d requests, want 50", n)
		}
		if d := time.Since(start); d != 70*time.Second {
			t.Errorf("requests were held %v, want the 70s boot", d)
		}
		if v := metricValue(t, b.p.met.wakes.WithLabelValues("pc", "ok")); v != 1 {
			t.Errorf("wake metric = %v, want 1", v)
		}
		var h dto.Metric
		if err := b.p.met.wakeSeconds.WithLabelValues("pc").(prometheus.Metric).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 || h.GetHistogram().GetSampleSum() != 70 {
			t.Errorf("wake duration histogram = %v, %v; want one 70s sample", h.GetHistogram(), err)
		}
		// The host is now known up: another request does not wake again.
		res, err := post(t.Context(), b.client, "http://proxy:80/api/chat", `{"model":"big"}`)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("after the wake: %v %v", res, err)
		}
		readAll(t, res)
		if n := fb.wakes.Load(); n != 1 {
			t.Errorf("wakes = %d after the host came up, want 1", n)
		}
	})
}

// TestWakeFailure is W4: without a fallback the client gets 503 with
// Retry-After and a JSON error naming the host and the reason; with one the
// request is served by the fallback host; a failed wake is not retried for
// every request (backoff).
func TestWakeFailure(t *testing.T) {
	cases := []struct {
		name       string
		fb         func() *fakeBackends
		model      string
		wantStatus int
		wantHost   string
		wantReason string
		wantAfter  time.Duration
	}{
		{"no fallback", func() *fakeBackends {
			f := newFakeBackends()
			f.wakeTime, f.wakeErr = 5*time.Second, errors.New("ssh: connection refused")
			return f
		}, "big", 503, "", "wake_failed", 5 * time.Second},
		{"boot timeout", func() *fakeBackends { f := newFakeBackends(); f.blockWake = true; return f }, "big:70b", 503, "", "boot_timeout", 180 * time.Second},
		{"fallback", func() *fakeBackends {
			f := newFakeBackends()
			f.wakeTime, f.wakeErr = 5*time.Second, errors.New("ssh: connection refused")
			return f
		}, "fb:1", 200, "server", "", 5 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fb := tc.fb()
				pc := &fakeOllama{name: "pc"}
				b := newBubble(t, &fakeOllama{name: "server"}, pc, fb, nil)
				defer b.close()
				start := time.Now()
				res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", `{"model":"`+tc.model+`","stream":false}`)
				if err != nil {
					t.Fatal(err)
				}
				body := readAll(t, res)
				if res.StatusCode != tc.wantStatus {
					t.Fatalf("status %d (%s), want %d", res.StatusCode, body, tc.wantStatus)
				}
				if d := time.Since(start); d != tc.wantAfter {
					t.Errorf("answered after %v, want %v", d, tc.wantAfter)
				}
				if tc.wantStatus == 503 {
					if ra := res.Header.Get("Retry-After"); ra != "30" {
						t.Errorf("Retry-After %q, want 30", ra)
					}
					var e struct{ Error, Host, Reason string }
					if err := json.Unmarshal([]byte(body), &e); err != nil {
						t.Fatalf("503 body is not JSON: %s", body)
					}
					if e.Host != "pc" || e.Reason != tc.wantReason || !strings.Contains(e.Error, `host "pc"`) {
						t.Errorf("503 body %s: want host pc, reason %s", body, tc.wantReason)
					}
					// Within the backoff another request fails fast, no new wake.
					time.Sleep(10 * time.Second)
					res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", `{"model":"big"}`)
					if err != nil {
						t.Fatal(err)
					}
					readAll(t, res)
					if res.StatusCode != 503 || res.Header.Get("Retry-After") != "20" {
						t.Errorf("second request: %d Retry-After %q, want 503 and 20", res.StatusCode, res.Header.Get("Retry-After"))
					}
					if n := fb.wakes.Load(); n != 1 {
						t.Errorf("wakes = %d, want 1 (backoff)", n)
					}
				} else if !strings.Contains(body, `"`+tc.wantHost+`"`) {
					t.Errorf("served by %s, want %s", body, tc.wantHost)
				}
				if pc.hits.Load() != 0 {
					t.Error("the sleeping host got a request")
				}
			})
		})
	}
}

// TestClientLeavesWakeQueue is P4: a client that disconnects while its host
// boots leaves the queue (its handler returns, in-flight drops) while the
// wake goes on for the others.
func TestClientLeavesWakeQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends()
		fb.wakeTime = 60 * time.Second
		pc := &fakeOllama{name: "pc"}
		b := newBubble(t, &fakeOllama{name: "server"}, pc, fb, nil)
		defer b.close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		// Not streamed: a held stream would get its status with the first
		// progress note (held_test.go); this is about leaving the queue.
		_, err := post(ctx, b.client, "http://proxy:80/api/generate", `{"model":"big","stream":false}`)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the client's deadline", err)
		}
		synctest.Wait()
		if n := b.p.Tracker().InFlight("pc"); n != 0 {
			t.Errorf("in flight after the client left = %d, want 0", n)
		}
		if v := metricValue(t, b.p.met.requests.WithLabelValues("pc", "other", "499")); v != 1 {
			t.Errorf("requests{code=499} = %v, want 1", v)
		}
		// A later client joins the same wake (still one) and is served.
		res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", `{"model":"big"}`)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%v %v", res, err)
		}
		readAll(t, res)
		if n := fb.wakes.Load(); n != 1 {
			t.Errorf("wakes = %d, want 1", n)
		}
		if pc.hits.Load() != 1 {
			t.Errorf("pc hits = %d, want 1 (the departed client's request is not sent)", pc.hits.Load())
		}
	})
}

// TestListingNeverWakes: /api/tags, /api/ps, /v1/models and /api/version
// while the on-demand host sleeps wake nothing; its models come from the
// catalogue saved in the state directory, marked cached.
func TestListingNeverWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		saved := `{"hosts":{"pc":{"fetched":"2026-01-01T00:00:00Z","models":[
			{"name":"big:70b","model":"big:70b","size":42000000000,"modified_at":"2026-01-01T00:00:00Z"},
			{"name":"shared:latest","model":"shared:latest","size":2,"digest":"pc-copy"}]}}}`
		if err := os.WriteFile(filepath.Join(dir, "catalogue.json"), []byte(saved), 0o600); err != nil {
			t.Fatal(err)
		}
		fb := newFakeBackends()
		pc := &fakeOllama{name: "pc"}
		server := &fakeOllama{name: "server", models: []string{"tiny:latest=100", "shared:latest=2"}, ps: []string{"tiny:latest"}}
		b := newBubble(t, server, pc, fb, func(o *Options) { o.StateDir = dir })
		defer b.close()

		get := func(path string) string {
			res, err := b.client.Get("http://proxy:80" + path)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, res)
			if res.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
			}
			return body
		}
		var tags struct {
			Models []struct {
				Name   string
				Digest string
				Gpuctl struct {
					Host   string
					Cached bool
				}
			}
		}
		if err := json.Unmarshal([]byte(get("/api/tags")), &tags); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, m := range tags.Models {
			got[m.Name] = m.Gpuctl.Host + "/" + m.Digest
			if m.Gpuctl.Host == "pc" && !m.Gpuctl.Cached {
				t.Errorf("%s from the sleeping pc not marked cached", m.Name)
			}
		}
		want := map[string]string{"tiny:latest": "server/d-tiny:latest", "shared:latest": "server/d-shared:latest", "big:70b": "pc/"}
		if len(got) != len(want) {
			t.Errorf("tags = %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("tags[%s] = %q, want %q (all: %v)", k, got[k], v, got)
			}
		}
		if ps := get("/api/ps"); !strings.Contains(ps, "tiny:latest") || strings.Contains(ps, "big") {
			t.Errorf("/api/ps = %s", ps)
		}
		var models struct {
			Object string
			Data   []struct{ ID, Object, OwnedBy string }
		}
		if err := json.Unmarshal([]byte(get("/v1/models")), &models); err != nil || models.Object != "list" || len(models.Data) != 3 {
			t.Errorf("/v1/models = %+v, %v", models, err)
		}
		if m := get("/v1/models/big:70b"); !strings.Contains(m, `"id":"big:70b"`) {
			t.Errorf("/v1/models/big:70b = %s", m)
		}
		if v := get("/api/version"); !strings.Contains(v, "0.17.4") {
			t.Errorf("/api/version = %s", v)
		}
		if n := fb.wakes.Load(); n != 0 {
			t.Errorf("listing woke the host %d times", n)
		}
		if n := pc.hits.Load(); n != 0 {
			t.Errorf("the sleeping host got %d requests", n)
		}
	})
}

// TestCataloguePersists: a host's list read while it is up is saved, and a
// restarted proxy lists and routes by it while the host sleeps.
func TestCataloguePersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		fb := newFakeBackends("pc")
		pc := &fakeOllama{name: "pc", models: []string{"huge:latest=20000000000"}}
		b := newBubble(t, &fakeOllama{name: "server", models: []string{"tiny:latest=1"}}, pc, fb, func(o *Options) { o.StateDir = dir })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { b.p.refreshLoop(ctx); close(done) }()
		synctest.Wait()
		cancel()
		<-done
		b.close()

		fb.setUp("pc", false)
		b2 := newBubble(t, &fakeOllama{name: "server"}, pc, fb, func(o *Options) { o.StateDir = dir })
		defer b2.close()
		res, err := b2.client.Get("http://proxy:80/api/tags")
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); !strings.Contains(body, "huge:latest") {
			t.Errorf("after a restart /api/tags = %s, want the sleeping pc's huge:latest", body)
		}
		// Size-aware routing uses it: 20 GB does not fit the server's 16 GiB.
		if d := b2.p.decide("huge"); d.host != "pc" || d.reason != "size" {
			t.Errorf("decide(huge) = %+v, want pc by size", d)
		}
	})
}

// TestBodyOverCap is P8: a body over serve.max_body gets 413 and wakes
// nothing, whether it declares its length or is chunked.
func TestBodyOverCap(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(map[bool]string{false: "content-length", true: "chunked"}[chunked], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fb := newFakeBackends()
				pc := &fakeOllama{name: "pc"}
				b := newBubble(t, &fakeOllama{name: "server"}, pc, fb, func(o *Options) { o.Inventory.Serve.MaxBody = 1024 })
				defer b.close()
				body := `{"model":"big","prompt":"` + strings.Repeat("x", 2000) + `"}`
				var rd io.Reader = strings.NewReader(body)
				if chunked {
					rd = io.MultiReader(rd) // hides the length
				}
				req, _ := http.NewRequest(http.MethodPost, "http://proxy:80/api/generate", rd)
				res, err := b.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got := readAll(t, res)
				if res.StatusCode != 413 || !strings.Contains(got, "max_body") {
					t.Errorf("status %d body %s, want 413 naming max_body", res.StatusCode, got)
				}
				if fb.wakes.Load() != 0 || fb.upCalls.Load() != 0 || pc.hits.Load() != 0 {
					t.Errorf("an oversized body reached the wake path: wakes %d, up checks %d, pc hits %d", fb.wakes.Load(), fb.upCalls.Load(), pc.hits.Load())
				}
			})
		})
	}
}

// TestConcurrencyLimit is P9: past serve.max_in_flight a request gets 429
// with Retry-After; the others are unaffected.
func TestConcurrencyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		server := &fakeOllama{name: "server", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "{\"done\":true}\n")
		}}
		b := newBubble(t, server, nil, newFakeBackends(), func(o *Options) { o.Inventory.Serve.MaxInFlight = 2 })
		defer b.close()
		var first []*http.Response
		for range 2 {
			res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", `{"model":"tiny"}`)
			if err != nil {
				t.Fatal(err)
			}
			first = append(first, res)
		}
		res, err := post(t.Context(), b.client, "http://proxy:80/v1/chat/completions", `{"model":"tiny"}`)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != 429 || res.Header.Get("Retry-After") == "" || !strings.Contains(body, `"rate_limit_error"`) {
			t.Errorf("third request: %d Retry-After %q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
		}
		close(release)
		for _, r := range first {
			if got := readAll(t, r); got != "{\"done\":true}\n" {
				t.Errorf("held stream got %q", got)
			}
		}
		res, err = post(t.Context(), b.client, "http://proxy:80/api/generate", `{"model":"tiny"}`)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("after the others finished: %v %v", res, err)
		}
		readAll(t, res)
	})
}

// TestReplayAfterDialError is P7: when the dial fails (nothing sent), the
// request is replayed once, byte-identical; when the backend received it and
// then failed, it is never retried.
func TestReplayAfterDialError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dials atomic.Int32
		pc := &fakeOllama{name: "pc"}
		var b *bubble
		b = newBubble(t, &fakeOllama{name: "server"}, pc, newFakeBackends("pc"), func(o *Options) {
			o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == "pc:11434" && dials.Add(1) == 1 {
					return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connect: connection refused")}
				}
				return b.net.Dial(ctx, network, addr)
			}
		})
		defer b.close()
		body := `{"model":"big","prompt":"` + strings.Repeat("é", 100) + `"}`
		res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", body)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("status %d %s", res.StatusCode, got)
		}
		if dials.Load() != 2 || pc.hits.Load() != 1 {
			t.Errorf("dials %d, backend hits %d; want 2 and 1", dials.Load(), pc.hits.Load())
		}
		if !bytes.Equal(pc.bodies[0], []byte(body)) {
			t.Errorf("replayed body differs: %q", pc.bodies[0])
		}
		if v := metricValue(t, b.p.met.replays.WithLabelValues("pc")); v != 1 {
			t.Errorf("replays metric = %v", v)
		}

		// The backend reads the request, then drops the connection.
		pc.handle = func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
		}
		res, err = post(t.Context(), b.client, "http://proxy:80/api/generate", body)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, res)
		if res.StatusCode != 502 || !strings.Contains(got, `"host":"pc"`) {
			t.Errorf("status %d %s, want 502 naming pc", res.StatusCode, got)
		}
		if pc.hits.Load() != 2 {
			t.Errorf("backend hits %d, want 2 (no retry once the request was sent)", pc.hits.Load())
		}
	})
}

// TestDecide covers the routing rules.
func TestDecide(t *testing.T) {
	inv := testInventory(t, "http://server:11434", "http://pc:11434")
	inv.Hosts[1].Models = nil
	p := newProxy(t, Options{Inventory: inv})
	p.cat.set("server", []json.RawMessage{
		json.RawMessage(`{"name":"tiny:latest","size":1000}`),
		json.RawMessage(`{"name":"mid:latest","size":17000000000}`),
	}, time.Now())
	p.cat.set("pc", []json.RawMessage{
		json.RawMessage(`{"name":"mid:latest","size":17000000000}`),
		json.RawMessage(`{"name":"only-pc:7b","size":1000}`),
		json.RawMessage(`{"name":"huge:latest","size":40000000000}`),
	}, time.Now())
	for _, tc := range []struct{ model, host, fallback, reason string }{
		{"", "server", "", "default"},
		{"tiny", "server", "", "default"},
		{"big:70b", "pc", "", "route"},
		{"fb", "pc", "server", "route"},
		{"mid", "pc", "server", "size"},       // 17 GB > 16 GiB - headroom; pc has it
		{"only-pc:7b", "pc", "", "catalogue"}, // fits, but only pc has it
		{"huge", "pc", "", "catalogue"},       // fits nowhere; only pc has it
		{"unknown:1b", "server", "", "default"},
	} {
		d := p.decide(tc.model)
		if d.host != tc.host || d.fallback != tc.fallback || d.reason != tc.reason {
			t.Errorf("decide(%q) = %+v, want host %s fallback %q reason %s", tc.model, d, tc.host, tc.fallback, tc.reason)
		}
	}
}

// TestModelOf reads the model from every request shape.
func TestModelOf(t *testing.T) {
	for _, tc := range []struct{ path, body, want string }{
		{"/api/chat", `{"model":"llama3","messages":[]}`, "llama3"},
		{"/api/pull", `{"name":"qwen:7b"}`, "qwen:7b"},
		{"/api/copy", `{"source":"a","destination":"b"}`, "a"},
		{"/v1/chat/completions", `{"messages":[],"model":"gpt"}`, "gpt"},
		{"/v1/chat/completions", `{"name":"x"}`, ""},
		{"/api/generate", `not json`, ""},
		{"/api/generate", ``, ""},
		{"/api/generate", ` {"model":"sp"}`, "sp"},
	} {
		if got := modelOf(tc.path, []byte(tc.body)); got != tc.want {
			t.Errorf("modelOf(%s, %s) = %q, want %q", tc.path, tc.body, got, tc.want)
		}
	}
}

// FuzzModelOf: any body, never a panic.
func FuzzModelOf(f *testing.F) {
	f.Add("/api/chat", []byte(`{"model":"x"}`))
	f.Add("/api/copy", []byte(`{"source":1}`))
	f.Fuzz(func(t *testing.T, path string, body []byte) { _ = modelOf(path, body) })
}
