package ollamatest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/openai"
)

// reply is the text a model generates, one element per chunk.
func (r *resolved) reply() []string {
	if r.spec.Reply != nil {
		return r.spec.Reply
	}
	return []string{"Hello", " from ", r.short()}
}

// touch loads a model, or unloads it when keepAlive is 0.
func (s *Server) touch(r *resolved, keepAlive *api.Duration) {
	d := s.cfg.KeepAlive
	if keepAlive != nil {
		d = keepAlive.Duration
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d == 0 {
		delete(s.loaded, key(r.name))
		return
	}
	s.loaded[key(r.name)] = &loadedModel{r: r, expires: s.cfg.Now().Add(d)}
}

// stream runs the generation loop: one call of emit per chunk, then done.
// It returns false when the client went away.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, m *resolved, ndjson bool, emit func(chunk string, done bool) any) bool {
	fl, _ := w.(http.Flusher)
	chunks := m.reply()
	for i := 0; i <= len(chunks); i++ {
		done := i == len(chunks)
		if !done {
			if err := s.cfg.Sleep(r.Context(), s.cfg.ChunkDelay); err != nil {
				return false
			}
		}
		var c string
		if !done {
			c = chunks[i]
		}
		v := emit(c, done)
		if ndjson {
			json.NewEncoder(w).Encode(v)
		} else {
			b, _ := json.Marshal(v)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		if fl != nil {
			fl.Flush()
		}
	}
	return true
}

func (s *Server) metrics(n int) api.Metrics {
	return api.Metrics{
		TotalDuration: time.Duration(n+1) * s.cfg.ChunkDelay, PromptEvalCount: 1, EvalCount: n,
		EvalDuration: time.Duration(n) * s.cfg.ChunkDelay,
	}
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request) {
	var req api.GenerateRequest
	if !decode(w, r, &req) {
		return
	}
	name := req.Model
	m, ok := s.installed(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	if req.Prompt == "" && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
		s.touch(m, req.KeepAlive)
		writeJSON(w, http.StatusOK, api.GenerateResponse{
			Model: req.Model, CreatedAt: s.cfg.Now().UTC(), Done: true, DoneReason: "unload",
		})
		return
	}
	s.touch(m, req.KeepAlive)
	if req.Prompt == "" {
		writeJSON(w, http.StatusOK, api.GenerateResponse{
			Model: req.Model, CreatedAt: s.cfg.Now().UTC(), Done: true, DoneReason: "load",
		})
		return
	}
	n := len(m.reply())
	emit := func(c string, done bool) any {
		g := api.GenerateResponse{Model: req.Model, CreatedAt: s.cfg.Now().UTC(), Response: c, Done: done}
		if done {
			g.DoneReason = "stop"
			g.Metrics = s.metrics(n)
		}
		return g
	}
	if req.Stream != nil && !*req.Stream {
		if err := s.cfg.Sleep(r.Context(), time.Duration(n)*s.cfg.ChunkDelay); err != nil {
			return
		}
		g := emit("", true).(api.GenerateResponse)
		for _, c := range m.reply() {
			g.Response += c
		}
		writeJSON(w, http.StatusOK, g)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	s.stream(w, r, m, true, emit)
}

func (s *Server) chatReply(req *api.ChatRequest, m *resolved) func(string, bool) any {
	n := len(m.reply())
	return func(c string, done bool) any {
		cr := api.ChatResponse{
			Model: req.Model, CreatedAt: s.cfg.Now().UTC(),
			Message: api.Message{Role: "assistant", Content: c}, Done: done,
		}
		if done {
			cr.DoneReason = "stop"
			cr.Metrics = s.metrics(n)
		}
		return cr
	}
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req api.ChatRequest
	if !decode(w, r, &req) {
		return
	}
	m, ok := s.installed(req.Model)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	if len(req.Messages) == 0 && req.KeepAlive != nil && req.KeepAlive.Duration == 0 {
		s.touch(m, req.KeepAlive)
		writeJSON(w, http.StatusOK, api.ChatResponse{
			Model: req.Model, CreatedAt: s.cfg.Now().UTC(), Message: api.Message{Role: "assistant"},
			Done: true, DoneReason: "unload",
		})
		return
	}
	s.touch(m, req.KeepAlive)
	if len(req.Messages) == 0 {
		writeJSON(w, http.StatusOK, api.ChatResponse{
			Model: req.Model, CreatedAt: s.cfg.Now().UTC(), Message: api.Message{Role: "assistant"},
			Done: true, DoneReason: "load",
		})
		return
	}
	emit := s.chatReply(&req, m)
	if req.Stream != nil && !*req.Stream {
		s.writeWholeChat(w, r, m, emit, func(cr api.ChatResponse) any { return cr })
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	s.stream(w, r, m, true, emit)
}

// writeWholeChat answers a non-streamed chat after the whole generation time.
func (s *Server) writeWholeChat(w http.ResponseWriter, r *http.Request, m *resolved, emit func(string, bool) any, conv func(api.ChatResponse) any) {
	if err := s.cfg.Sleep(r.Context(), time.Duration(len(m.reply()))*s.cfg.ChunkDelay); err != nil {
		return
	}
	cr := emit("", true).(api.ChatResponse)
	for _, c := range m.reply() {
		cr.Message.Content += c
	}
	writeJSON(w, http.StatusOK, conv(cr))
}

// openaiChat is /v1/chat/completions, converted with ollama's own openai
// package as its middleware does (SSE "data: …" lines, then "data: [DONE]").
func (s *Server) openaiChat(w http.ResponseWriter, r *http.Request) {
	var req openai.ChatCompletionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, openai.NewError(http.StatusBadRequest, err.Error()))
		return
	}
	chatReq, err := openai.FromChatRequest(req)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, openai.NewError(http.StatusBadRequest, err.Error()))
		return
	}
	m, ok := s.installed(req.Model)
	if !ok {
		writeJSON(w, http.StatusNotFound, openai.NewError(http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model)))
		return
	}
	s.touch(m, chatReq.KeepAlive)
	id := "chatcmpl-" + fmt.Sprint(s.nextID())
	emit := s.chatReply(chatReq, m)
	if !req.Stream {
		s.writeWholeChat(w, r, m, emit, func(cr api.ChatResponse) any { return openai.ToChatCompletion(id, cr) })
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	var last api.ChatResponse
	if !s.stream(w, r, m, false, func(c string, done bool) any {
		last = emit(c, done).(api.ChatResponse)
		return openai.ToChunk(id, last, false)
	}) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		c := openai.ToChunk(id, last, false)
		u := openai.ToUsage(last)
		c.Usage = &u
		c.Choices = []openai.ChunkChoice{}
		b, _ := json.Marshal(c)
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func (s *Server) nextID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts["#id"]++
	return s.counts["#id"]
}

func (s *Server) openaiModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, openai.ToListCompletion(api.ListResponse{Models: s.list()}))
}
