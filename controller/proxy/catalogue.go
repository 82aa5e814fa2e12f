package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/types/model"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// catEntry is one model in a host's list.
type catEntry struct {
	name string // normalized ("name:tag")
	size int64
	raw  json.RawMessage
}

// hostCat is a host's /api/tags models as last read.
type hostCat struct {
	Fetched time.Time         `json:"fetched"`
	Models  []json.RawMessage `json:"models"`
	entries []catEntry
}

type catFile struct {
	Hosts map[string]*hostCat `json:"hosts"`
}

// catalogue caches every host's model list, so a sleeping host's models are
// listed and routed without waking it. It is saved in the state directory
// whenever it changes, so a restart keeps it.
type catalogue struct {
	saveMu sync.Mutex
	mu     sync.RWMutex
	path   string
	log    *slog.Logger
	hosts  map[string]*hostCat
}

func newCatalogue(stateDir string, log *slog.Logger) *catalogue {
	c := &catalogue{log: log, hosts: map[string]*hostCat{}}
	if stateDir == "" {
		return c
	}
	c.path = statedir.CatalogueFile(stateDir)
	b, err := os.ReadFile(c.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot read the saved model catalogue; starting without it", "file", c.path, "err", err)
		}
		return c
	}
	var f catFile
	if err := json.Unmarshal(b, &f); err != nil {
		log.Warn("the saved model catalogue is not valid JSON; starting without it (it is rewritten on the next refresh)", "file", c.path, "err", err)
		return c
	}
	for name, hc := range f.Hosts {
		if hc == nil {
			continue
		}
		hc.entries = parseEntries(hc.Models)
		c.hosts[name] = hc
	}
	return c
}

func parseEntries(raw []json.RawMessage) []catEntry {
	out := make([]catEntry, 0, len(raw))
	for _, r := range raw {
		var m struct {
			Name  string `json:"name"`
			Model string `json:"model"`
			Size  int64  `json:"size"`
		}
		if json.Unmarshal(r, &m) != nil {
			continue
		}
		n := m.Name
		if n == "" {
			n = m.Model
		}
		if n == "" {
			continue
		}
		out = append(out, catEntry{name: inventory.NormalModel(n), size: m.Size, raw: r})
	}
	return out
}

// set replaces host's list and saves the catalogue if it changed.
func (c *catalogue) set(host string, models []json.RawMessage, at time.Time) {
	c.mu.Lock()
	old := c.hosts[host]
	same := old != nil && len(old.Models) == len(models)
	if same {
		for i := range models {
			if !bytes.Equal(old.Models[i], models[i]) {
				same = false
				break
			}
		}
	}
	c.hosts[host] = &hostCat{Fetched: at, Models: models, entries: parseEntries(models)}
	c.mu.Unlock()
	if !same && c.path != "" {
		c.save()
	}
}

// save writes the catalogue. Saves are serialised and each snapshots the
// catalogue after taking its turn, so the last one written is the latest.
func (c *catalogue) save() {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.RLock()
	b, err := json.MarshalIndent(catFile{Hosts: c.hosts}, "", " ")
	c.mu.RUnlock()
	if err == nil {
		err = statedir.Write(c.path, append(b, '\n'))
	}
	if err != nil {
		c.log.Warn("cannot save the model catalogue; a restart will not list sleeping hosts' models until they wake", "err", err)
	}
}

// get returns host's cached list.
func (c *catalogue) get(host string) (*hostCat, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	hc, ok := c.hosts[host]
	return hc, ok
}

// lookup returns the hosts whose list has model, and its size (0 unknown).
func (c *catalogue) lookup(model string) (map[string]bool, int64) {
	want := inventory.NormalModel(model)
	having := map[string]bool{}
	var size int64
	c.mu.RLock()
	defer c.mu.RUnlock()
	for host, hc := range c.hosts {
		for _, e := range hc.entries {
			if e.name == want {
				having[host] = true
				size = max(size, e.size)
			}
		}
	}
	return having, size
}

// getJSON fetches a small JSON answer from host's Ollama.
func (p *Proxy) getJSON(ctx context.Context, host, path string, v any) error {
	u := p.targetURL(host).JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	res, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("host %q: GET %s: %w", host, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("host %q: GET %s: HTTP %s", host, path, res.Status)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 32<<20)).Decode(v); err != nil {
		return fmt.Errorf("host %q: GET %s: %w", host, path, err)
	}
	return nil
}

// refreshHost re-reads host's model list into the catalogue.
func (p *Proxy) refreshHost(ctx context.Context, host string) error {
	var tags struct {
		Models []json.RawMessage `json:"models"`
	}
	if err := p.getJSON(ctx, host, "/api/tags", &tags); err != nil {
		if ctx.Err() == nil {
			p.setState(host, false)
		}
		return err
	}
	p.setState(host, true)
	p.cat.set(host, tags.Models, p.o.Now())
	return nil
}

// refreshLoop keeps up hosts' lists and states current. It never wakes.
func (p *Proxy) refreshLoop(ctx context.Context) {
	t := time.NewTicker(p.o.RefreshInterval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, name := range p.order {
			wg.Go(func() {
				if p.hosts[name].OnDemand && p.o.Backends != nil {
					uctx, cancel := context.WithTimeout(ctx, listTimeout)
					up, err := p.o.Backends.Up(uctx, name)
					cancel()
					if err != nil || !up {
						if ctx.Err() == nil {
							p.setState(name, false)
						}
						return
					}
				}
				rctx, cancel := context.WithTimeout(ctx, listTimeout)
				defer cancel()
				if err := p.refreshHost(rctx, name); err != nil && ctx.Err() == nil {
					p.log.Debug("model list refresh failed; keeping the cached copy", "host", name, "err", err)
				}
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serveListing answers the listing endpoints, which never wake a host.
// It reports false for requests that are not listings.
func (p *Proxy) serveListing(w *respWriter, r *http.Request, info *reqLog) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch path := r.URL.Path; {
	case path == "/api/tags":
		models := p.mergedTags(r.Context())
		out := make([]json.RawMessage, 0, len(models))
		for _, m := range models {
			out = append(out, m.annotated())
		}
		writeJSON(w, http.StatusOK, map[string]any{"models": out})
	case path == "/api/ps":
		writeJSON(w, http.StatusOK, map[string]any{"models": p.mergedPS(r.Context())})
	case path == "/v1/models":
		// Ollama's ListWriter: "data" is null when there are no models.
		var data []openAIModel
		for _, m := range p.mergedTags(r.Context()) {
			data = append(data, m.openAI())
		}
		writeEncoded(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	case strings.HasPrefix(path, "/v1/models/"):
		p.retrieveModel(w, r, info, strings.TrimPrefix(path, "/v1/models/"))
	case path == "/api/version":
		// The default host is always on: asking it wakes nothing.
		info.host = p.def
		end := p.begin(p.def)
		defer end()
		p.forward(w, r, nil, p.def, "")
	default:
		return false
	}
	return true
}

// listed is one model in the merged list.
type listed struct {
	entry  catEntry
	host   string
	cached bool
}

// annotated adds "gpuctl": {"host", "cached"} to the model's own record.
func (l listed) annotated() json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(l.entry.raw, &m) != nil || m == nil {
		return l.entry.raw
	}
	tag, _ := json.Marshal(map[string]any{"host": l.host, "cached": l.cached})
	m["gpuctl"] = tag
	b, err := json.Marshal(m)
	if err != nil {
		return l.entry.raw
	}
	return b
}

type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// openAI converts the record as Ollama's /v1/models does
// (openai.ToListCompletion).
func (l listed) openAI() openAIModel {
	var m struct {
		Name       string    `json:"name"`
		ModifiedAt time.Time `json:"modified_at"`
	}
	_ = json.Unmarshal(l.entry.raw, &m)
	if m.Name == "" {
		m.Name = l.entry.name
	}
	return openAIModel{ID: m.Name, Object: "model", Created: m.ModifiedAt.Unix(), OwnedBy: model.ParseName(m.Name).Namespace}
}

// retrieveModel answers GET /v1/models/{id} as Ollama does: the host that
// has the model answers it (so the answer is Ollama's own); for a model
// only a sleeping host has, serve writes Ollama's answer from the
// catalogue (openai.ToModel: the id as asked, the model's modified_at)
// rather than wake the host; a model no host has, or an id Ollama's router
// does not take (one with "/"), goes to the default host, whose Ollama
// answers its own 404.
func (p *Proxy) retrieveModel(w *respWriter, r *http.Request, info *reqLog, id string) {
	host := p.def
	if !strings.Contains(id, "/") {
		want := inventory.NormalModel(id)
		for _, m := range p.mergedTags(r.Context()) {
			if m.entry.name != want {
				continue
			}
			if !p.seenUp(m.host, 2*p.o.RefreshInterval) {
				var rec struct {
					ModifiedAt time.Time `json:"modified_at"`
				}
				_ = json.Unmarshal(m.entry.raw, &rec)
				info.host, info.note = m.host, "catalogue"
				writeEncoded(w, http.StatusOK, openAIModel{ID: id, Object: "model", Created: rec.ModifiedAt.Unix(), OwnedBy: model.ParseName(id).Namespace})
				return
			}
			host = m.host
			break
		}
	}
	info.host = host
	end := p.begin(host)
	defer end()
	p.forward(w, r, nil, host, id)
}

// mergedTags lists every host's models: live from hosts that are up (the
// cache is refreshed on the way), cached for the others. A model on several
// hosts is listed once, with the record of the host a route sends it to,
// else of the first host in order (the default host first).
func (p *Proxy) mergedTags(ctx context.Context) []listed {
	live := make([]bool, len(p.order))
	var wg sync.WaitGroup
	for i, name := range p.order {
		if !p.seenUp(name, 2*p.o.RefreshInterval) {
			continue
		}
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, listTimeout)
			defer cancel()
			live[i] = p.refreshHost(rctx, name) == nil
		})
	}
	wg.Wait()

	byName := map[string]map[string]listed{}
	var names []string
	for i, host := range p.order {
		hc, ok := p.cat.get(host)
		var entries []catEntry
		if ok {
			entries = hc.entries
		} else {
			// Never catalogued: list the models the inventory declares.
			for _, m := range p.hosts[host].Models {
				raw, _ := json.Marshal(map[string]any{"name": m.String(), "model": m.String(), "size": 0})
				entries = append(entries, catEntry{name: inventory.NormalModel(m.String()), raw: raw})
			}
		}
		for _, e := range entries {
			if byName[e.name] == nil {
				byName[e.name] = map[string]listed{}
				names = append(names, e.name)
			}
			if _, dup := byName[e.name][host]; !dup {
				byName[e.name][host] = listed{entry: e, host: host, cached: !live[i]}
			}
		}
	}
	out := make([]listed, 0, len(names))
	for _, n := range names {
		on := byName[n]
		pick := ""
		if r := p.inv.MatchRoute(n); r != nil {
			if _, ok := on[r.Host]; ok {
				pick = r.Host
			} else if _, ok := on[r.Fallback]; ok && r.Fallback != "" {
				pick = r.Fallback
			}
		}
		if pick == "" {
			for _, h := range p.order {
				if _, ok := on[h]; ok {
					pick = h
					break
				}
			}
		}
		out = append(out, on[pick])
	}
	return out
}

// mergedPS merges /api/ps of the hosts that are up; it never wakes one.
func (p *Proxy) mergedPS(ctx context.Context) []json.RawMessage {
	lists := make([][]json.RawMessage, len(p.order))
	var wg sync.WaitGroup
	for i, name := range p.order {
		if !p.seenUp(name, 2*p.o.RefreshInterval) {
			continue
		}
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, listTimeout)
			defer cancel()
			var ps struct {
				Models []json.RawMessage `json:"models"`
			}
			if err := p.getJSON(rctx, name, "/api/ps", &ps); err != nil {
				p.log.Debug("cannot read loaded models", "host", name, "err", err)
				return
			}
			for _, m := range ps.Models {
				lists[i] = append(lists[i], listed{entry: catEntry{raw: m}, host: name}.annotated())
			}
		})
	}
	wg.Wait()
	out := []json.RawMessage{}
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// note adds name to host's list (a copy of from's record, renamed, when
// from is listed; else a bare record) or removes it, for when the host's
// own list cannot be re-read after a change made through serve.
func (c *catalogue) note(host, name, from string, remove bool, at time.Time) {
	want := inventory.NormalModel(name)
	c.mu.Lock()
	old := c.hosts[host]
	var models []json.RawMessage
	var src json.RawMessage
	if old != nil {
		for _, e := range old.entries {
			if e.name != want {
				models = append(models, e.raw)
			}
			if from != "" && e.name == inventory.NormalModel(from) {
				src = e.raw
			}
		}
	}
	if !remove {
		rec := map[string]any{}
		if src != nil {
			_ = json.Unmarshal(src, &rec)
		}
		rec["name"], rec["model"] = want, want
		if _, ok := rec["size"]; !ok {
			rec["size"] = 0
		}
		b, _ := json.Marshal(rec)
		models = append(models, b)
	}
	fetched := at
	if old != nil {
		fetched = old.Fetched
	}
	c.hosts[host] = &hostCat{Fetched: fetched, Models: models, entries: parseEntries(models)}
	c.mu.Unlock()
	if c.path != "" {
		c.save()
	}
}
