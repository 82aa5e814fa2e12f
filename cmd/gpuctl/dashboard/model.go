package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/inventory"
)

// Page is what /gpuctl/api/status answers (documented in docs/status.md).
type Page struct {
	// Now is the server's clock, so the page computes ages without
	// trusting the viewer's.
	Now time.Time `json:"now"`
	// CheckedAt is when the host statuses were refreshed.
	CheckedAt time.Time `json:"checked_at"`
	// RefreshS is how often the page polls (seconds).
	RefreshS float64 `json:"refresh_s"`
	// Actions reports whether the wake button is offered.
	Actions bool   `json:"actions"`
	Hosts   []Host `json:"hosts"`
	// Proxy is the routing proxy's activity (null without a tracker).
	Proxy *Proxy `json:"proxy"`
}

// Host is `gpuctl status --json`'s HOST object with what the page adds.
type Host struct {
	controller.HostStatus
	OnDemand bool `json:"on_demand"`
	// Loaded is /api/ps (null when the host's Ollama did not answer).
	Loaded      []Loaded `json:"loaded"`
	LoadedError string   `json:"loaded_error,omitempty"`
	// Wakes are the last recorded wakes, newest first.
	Wakes []controller.WakeRecord `json:"wakes"`
	// IdleView is idle shutdown's saved view in detail (on-demand hosts).
	IdleView *IdleView `json:"idle_view,omitempty"`
	// PageWake is the last wake started from the page.
	PageWake *PageWake `json:"page_wake,omitempty"`
	// InFlight is the proxy's requests in flight to the host.
	InFlight int `json:"in_flight"`
}

// Loaded is one model in the host's memory (/api/ps).
type Loaded struct {
	Name          string    `json:"name"`
	SizeBytes     int64     `json:"size_bytes"`
	VRAMBytes     int64     `json:"vram_bytes"`
	ContextLength int       `json:"context_length,omitempty"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// IdleView is every idle signal and when the box would be powered off.
type IdleView struct {
	// Signals are in idle shutdown's order; IdleSince null means busy (or
	// unread) at the last check.
	Signals    []IdleSignal `json:"signals"`
	IdleAfterS float64      `json:"idle_after_s"`
	MinUptimeS float64      `json:"min_uptime_s"`
	// PowerOffAfter is when `gpuctl shutdown --if-idle` would first power
	// the box off if nothing changes: idle_since + idle_after, and not
	// before boot + min_uptime (null while busy or never checked).
	PowerOffAfter *time.Time `json:"power_off_after"`
	// Line is `gpuctl status`'s one-line summary.
	Line string `json:"line"`
}

// IdleSignal is one signal as the last shutdown check saw it.
type IdleSignal struct {
	Name      string     `json:"name"`
	IdleSince *time.Time `json:"idle_since"`
	Failed    bool       `json:"failed,omitempty"`
}

// Proxy is the routing proxy's activity.
type Proxy struct {
	Started time.Time                `json:"started"`
	Hosts   map[string]activity.Host `json:"hosts"`
}

// page assembles the answer: the snapshot's statuses with the cheap,
// always-fresh parts (files, counters) read now.
func (d *Dashboard) page(snap *snapshot) Page {
	now := d.o.Now()
	p := Page{Now: now, CheckedAt: snap.at, RefreshS: d.o.RefreshInterval.Seconds(), Actions: d.actions, Hosts: []Host{}}
	var act activity.Snapshot
	if d.o.Tracker != nil {
		act = d.o.Tracker.Snapshot()
		p.Proxy = &Proxy{Started: act.Started, Hosts: act.Hosts}
	}
	d.mu.Lock()
	wakes := map[string]PageWake{}
	for k, v := range d.wakes {
		wakes[k] = *v
	}
	d.mu.Unlock()
	for _, h := range d.hosts {
		st, ok := snap.status[h.Name]
		if !ok {
			st = controller.HostStatus{Name: h.Name, State: controller.StateUnknown, Reason: "not checked yet",
				Checks: []controller.Check{}, GPU: []hostcmd.GPU{}}
		}
		out := Host{HostStatus: st, OnDemand: h.OnDemand, Loaded: snap.loaded[h.Name], LoadedError: snap.psErr[h.Name],
			Wakes: []controller.WakeRecord{}, InFlight: act.Hosts[h.Name].InFlight}
		if d.o.History != nil {
			if recs, err := d.o.History(h.Name); err == nil {
				out.BootETA = controller.BootETAOf(recs)
				recs = recs[max(0, len(recs)-DefaultWakes):]
				for i := len(recs) - 1; i >= 0; i-- {
					out.Wakes = append(out.Wakes, recs[i])
				}
			}
		}
		if pw, ok := wakes[h.Name]; ok {
			out.PageWake = &pw
		}
		if h.OnDemand && d.o.StateDir != "" {
			out.Idle, out.IdleView = idleOf(d.o.StateDir, h, now)
		}
		p.Hosts = append(p.Hosts, out)
	}
	return p
}

// idleOf reads what idle shutdown last saved for h: `gpuctl status`'s
// summary (nil until a shutdown run checked the host) and the detail.
func idleOf(stateDir string, h *inventory.Host, now time.Time) (any, *IdleView) {
	st, err := idle.LoadState(stateDir, h.Name)
	if err != nil {
		sum := idle.Summary{Error: err.Error()}
		return sum, &IdleView{Signals: []IdleSignal{}, Line: sum.Line(now)}
	}
	sum := idle.Summarize(st, now)
	if !sum.Checked() {
		return nil, nil
	}
	v := &IdleView{Signals: []IdleSignal{}, IdleAfterS: h.IdleAfter.D().Seconds(), MinUptimeS: h.MinUptime.D().Seconds(),
		Line: sum.Line(now)}
	for _, name := range idle.SignalNames() {
		s := IdleSignal{Name: name, Failed: slices.Contains(st.Failed, name)}
		if t, ok := st.Since[name]; ok && !s.Failed {
			s.IdleSince = &t
		}
		v.Signals = append(v.Signals, s)
	}
	if st.IdleSince != nil && st.Phase != idle.PhaseOff {
		at := st.IdleSince.Add(h.IdleAfter.D())
		if boot, ok := st.Since[idle.SigUptime]; ok && boot.Add(h.MinUptime.D()).After(at) {
			at = boot.Add(h.MinUptime.D())
		}
		v.PowerOffAfter = &at
	}
	return sum, v
}

// ps asks h's Ollama which models are loaded.
func (d *Dashboard) ps(ctx context.Context, h *inventory.Host) ([]Loaded, error) {
	ctx, cancel := context.WithTimeout(ctx, psTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.OllamaURL.JoinPath("/api/ps").String(), nil)
	if err != nil {
		return nil, err
	}
	res, err := d.o.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("/api/ps: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/api/ps: HTTP %s", res.Status)
	}
	var ps api.ProcessResponse
	if err := json.NewDecoder(io.LimitReader(res.Body, 4<<20)).Decode(&ps); err != nil {
		return nil, fmt.Errorf("/api/ps: %w", err)
	}
	out := []Loaded{}
	for _, m := range ps.Models {
		out = append(out, Loaded{Name: m.Name, SizeBytes: m.Size, VRAMBytes: m.SizeVRAM, ContextLength: m.ContextLength, ExpiresAt: m.ExpiresAt})
	}
	return out, nil
}
