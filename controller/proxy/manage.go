package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
)

// Model management through serve (copy, create, pull, delete) as the
// official clients do it:
//
//   - /api/copy goes to the host that has the source model, and /api/create
//     to the host that has its FROM model, unless a [[route]] sends the new
//     name elsewhere (then the copy or create runs there, as it would on
//     that host's Ollama).
//   - The catalogue learns the result the moment the host reports success,
//     before the client sees it: `ollama cp heavy bigcopy` then `ollama run
//     bigcopy` routes bigcopy to heavy's host at once.
//   - Blobs uploaded for `ollama create` are spooled by serve (blobs.go)
//     and handed to the host the create goes to, just before it.

// manageReq is what a model-management request names.
type manageReq struct {
	Model       string            `json:"model"`
	Name        string            `json:"name"`
	Source      string            `json:"source"`
	Destination string            `json:"destination"`
	From        string            `json:"from"`
	Files       map[string]string `json:"files"`
	Adapters    map[string]string `json:"adapters"`
	Stream      *bool             `json:"stream"`
}

func parseManage(body []byte) manageReq {
	var m manageReq
	_ = json.Unmarshal(body, &m)
	if m.Model == "" {
		m.Model = m.Name
	}
	return m
}

// decideRequest routes a request: model-management requests by the rules
// above, everything else by its model (decide).
func (p *Proxy) decideRequest(path string, body []byte, model string) decision {
	switch path {
	case "/api/copy":
		m := parseManage(body)
		if r := p.inv.MatchRoute(m.Destination); m.Destination != "" && r != nil {
			return decision{host: r.Host, reason: "route (destination)"}
		}
		return p.decide(m.Source)
	case "/api/create":
		m := parseManage(body)
		if r := p.inv.MatchRoute(m.Model); m.Model != "" && r != nil {
			return decision{host: r.Host, reason: "route"}
		}
		if m.From != "" {
			d := p.decide(m.From)
			d.reason += " (from)"
			return d
		}
	}
	return p.decide(model)
}

// learner updates the catalogue after a model-management request succeeds
// on host: it re-reads the host's list (so the catalogue holds Ollama's own
// record), or, if that fails, notes or drops the name itself.
type learner struct {
	p      *Proxy
	host   string
	name   string // the model added or removed
	from   string // copy's source: its record stands in if the re-read fails
	remove bool
	blobs  []string // a create's digests: spooled copies are dropped on success
	once   sync.Once
}

// learnerFor returns the learner for a copy, create, pull or delete
// request, nil for any other.
func (p *Proxy) learnerFor(path string, body []byte, host string) *learner {
	switch path {
	case "/api/copy", "/api/create", "/api/pull", "/api/delete":
	default:
		return nil
	}
	m := parseManage(body)
	l := &learner{p: p, host: host}
	switch path {
	case "/api/copy":
		l.name, l.from = m.Destination, m.Source
	case "/api/create":
		l.name = m.Model
		for _, d := range m.Files {
			l.blobs = append(l.blobs, d)
		}
		for _, d := range m.Adapters {
			l.blobs = append(l.blobs, d)
		}
	case "/api/pull":
		l.name = m.Model
	case "/api/delete":
		l.name, l.remove = m.Model, true
	default:
		return nil
	}
	if l.name == "" {
		return nil
	}
	return l
}

func (l *learner) learn(ctx context.Context) {
	l.once.Do(func() {
		p := l.p
		for _, d := range l.blobs {
			if path, ok := p.blobsUsed.LoadAndDelete(d); ok {
				_ = os.Remove(path.(string))
			}
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listTimeout)
		defer cancel()
		if err := p.refreshHost(rctx, l.host); err == nil {
			p.log.Debug("catalogue updated after a model change", "host", l.host, "model", l.name)
			return
		}
		p.cat.note(l.host, l.name, l.from, l.remove, p.o.Now())
		p.log.Debug("catalogue noted a model change (the host's list could not be re-read)", "host", l.host, "model", l.name, "removed", l.remove)
	})
}

// watch arranges for the learner to run once the host's answer says the
// change succeeded: a 200 without a body to scan (copy, delete, a
// non-streamed create or pull), or, in a stream, the line
// {"status":"success"}, before that line reaches the client.
func (l *learner) watch(res *http.Response) {
	if res.StatusCode != http.StatusOK {
		return
	}
	if res.ContentLength >= 0 {
		if res.ContentLength > 64<<10 {
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(b))
		if err == nil && !bytes.Contains(b, []byte(`"error"`)) {
			l.learn(res.Request.Context())
		}
		return
	}
	res.Body = &successWatch{rc: res.Body, l: l, ctx: res.Request.Context()}
}

var successLine = []byte(`"status":"success"`)

// successWatch passes a stream through and runs its learner when the
// success status goes by, before returning the bytes that carry it.
type successWatch struct {
	rc   io.ReadCloser
	l    *learner
	ctx  context.Context
	tail []byte
	done bool
}

func (s *successWatch) Read(b []byte) (int, error) {
	n, err := s.rc.Read(b)
	if !s.done && n > 0 {
		buf := append(s.tail, b[:n]...)
		if bytes.Contains(buf, successLine) {
			s.done = true
			s.l.learn(s.ctx)
		} else if k := len(successLine); len(buf) > k {
			s.tail = append(s.tail[:0], buf[len(buf)-k:]...)
		} else {
			s.tail = buf
		}
	}
	return n, err
}

func (s *successWatch) Close() error { return s.rc.Close() }
