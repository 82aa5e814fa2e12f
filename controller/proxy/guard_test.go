package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// guardSetup serves a proxy on loopback (so the DNS-rebinding guard is on)
// in front of an always-on fake Ollama that records the Origin it is sent.
func guardSetup(t *testing.T, allowed ...string) (string, *fakeOllama, *sync.Map) {
	seen := &sync.Map{}
	server := &fakeOllama{name: "server", models: []string{"tiny:latest=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.Path, r.Header.Get("Origin"))
		server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	inv := testInventory(t, srv.URL, "http://127.0.0.1:1")
	inv.Serve.AllowedOrigins = allowed
	p := newProxy(t, Options{Inventory: inv, Backends: newFakeBackends()})
	return serveProxy(t, p).URL, server, seen
}

func do(t *testing.T, method, url, host, origin, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := testClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res, readAll(t, res)
}

// TestGuardRefusesForeignHost: on a loopback listener a Host that is not a
// local name gets 403 and reaches no backend (DNS rebinding), as on
// Ollama; local names and addresses pass.
func TestGuardRefusesForeignHost(t *testing.T) {
	url, server, _ := guardSetup(t)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/tags", ""}, {"GET", "/api/version", ""}, {"GET", "/v1/models", ""},
		{"POST", "/api/chat", `{"model":"tiny"}`}, {"GET", "/", ""},
	} {
		res, body := do(t, c.method, url+c.path, "evil.example", "", c.body)
		if res.StatusCode != http.StatusForbidden || body != "" {
			t.Errorf("%s %s with Host evil.example: %d %q, want 403 and no body", c.method, c.path, res.StatusCode, body)
		}
	}
	if n := server.hits.Load(); n != 0 {
		t.Errorf("a refused request reached the backend (%d inference requests)", n)
	}
	for _, host := range []string{"localhost", "localhost:11435", "127.0.0.1:11435", "[::1]:80", "box.local", "ollama.internal", "192.168.1.5:11435", "x.localhost"} {
		res, _ := do(t, "POST", url+"/api/chat", host, "", `{"model":"tiny"}`)
		if res.StatusCode != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", host, res.StatusCode)
		}
	}
}

// TestGuardOrigins: an origin Ollama allows by default, or one in
// [serve] allowed_origins, gets its CORS headers (also on the merged
// listings serve writes itself); a foreign origin gets 403; a preflight is
// answered as Ollama's; the Origin is not passed on to the host.
func TestGuardOrigins(t *testing.T) {
	url, _, seen := guardSetup(t, "https://webui.example", "http://*.lan:8080")
	for _, origin := range []string{"http://localhost:3000", "http://127.0.0.1", "app://anything", "https://webui.example", "http://box.lan:8080"} {
		for _, path := range []string{"/api/tags", "/api/ps", "/v1/models", "/api/version"} {
			res, _ := do(t, "GET", url+path, "", origin, "")
			if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != origin || res.Header.Get("Vary") != "Origin" {
				t.Errorf("GET %s from %s: %d, Access-Control-Allow-Origin %q, Vary %q; want 200, the origin echoed, Vary Origin",
					path, origin, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"), res.Header.Get("Vary"))
			}
		}
		res, _ := do(t, "POST", url+"/api/chat", "", origin, `{"model":"tiny"}`)
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("POST /api/chat from %s: %d %q", origin, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
		if o, _ := seen.Load("/api/chat"); o != "" {
			t.Errorf("the host's Ollama was sent Origin %q; serve judges it", o)
		}
	}
	for _, origin := range []string{"https://evil.example", "http://localhost.evil.example", "null"} {
		res, body := do(t, "GET", url+"/api/tags", "", origin, "")
		if res.StatusCode != http.StatusForbidden || body != "" || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("GET /api/tags from %s: %d %q ACAO %q, want 403", origin, res.StatusCode, body, res.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, url+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://webui.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := testClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := res.Header
	if res.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://webui.example" ||
		h.Get("Access-Control-Allow-Methods") != corsAllowMethods || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "X-Stainless-Os") ||
		h.Get("Access-Control-Max-Age") != "43200" || len(h.Values("Vary")) != 3 {
		t.Errorf("preflight: %d %v", res.StatusCode, h)
	}
}

// TestOwnAnswersAsOllama: what serve answers itself reads as Ollama's.
func TestOwnAnswersAsOllama(t *testing.T) {
	url, _, _ := guardSetup(t)
	res, body := do(t, "GET", url+"/nonexistent", "", "", "")
	if res.StatusCode != 404 || body != "404 page not found" || res.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("GET /nonexistent: %d %q %q, want Ollama's plain 404", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	res, body = do(t, "POST", url+"/", "", "", "")
	if res.StatusCode != 405 || body != "405 method not allowed" {
		t.Errorf("POST /: %d %q", res.StatusCode, body)
	}
	res, body = do(t, "GET", url+"/v1/models", "", "", "")
	if res.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"id":"tiny:latest","object":"model","created":1767323045,"owned_by":"library"`) {
		t.Errorf("GET /v1/models: %q %s", res.Header.Get("Content-Type"), body)
	}
}

// TestRetrieveSleepingModel: /v1/models/{id} for a model only a sleeping
// host has is answered from the catalogue in Ollama's shape (the id as
// asked) and wakes nothing; an unknown id is the default host's to answer.
func TestRetrieveSleepingModel(t *testing.T) {
	server := httptest.NewServer(&fakeOllama{name: "server", models: []string{"tiny:latest=1"}})
	t.Cleanup(server.Close)
	fb := newFakeBackends()
	p := newProxy(t, Options{Inventory: testInventory(t, server.URL, "http://127.0.0.1:1"), Backends: fb})
	p.cat.set("pc", []json.RawMessage{json.RawMessage(`{"name":"big:latest","model":"big:latest","size":5,"modified_at":"2026-01-02T03:04:05Z"}`)}, time.Now())
	url := serveProxy(t, p).URL
	res, body := do(t, "GET", url+"/v1/models/Big", "", "", "")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" ||
		body != `{"id":"Big","object":"model","created":1767323045,"owned_by":"library"}`+"\n" {
		t.Errorf("GET /v1/models/Big: %d %q %q", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if fb.wakes.Load() != 0 {
		t.Errorf("a model lookup woke the host")
	}
	res, body = do(t, "GET", url+"/v1/models/nope", "", "", "")
	if res.StatusCode != 200 || !strings.Contains(body, `"host":"server"`) {
		t.Errorf("GET /v1/models/nope: %d %s; want the default host's own answer", res.StatusCode, body)
	}
}
