package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
)

// The differential suite: every call the official clients make, sent once
// directly to a real Ollama (v0.17.4) and once through serve, compared on
// status, the headers that matter (Content-Type, CORS, Retry-After) and the
// body (keys and values; streams: chunk count and order). Values that
// differ between any two calls to one Ollama (times, durations, random ids)
// are masked on both sides. The only differences allowed are serve's
// documented additions (docs/serve-differences.md).

// diffEnv is two real Ollama servers behind serve: "server" (always on,
// tiny installed) and "pc" (on-demand, asleep until the first request for
// it; big installed; the route big* sends models there).
type diffEnv struct {
	reg       *realollama.Registry
	server    *realollama.Server
	pc        *realollama.Server
	serve     string // serve's base URL
	fb        *fakeBackends
	p         *Proxy
	heavyGGUF string
}

func startDiffEnv(t *testing.T) *diffEnv {
	start := time.Now()
	defer func() { t.Logf("phase: setup %s", time.Since(start).Round(time.Millisecond)) }()
	e := &diffEnv{reg: realollama.StartRegistry(t)}
	for _, m := range []string{"tiny", "big"} {
		if _, err := e.reg.AddModel(m, realollama.Tiny); err != nil {
			t.Fatal(err)
		}
	}
	e.server = realollama.Start(t, realollama.Options{Registry: e.reg})
	e.pc = realollama.Start(t, realollama.Options{Registry: e.reg})
	if err := e.reg.Install(e.server.ModelsDir, "tiny"); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Install(e.pc.ModelsDir, "big"); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.heavyGGUF, err = realollama.GGUF(realollama.Heavy); err != nil {
		t.Fatal(err)
	}
	e.fb = newFakeBackends()
	inv := testInventory(t, e.server.URL.String(), e.pc.URL.String())
	e.p = newProxy(t, Options{Inventory: inv, Backends: e.fb, StateDir: t.TempDir()})
	e.serve = serveProxy(t, e.p).URL
	return e
}

func (e *diffEnv) direct(host string) string {
	if host == "pc" {
		return e.pc.URL.String()
	}
	return e.server.URL.String()
}

// answer is one HTTP answer, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

const testOrigin = "http://localhost:3000"

func send(t *testing.T, base, method, path, body string, header ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Origin", testOrigin)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, base, path, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s%s: reading the answer: %v", method, base, path, err)
	}
	return answer{status: res.StatusCode, header: res.Header, body: b}
}

// volatileKeys hold values that differ between two identical calls to one
// Ollama: timestamps, durations, random ids.
var volatileKeys = map[string]bool{
	"created_at": true, "created": true, "total_duration": true, "load_duration": true,
	"prompt_eval_duration": true, "eval_duration": true, "expires_at": true,
	"id": true, "item_id": true, "response_id": true, "completed_at": true,
}

// layerStatus masks the layer lines of create, whose wording depends on
// whether the layer already existed on the host.
var layerStatus = regexp.MustCompile(`^(using existing|creating new) layer sha256:[0-9a-f]+$`)

// mask replaces volatile values and drops serve's documented "gpuctl"
// key.
func mask(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range x {
			switch {
			case k == "gpuctl":
			case volatileKeys[k]:
				out[k] = "<volatile>"
			default:
				out[k] = mask(val)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = mask(x[i])
		}
		return out
	case string:
		if layerStatus.MatchString(x) {
			return "<layer>"
		}
	}
	return v
}

// maskShow sorts the lines of show's "parameters" and "modelfile", which
// Ollama writes in map order (they differ between two calls to one
// server).
func maskShow(v any) any {
	if m, ok := v.(map[string]any); ok {
		for _, k := range []string{"parameters", "modelfile"} {
			if s, ok := m[k].(string); ok {
				lines := strings.Split(s, "\n")
				slices.Sort(lines)
				m[k] = strings.Join(lines, "\n")
			}
		}
	}
	return v
}

// chunks splits a body into its records: NDJSON lines, SSE events (each
// as its event name and masked data), or the one JSON value.
func chunks(t *testing.T, ct string, b []byte) []any {
	t.Helper()
	var out []any
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		for _, ev := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
			rec := map[string]any{}
			for _, line := range strings.Split(ev, "\n") {
				k, v, _ := strings.Cut(line, ": ")
				if k == "data" && v != "[DONE]" {
					var d any
					if err := json.Unmarshal([]byte(v), &d); err != nil {
						t.Fatalf("SSE data %q: %v", v, err)
					}
					rec[k] = mask(d)
				} else {
					rec[k] = v
				}
			}
			out = append(out, rec)
		}
	case strings.HasPrefix(ct, "application/json"), strings.HasPrefix(ct, "application/x-ndjson"):
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var d any
			if err := json.Unmarshal(line, &d); err != nil {
				t.Fatalf("JSON %q: %v", line, err)
			}
			out = append(out, maskShow(mask(d)))
		}
	default:
		out = append(out, string(b))
	}
	return out
}

// same compares a direct answer with serve's.
func same(t *testing.T, name string, direct, via answer) {
	t.Helper()
	if direct.status != via.status {
		t.Errorf("%s: status %d directly, %d through serve\ndirect: %s\nserve:  %s", name, direct.status, via.status, direct.body, via.body)
		return
	}
	for _, h := range []string{"Content-Type", "Access-Control-Allow-Origin", "Retry-After"} {
		if d, v := direct.header.Get(h), via.header.Get(h); d != v {
			t.Errorf("%s: %s %q directly, %q through serve", name, h, d, v)
		}
	}
	ct := direct.header.Get("Content-Type")
	dc, vc := chunks(t, ct, direct.body), chunks(t, ct, via.body)
	if len(dc) != len(vc) {
		t.Errorf("%s: %d chunks directly, %d through serve\ndirect: %s\nserve:  %s", name, len(dc), len(vc), direct.body, via.body)
		return
	}
	for i := range dc {
		if !reflect.DeepEqual(dc[i], vc[i]) {
			dm, dok := dc[i].(map[string]any)
			vm, vok := vc[i].(map[string]any)
			if !dok || !vok {
				t.Errorf("%s: chunk %d differs\ndirect: %v\nserve:  %v", name, i, dc[i], vc[i])
				continue
			}
			for k := range dm {
				if !reflect.DeepEqual(dm[k], vm[k]) {
					t.Errorf("%s: chunk %d: %q differs\ndirect: %v\nserve:  %v", name, i, k, dm[k], vm[k])
				}
			}
			for k := range vm {
				if _, ok := dm[k]; !ok {
					t.Errorf("%s: chunk %d: serve adds %q: %v", name, i, k, vm[k])
				}
			}
		}
	}
}

const opts = `"options":{"seed":42,"temperature":0}`

// TestDifferentialRealOllama compares every API call of the official
// clients directly on the real Ollama and through serve.
func TestDifferentialRealOllama(t *testing.T) {
	e := startDiffEnv(t)
	type call struct {
		host, method, path, body string
		// serveBody, when set, is sent to serve instead (a mutating call
		// uses other names there).
		serveBody string
	}
	calls := []call{
		// pc first: the first request wakes it (held, then answered).
		{"pc", "POST", "/api/chat", `{"model":"big","messages":[{"role":"user","content":"hi"}],` + opts + `}`, ""},
		{"pc", "POST", "/api/chat", `{"model":"BIG","messages":[{"role":"user","content":"hi"}],"stream":false,` + opts + `}`, ""},
		{"pc", "POST", "/api/generate", `{"model":"registry.ollama.ai/library/big:latest","prompt":"hi",` + opts + `}`, ""},
		{"pc", "POST", "/api/show", `{"model":"Big"}`, ""},
		{"pc", "GET", "/v1/models/big", "", ""},
		{"pc", "POST", "/v1/chat/completions", `{"model":"big","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":42,"temperature":0}`, ""},
		{"pc", "POST", "/api/copy", `{"source":"big","destination":"big-copy-direct"}`, `{"source":"big","destination":"big-copy-serve"}`},
		{"pc", "POST", "/api/delete", `{"model":"big-copy-direct"}`, `{"model":"big-copy-serve"}`},
		{"pc", "DELETE", "/api/delete", `{"model":"big-copy-direct"}`, `{"model":"big-copy-serve"}`},

		{"server", "GET", "/", "", ""},
		{"server", "HEAD", "/", "", ""},
		{"server", "GET", "/api/version", "", ""},
		{"server", "GET", "/nonexistent", "", ""},
		{"server", "POST", "/api/show", `{"model":"tiny"}`, ""},
		{"server", "POST", "/api/show", `{"model":"TINY"}`, ""},
		{"server", "POST", "/api/show", `{"model":"nope"}`, ""},
		{"server", "POST", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],` + opts + `}`, ""},
		{"server", "POST", "/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":false,` + opts + `}`, ""},
		{"server", "POST", "/api/chat", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, ""},
		{"server", "POST", "/api/generate", `{"model":"tiny","prompt":"hi",` + opts + `}`, ""},
		{"server", "POST", "/api/generate", `{"model":"library/tiny","prompt":"hi","stream":false,` + opts + `}`, ""},
		{"server", "POST", "/api/embed", `{"model":"tiny","input":"hi"}`, ""},
		{"server", "POST", "/api/embed", `{"model":"tiny","input":["hi","there"]}`, ""},
		{"server", "POST", "/api/embeddings", `{"model":"tiny","prompt":"hi"}`, ""},
		{"server", "POST", "/api/pull", `{"model":"tiny"}`, ""},
		{"server", "POST", "/api/pull", `{"model":"tiny","stream":false}`, ""},
		{"server", "POST", "/api/pull", `{"model":"no-such-model"}`, ""},
		{"server", "POST", "/api/copy", `{"source":"tiny","destination":"tiny-copy-direct"}`, `{"source":"tiny","destination":"tiny-copy-serve"}`},
		{"server", "POST", "/api/copy", `{"source":"nope","destination":"x"}`, ""},
		{"server", "DELETE", "/api/delete", `{"model":"tiny-copy-direct"}`, `{"model":"tiny-copy-serve"}`},
		{"server", "DELETE", "/api/delete", `{"model":"tiny-copy-direct"}`, `{"model":"tiny-copy-serve"}`},
		{"server", "POST", "/api/create", `{"model":"from-direct","from":"tiny","system":"be brief"}`, `{"model":"from-serve","from":"tiny","system":"be brief"}`},
		{"server", "POST", "/api/create", `{"model":"from-direct2","from":"tiny","stream":false}`, `{"model":"from-serve2","from":"tiny","stream":false}`},
		{"server", "POST", "/api/create", `{"model":"x","from":"nope"}`, ""},
		{"server", "HEAD", "/api/blobs/sha256:" + strings.Repeat("0", 64), "", ""},
		{"server", "POST", "/api/blobs/sha256:zz", "", ""},
		{"server", "GET", "/v1/models/tiny", "", ""},
		{"server", "GET", "/v1/models/nope", "", ""},
		{"server", "POST", "/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"seed":42,"temperature":0}`, ""},
		{"server", "POST", "/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":42,"temperature":0}`, ""},
		{"server", "POST", "/v1/chat/completions", `{"model":"Tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"seed":42,"temperature":0}`, ""},
		{"server", "POST", "/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, ""},
		{"server", "POST", "/v1/completions", `{"model":"tiny","prompt":"hi","seed":42,"temperature":0}`, ""},
		{"server", "POST", "/v1/completions", `{"model":"tiny","prompt":"hi","stream":true,"seed":42,"temperature":0}`, ""},
		{"server", "POST", "/v1/embeddings", `{"model":"tiny","input":"hi"}`, ""},
		{"server", "POST", "/v1/responses", `{"model":"tiny","input":"hi","temperature":0}`, ""},
		{"server", "POST", "/v1/responses", `{"model":"tiny","input":"hi","stream":true,"temperature":0}`, ""},
		{"server", "POST", "/v1/messages", `{"model":"tiny","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"temperature":0}`, ""},
		{"server", "POST", "/v1/messages", `{"model":"tiny","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0}`, ""},
	}
	for _, c := range calls {
		name := fmt.Sprintf("%s %s %s (%s)", c.method, c.path, c.body, c.host)
		d := send(t, e.direct(c.host), c.method, c.path, c.body)
		sb := c.body
		if c.serveBody != "" {
			sb = c.serveBody
		}
		start := time.Now()
		v := send(t, e.serve, c.method, c.path, sb)
		if c.serveBody != "" {
			// Answers that name the model name the other one.
			v.body = bytes.ReplaceAll(v.body, []byte("-serve"), []byte("-direct"))
		}
		same(t, name, d, v)
		t.Logf("%s: %s through serve", name, time.Since(start).Round(time.Millisecond))
	}

	// Listings: serve's merged list holds each host's own records (plus
	// the documented "gpuctl" key) for every model. (/api/ps asks only the
	// hosts seen up lately: on a slow machine the calls above take a while.)
	send(t, e.serve, "POST", "/api/show", `{"model":"big"}`)
	for _, path := range []string{"/api/tags", "/api/ps"} {
		var merged []any
		for _, host := range []string{"server", "pc"} {
			d := send(t, e.direct(host), "GET", path, "")
			var l struct{ Models []any }
			if err := json.Unmarshal(d.body, &l); err != nil {
				t.Fatal(err)
			}
			merged = append(merged, mask(map[string]any{"models": l.Models}).(map[string]any)["models"].([]any)...)
		}
		v := send(t, e.serve, "GET", path, "")
		var l struct{ Models []any }
		if err := json.Unmarshal(v.body, &l); err != nil {
			t.Fatal(err)
		}
		got := mask(map[string]any{"models": l.Models}).(map[string]any)["models"].([]any)
		if v.status != 200 || v.header.Get("Content-Type") != "application/json; charset=utf-8" || v.header.Get("Access-Control-Allow-Origin") != testOrigin {
			t.Errorf("GET %s through serve: %d %v", path, v.status, v.header)
		}
		if !sameSet(got, merged) {
			t.Errorf("GET %s: serve lists %v; the hosts list %v", path, got, merged)
		}
	}
	var ids []string
	for _, host := range []string{"server", "pc"} {
		d := send(t, e.direct(host), "GET", "/v1/models", "")
		ids = append(ids, modelIDs(t, d.body)...)
	}
	v := send(t, e.serve, "GET", "/v1/models", "")
	if got := modelIDs(t, v.body); !sameSet(anys(got), anys(ids)) || v.header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /v1/models: serve lists %v (%s), the hosts %v", got, v.header.Get("Content-Type"), ids)
	}

	// cp then run with no wait: the copy is routed at once.
	if a := send(t, e.serve, "POST", "/api/copy", `{"source":"big","destination":"bigcopy"}`); a.status != 200 {
		t.Fatalf("copy through serve: %d %s", a.status, a.body)
	}
	if a := send(t, e.serve, "POST", "/api/chat", `{"model":"bigcopy","messages":[{"role":"user","content":"hi"}],"stream":false}`); a.status != 200 {
		t.Errorf("chat for the copy right after cp: %d %s", a.status, a.body)
	}

	t.Logf("phase: calls done")
	// Create from an uploaded GGUF over max_body (64 MiB) for the
	// on-demand host, while it sleeps.
	e.fb.setUp("pc", false)
	e.p.forgetUp(t.Context(), "pc", time.Now().Add(time.Hour))
	for _, base := range []string{e.pc.URL.String(), e.serve} {
		u, _ := url.Parse(base)
		c := api.NewClient(u, http.DefaultClient)
		name := "big:heavy-direct"
		if base == e.serve {
			name = "big:heavy-serve"
		}
		start := time.Now()
		if err := createFromFile(t, c, name, e.heavyGGUF); err != nil {
			t.Errorf("create %s from a %s GGUF via %s: %v", name, fileSize(e.heavyGGUF), base, err)
		}
		t.Logf("phase: create %s: %s", name, time.Since(start).Round(time.Millisecond))
	}
	if e.fb.wakes.Load() != 2 {
		t.Errorf("wakes: %d, want 2 (the first pc request, and the create)", e.fb.wakes.Load())
	}
	if a := send(t, e.pc.URL.String(), "POST", "/api/show", `{"model":"big:heavy-serve"}`); a.status != 200 {
		t.Errorf("the model created through serve is not on pc: %d %s", a.status, a.body)
	}
}

// createFromFile does what `ollama create` does with a GGUF: POST the blob,
// then create naming it.
func createFromFile(t *testing.T, c *api.Client, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	digest := "sha256:" + sha256File(t, path)
	if err := c.CreateBlob(t.Context(), digest, f); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	var last string
	err = c.Create(t.Context(), &api.CreateRequest{Model: name, Files: map[string]string{filepath.Base(path): digest}, Template: realollama.Template},
		func(p api.ProgressResponse) error { last = p.Status; return nil })
	if err == nil && last != "success" {
		err = fmt.Errorf("last status %q", last)
	}
	return err
}

func sameSet(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	used := make([]bool, len(b))
outer:
	for _, x := range a {
		for j, y := range b {
			if !used[j] && reflect.DeepEqual(x, y) {
				used[j] = true
				continue outer
			}
		}
		return false
	}
	return true
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i]
	}
	return out
}

func modelIDs(t *testing.T, b []byte) []string {
	var l struct {
		Data []struct{ ID string }
	}
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var ids []string
	for _, m := range l.Data {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%d MiB", fi.Size()>>20)
}

// cli runs the real ollama CLI (the server binary) against base.
func cli(t *testing.T, base string, args ...string) (string, error) {
	t.Helper()
	bin := realollama.Require(t)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), "OLLAMA_HOST="+base, "HOME="+t.TempDir(), "NO_COLOR=1", "TERM=dumb")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("ollama %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestCLIThroughServe runs the real ollama CLI with OLLAMA_HOST set to
// serve: list, ps, show, run on both hosts (the on-demand one asleep), pull,
// cp then run with no wait, rm, stop, and create of a GGUF over 64 MiB for
// the sleeping on-demand host.
func TestCLIThroughServe(t *testing.T) {
	e := startDiffEnv(t)
	serve := e.serve
	direct := e.server.URL.String()
	ok := func(base string, args ...string) string {
		t.Helper()
		out, err := cli(t, base, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// show's tables list parameters in map order, padded to the widest
	// cell: compare the cells, line by line, in sorted order.
	sortedLines := func(s string) string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		for i := range l {
			l[i] = strings.Join(strings.Fields(l[i]), " ")
		}
		slices.Sort(l)
		return strings.Join(l, "\n")
	}

	if out := ok(serve, "run", "big", "hi"); strings.TrimSpace(out) == "" {
		t.Errorf("ollama run big (the sleeping host) printed nothing")
	}
	if e.fb.wakes.Load() != 1 {
		t.Errorf("wakes after run big: %d, want 1", e.fb.wakes.Load())
	}
	if out := ok(serve, "run", "tiny", "hi"); strings.TrimSpace(out) == "" {
		t.Errorf("ollama run tiny printed nothing")
	}
	list := ok(serve, "list")
	for _, m := range []string{"tiny:latest", "big:latest"} {
		if !strings.Contains(list, m) {
			t.Errorf("ollama list through serve lacks %s:\n%s", m, list)
		}
	}
	ok(serve, "show", "big") // pc seen up lately: /api/ps asks only such hosts
	if ps := ok(serve, "ps"); !strings.Contains(ps, "tiny:latest") || !strings.Contains(ps, "big:latest") {
		t.Errorf("ollama ps through serve:\n%s", ps)
	}
	if d, v := ok(direct, "show", "tiny"), ok(serve, "show", "tiny"); sortedLines(d) != sortedLines(v) {
		t.Errorf("ollama show tiny: directly\n%s\nthrough serve\n%s", d, v)
	}
	if d, v := ok(direct, "show", "--modelfile", "tiny"), ok(serve, "show", "--modelfile", "tiny"); sortedLines(d) != sortedLines(v) {
		t.Errorf("ollama show --modelfile tiny: directly\n%s\nthrough serve\n%s", d, v)
	}
	ok(serve, "pull", "tiny")
	if _, err := cli(t, serve, "pull", "no-such-model"); err == nil {
		t.Errorf("ollama pull no-such-model through serve succeeded")
	}

	// cp then run at once: the copy lives on pc and is routed there.
	ok(serve, "cp", "big", "bigcopy")
	if out := ok(serve, "run", "bigcopy", "hi"); strings.TrimSpace(out) == "" {
		t.Errorf("ollama run bigcopy printed nothing")
	}
	if a := send(t, e.pc.URL.String(), "POST", "/api/show", `{"model":"bigcopy"}`); a.status != 200 {
		t.Errorf("bigcopy is not on pc: %d %s", a.status, a.body)
	}
	ok(serve, "rm", "bigcopy")
	if a := send(t, e.pc.URL.String(), "POST", "/api/show", `{"model":"bigcopy"}`); a.status != 404 {
		t.Errorf("bigcopy still on pc after rm: %d", a.status)
	}
	if strings.Contains(ok(serve, "list"), "bigcopy") {
		t.Errorf("ollama list still shows bigcopy after rm")
	}
	ok(serve, "stop", "tiny")
	if ps := ok(serve, "ps"); strings.Contains(ps, "tiny:latest") {
		t.Errorf("tiny still loaded after ollama stop:\n%s", ps)
	}

	// create FROM a model on the default host.
	dir := t.TempDir()
	mf := filepath.Join(dir, "Modelfile")
	os.WriteFile(mf, []byte("FROM tiny\nSYSTEM be brief\n"), 0o644)
	ok(serve, "create", "tiny-brief", "-f", mf)
	if a := send(t, direct, "POST", "/api/show", `{"model":"tiny-brief"}`); a.status != 200 {
		t.Errorf("tiny-brief is not on server: %d %s", a.status, a.body)
	}

	// create FROM a model on the on-demand host goes where that model is.
	os.WriteFile(mf, []byte("FROM big\nSYSTEM be brief\n"), 0o644)
	ok(serve, "create", "brief", "-f", mf)
	if a := send(t, e.pc.URL.String(), "POST", "/api/show", `{"model":"brief"}`); a.status != 200 {
		t.Errorf("brief (FROM big) is not on pc: %d %s", a.status, a.body)
	}
	if out := ok(serve, "run", "brief", "hi"); strings.TrimSpace(out) == "" {
		t.Errorf("ollama run brief printed nothing")
	}

	// create of a GGUF over 64 MiB for the on-demand host, asleep.
	if fi, err := os.Stat(e.heavyGGUF); err != nil || fi.Size() <= 64<<20 {
		t.Fatalf("the heavy GGUF must be over max_body (64 MiB): %v %v", fi, err)
	}
	e.fb.setUp("pc", false)
	e.p.forgetUp(t.Context(), "pc", time.Now().Add(time.Hour))
	os.WriteFile(mf, []byte("FROM "+e.heavyGGUF+"\nTEMPLATE \"\"\""+realollama.Template+"\"\"\"\n"), 0o644)
	ok(serve, "create", "big:cli", "-f", mf)
	if e.fb.wakes.Load() != 2 {
		t.Errorf("wakes: %d, want 2 (run big, then the create)", e.fb.wakes.Load())
	}
	if a := send(t, e.pc.URL.String(), "POST", "/api/show", `{"model":"big:cli"}`); a.status != 200 {
		t.Errorf("big:cli is not on pc: %d %s", a.status, a.body)
	}
	if !strings.Contains(ok(serve, "list"), "big:cli") {
		t.Errorf("ollama list lacks the model just created")
	}
}

// TestOfficialNodeClients runs the calls of the official ollama and openai
// npm packages (testdata/node/clients.mjs) directly against each real
// Ollama and through serve, and compares what the clients returned.
func TestOfficialNodeClients(t *testing.T) {
	node, dir := nodeClients(t)
	e := startDiffEnv(t)
	run := func(base, model string) map[string]json.RawMessage {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), node, "clients.mjs", base, model)
		cmd.Dir = dir
		var errb bytes.Buffer
		cmd.Stderr = &errb
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("node clients.mjs %s %s: %v\n%s", base, model, err, errb.String())
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("node printed %q: %v", b, err)
		}
		return out
	}
	// big first: serve wakes the on-demand host for it.
	for _, c := range []struct{ host, model string }{{"pc", "big"}, {"server", "tiny"}} {
		via := run(e.serve, c.model)
		d := run(e.direct(c.host), c.model)
		if len(d) < 15 {
			t.Fatalf("clients.mjs made %d calls", len(d))
		}
		for name, dv := range d {
			if !bytes.Equal(dv, via[name]) {
				t.Errorf("%s (%s on %s): directly\n%s\nthrough serve\n%s", name, c.model, c.host, dv, via[name])
			}
		}
		if strings.Contains(string(d["ollama.chat"]), `"error"`) || !strings.Contains(string(d["ollama.chat"]), `"content"`) {
			t.Errorf("ollama.chat %s did not answer: %s", c.model, d["ollama.chat"])
		}
	}
	if e.fb.wakes.Load() != 1 {
		t.Errorf("wakes: %d, want 1", e.fb.wakes.Load())
	}
}
