package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Progress modes ([serve] progress).
const (
	ProgressThinking = "thinking" // the default: thinking / reasoning_content chunks
	ProgressComments = "comments" // SSE comments only (OpenAI streams); nothing in NDJSON
	ProgressOff      = "off"
)

// ProgressWaker is a Backends that reports a wake's progress in words (the
// phases `gpuctl wake` prints). The proxy shows them to streaming requests
// held by the wake.
type ProgressWaker interface {
	WakeProgress(ctx context.Context, host string, report func(string)) error
}

// board carries a host's recent progress notes (a wake, a pull of a
// declared model) to the requests held for it.
type board struct {
	mu      sync.Mutex
	seq     int      // number of notes ever posted
	recent  []string // the last notes, recent[len-1] is note seq
	active  int      // wakes and pulls under way
	from    int      // seq when the work under way began
	changed chan struct{}
}

// boardKeep is how many notes a request that starts waiting mid-wake is
// shown from before it came.
const boardKeep = 16

func newBoard() *board { return &board{changed: make(chan struct{})} }

// post publishes a note.
func (b *board) post(text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.recent = append(b.recent, text)
	if len(b.recent) > boardKeep {
		b.recent = b.recent[len(b.recent)-boardKeep:]
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// begin marks work under way; the returned func ends it.
func (b *board) begin() func() {
	b.mu.Lock()
	if b.active == 0 {
		b.from = b.seq
	}
	b.active++
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.active--
			b.mu.Unlock()
		})
	}
}

// since returns the notes posted after seq (with seq -1: the recent ones
// of the work under way, if any), the new seq, and a channel closed when
// another note arrives.
func (b *board) since(seq int) (notes []string, at int, changed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq < 0 {
		if b.active == 0 {
			return nil, b.seq, b.changed
		}
		seq = max(b.from, b.seq-len(b.recent))
	}
	if n := b.seq - seq; n > 0 {
		n = min(n, len(b.recent))
		notes = append(notes, b.recent[len(b.recent)-n:]...)
	}
	return notes, b.seq, b.changed
}

// note posts text on host's board and logs it.
func (p *Proxy) note(host, text string) {
	if b := p.boards[host]; b != nil {
		b.post(text)
	}
}

// heldKind is how a held streaming request is shown progress.
type heldKind int

const (
	kindNone     heldKind = iota
	kindChat              // Ollama /api/chat: message.thinking
	kindGenerate          // Ollama /api/generate: thinking
	kindOpenAI            // /v1/chat/completions: delta.reasoning_content
	kindSSE               // other OpenAI streams: SSE comments
)

// heldGrace is how long a request waits before it is shown progress.
const heldGrace = time.Second

// heldStream shows a streaming request's client what it waits for, in a
// form clients display but never take as the answer.
type heldStream struct {
	p     *Proxy
	w     *respWriter
	kind  heldKind
	model string

	mu        sync.Mutex
	committed bool
	stop      chan struct{}
	done      chan struct{}
}

// newHeldStream returns nil when the request gets no progress: progress
// off, not a stream, or a kind that cannot carry it in this mode.
func (p *Proxy) newHeldStream(w *respWriter, path string, body []byte, model string) *heldStream {
	mode := p.progressMode()
	if mode == ProgressOff {
		return nil
	}
	var f struct {
		Stream *bool `json:"stream"`
	}
	if len(body) > 0 {
		_ = json.Unmarshal(body, &f)
	}
	kind := kindNone
	switch path {
	case "/api/chat", "/api/generate":
		if f.Stream != nil && !*f.Stream {
			return nil // Ollama streams unless told not to
		}
		if mode == ProgressComments {
			return nil // NDJSON has no comments
		}
		kind = kindChat
		if path == "/api/generate" {
			kind = kindGenerate
		}
	case "/v1/chat/completions":
		if f.Stream == nil || !*f.Stream {
			return nil
		}
		kind = kindOpenAI
		if mode == ProgressComments {
			kind = kindSSE
		}
	case "/v1/completions", "/v1/responses", "/v1/messages":
		if f.Stream == nil || !*f.Stream {
			return nil
		}
		kind = kindSSE
	default:
		return nil
	}
	return &heldStream{p: p, w: w, kind: kind, model: model}
}

func (p *Proxy) progressMode() string {
	switch m := p.inv.Serve.Progress; m {
	case "":
		return ProgressThinking
	default:
		return m
	}
}

// watch shows host's notes until stopWatching; nothing is written until
// the first note (a host that is up writes nothing at all).
func (h *heldStream) watch(host string) {
	if h == nil || h.p.boards[host] == nil {
		return
	}
	b := h.p.boards[host]
	h.stop, h.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(h.done)
		// A request that does not really wait (its host up, its model
		// there) never shows anything, not even a pull of another model.
		t := time.NewTimer(heldGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.stop:
			return
		}
		seq := -1
		for {
			notes, at, changed := b.since(seq)
			for _, text := range notes {
				h.show(text)
			}
			seq = at
			select {
			case <-changed:
			case <-h.stop:
				return
			}
		}
	}()
}

// stopWatching ends watch and reports whether the response was committed
// (status and headers sent with the first note).
func (h *heldStream) stopWatching() bool {
	if h == nil {
		return false
	}
	if h.stop != nil {
		close(h.stop)
		<-h.done
		h.stop = nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.committed
}

// show writes one note, committing the response first.
func (h *heldStream) show(text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.committed {
		hd := h.w.Header()
		if h.kind == kindChat || h.kind == kindGenerate {
			hd.Set("Content-Type", "application/x-ndjson")
		} else {
			hd.Set("Content-Type", "text/event-stream")
			hd.Set("Cache-Control", "no-cache")
		}
		h.w.WriteHeader(http.StatusOK)
		h.committed = true
		h.w.committed = true
	}
	_, _ = h.w.Write(h.chunk(text + "\n"))
	_ = h.w.FlushError()
}

// chunk is one progress record in the stream's own format.
func (h *heldStream) chunk(text string) []byte {
	now := h.p.o.Now()
	var v any
	switch h.kind {
	case kindChat:
		v = map[string]any{"model": h.model, "created_at": now.UTC(), "message": map[string]any{"role": "assistant", "content": "", "thinking": text}, "done": false}
	case kindGenerate:
		v = map[string]any{"model": h.model, "created_at": now.UTC(), "response": "", "thinking": text, "done": false}
	case kindOpenAI:
		v = map[string]any{"id": "chatcmpl-gpuctl", "object": "chat.completion.chunk", "created": now.Unix(), "model": h.model,
			"system_fingerprint": "fp_ollama", "choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "reasoning_content": text}, "finish_reason": nil}}}
	default:
		return []byte(": " + strings.TrimRight(strings.ReplaceAll(text, "\n", " "), " ") + "\n\n")
	}
	b, _ := json.Marshal(v)
	if h.kind == kindOpenAI {
		return append(append([]byte("data: "), b...), "\n\n"...)
	}
	return append(b, '\n')
}

// fail ends a committed stream with an error record in its format.
func (h *heldStream) fail(msg string, extra map[string]string) {
	h.w.lateStatus = 0
	var b []byte
	switch h.kind {
	case kindChat, kindGenerate:
		m := map[string]any{"error": "gpuctl: " + msg}
		for k, v := range extra {
			m[k] = v
		}
		b, _ = json.Marshal(m)
		b = append(b, '\n')
	default:
		e := map[string]any{"message": "gpuctl: " + msg, "type": "api_error", "param": nil, "code": nil}
		for k, v := range extra {
			e[k] = v
		}
		j, _ := json.Marshal(map[string]any{"error": e})
		b = append(append([]byte("data: "), j...), "\n\n"...)
	}
	_, _ = h.w.Write(b)
	_ = h.w.FlushError()
}

// finishLate turns a host's non-200 answer that arrived after the stream
// was committed (a 404 for a model it lacks, say) into an error record.
func (h *heldStream) finishLate() {
	if h == nil || h.w.lateStatus == 0 || h.w.lateStatus == http.StatusOK {
		return
	}
	var e struct {
		Error any `json:"error"`
	}
	msg := strings.TrimSpace(h.w.lateBody.String())
	if json.Unmarshal(bytes.TrimSpace(h.w.lateBody.Bytes()), &e) == nil && e.Error != nil {
		switch x := e.Error.(type) {
		case string:
			msg = x
		case map[string]any:
			if m, ok := x["message"].(string); ok {
				msg = m
			}
		}
	}
	status := h.w.lateStatus
	h.fail(fmt.Sprintf("host answered %d: %s", status, msg), map[string]string{"status": fmt.Sprint(status)})
}
