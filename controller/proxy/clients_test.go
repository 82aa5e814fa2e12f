package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
)

// realBackends starts two ollamatest servers: "server" with tiny installed
// and the sleeping "pc" with big installed, and a proxy in front, on
// loopback. pc wakes in 200 ms.
func realBackends(t *testing.T) (*httptest.Server, *fakeBackends, *ollamatest.Server) {
	cat := []ollamatest.Model{{Name: "tiny"}, {Name: "big"}}
	server := ollamatest.Start(t, ollamatest.Config{Catalogue: cat, ChunkDelay: 5 * time.Millisecond})
	pc := ollamatest.Start(t, ollamatest.Config{Catalogue: cat, ChunkDelay: 5 * time.Millisecond})
	if err := server.Install("tiny"); err != nil {
		t.Fatal(err)
	}
	if err := pc.Install("big"); err != nil {
		t.Fatal(err)
	}
	fb := newFakeBackends()
	fb.wakeTime = 200 * time.Millisecond
	p := newProxy(t, Options{Inventory: testInventory(t, server.URL, pc.URL), Backends: fb})
	return serveProxy(t, p), fb, pc
}

// TestOllamaGoClient streams api.Client.Chat through the proxy, once to the
// always-on host and once to the sleeping one (held through its wake).
func TestOllamaGoClient(t *testing.T) {
	ts, fb, pc := realBackends(t)
	u, _ := url.Parse(ts.URL)
	client := api.NewClient(u, testClient(t))
	for _, model := range []string{"tiny", "big"} {
		var chunks int
		var text strings.Builder
		var done bool
		err := client.Chat(t.Context(), &api.ChatRequest{
			Model:    model,
			Messages: []api.Message{{Role: "user", Content: "hello"}},
		}, func(r api.ChatResponse) error {
			chunks++
			text.WriteString(r.Message.Content)
			done = done || r.Done
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if chunks < 3 || !done || !strings.HasPrefix(text.String(), "Hello from ") {
			t.Errorf("%s: %d chunks, done %v, text %q; want a stream of several chunks", model, chunks, done, text.String())
		}
	}
	if fb.wakes.Load() != 1 || pc.Requests("POST /api/chat") != 1 {
		t.Errorf("wakes %d, pc chat requests %d; want 1 and 1", fb.wakes.Load(), pc.Requests("POST /api/chat"))
	}
	var list *api.ListResponse
	list, err := client.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Models {
		names = append(names, m.Name)
	}
	if len(names) != 2 {
		t.Errorf("merged list %v, want tiny and big", names)
	}
}

// TestOpenAINodeClient streams a chat completion with the official openai
// npm package through the proxy: to the always-on host, to the sleeping
// host (held through its wake), and from a backend that dies mid-stream
// (the client must report the error, not hang or return a silent partial).
// It needs node; only outside CI may it skip when node is missing.
func TestOpenAINodeClient(t *testing.T) {
	node, dir := nodeClients(t)
	ts, fb, _ := realBackends(t)

	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}`+"\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer dying.Close()
	dp := newProxy(t, Options{Inventory: testInventory(t, dying.URL, "http://127.0.0.1:1")})
	dts := serveProxy(t, dp)

	run := func(base, model string) (out struct {
		Chunks int
		Text   string
		Finish *string
		Error  *string
	}) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "stream.mjs", base+"/v1", model)
		cmd.Dir = dir
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("node stream.mjs %s: %v", model, err)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("node printed %q: %v", b, err)
		}
		return out
	}
	for _, model := range []string{"tiny", "big"} {
		out := run(ts.URL, model)
		if out.Error != nil || out.Chunks < 3 || !strings.HasPrefix(out.Text, "Hello from ") || out.Finish == nil || *out.Finish != "stop" {
			t.Errorf("%s: openai client saw %+v; want a whole stream", model, out)
		}
	}
	if fb.wakes.Load() != 1 {
		t.Errorf("wakes = %d, want 1", fb.wakes.Load())
	}
	out := run(dts.URL, "tiny")
	if out.Error == nil || !strings.Contains(*out.Error, "broke off") || out.Text != "Hel" {
		t.Errorf("broken stream: openai client saw %+v; want the text so far and an error naming the break", out)
	}
}

// nodeClients returns node and the directory of the pinned official npm
// clients (testdata/node: openai, ollama), installing them from
// package-lock.json when they are missing. Only outside CI may it skip
// when node or the registry is missing.
func nodeClients(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed; the official client tests must run in CI (apt-get install nodejs npm)")
		}
		t.Skip("node is not installed")
	}
	dir, _ = filepath.Abs(filepath.Join("testdata", "node"))
	for _, pkg := range []string{"openai", "ollama"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
			}
			t.Skipf("npm ci in %s failed (offline?): %v", dir, err)
		}
		break
	}
	return node, dir
}
