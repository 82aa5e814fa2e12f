package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

// Declared models after a wake serve started: once the host is ready,
// serve pulls the host's declared models that its Ollama does not list, one
// after the other, in the background (progress in the log and in
// gpuctl_proxy_model_pull_*). A request for a model being pulled is held
// (counted in flight, so idle shutdown leaves the box alone) until the pull
// ends or the host's boot_timeout passes, then gets 503 with Retry-After
// and the reason; requests for models already there go ahead at once. A
// failed pull is reported the same way for WakeBackoff, after which
// requests are forwarded again (and Ollama answers for the model).

// pullState is one declared model's pull.
type pullState struct {
	model string
	done  chan struct{}
	mu    sync.Mutex
	err   error
	ended time.Time
	// progress, for the 503's message
	status           string
	completed, total int64
}

func pullKey(host, model string) string { return host + "\x00" + inventory.NormalModel(model) }

// startPulls reads host's model list and starts pulling its declared models
// that are missing. It registers the pulls before it returns, so requests
// released by the wake that follows see them.
func (p *Proxy) startPulls(h *inventory.Host) {
	if len(h.Models) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(p.baseCtx, listTimeout)
	err := p.refreshHost(ctx, h.Name)
	cancel()
	if err != nil {
		p.log.Warn("cannot list the woken host's models; its declared models are not pulled", "host", h.Name, "err", err)
		return
	}
	hc, _ := p.cat.get(h.Name)
	have := map[string]bool{}
	if hc != nil {
		for _, e := range hc.entries {
			have[e.name] = true
		}
	}
	var todo []*pullState
	p.mu.Lock()
	for _, m := range h.Models {
		key := pullKey(h.Name, string(m))
		if have[inventory.NormalModel(string(m))] {
			continue
		}
		if old := p.pulls[key]; old != nil {
			select {
			case <-old.done:
			default:
				continue // already being pulled
			}
		}
		ps := &pullState{model: string(m), done: make(chan struct{})}
		p.pulls[key] = ps
		todo = append(todo, ps)
	}
	p.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	names := make([]string, len(todo))
	for i, ps := range todo {
		names[i] = ps.model
	}
	p.log.Info("pulling the host's missing declared models", "host", h.Name, "models", strings.Join(names, ","))
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		// The pulls count as activity: idle shutdown waits for them.
		end := p.begin(h.Name)
		defer end()
		// Held streams for the host show the pulls' progress.
		defer p.boards[h.Name].begin()()
		for _, ps := range todo {
			err := p.pullOne(p.baseCtx, h.Name, ps)
			ps.mu.Lock()
			ps.err, ps.ended = err, p.o.Now()
			ps.mu.Unlock()
			close(ps.done)
			p.met.pullBytes.DeleteLabelValues(h.Name, inventory.NormalModel(ps.model))
			p.met.pullTotal.DeleteLabelValues(h.Name, inventory.NormalModel(ps.model))
			if err != nil {
				p.met.pulls.WithLabelValues(h.Name, inventory.NormalModel(ps.model), "failed").Inc()
				p.log.Warn("pulling a declared model failed", "host", h.Name, "model", ps.model, "err", err)
				continue
			}
			p.met.pulls.WithLabelValues(h.Name, inventory.NormalModel(ps.model), "ok").Inc()
		}
	}()
}

// pullOne pulls one model on host through its Ollama's /api/pull, logging
// each new status and every quarter of a download.
func (p *Proxy) pullOne(ctx context.Context, host string, ps *pullState) error {
	body, _ := json.Marshal(map[string]any{"model": ps.model, "stream": true})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.targetURL(host).JoinPath("/api/pull").String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	start := p.o.Now()
	res, err := p.tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("POST /api/pull: %w", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := inventory.NormalModel(ps.model)
	lastStatus, lastQuarter := "", -1
	for sc.Scan() {
		var line struct {
			Status    string `json:"status"`
			Error     string `json:"error"`
			Total     int64  `json:"total"`
			Completed int64  `json:"completed"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line.Error != "" {
			return errors.New(line.Error)
		}
		ps.mu.Lock()
		ps.status, ps.completed, ps.total = line.Status, line.Completed, line.Total
		ps.mu.Unlock()
		if line.Total > 0 {
			p.met.pullBytes.WithLabelValues(host, label).Set(float64(line.Completed))
			p.met.pullTotal.WithLabelValues(host, label).Set(float64(line.Total))
		}
		q := -1
		if line.Total > 0 {
			q = int(4 * line.Completed / line.Total)
		}
		if line.Status != lastStatus || q > lastQuarter {
			p.log.Info("pulling a declared model", "host", host, "model", ps.model, "status", line.Status, "completed", line.Completed, "total", line.Total)
			note := fmt.Sprintf("%s: pulling %s: %s", host, ps.model, line.Status)
			if line.Total > 0 {
				note += fmt.Sprintf(" %d %%", 100*line.Completed/line.Total)
			}
			p.note(host, note)
			if line.Status != lastStatus {
				lastQuarter = -1
			}
			lastStatus = line.Status
			lastQuarter = max(lastQuarter, q)
		}
		if line.Status == "success" {
			rctx, cancel := context.WithTimeout(ctx, listTimeout)
			_ = p.refreshHost(rctx, host)
			cancel()
			p.log.Info("declared model pulled", "host", host, "model", ps.model, "took", p.o.Now().Sub(start))
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("POST /api/pull: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /api/pull: HTTP %s", res.Status)
	}
	return errors.New("the pull ended without success")
}

// awaitPull holds a request for a declared model host is pulling until the
// pull ends or the host's boot_timeout passes.
func (p *Proxy) awaitPull(ctx context.Context, host, model, path string) error {
	if model == "" || path == "/api/pull" {
		return nil
	}
	p.mu.Lock()
	ps := p.pulls[pullKey(host, model)]
	p.mu.Unlock()
	if ps == nil {
		return nil
	}
	h := p.hosts[host]
	hold := h.BootTimeout.D()
	if hold <= 0 {
		hold = inventory.DefaultBootTimeout.D()
	}
	select {
	case <-ps.done:
	default:
		p.log.Info("holding a request until its declared model is pulled", "host", host, "model", model, "hold", hold)
		t := time.NewTimer(hold)
		defer t.Stop()
		select {
		case <-ps.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			ps.mu.Lock()
			msg := ps.status
			if ps.total > 0 {
				msg = fmt.Sprintf("%s, %d of %d bytes", msg, ps.completed, ps.total)
			}
			ps.mu.Unlock()
			return &WakeError{Host: host, Reason: "pulling", RetryAfter: p.o.WakeBackoff,
				Err: fmt.Errorf("declared model %q is still being pulled (%s) after %s", ps.model, msg, hold)}
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err != nil && p.o.Now().Sub(ps.ended) < p.o.WakeBackoff {
		return &WakeError{Host: host, Reason: "pull_failed", RetryAfter: max(p.o.WakeBackoff-p.o.Now().Sub(ps.ended), time.Second),
			Err: fmt.Errorf("pulling declared model %q failed: %w", ps.model, ps.err)}
	}
	return nil
}
