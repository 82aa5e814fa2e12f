// Package dashboard is the status page `gpuctl serve` shows at /gpuctl/: one
// card per host (state and since when, boot ETA, readiness checks, loaded
// models, idle shutdown, recent wakes, the proxy's requests), kept live by
// polling /gpuctl/api/status.
//
// The page never wakes a host and never opens SSH to a sleeping one: host
// state comes from the controller's status (a TCP probe first; SSH only to
// a host whose SSH port answers), loaded models from /api/ps only on hosts
// whose Ollama check just passed, and everything else from files in the
// state directory and the proxy's own counters. Status is refreshed only
// while someone is looking (a poll in the last RefreshInterval triggers the
// next refresh), and every viewer shares one refresh.
//
// With `[serve] page_actions = true` the page also offers a "wake" button:
// a POST to /gpuctl/api/wake/HOST that must come from the page itself (a
// same-origin check on Sec-Fetch-Site or Origin; a request carrying neither
// is refused).
//
// Every URL the page uses is relative, so it works behind a reverse proxy
// that serves gpuctl under a path prefix.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hosthttp"
	"github.com/ollamalive/gpuctl/inventory"
)

// Prefix is where the page lives on `gpuctl serve`.
const Prefix = "/gpuctl/"

// Defaults for Options left zero.
const (
	DefaultRefreshInterval = 5 * time.Second
	// DefaultWakes is how many recent wakes a card shows.
	DefaultWakes = 5
	// psTimeout bounds one /api/ps call.
	psTimeout = 3 * time.Second
	// maxStale: a snapshot older than this many refresh intervals is
	// refreshed before it is shown.
	maxStale = 3
	// statusTimeout bounds one refresh of every host's status.
	statusTimeout = 20 * time.Second
)

//go:embed static
var static embed.FS

// Options configures a Dashboard. Inventory and Status are required.
type Options struct {
	Inventory *inventory.Inventory
	// Status finds out where hosts stand without waking them
	// (controller.Controller.StatusAll).
	Status func(ctx context.Context, hosts []*inventory.Host) []controller.HostStatus
	// History returns a host's recorded wakes, oldest first.
	History func(host string) ([]controller.WakeRecord, error)
	// Tracker is the proxy's activity (its in-flight requests); nil shows none.
	Tracker *activity.Tracker
	// HTTP reaches the hosts' Ollama for /api/ps.
	HTTP *http.Client
	// StateDir is where idle shutdown keeps its state ("" shows none).
	StateDir string
	// Wake wakes a host as a request for it would (the proxy's shared
	// wake). The wake button exists only when Wake is set and
	// Inventory.Serve.PageActions is true.
	Wake func(ctx context.Context, host string) error
	// RefreshInterval is how old the status may get while the page is
	// watched before it is refreshed.
	RefreshInterval time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
}

// Dashboard serves the status page and its API under Prefix.
type Dashboard struct {
	o       Options
	log     *slog.Logger
	hosts   []*inventory.Host
	byName  map[string]*inventory.Host
	actions bool
	files   http.Handler

	baseCtx context.Context
	cancel  context.CancelFunc
	bg      sync.WaitGroup

	mu         sync.Mutex
	snap       *snapshot
	refreshing chan struct{} // closed when the refresh in progress ends
	wakes      map[string]*PageWake
}

// snapshot is one refresh of every host's status.
type snapshot struct {
	at     time.Time
	status map[string]controller.HostStatus
	loaded map[string][]Loaded
	psErr  map[string]string
}

// PageWake is a wake started from the page.
type PageWake struct {
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// New builds a Dashboard. Call Close when done.
func New(o Options) (*Dashboard, error) {
	if o.Inventory == nil || o.Status == nil {
		return nil, errors.New("dashboard: inventory and status are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTP == nil {
		o.HTTP = hosthttp.NewClient(hosthttp.Options{HeaderTimeout: psTimeout})
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	d := &Dashboard{o: o, log: o.Logger, byName: map[string]*inventory.Host{}, wakes: map[string]*PageWake{},
		actions: o.Wake != nil && o.Inventory.Serve.PageActions,
		files:   http.StripPrefix(Prefix, http.FileServerFS(sub))}
	for i := range o.Inventory.Hosts {
		h := &o.Inventory.Hosts[i]
		d.hosts = append(d.hosts, h)
		d.byName[h.Name] = h
	}
	d.baseCtx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Close cancels refreshes and page wakes in progress and waits for them.
func (d *Dashboard) Close() {
	d.cancel()
	d.bg.Wait()
}

// ServeHTTP serves Prefix (the page and its files), Prefix+"api/status" and
// Prefix+"api/wake/HOST". "/gpuctl" redirects to the page.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Frame-Options", "SAMEORIGIN")
	path := r.URL.Path
	switch {
	case path == strings.TrimSuffix(Prefix, "/"):
		// Relative, so that a path prefix in front of gpuctl survives
		// (http.Redirect would make it absolute).
		w.Header().Set("Location", "gpuctl/")
		w.WriteHeader(http.StatusMovedPermanently)
	case path == Prefix+"api/status":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		d.serveStatus(w, r)
	case strings.HasPrefix(path, Prefix+"api/wake/"):
		if !allow(w, r, http.MethodPost) {
			return
		}
		d.serveWake(w, r, strings.TrimPrefix(path, Prefix+"api/wake/"))
	case strings.HasPrefix(path, Prefix+"api/"):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: the page's API is api/status and api/wake/HOST"})
	default:
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
			"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
		w.Header().Set("Cache-Control", "no-cache")
		d.files.ServeHTTP(w, r)
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.Method + " is not allowed here"})
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (d *Dashboard) serveStatus(w http.ResponseWriter, r *http.Request) {
	snap, err := d.current(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no status yet: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, d.page(snap))
}

// current returns the latest snapshot and starts a refresh when it is
// older than RefreshInterval. A snapshot older than maxStale intervals
// (nobody looked for a while) is not shown: like the first one, the
// refresh is waited for.
func (d *Dashboard) current(ctx context.Context) (*snapshot, error) {
	d.mu.Lock()
	snap := d.snap
	age := time.Duration(0)
	if snap != nil {
		age = d.o.Now().Sub(snap.at)
	}
	if snap == nil || age >= d.o.RefreshInterval {
		d.refreshLocked()
	}
	done := d.refreshing
	d.mu.Unlock()
	if snap != nil && age < maxStale*d.o.RefreshInterval {
		return snap, nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.snap == nil {
		return nil, errors.New("gpuctl serve is shutting down")
	}
	return d.snap, nil
}

// refreshLocked starts a refresh unless one runs; d.mu held.
func (d *Dashboard) refreshLocked() {
	if d.refreshing != nil || d.baseCtx.Err() != nil {
		if d.refreshing == nil {
			d.refreshing = make(chan struct{})
			close(d.refreshing)
		}
		return
	}
	done := make(chan struct{})
	d.refreshing = done
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		snap := d.refresh(d.baseCtx)
		d.mu.Lock()
		if d.baseCtx.Err() == nil {
			d.snap = snap
		}
		d.refreshing = nil
		d.mu.Unlock()
		close(done)
	}()
}

// refresh asks every host's status at once, then /api/ps of those whose
// Ollama answered.
func (d *Dashboard) refresh(ctx context.Context) *snapshot {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	sts := d.o.Status(ctx, d.hosts)
	snap := &snapshot{at: d.o.Now(), status: map[string]controller.HostStatus{},
		loaded: map[string][]Loaded{}, psErr: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, st := range sts {
		snap.status[st.Name] = st
		if !ollamaAnswered(st) {
			continue
		}
		h := d.hosts[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			loaded, err := d.ps(ctx, h)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				snap.psErr[h.Name] = err.Error()
				return
			}
			snap.loaded[h.Name] = loaded
		}()
	}
	wg.Wait()
	return snap
}

// ollamaAnswered reports whether the status just heard the host's Ollama
// answer: only then is /api/ps asked (a sleeping host is never contacted).
func ollamaAnswered(st controller.HostStatus) bool {
	if st.State != controller.StateReady && st.State != controller.StateDegraded {
		return false
	}
	for _, c := range st.Checks {
		if c.Name == controller.CheckOllama {
			return c.OK
		}
	}
	return false
}

func (d *Dashboard) serveWake(w http.ResponseWriter, r *http.Request, host string) {
	if !d.actions {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "the page's actions are off: set page_actions = true under [serve] in the inventory to wake hosts from the page"})
		return
	}
	if err := sameOrigin(r); err != nil {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		return
	}
	h, ok := d.byName[host]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no host %q in the inventory", host)})
		return
	}
	if !h.OnDemand {
		writeJSON(w, http.StatusConflict, map[string]string{"error": fmt.Sprintf("host %q is always on: gpuctl does not wake it", host)})
		return
	}
	d.mu.Lock()
	if pw := d.wakes[host]; pw != nil && pw.Finished == nil {
		cp := *pw
		d.mu.Unlock()
		writeJSON(w, http.StatusAccepted, map[string]any{"host": host, "wake": cp, "coalesced": true})
		return
	}
	if d.baseCtx.Err() != nil {
		d.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "gpuctl serve is shutting down"})
		return
	}
	pw := &PageWake{Started: d.o.Now()}
	d.wakes[host] = pw
	answer := *pw
	d.bg.Add(1)
	d.mu.Unlock()
	d.log.Info("wake requested from the status page", "host", host, "remote", r.RemoteAddr)
	go func() {
		defer d.bg.Done()
		boot := h.BootTimeout.D()
		if boot <= 0 {
			boot = inventory.DefaultBootTimeout.D()
		}
		ctx, cancel := context.WithTimeout(d.baseCtx, boot)
		err := d.o.Wake(ctx, host)
		cancel()
		d.mu.Lock()
		now := d.o.Now()
		pw.Finished = &now
		if err != nil {
			pw.Error = err.Error()
			d.log.Warn("wake from the status page failed", "host", host, "err", err)
		}
		// Show the outcome at the next poll.
		d.snap = nil
		d.refreshLocked()
		d.mu.Unlock()
	}()
	writeJSON(w, http.StatusAccepted, map[string]any{"host": host, "wake": answer, "coalesced": false})
}

// sameOrigin accepts only requests a browser marks as coming from the same
// origin: Sec-Fetch-Site "same-origin", or (older browsers) an Origin whose
// host is the request's Host or, behind a reverse proxy, its
// X-Forwarded-Host. A request carrying neither header is refused: a wake
// from a script is `gpuctl wake`'s job.
func sameOrigin(r *http.Request) error {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		if s == "same-origin" {
			return nil
		}
		return fmt.Errorf("cross-origin request refused (Sec-Fetch-Site: %s): wake hosts from the status page itself", s)
	}
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return errors.New("request without Origin refused: wake hosts from the status page, or with gpuctl wake HOST")
	}
	host := origin
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if strings.EqualFold(host, r.Host) {
		return nil
	}
	for _, fh := range strings.Split(r.Header.Get("X-Forwarded-Host"), ",") {
		if fh = strings.TrimSpace(fh); fh != "" && strings.EqualFold(host, fh) {
			return nil
		}
	}
	return fmt.Errorf("cross-origin request refused (Origin %s is not this page's host): wake hosts from the status page itself", origin)
}
