package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

// progressFake reports the phases of a wake as the controller does, 10 s
// apart on the bubble's clock, then wakes the host.
type progressFake struct{ *fakeBackends }

func (f progressFake) WakeProgress(ctx context.Context, host string, report func(string)) error {
	for _, s := range []string{"[   0s] boot: magic packets sent to 02:00:00:00:00:01; waiting for SSH at pc:22", "[  41s] checks: running checks"} {
		report(s)
		select {
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.Wake(ctx, host)
}

// streamingPC answers /api/chat and /v1/chat/completions with a fixed
// stream, as Ollama would, and 404 for a model it lacks.
type streamingPC struct{}

const pcNDJSON = "{\"model\":\"big\",\"created_at\":\"2026-12-07T10:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n" +
	"{\"model\":\"big\",\"created_at\":\"2026-12-07T10:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n" +
	"{\"model\":\"big\",\"created_at\":\"2026-12-07T10:00:02Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n"

const pcSSE = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"big\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n" +
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"big\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\n" +
	"data: [DONE]\n\n"

func (streamingPC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if bytes.Contains(body, []byte(`missing`)) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"model 'missing' not found"}`)
		return
	}
	switch r.URL.Path {
	case "/api/chat":
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, pcNDJSON)
	case "/v1/chat/completions":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, pcSSE)
	default:
		http.NotFound(w, r)
	}
}

func heldBubble(t *testing.T, pcUp bool, progress string) *bubble {
	fb := newFakeBackends("server")
	fb.wakeTime = 5 * time.Second
	if pcUp {
		fb.setUp("pc", true)
	}
	return newBubble(t, &fakeOllama{name: "server"}, streamingPC{}, fb, func(o *Options) {
		o.Backends = progressFake{fb}
		o.Inventory.Serve.Progress = progress
	})
}

func postHeld(t *testing.T, b *bubble, path, body string) (*http.Response, []byte) {
	t.Helper()
	res, err := b.client.Post("http://proxy:80"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, got
}

// A streamed /api/chat for a model on a sleeping host gets the wake's
// phases as message.thinking chunks first, then the host's stream byte for
// byte; message.content holds only what the model generated.
func TestHeldChatShowsProgressAsThinking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := heldBubble(t, false, "")
		defer b.close()
		res, got := postHeld(t, b, "/api/chat", `{"model":"big","messages":[{"role":"user","content":"hi"}]}`)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
		if !bytes.HasSuffix(got, []byte(pcNDJSON)) {
			t.Fatalf("the host's stream is not the end of the answer, byte for byte:\n%s", got)
		}
		var thinking, content strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(got))
		n, progress := 0, 0
		for sc.Scan() {
			var c struct {
				Message struct{ Content, Thinking string } `json:"message"`
				Done    bool                               `json:"done"`
			}
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatalf("line %d is not JSON: %v: %s", n, err, sc.Bytes())
			}
			n++
			thinking.WriteString(c.Message.Thinking)
			content.WriteString(c.Message.Content)
			if c.Message.Thinking != "" {
				progress++
				if content.Len() > 0 {
					t.Errorf("progress after the first answer token: %s", sc.Bytes())
				}
			}
		}
		if content.String() != "Hello" {
			t.Errorf("message.content = %q, want exactly the model's %q", content.String(), "Hello")
		}
		for _, want := range []string{"waking pc", "boot: magic packets sent", "checks: running checks", "pc is ready after", "loading big on pc"} {
			if !strings.Contains(thinking.String(), want) {
				t.Errorf("progress lacks %q:\n%s", want, thinking.String())
			}
		}
		t.Logf("%d progress chunks:\n%s", progress, thinking.String())
	})
}

// OpenAI streams get the phases in delta.reasoning_content, never in
// delta.content.
func TestHeldOpenAIShowsReasoningContent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := heldBubble(t, false, "thinking")
		defer b.close()
		res, got := postHeld(t, b, "/v1/chat/completions", `{"model":"big","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
		if !bytes.HasSuffix(got, []byte(pcSSE)) {
			t.Fatalf("the host's stream is not the end of the answer:\n%s", got)
		}
		var reasoning, content strings.Builder
		for _, ev := range strings.Split(strings.TrimSpace(string(got)), "\n\n") {
			data, ok := strings.CutPrefix(ev, "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var c struct {
				Choices []struct {
					Delta struct {
						Content          string `json:"content"`
						ReasoningContent string `json:"reasoning_content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatalf("event is not JSON: %v: %s", err, data)
			}
			reasoning.WriteString(c.Choices[0].Delta.ReasoningContent)
			content.WriteString(c.Choices[0].Delta.Content)
		}
		if content.String() != "Hello" || !strings.Contains(reasoning.String(), "waking pc") {
			t.Errorf("content %q, reasoning %q", content.String(), reasoning.String())
		}
	})
}

// With progress = "off", a host that is up, or a request that does not
// stream, the answer is the host's, byte for byte.
func TestHeldNoProgressIsByteIdentical(t *testing.T) {
	for _, tc := range []struct {
		name, progress string
		up             bool
		path, body     string
		want           string
	}{
		{"off", "off", false, "/api/chat", `{"model":"big"}`, pcNDJSON},
		{"host up", "", true, "/api/chat", `{"model":"big"}`, pcNDJSON},
		{"comments, ndjson", "comments", false, "/api/chat", `{"model":"big"}`, pcNDJSON},
		{"openai off", "off", false, "/v1/chat/completions", `{"model":"big","stream":true}`, pcSSE},
		{"openai not streamed", "", false, "/v1/chat/completions", `{"model":"big"}`, pcSSE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := heldBubble(t, tc.up, tc.progress)
				defer b.close()
				_, got := postHeld(t, b, tc.path, tc.body)
				if string(got) != tc.want {
					t.Errorf("answer differs from the host's:\n%s", got)
				}
			})
		})
	}
}

// "comments" puts the phases in SSE comments that clients skip.
func TestHeldComments(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := heldBubble(t, false, "comments")
		defer b.close()
		_, got := postHeld(t, b, "/v1/chat/completions", `{"model":"big","stream":true}`)
		if !bytes.HasPrefix(got, []byte(": waking pc")) || !bytes.HasSuffix(got, []byte(pcSSE)) {
			t.Errorf("answer:\n%s", got)
		}
		if bytes.Contains(got, []byte("reasoning_content")) {
			t.Error("comments mode sent reasoning_content")
		}
	})
}

// Once the progress is sent, a failed wake or the host's error ends the
// stream with an error record in its own format (the status is already 200).
func TestHeldErrorsEndTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := heldBubble(t, false, "")
		defer b.close()
		_, got := postHeld(t, b, "/api/chat", `{"model":"big:missing"}`)
		lines := strings.Split(strings.TrimSpace(string(got)), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, `"error":"gpuctl: host answered 404: model 'missing' not found"`) {
			t.Errorf("last line %s", last)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBackends("server")
		fb.wakeTime = 5 * time.Second
		fb.wakeErr = io.ErrUnexpectedEOF
		b := newBubble(t, &fakeOllama{name: "server"}, streamingPC{}, fb, func(o *Options) { o.Backends = progressFake{fb} })
		defer b.close()
		res, got := postHeld(t, b, "/v1/chat/completions", `{"model":"big","stream":true}`)
		if res.StatusCode != 200 || !strings.Contains(string(got), "data: {\"error\":{") || !strings.Contains(string(got), "wake_failed") {
			t.Errorf("status %d, answer:\n%s", res.StatusCode, got)
		}
	})
}

// A streamed chat for a declared model serve is pulling onto the host it
// woke shows the pull's progress (percent included) until the model is
// there, then the host's answer.
func TestHeldShowsPullProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		pc := &fakeOllama{name: "pc", handle: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/pull" {
				w.Header().Set("Content-Type", "application/x-ndjson")
				io.WriteString(w, pcNDJSON)
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, `{"status":"pulling manifest"}`+"\n")
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Second)
			io.WriteString(w, `{"status":"pulling 3f5a8c","digest":"sha256:3f5a8c","total":100,"completed":37}`+"\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, `{"status":"success"}`+"\n")
		}}
		b := newBubble(t, &fakeOllama{name: "server"}, pc, newFakeBackends(), func(o *Options) {
			o.Inventory.Hosts[1].Models = []inventory.ModelName{"big:want"}
		})
		defer b.close()
		go func() {
			time.Sleep(30 * time.Second)
			close(release)
		}()
		_, got := postHeld(t, b, "/api/chat", `{"model":"big:want"}`)
		var thinking strings.Builder
		for _, l := range strings.Split(strings.TrimSpace(string(got)), "\n") {
			var c struct {
				Message struct{ Thinking string } `json:"message"`
			}
			_ = json.Unmarshal([]byte(l), &c)
			thinking.WriteString(c.Message.Thinking)
		}
		for _, want := range []string{"pc: pulling big:want: pulling manifest", "pc: pulling big:want: pulling 3f5a8c 37 %", "loading big:want on pc"} {
			if !strings.Contains(thinking.String(), want) {
				t.Errorf("progress lacks %q:\n%s", want, thinking.String())
			}
		}
		if !bytes.HasSuffix(got, []byte(pcNDJSON)) {
			t.Errorf("the answer after the pull is not the host's:\n%s", got)
		}
	})
}
