package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/hosthttp"
)

// target is the routing decision carried in a forwarded request's context.
type target struct {
	host  string
	model string
	learn *learner // a model change the catalogue learns on success
}

type targetKey struct{}

func targetOf(ctx context.Context) *target {
	t, _ := ctx.Value(targetKey{}).(*target)
	return t
}

// reqLog is what one request's log line and metrics say; never its body.
type reqLog struct {
	model string
	host  string
	note  string
}

// serveAPI handles /api/* and /v1/*.
func (p *Proxy) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := p.o.Now()
	rw := &respWriter{ResponseWriter: w}
	info := &reqLog{}
	release := func() {}
	defer func() {
		release()
		v := recover()
		if v == http.ErrAbortHandler && rw.status == 0 {
			rw.status = 499
		}
		if rw.stalled {
			info.note = fmt.Sprintf("client made no read progress for %s; stream ended", p.o.WriteStall)
		}
		p.finish(r, rw, info, start, v != nil)
		if v != nil {
			panic(v)
		}
	}()

	if p.serveListing(rw, r, info) {
		return
	}
	p.trim.requests.Add(1)
	// A shutdown's cut and a client that stops reading end the request
	// through its context, with a cause.
	r, rw.abort, release = p.cuttable(r)
	if strings.HasPrefix(r.URL.Path, "/api/blobs/") {
		// Uploads for `ollama create`: spooled, bounded by max_blob (blobs.go).
		p.serveBlob(rw, r, info)
		return
	}
	// Held requests (a wake) and streams may last far longer than the
	// server's WriteTimeout: lift it for proxied requests.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})

	if !p.takeSlot(rw, r) {
		return
	}
	defer func() { <-p.sem }()

	body, ok := p.readBody(rw, r)
	if !ok {
		return
	}
	info.model = modelOf(r.URL.Path, body)
	d := p.decideRequest(r.URL.Path, body, info.model)
	info.note = d.reason
	p.serveRouted(rw, r, body, d, info)
}

// takeSlot takes one of serve.max_in_flight's slots, or answers 429 and
// reports false. The caller gives the slot back (<-p.sem).
func (p *Proxy) takeSlot(w *respWriter, r *http.Request) bool {
	select {
	case p.sem <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", "1")
		p.fail(w, r, http.StatusTooManyRequests, fmt.Sprintf("gpuctl serve already has %d requests in flight (serve.max_in_flight); retry shortly", cap(p.sem)), nil)
		return false
	}
}

// serveRouted forwards a request to the host d chose, readied first (a
// wake, a shutdown's draining, a declared model's pull); when that fails,
// to d's fallback host, else it answers why not.
func (p *Proxy) serveRouted(w *respWriter, r *http.Request, body []byte, d decision, info *reqLog) {
	host := d.host
	// A streaming request held for a wake or a pull is shown what it waits
	// for ([serve] progress), in a form clients never take as the answer.
	held := p.newHeldStream(w, r.URL.Path, body, info.model)
	for {
		info.host = host
		committed, err := p.tryHost(w, r, body, host, info.model, held)
		if err == nil {
			return
		}
		last := d.fallback == "" || host == d.fallback
		if committed && last {
			// The held stream has sent its status: the error ends it.
			if r.Context().Err() == nil || shuttingDown(r.Context()) {
				held.fail(err.Error(), map[string]string{"host": host, "reason": reasonOf(err)})
			}
			return
		}
		if p.endedWhileHeld(w, r, host, info) {
			return
		}
		if !last {
			p.log.Warn("wake failed; using the route's fallback host", "host", host, "fallback", d.fallback, "model", info.model, "err", err)
			host, d.fallback = d.fallback, ""
			info.note = "fallback"
			continue
		}
		p.unavailable(w, r, host, err)
		return
	}
}

// tryHost counts the request against host, readies host and, when it is
// ready, forwards the request to it. It returns why host could not take
// the request, and whether the held stream had committed by then.
func (p *Proxy) tryHost(w *respWriter, r *http.Request, body []byte, host, model string, held *heldStream) (committed bool, err error) {
	// Counted first, then readied: the order the draining interlock
	// with gpuctl shutdown relies on (see ready).
	end := p.begin(host)
	if p.hosts[host].OnDemand {
		held.watch(host)
	}
	err = p.ready(r.Context(), host)
	if err == nil {
		// A declared model serve is pulling after a wake: held.
		err = p.awaitPull(r.Context(), host, model, r.URL.Path)
	}
	committed = held.stopWatching()
	if err != nil {
		end()
		return committed, err
	}
	// end runs even when the stream is aborted (a panic with
	// http.ErrAbortHandler from the ReverseProxy).
	defer end()
	if committed {
		held.show("loading " + model + " on " + host)
	}
	if p.handOff(w, r, body, host) {
		p.forward(w, r, body, host, model)
	}
	held.finishLate()
	return committed, nil
}

// endedWhileHeld answers a request whose context ended while its host was
// readied: a shutdown's cut gets 503, a client that left is logged as 499.
// It reports whether the request ended so.
func (p *Proxy) endedWhileHeld(w *respWriter, r *http.Request, host string, info *reqLog) bool {
	if shuttingDown(r.Context()) {
		w.Header().Set("Retry-After", "5")
		p.fail(w, r, http.StatusServiceUnavailable, context.Cause(r.Context()).Error(), map[string]string{"host": host, "reason": "shutting down"})
		return true
	}
	if r.Context().Err() != nil {
		// The client left while the host was waking: it leaves the
		// queue; the wake goes on for the others.
		w.status = 499
		info.note = "client left while waiting for wake"
		return true
	}
	return false
}

// unavailable answers 503 for a host that could not be readied, with the
// wake's Retry-After (WakeBackoff when the error does not say).
func (p *Proxy) unavailable(w *respWriter, r *http.Request, host string, err error) {
	var we *WakeError
	wait := p.o.WakeBackoff
	if errors.As(err, &we) {
		wait = we.RetryAfter
	}
	w.Header().Set("Retry-After", retryAfter(wait))
	p.fail(w, r, http.StatusServiceUnavailable, err.Error(), map[string]string{"host": host, "reason": reasonOf(err)})
}

// readBody reads the request body up to serve.max_body. Over the cap it
// answers 413 (and nothing is woken).
func (p *Proxy) readBody(w *respWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	if r.ContentLength > p.maxBody {
		p.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over serve.max_body (%d bytes)", r.ContentLength, p.maxBody), nil)
		return nil, false
	}
	rc := http.NewResponseController(w.ResponseWriter)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, p.maxBody))
	if err == nil {
		// After a failed read the deadline stays: the server's attempt
		// to drain the rest of the body must not wait for it.
		_ = rc.SetReadDeadline(time.Time{})
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		p.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over serve.max_body (%d bytes)", p.maxBody), nil)
		return nil, false
	case err != nil:
		p.bodyError(w, r, err)
		return nil, false
	}
	return buf.Bytes(), true
}

// modelFields are the request fields that name a model, by endpoint.
type modelFields struct {
	Model  string `json:"model"`
	Name   string `json:"name"`   // older /api/pull, /api/push, /api/show, /api/delete
	Source string `json:"source"` // /api/copy
}

// modelOf extracts the model a request is for; "" when it names none.
func modelOf(path string, body []byte) string {
	if len(body) == 0 || body[0] != '{' && !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return ""
	}
	var f modelFields
	if json.Unmarshal(body, &f) != nil {
		return ""
	}
	switch {
	case f.Model != "":
		return f.Model
	case strings.HasPrefix(path, "/api/") && f.Name != "":
		return f.Name
	case path == "/api/copy":
		return f.Source
	}
	return ""
}

// begin counts a request against host for idle shutdown and metrics.
func (p *Proxy) begin(host string) func() {
	end := p.tracker.Begin(host)
	g := p.met.inFlight.WithLabelValues(host)
	g.Inc()
	var once sync.Once
	return func() { once.Do(func() { end(); g.Dec() }) }
}

// forward sends the request to host and streams the answer back.
func (p *Proxy) forward(w *respWriter, r *http.Request, body []byte, host, model string) {
	// Streams may run for as long as the model generates:
	// lift the server's write deadline for this response; each write
	// then has WriteStall to make progress (see progress).
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Time{})
	w.stall = p.o.WriteStall
	out := r.WithContext(context.WithValue(r.Context(), targetKey{}, &target{host: host, model: model, learn: p.learnerFor(r.URL.Path, body, host)}))
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.TransferEncoding = nil
	}
	p.rp.ServeHTTP(w, out)
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	t := targetOf(pr.In.Context())
	pr.SetURL(p.targetURL(t.host))
	pr.SetXForwarded()
	// The guard judged the origin; the host's Ollama must not again.
	pr.Out.Header.Del("Origin")
}

// modifyResponse notes that the host answered and guards streams so a
// backend dying mid-stream ends the client's stream with an error line.
func (p *Proxy) modifyResponse(res *http.Response) error {
	t := targetOf(res.Request.Context())
	if t == nil {
		return nil
	}
	p.setState(t.host, true)
	if t.learn != nil {
		t.learn.watch(res)
	}
	if res.ContentLength >= 0 {
		return nil
	}
	ct := res.Header.Get("Content-Type")
	var kind streamKind
	switch {
	case strings.HasPrefix(ct, "application/x-ndjson"), strings.HasPrefix(ct, "application/json"):
		kind = ndjson
	case strings.HasPrefix(ct, "text/event-stream"):
		kind = sse
	default:
		return nil
	}
	res.Body = &streamGuard{rc: res.Body, kind: kind, ctx: res.Request.Context(), host: t.host, log: p.log, model: t.model}
	return nil
}

// proxyError answers a request the backend did not answer.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rw, _ := w.(*respWriter)
	t := targetOf(r.Context())
	if shuttingDown(r.Context()) {
		w.Header().Set("Retry-After", "5")
		p.fail(w, r, http.StatusServiceUnavailable, context.Cause(r.Context()).Error(), map[string]string{"host": t.host, "reason": "shutting down"})
		return
	}
	if r.Context().Err() != nil {
		if rw != nil {
			rw.status = 499
		}
		return
	}
	var de *hosthttp.DialError
	var ne net.Error
	switch {
	case errors.As(err, &de):
		p.setState(t.host, false)
		p.fail(w, r, http.StatusBadGateway, fmt.Sprintf("host %q: Ollama at %s cannot be reached: %v; check that it runs (gpuctl status %s)", t.host, p.targetURL(t.host).Host, de.Err, t.host), map[string]string{"host": t.host, "reason": "unreachable"})
	case errors.As(err, &ne) && ne.Timeout():
		p.fail(w, r, http.StatusGatewayTimeout, fmt.Sprintf("host %q did not start answering within %s (a cold model load that slow?)", t.host, p.o.ResponseHeaderTimeout), map[string]string{"host": t.host, "reason": "timeout"})
	default:
		p.fail(w, r, http.StatusBadGateway, fmt.Sprintf("host %q: %v", t.host, err), map[string]string{"host": t.host, "reason": "backend error"})
	}
}

// finish logs and counts one request. Bodies and prompts are never logged.
func (p *Proxy) finish(r *http.Request, w *respWriter, info *reqLog, start time.Time, aborted bool) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	host := info.host
	if host == "" {
		host = "gpuctl"
	}
	p.met.requests.WithLabelValues(host, p.modelLabel(info.model), itoa(status)).Inc()
	if p.finishHook != nil {
		p.finishHook(status)
	}
	lvl := slog.LevelInfo
	if status >= 500 || aborted {
		lvl = slog.LevelWarn
	}
	if !p.log.Enabled(r.Context(), lvl) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("model", info.model), slog.String("host", info.host),
		slog.Int("status", status), slog.Duration("duration", p.o.Now().Sub(start)),
		slog.Int64("bytes", w.bytes),
	}
	if info.note != "" {
		attrs = append(attrs, slog.String("note", info.note))
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	p.log.LogAttrs(r.Context(), lvl, "request", attrs...)
}

// fail writes a JSON error in the API's own shape: Ollama's {"error": "…"}
// under /api, OpenAI's {"error": {"message": …}} under /v1.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, status int, msg string, extra map[string]string) {
	writeError(w, status, "gpuctl: "+msg, extra, strings.HasPrefix(r.URL.Path, "/v1/"))
}

func writeError(w http.ResponseWriter, status int, msg string, extra map[string]string, openai ...bool) {
	if len(openai) > 0 && openai[0] {
		// Ollama's openai.ErrorResponse, with serve's additions.
		e := map[string]any{"message": msg, "type": errType(status), "param": nil, "code": nil}
		for k, v := range extra {
			e[k] = v
		}
		writeEncoded(w, status, map[string]any{"error": e})
		return
	}
	m := map[string]any{"error": msg}
	for k, v := range extra {
		m[k] = v
	}
	writeJSON(w, status, m)
}

// errType is the OpenAI error type Ollama's openai.NewError gives status.
func errType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusTooManyRequests:
		// serve's own limit (Ollama has none): OpenAI's type for it.
		return "rate_limit_error"
	}
	return "api_error"
}

// writeJSON writes v as gin's c.JSON does (Ollama's /api answers):
// "application/json; charset=utf-8", no trailing newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"gpuctl: encoding the answer failed"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeEncoded writes v as Ollama's OpenAI middleware does
// (json.Encoder): "application/json", a trailing newline.
func writeEncoded(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":{"message":"gpuctl: encoding the answer failed","type":"api_error","param":null,"code":null}}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// respWriter records the status and size of a response. It unwraps for
// http.ResponseController, so flushes and deadlines reach the connection.
type respWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	// stall, when set, is how long each write may make no progress
	// (see progress); abort ends the request when a write fails.
	stall   time.Duration
	renewed time.Time
	abort   context.CancelCauseFunc
	stalled bool
	// committed is set once a held stream sent its status and headers with
	// a progress note (heldStream): the host's own status and headers then
	// go nowhere, and a non-200 answer's body is kept (lateBody) to end the
	// stream with an error record.
	committed  bool
	sink       http.Header
	lateStatus int
	lateBody   bytes.Buffer
}

func (w *respWriter) Header() http.Header {
	if w.committed {
		if w.sink == nil {
			w.sink = http.Header{}
		}
		return w.sink
	}
	return w.ResponseWriter.Header()
}

func (w *respWriter) WriteHeader(code int) {
	if w.committed {
		if w.lateStatus == 0 && code >= 200 {
			w.lateStatus = code
		}
		return
	}
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.committed && w.lateStatus != 0 && w.lateStatus != http.StatusOK {
		if room := 64<<10 - w.lateBody.Len(); room > 0 {
			w.lateBody.Write(b[:min(len(b), room)])
		}
		return len(b), nil
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.progress()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if err != nil {
		w.writeFailed(err)
	}
	return n, err
}

func (w *respWriter) Flush() { _ = w.FlushError() }

// FlushError flushes to the client (http.ResponseController uses it), so
// a failed flush ends the request at once.
func (w *respWriter) FlushError() error {
	w.progress()
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if err != nil {
		w.writeFailed(err)
	}
	return err
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// replayTransport replays a request once when its dial failed, so nothing
// of it reached the backend (a host that just woke may refuse the first
// connection). A request that reached the backend is never retried: LLM
// POSTs are not idempotent.
type replayTransport struct {
	next     http.RoundTripper
	delay    time.Duration
	onReplay func(*http.Request)
}

func (t *replayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	var de *hosthttp.DialError
	if err == nil || !errors.As(err, &de) || req.Context().Err() != nil {
		return res, err
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return nil, err
	}
	tm := time.NewTimer(t.delay)
	select {
	case <-req.Context().Done():
		tm.Stop()
		return nil, err
	case <-tm.C:
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		b, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		again.Body = b
	}
	if t.onReplay != nil {
		t.onReplay(req)
	}
	return t.next.RoundTrip(again)
}

func (p *Proxy) onReplay(req *http.Request) {
	host := ""
	if t := targetOf(req.Context()); t != nil {
		host = t.host
	}
	p.met.replays.WithLabelValues(host).Inc()
	p.log.Info("dial failed; replaying the request once", "host", host, "path", req.URL.Path)
}

// bufferPool recycles ReverseProxy's copy buffers.
type bufferPool struct{}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBufs.Put(&b) }

type streamKind int

const (
	ndjson streamKind = iota
	sse
)

// streamGuard ends a stream whose backend broke off (connection reset,
// truncated chunking) with one error record in the stream's own format,
// then a clean end, so clients report the error instead of hanging or
// mistaking the truncated answer for a whole one. A client that went away
// gets the plain error (nothing is written to it anyway).
type streamGuard struct {
	rc    io.ReadCloser
	kind  streamKind
	ctx   context.Context
	host  string
	model string
	log   *slog.Logger
	last  byte
	tail  []byte
	ended bool
}

func (g *streamGuard) Read(b []byte) (int, error) {
	if g.tail != nil {
		n := copy(b, g.tail)
		g.tail = g.tail[n:]
		if len(g.tail) == 0 {
			g.tail = nil
		}
		return n, nil
	}
	if g.ended {
		return 0, io.EOF
	}
	n, err := g.rc.Read(b)
	if n > 0 {
		g.last = b[n-1]
	}
	cut := shuttingDown(g.ctx)
	if err == nil || err == io.EOF || g.ctx.Err() != nil && !cut {
		return n, err
	}
	msg := fmt.Sprintf("gpuctl: the stream from host %q broke off: %v", g.host, err)
	if cut {
		msg = "gpuctl: " + context.Cause(g.ctx).Error()
	} else {
		g.log.Warn("backend stream broke off; ending the client's stream with an error", "host", g.host, "model", g.model, "err", err)
	}
	var tail []byte
	if g.last != 0 && g.last != '\n' {
		tail = append(tail, '\n')
	}
	if g.kind == sse {
		if g.last != 0 {
			tail = append(tail, '\n')
		}
		e, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": "server_error"}})
		tail = append(append(append(tail, "data: "...), e...), "\n\n"...)
	} else {
		e, _ := json.Marshal(map[string]string{"error": msg})
		tail = append(append(tail, e...), '\n')
	}
	g.tail, g.ended = tail, true
	return n, nil
}

func (g *streamGuard) Close() error { return g.rc.Close() }

func itoa(n int) string { return strconv.Itoa(n) }

// reasonOf is the short machine-readable reason in a 503.
func reasonOf(err error) string {
	var we *WakeError
	if errors.As(err, &we) {
		return we.Reason
	}
	return "unavailable"
}
