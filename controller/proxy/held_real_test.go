package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
)

// slowWake is the controller as the proxy sees it: the on-demand host
// "wakes" in two reported phases, step apart (real time: real clients
// and servers run here).
type slowWake struct {
	*fakeBackends
	step time.Duration
}

func (s slowWake) WakeProgress(ctx context.Context, host string, report func(string)) error {
	for _, text := range []string{"[   0s] boot: magic packets sent; waiting for SSH", "[   2s] checks: running checks"} {
		report(text)
		select {
		case <-time.After(s.step):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.setUp(host, true)
	return nil
}

// chunkText is one streamed chunk as a client saw it.
type chunkText struct{ Content, Progress string }

func runProgressClients(t *testing.T, base, model string, only ...string) (ollama, openai []chunkText) {
	t.Helper()
	node, dir := nodeClients(t)
	cmd := exec.CommandContext(t.Context(), node, append([]string{"progress.mjs", base, model}, only...)...)
	cmd.Dir = dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("node progress.mjs %s: %v\n%s", base, err, errb.String())
	}
	var out struct{ Ollama, Openai []chunkText }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("node printed %q: %v", b, err)
	}
	return out.Ollama, out.Openai
}

// answerOf joins the answer text and checks that no progress follows the
// first answer token; it returns the answer and how many progress chunks
// came first.
func answerOf(t *testing.T, client string, chunks []chunkText) (string, int) {
	t.Helper()
	var answer strings.Builder
	progress := 0
	for _, c := range chunks {
		if c.Progress != "" {
			if answer.Len() > 0 {
				t.Errorf("%s: progress %q after the first answer token", client, c.Progress)
			}
			progress++
		}
		answer.WriteString(c.Content)
	}
	return answer.String(), progress
}

// With the real Ollama and the official ollama and openai clients: a
// streamed chat for a model on a sleeping host shows the wake's progress
// before the first answer token, and the answer is exactly what the model
// generates when asked directly.
func TestProgressWithOfficialClients(t *testing.T) {
	e := startDiffEnv(t)
	directOllama, directOpenAI := runProgressClients(t, e.pc.URL.String(), "big")
	want, n := answerOf(t, "direct ollama", directOllama)
	wantOAI, _ := answerOf(t, "direct openai", directOpenAI)
	if want == "" || n != 0 {
		t.Fatalf("direct answer %q with %d progress chunks", want, n)
	}

	fb := newFakeBackends()
	inv := testInventory(t, e.server.URL.String(), e.pc.URL.String())
	// Trust an Up answer only briefly, so the host "sleeps" again for the
	// openai client's request.
	p := newProxy(t, Options{Inventory: inv, Backends: slowWake{fb, 1500 * time.Millisecond}, StateDir: t.TempDir(), StateTTL: time.Millisecond})
	fb.setUp("pc", false)
	base := serveProxy(t, p).URL
	viaOllama, _ := runProgressClients(t, base, "big", "ollama")
	got, n := answerOf(t, "ollama via serve", viaOllama)
	if got != want || n < 3 {
		t.Errorf("ollama client through serve: answer %q (want %q), %d progress chunks (want the wake's phases)", got, want, n)
	}
	t.Logf("ollama client saw %d progress chunks, then %q", n, got)
	fb.setUp("pc", false) // asleep again
	_, viaOpenAI := runProgressClients(t, base, "big", "openai")
	got, n = answerOf(t, "openai via serve", viaOpenAI)
	if got != wantOAI || n < 3 {
		t.Errorf("openai client through serve: answer %q (want %q), %d progress chunks", got, wantOAI, n)
	}
	t.Logf("openai client saw %d progress chunks, then %q", n, got)
}

// With progress = "off", a chat held for a wake streams exactly the bytes
// the host's Ollama sent.
func TestProgressOffIsByteIdentical(t *testing.T) {
	realollama.Require(t)
	e := startDiffEnv(t)
	var mu sync.Mutex
	var sent bytes.Buffer
	target := e.pc.URL
	rec := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(res *http.Response) error {
			if res.Request.URL.Path == "/api/chat" {
				res.Body = struct {
					io.Reader
					io.Closer
				}{io.TeeReader(res.Body, lockedWriter{&mu, &sent}), res.Body}
			}
			return nil
		},
		FlushInterval: -1,
	}
	recorder := httptest.NewServer(rec)
	defer recorder.Close()

	fb := newFakeBackends()
	inv := testInventory(t, e.server.URL.String(), recorder.URL)
	inv.Serve.Progress = ProgressOff
	p := newProxy(t, Options{Inventory: inv, Backends: slowWake{fb, 1500 * time.Millisecond}, StateDir: t.TempDir()})
	base := serveProxy(t, p).URL
	res, err := http.Post(base+"/api/chat", "application/json",
		strings.NewReader(`{"model":"big","messages":[{"role":"user","content":"hi"}],"options":{"seed":42,"temperature":0}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.StatusCode != 200 || len(got) == 0 || !bytes.Equal(got, sent.Bytes()) {
		t.Errorf("status %d; through serve %d bytes, the host's Ollama sent %d:\n%s\n----\n%s", res.StatusCode, len(got), sent.Len(), got, sent.Bytes())
	}
	if fb.wakes.Load() != 0 && !bytes.Contains(got, []byte(`"done":true`)) {
		t.Errorf("incomplete stream: %s", got)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
