package ollamatest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/sshexec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, s *Server, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := s.HTTPClient().Post(s.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return resp, b
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	return fixtures.Read(t, name)
}

// splitStatus splits a capture "BODY\nHTTP NNN\n" into body and status line.
func splitStatus(b []byte) (body, status string) {
	s := strings.TrimRight(string(b), "\n")
	i := strings.LastIndex(s, "\n")
	return s[:i], s[i+1:]
}

// The missing-model stream has no variable parts: it must match the real
// capture byte for byte.
func TestPullMissingMatchesRealStream(t *testing.T) {
	s := Start(t, Config{})
	resp, body := post(t, s, "/api/pull", `{"model":"127.0.0.1:15000/library/nope:latest","insecure":true}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if want := fixture(t, "ollama_api_pull_stream_real_missing-model_v0.17.4.ndjson"); !bytes.Equal(body, want) {
		t.Errorf("stream\n%s\nwant\n%s", body, want)
	}
}

func TestPullNoStreamMatchesReal(t *testing.T) {
	s := Start(t, Config{Catalogue: []Model{{Name: "tiny"}}})
	for _, tc := range []struct{ model, file string }{
		{"tiny", "ollama_api_pull_nostream_real_v0.17.4.txt"},
		{"nope", "ollama_api_pull_nostream_missing_real_v0.17.4.txt"},
	} {
		resp, body := post(t, s, "/api/pull", `{"model":"`+tc.model+`","stream":false}`)
		wantBody, wantStatus := splitStatus(fixture(t, tc.file))
		if got := strings.TrimSpace(string(body)); got != wantBody {
			t.Errorf("%s: body %s, want %s", tc.model, got, wantBody)
		}
		if got := "HTTP " + resp.Status[:3]; got != wantStatus {
			t.Errorf("%s: %s, want %s", tc.model, got, wantStatus)
		}
	}
}

type line struct {
	Status    string `json:"status"`
	Digest    string `json:"digest"`
	Total     *int64 `json:"total"`
	Completed *int64 `json:"completed"`
	Error     string `json:"error"`
}

func lines(t *testing.T, b []byte) []line {
	t.Helper()
	var out []line
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// shape reduces a stream to its status sequence, with one entry per layer.
func shape(ls []line) []string {
	var out []string
	for _, l := range ls {
		s := l.Status
		if l.Digest != "" {
			s = "pulling <digest[7:19]>"
			if l.Status != "pulling "+l.Digest[7:19] {
				s = "BAD " + l.Status
			}
		}
		if len(out) > 0 && out[len(out)-1] == s && l.Digest != "" {
			continue
		}
		out = append(out, s)
	}
	return out
}

func TestPullStreamShapeMatchesReal(t *testing.T) {
	// The real capture: a 2 MiB model layer and a 155-byte config.
	s := Start(t, Config{Catalogue: []Model{{Name: "tiny", Layers: []Layer{{Size: 2 << 20}}}}})
	resp, body := post(t, s, "/api/pull", `{"model":"tiny"}`)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	got, want := lines(t, body), lines(t, fixture(t, "ollama_api_pull_stream_real_local-registry_v0.17.4.ndjson"))
	if g, w := shape(got), shape(want); !slices.Equal(g, w) {
		t.Errorf("shape %q, want %q", g, w)
	}
	// Every layer line has total; completed is omitted while 0 and grows.
	var prev int64 = -1
	var digest string
	for _, l := range got {
		if l.Digest == "" {
			continue
		}
		if l.Total == nil {
			t.Fatalf("line without total: %+v", l)
		}
		c := int64(0)
		if l.Completed != nil {
			c = *l.Completed
			if c == 0 {
				t.Errorf("completed:0 should be omitted")
			}
		}
		if l.Digest == digest && c < prev {
			t.Errorf("completed went back: %d after %d", c, prev)
		}
		digest, prev = l.Digest, c
	}
	m, _ := s.ManifestOf("tiny")
	for _, b := range m.Blobs {
		fi, err := os.Stat(BlobPath(s.Dir(), b.Digest))
		if err != nil || fi.Size() != b.Size {
			t.Errorf("blob %s: %v", b.Digest, err)
		}
		if d, _ := fileDigest(BlobPath(s.Dir(), b.Digest)); d != b.Digest {
			t.Errorf("blob content digest %s, want %s", d, b.Digest)
		}
	}
	raw, err := os.ReadFile(ManifestPath(s.Dir(), "tiny"))
	if err != nil || !bytes.Equal(raw, m.Raw) {
		t.Errorf("manifest on disk: %v", err)
	}
	if !strings.HasSuffix(filepath.ToSlash(ManifestPath(s.Dir(), "tiny")), "manifests/registry.ollama.ai/library/tiny/latest") {
		t.Errorf("manifest path %s", ManifestPath(s.Dir(), "tiny"))
	}

	// A second pull is all cache hits: one line per layer with total == completed.
	_, body = post(t, s, "/api/pull", `{"model":"tiny"}`)
	for _, l := range lines(t, body) {
		if l.Digest != "" && (l.Completed == nil || *l.Completed != *l.Total) {
			t.Errorf("cache hit line %+v", l)
		}
	}
}

func TestTagsMatchRealShape(t *testing.T) {
	s := Start(t, Config{Catalogue: []Model{{Name: "127.0.0.1:15000/library/tiny:latest"}, {Name: "other:7b"}}})
	for _, n := range []string{"127.0.0.1:15000/library/tiny", "other:7b"} {
		if err := s.Install(n); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.HTTPClient().Get(s.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got, want map[string][]map[string]any
	json.NewDecoder(resp.Body).Decode(&got)
	json.Unmarshal(fixture(t, "ollama_api_tags_real_local_v0.17.4.json"), &want)
	keys := func(m map[string]any) []string {
		var k []string
		for x := range m {
			k = append(k, x)
		}
		slices.Sort(k)
		return k
	}
	if len(got["models"]) != 2 {
		t.Fatalf("models: %v", got)
	}
	if g, w := keys(got["models"][0]), keys(want["models"][0]); !slices.Equal(g, w) {
		t.Errorf("keys %v, want %v", g, w)
	}
	names := []string{got["models"][0]["name"].(string), got["models"][1]["name"].(string)}
	slices.Sort(names)
	if !slices.Equal(names, []string{"127.0.0.1:15000/library/tiny:latest", "other:7b"}) {
		t.Errorf("names %v", names)
	}
	for _, m := range got["models"] {
		man, _ := s.ManifestOf(m["name"].(string))
		if m["digest"] != man.Digest || int64(m["size"].(float64)) != man.Size {
			t.Errorf("%v: digest/size %v %v, want %v %v", m["name"], m["digest"], m["size"], man.Digest, man.Size)
		}
	}
}

func TestInterruptedPullResumes(t *testing.T) {
	s := Start(t, Config{ChunkSize: 1000, Catalogue: []Model{{Name: "tiny", Layers: []Layer{{Size: 10000}}}}})
	s.SetFault("tiny", PullFault{AfterBytes: 4500, Times: 1})
	c := s.Client()
	var last api.ProgressResponse
	err := c.Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(p api.ProgressResponse) error { last = p; return nil })
	// The Ollama client reports a cut stream as success; the last line tells.
	if err != nil || last.Status == "success" || last.Completed != 4500 {
		t.Fatalf("err %v, last %+v", err, last)
	}
	m, _ := s.ManifestOf("tiny")
	fi, err := os.Stat(BlobPath(s.Dir(), m.Blobs[0].Digest) + "-partial")
	if err != nil || fi.Size() != 4500 {
		t.Fatalf("partial: %v %v", fi, err)
	}
	var first *api.ProgressResponse
	err = c.Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(p api.ProgressResponse) error {
		if first == nil && p.Digest != "" {
			first = &p
		}
		last = p
		return nil
	})
	if err != nil || last.Status != "success" || first.Completed != 4500 {
		t.Fatalf("resume: err %v, first %+v, last %+v", err, first, last)
	}
	if _, err := os.Stat(BlobPath(s.Dir(), m.Blobs[0].Digest) + "-partial"); !os.IsNotExist(err) {
		t.Errorf("partial left behind: %v", err)
	}
	if d, _ := fileDigest(BlobPath(s.Dir(), m.Blobs[0].Digest)); d != m.Blobs[0].Digest {
		t.Errorf("resumed blob digest %s", d)
	}
}

func TestFaults(t *testing.T) {
	s := Start(t, Config{Catalogue: []Model{{Name: "tiny"}}})
	s.SetFault("tiny", PullFault{Error: "boom", BeforeStream: true, Times: 1})
	resp, body := post(t, s, "/api/pull", `{"model":"tiny"}`)
	if resp.StatusCode != 500 || strings.TrimSpace(string(body)) != `{"error":"boom"}` {
		t.Errorf("before stream: %s %s", resp.Status, body)
	}
	s.SetFault("tiny", PullFault{Error: "disk full", AfterBytes: 100})
	resp, body = post(t, s, "/api/pull", `{"model":"tiny"}`)
	ls := lines(t, body)
	if resp.StatusCode != 200 || ls[len(ls)-1].Error != "disk full" {
		t.Errorf("mid stream: %s %s", resp.Status, body)
	}
	err := s.Client().Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(api.ProgressResponse) error { return nil })
	if err == nil || err.Error() != "disk full" {
		t.Errorf("client error %v", err)
	}
	s.SetFault("tiny", PullFault{})
	if err := s.Client().Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(api.ProgressResponse) error { return nil }); err != nil {
		t.Errorf("after clearing: %v", err)
	}
	if n := len(s.PullRequests()); n != 4 || s.Requests("POST /api/pull") != 4 {
		t.Errorf("pull requests %d, counted %d", n, s.Requests("POST /api/pull"))
	}
}

func TestSlowPullUsesSleep(t *testing.T) {
	var mu sync.Mutex
	var slept time.Duration
	s := Start(t, Config{
		ChunkSize: 1024, BytesPerSecond: 1024,
		Catalogue: []Model{{Name: "tiny", Layers: []Layer{{Size: 4096}}}},
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			slept += d
			mu.Unlock()
			return nil
		},
	})
	if err := s.Client().Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(api.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	m, _ := s.ManifestOf("tiny")
	want := time.Duration(float64(m.Size) / 1024 * float64(time.Second))
	if slept < want-time.Millisecond || slept > want+time.Millisecond {
		t.Errorf("slept %v, want %v", slept, want)
	}
}

func TestWriteDirOverride(t *testing.T) {
	other := t.TempDir()
	s := Start(t, Config{WriteDir: other, Catalogue: []Model{{Name: "tiny"}}})
	if err := s.Client().Pull(context.Background(), &api.PullRequest{Model: "tiny"}, func(api.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ManifestPath(other, "tiny")); err != nil {
		t.Errorf("not in WriteDir: %v", err)
	}
	if _, err := os.Stat(ManifestPath(s.Dir(), "tiny")); !os.IsNotExist(err) {
		t.Errorf("in Dir: %v", err)
	}
}

func TestGenerateUnloadAndPs(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 33, 41, 0, time.UTC)
	s := Start(t, Config{Now: func() time.Time { return now }, Catalogue: []Model{{Name: "127.0.0.1:15000/library/tiny:latest", VRAM: 1234}}})
	if err := s.Install("127.0.0.1:15000/library/tiny:latest"); err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	var chunks []string
	if err := c.Generate(context.Background(), &api.GenerateRequest{Model: "127.0.0.1:15000/library/tiny:latest", Prompt: "hi"},
		func(g api.GenerateResponse) error { chunks = append(chunks, g.Response); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(chunks, "") != "Hello from 127.0.0.1:15000/library/tiny:latest" {
		t.Errorf("chunks %q", chunks)
	}
	ps, err := c.ListRunning(context.Background())
	if err != nil || len(ps.Models) != 1 || ps.Models[0].SizeVRAM != 1234 || !ps.Models[0].ExpiresAt.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("ps %+v %v", ps, err)
	}
	resp, body := post(t, s, "/api/generate", `{"model":"127.0.0.1:15000/library/tiny:latest","keep_alive":0}`)
	wantBody, wantStatus := splitStatus(fixture(t, "ollama_api_generate_unload_fake-weights_real_v0.17.4.txt"))
	var got, want map[string]any
	json.Unmarshal(body, &got)
	json.Unmarshal([]byte(wantBody), &want)
	got["created_at"], want["created_at"] = nil, nil
	if !reflect.DeepEqual(got, want) || "HTTP "+resp.Status[:3] != wantStatus {
		t.Errorf("unload %s %v, want %v %s", resp.Status, got, want, wantStatus)
	}
	resp2, err := s.HTTPClient().Get(s.URL + "/api/ps")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if strings.TrimSpace(string(b)) != strings.TrimSpace(string(fixture(t, "ollama_api_ps_real_empty_v0.17.4.json"))) {
		t.Errorf("ps after unload: %s", b)
	}
	resp, body = post(t, s, "/api/generate", `{"model":"nope","keep_alive":0}`)
	if resp.StatusCode != 404 || strings.TrimSpace(string(body)) != `{"error":"model 'nope' not found"}` {
		t.Errorf("missing: %s %s", resp.Status, body)
	}
}

func TestChatAndOpenAI(t *testing.T) {
	s := Start(t, Config{Catalogue: []Model{{Name: "tiny", Reply: []string{"a", "b", "c"}}}})
	s.Install("tiny")
	var got string
	var doneReason string
	err := s.Client().Chat(context.Background(), &api.ChatRequest{Model: "tiny", Messages: []api.Message{{Role: "user", Content: "x"}}},
		func(c api.ChatResponse) error { got += c.Message.Content; doneReason = c.DoneReason; return nil })
	if err != nil || got != "abc" || doneReason != "stop" {
		t.Errorf("chat %q %q %v", got, doneReason, err)
	}
	resp, body := post(t, s, "/v1/chat/completions", `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	events := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
	if events[len(events)-1] != "data: [DONE]" || len(events) != 5 {
		t.Fatalf("events %q", events)
	}
	var text string
	for _, e := range events[:4] {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        struct{ Content string } `json:"delta"`
				FinishReason *string                  `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(e, "data: ")), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("event %q: %v", e, err)
		}
		text += c.Choices[0].Delta.Content
	}
	if text != "abc" {
		t.Errorf("text %q", text)
	}
	resp, body = post(t, s, "/v1/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"content":"abc"`) {
		t.Errorf("non-stream %s %s", resp.Status, body)
	}
	r, err := s.HTTPClient().Get(s.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(b), `"id":"tiny:latest"`) {
		t.Errorf("models %s", b)
	}
}

func TestChunkDelayAndCancel(t *testing.T) {
	stopped := make(chan error, 1)
	var calls int
	var mu sync.Mutex
	s := Start(t, Config{ChunkDelay: time.Second, Catalogue: []Model{{Name: "tiny"}},
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if d != time.Second {
				t.Errorf("delay %v", d)
			}
			if n == 2 {
				<-ctx.Done() // the client went away
				stopped <- ctx.Err()
				return ctx.Err()
			}
			return nil
		}})
	s.Install("tiny")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []string
	s.Client().Generate(ctx, &api.GenerateRequest{Model: "tiny", Prompt: "x"}, func(g api.GenerateResponse) error {
		got = append(got, g.Response)
		cancel()
		return nil
	})
	if len(got) != 1 || got[0] != "Hello" {
		t.Errorf("got %q", got)
	}
	if err := <-stopped; err == nil {
		t.Error("generation did not stop")
	}
}

func TestMiscEndpoints(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	s := Start(t, Config{Version: "9.9.9", Catalogue: []Model{{Name: "tiny"}},
		OnRequest: func(r *http.Request) { mu.Lock(); seen = append(seen, r.URL.Path); mu.Unlock() }})
	c := s.Client()
	if v, err := c.Version(context.Background()); err != nil || v != "9.9.9" {
		t.Errorf("version %q %v", v, err)
	}
	if err := c.Heartbeat(context.Background()); err != nil {
		t.Errorf("heartbeat %v", err)
	}
	if _, err := c.Show(context.Background(), &api.ShowRequest{Model: "tiny"}); err == nil || !strings.Contains(err.Error(), "model 'tiny' not found") {
		t.Errorf("show missing: %v", err)
	}
	s.Install("tiny")
	sh, err := c.Show(context.Background(), &api.ShowRequest{Model: "tiny"})
	if err != nil || sh.Details.Family != "llama" {
		t.Errorf("show %+v %v", sh, err)
	}
	if err := c.Delete(context.Background(), &api.DeleteRequest{Model: "tiny"}); err != nil {
		t.Errorf("delete %v", err)
	}
	if l, _ := c.List(context.Background()); len(l.Models) != 0 {
		t.Errorf("after delete %v", l.Models)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []string{"/api/version", "/", "/api/show", "/api/show", "/api/delete", "/api/tags"}) {
		t.Errorf("OnRequest saw %q", seen)
	}
}

func TestRegistryHandler(t *testing.T) {
	s := New(Config{Dir: t.TempDir()})
	host := s.StartRegistry(t)
	s.AddModel(Model{Name: host + "/library/tiny:latest"})
	req, _ := http.NewRequest("GET", "http://"+host+"/v2/library/tiny/manifests/latest", nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m, _ := s.ManifestOf(host + "/library/tiny")
	if resp.StatusCode != 200 || !bytes.Equal(b, m.Raw) {
		t.Errorf("%s %s", resp.Status, b)
	}
	resp, err = (&http.Client{Transport: tr}).Get("http://" + host + "/v2/library/nope/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("missing: %s", resp.Status)
	}
}

func TestDriveRunner(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "blobs"), 0o755)
	os.WriteFile(filepath.Join(dir, "blobs", "a b"), []byte("12345"), 0o644)
	d := &DriveRunner{Remote: "/mnt/models/ollama", Local: dir, Avail: 266575872}
	ctx := context.Background()
	run := func(args ...string) sshexec.Result {
		res, err := d.Run(ctx, sshexec.Cmd{Args: args})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := run("df", "-B1", "--output=source,fstype,size,used,avail,target", "--", "/mnt/models/ollama"); !strings.Contains(string(r.Stdout), " 266575872 /mnt/models/ollama\n") || r.ExitStatus != 0 {
		t.Errorf("df %q", r.Stdout)
	}
	r := run("stat", "-c", "%s %n", "--", "/mnt/models/ollama/blobs/a b", "/mnt/models/ollama/blobs/x", "/etc/passwd")
	if string(r.Stdout) != "5 /mnt/models/ollama/blobs/a b\n" || r.ExitStatus != 1 || !strings.Contains(string(r.Stderr), "cannot statx '/etc/passwd'") {
		t.Errorf("stat %q %q %d", r.Stdout, r.Stderr, r.ExitStatus)
	}
	if r := run("cat", "--", "/mnt/models/ollama/blobs/a b"); string(r.Stdout) != "12345" {
		t.Errorf("cat %q", r.Stdout)
	}
	if r := run("rm", "-rf", "/"); r.ExitStatus != 127 {
		t.Errorf("rm %d", r.ExitStatus)
	}
	if r := run("df", "-B1", "--output=source,fstype,size,used,avail,target", "--", "/mnt/models/ollama/../../../etc"); r.ExitStatus != 1 {
		t.Errorf("escape: %q", r.Stdout)
	}
	if len(d.Commands()) != 5 {
		t.Errorf("commands %q", d.Commands())
	}
}
