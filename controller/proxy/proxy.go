// Package proxy is gpuctl's routing proxy (`gpuctl serve`): an Ollama- and
// OpenAI-compatible reverse proxy that Open WebUI and other clients point at.
//
// Requests under /api/ (Ollama) and /v1/ (OpenAI-compatible) are routed by
// their `model` field: the first matching [[route]], else by size (a model
// too big for the default host's VRAM goes to an on-demand host where it
// fits), else to the default host. A request for an on-demand host that is
// asleep wakes it (one wake for all waiters), is held until the host is ready
// or its boot_timeout passes, and is then forwarded; if the wake fails it
// goes to the route's fallback host, or gets 503 with Retry-After.
//
// A request for an on-demand host that `gpuctl shutdown` is powering off
// is never forwarded to the dying box. The request is counted in flight
// first and only then checks the shutdown's draining marker in the state
// directory, while the shutdown writes the marker before its last read of
// the in-flight count (package activity): so either the shutdown sees the
// request and aborts, or the request sees the marker and is held until the
// marker is gone, then wakes the host like any asleep host (or uses its
// route's fallback), all within the host's boot_timeout.
//
// Listing requests (/api/tags, /api/ps, /v1/models, /api/version) never
// wake anything: the model list merges every host, a sleeping host's from a
// cached copy kept in the state directory.
//
// Responses stream through unbuffered (each NDJSON line or SSE event is
// flushed as it arrives), with no overall write deadline: each write must
// make progress within WriteStall, so a client that stops reading loses
// its stream and slot, and a client that goes away cancels its backend
// request. Only the methods Ollama's API uses are forwarded, and paths
// with dot segments are refused, never cleaned.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hosthttp"
	"github.com/ollamalive/gpuctl/inventory"
)

// Backends is what the proxy needs to know and do about hosts. The
// controller implements it; tests use fakes.
type Backends interface {
	// Up reports whether host's Ollama is ready to serve now. It must not
	// wake anything, and should answer within a few seconds.
	Up(ctx context.Context, host string) (bool, error)
	// Wake brings host up and returns once its Ollama is ready, or why it
	// could not. ctx carries the host's boot_timeout as its deadline.
	Wake(ctx context.Context, host string) error
}

// Defaults for Options left zero.
const (
	DefaultResponseHeaderTimeout = 10 * time.Minute
	DefaultStateTTL              = 15 * time.Second
	DefaultRefreshInterval       = 30 * time.Second
	DefaultDrainTimeout          = 30 * time.Second
	DefaultWakeBackoff           = 30 * time.Second
	DefaultReplayDelay           = 500 * time.Millisecond
	DefaultDrainPoll             = 250 * time.Millisecond
	// DefaultWriteStall is how long a response write may make no progress
	// (a client that stopped reading) before the stream is ended.
	DefaultWriteStall = 60 * time.Second
	// bodyReadTimeout bounds reading one request body from the client.
	bodyReadTimeout = 2 * time.Minute
	// listTimeout bounds each backend call made to answer a listing.
	listTimeout = 3 * time.Second
)

// Options configures a Proxy. Inventory is required; everything else has a
// default.
type Options struct {
	Inventory *inventory.Inventory
	// Backends reports host state and wakes hosts. Nil treats every host as
	// up and never wakes (always-on hosts only).
	Backends Backends
	// Tracker counts requests per host for idle shutdown; nil makes one.
	Tracker *activity.Tracker
	Logger  *slog.Logger
	// StateDir keeps the model catalogue (catalogue.json) and, when Run
	// is used, the activity files; "" keeps nothing on disk.
	StateDir string
	// Registry receives the proxy's metrics and is served at /metrics; nil
	// makes a private one with the standard Go and process collectors.
	Registry *prometheus.Registry
	// Dial dials backends (tests pass in-memory pipes); nil dials TCP
	// with hosthttp.DefaultDialTimeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Getenv reads the proxy environment (HTTP_PROXY, NO_PROXY…) for the
	// backend transport, as every gpuctl HTTP client does (hosthttp);
	// os.Getenv when nil.
	Getenv func(string) string
	// Transport, when set, replaces the whole backend transport (Dial,
	// Getenv and the timeouts below are then ignored).
	Transport http.RoundTripper
	// ResponseHeaderTimeout is how long a backend may take to send headers:
	// long enough for a cold model load.
	ResponseHeaderTimeout time.Duration
	// StateTTL is how long an Up answer (or a served response) is trusted.
	StateTTL time.Duration
	// RefreshInterval is how often up hosts' model lists are re-read.
	RefreshInterval time.Duration
	// DrainTimeout bounds how long Run lets streams finish on shutdown.
	DrainTimeout time.Duration
	// WakeBackoff is how long a failed wake is remembered: requests in that
	// window get 503 at once instead of starting another wake.
	WakeBackoff time.Duration
	// ReplayDelay is the pause before replaying a request whose dial failed.
	ReplayDelay time.Duration
	// DrainPoll is how often a request held by a shutdown's draining
	// marker (STATE_DIR/draining/HOST) looks whether it is gone.
	DrainPoll time.Duration
	// Page, when set, serves the status page: every path under /gpuctl/
	// but activity.Path, and /gpuctl itself.
	Page http.Handler
	// WriteStall is how long a write to a client may make no progress
	// (a client that stopped reading) before its stream is ended and its
	// slot released.
	WriteStall time.Duration
	// TrimInterval is how often Run looks whether serve went quiet, to
	// give memory back after a burst of work (see trimmer).
	TrimInterval time.Duration
	Now          func() time.Time
}

// Proxy is the routing proxy. Its ServeHTTP serves everything `gpuctl
// serve` answers: /api/*, /v1/*, /healthz, /metrics and activity.Path.
type Proxy struct {
	o       Options
	inv     *inventory.Inventory
	log     *slog.Logger
	hosts   map[string]*inventory.Host
	order   []string // default host first, then inventory order
	def     string
	tracker *activity.Tracker
	rp      *httputil.ReverseProxy
	client  *http.Client // for listings and catalogue refreshes
	tr      http.RoundTripper
	sem     chan struct{}
	maxBody int64
	met     *metrics
	reg     *prometheus.Registry
	metrics http.Handler
	cat     *catalogue
	origins *originPolicy

	blobOnce  sync.Once
	blobPath  string // the spool of uploaded blobs (blobs.go)
	blobErr   error
	blobTemp  bool     // blobPath is a temporary directory: removed by Close
	blobsUsed sync.Map // digest → spooled file handed to a host for a create
	// listenAddr is the address Run serves on (the guard's "loopback
	// listener"); nil until Run.
	listenAddr atomic.Pointer[net.Addr]

	baseCtx context.Context
	cancel  context.CancelFunc
	// cutCtx ends, with its cause, every request still running when a
	// shutdown's drain timeout passes (see cutRequests).
	cutCtx context.Context
	cut    context.CancelCauseFunc
	bg     sync.WaitGroup

	mu     sync.Mutex
	states map[string]hostState
	flight map[string]*upCall
	// boards carry each host's latest wake or pull note to held streams.
	boards map[string]*board
	pulls  map[string]*pullState // declared-model pulls after wakes (pulls.go)

	// drainCheckHook, when set (tests), runs between counting a request
	// and looking for the draining marker.
	drainCheckHook func(host string)
	// finishHook, when set (tests), runs as each API request is logged.
	finishHook func(status int)

	trim       trimmer
	freeMemory func() // freeOSMemory; tests count calls
}

type hostState struct {
	up bool
	at time.Time
}

// New builds a Proxy from the inventory's [serve], [[host]] and [[route]].
func New(o Options) (*Proxy, error) {
	if o.Inventory == nil {
		return nil, errors.New("proxy: no inventory")
	}
	inv := o.Inventory
	o.setDefaults()
	p := &Proxy{
		o: o, inv: inv, log: o.Logger, tracker: o.Tracker,
		hosts:  map[string]*inventory.Host{},
		states: map[string]hostState{},
		flight: map[string]*upCall{},
		pulls:  map[string]*pullState{},
		reg:    o.Registry,

		freeMemory: freeOSMemory,
	}
	if err := p.indexHosts(); err != nil {
		return nil, err
	}
	if err := p.orderHosts(); err != nil {
		return nil, err
	}
	p.setLimits()
	met, err := newMetrics(o.Registry, p.order)
	if err != nil {
		return nil, err
	}
	p.met = met
	p.metrics = promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Timeout: 10 * time.Second})

	p.setTransport()
	p.baseCtx, p.cancel = context.WithCancel(context.Background())
	p.cutCtx, p.cut = context.WithCancelCause(context.Background())
	p.cat = newCatalogue(o.StateDir, o.Logger)
	p.origins = newOriginPolicy(inv.Serve.AllowedOrigins)
	for _, name := range p.order {
		p.met.backendUp.WithLabelValues(name).Set(-1)
	}
	return p, nil
}

// setDefaults fills in the Options left zero.
func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tracker == nil {
		o.Tracker = activity.NewTracker(o.Now)
	}
	orDefault(&o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	orDefault(&o.StateTTL, DefaultStateTTL)
	orDefault(&o.RefreshInterval, DefaultRefreshInterval)
	orDefault(&o.DrainTimeout, DefaultDrainTimeout)
	orDefault(&o.WakeBackoff, DefaultWakeBackoff)
	orDefault(&o.ReplayDelay, DefaultReplayDelay)
	orDefault(&o.DrainPoll, DefaultDrainPoll)
	orDefault(&o.WriteStall, DefaultWriteStall)
	orDefault(&o.TrimInterval, DefaultTrimInterval)
	if o.Registry == nil {
		// A private registry also carries the standard Go and process
		// collectors (go_goroutines, go_memstats_*, process_open_fds,
		// process_resident_memory_bytes…), so a leak can be watched.
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
}

// orDefault sets *d to def when it is zero or negative.
func orDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// indexHosts names every [[host]], each with its progress board; each
// needs an Ollama URL.
func (p *Proxy) indexHosts() error {
	inv := p.inv
	for i := range inv.Hosts {
		h := &inv.Hosts[i]
		if h.OllamaURL.IsZero() {
			return fmt.Errorf("host %q has no ollama_url: set it (or address) in %s", h.Name, inv.Path)
		}
		p.hosts[h.Name] = h
	}
	p.boards = make(map[string]*board, len(p.hosts))
	for name := range p.hosts {
		p.boards[name] = newBoard()
	}
	return nil
}

// orderHosts checks serve.default_host and orders the hosts: the default
// host first, then inventory order.
func (p *Proxy) orderHosts() error {
	inv := p.inv
	p.def = inv.Serve.DefaultHost
	if p.def == "" {
		return fmt.Errorf("%s: serve.default_host is not set and there is not exactly one always-on host: name the host light models go to", inv.Path)
	}
	if _, ok := p.hosts[p.def]; !ok {
		return fmt.Errorf("%s: serve.default_host %q is not a host in the inventory", inv.Path, p.def)
	}
	p.order = append(p.order, p.def)
	for _, h := range inv.Hosts {
		if h.Name != p.def {
			p.order = append(p.order, h.Name)
		}
	}
	return nil
}

// setLimits applies serve.max_in_flight and serve.max_body.
func (p *Proxy) setLimits() {
	n := p.inv.Serve.MaxInFlight
	if n <= 0 {
		n = inventory.DefaultMaxInFlight
	}
	p.sem = make(chan struct{}, n)
	p.maxBody = int64(p.inv.Serve.MaxBody)
	if p.maxBody <= 0 {
		p.maxBody = int64(inventory.DefaultMaxBody)
	}
}

// setTransport makes the backend transport (Options.Transport, else
// hosthttp.NewTransport's), the client for listings and the reverse proxy.
func (p *Proxy) setTransport() {
	o := &p.o
	p.tr = o.Transport
	if p.tr == nil {
		p.tr = hosthttp.NewTransport(hosthttp.Options{Dial: o.Dial, HeaderTimeout: o.ResponseHeaderTimeout, Getenv: o.Getenv})
	}
	p.client = &http.Client{Transport: p.tr, Timeout: listTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &replayTransport{next: p.tr, delay: o.ReplayDelay, onReplay: p.onReplay},
		FlushInterval:  -1,
		ErrorHandler:   p.proxyError,
		ModifyResponse: p.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
}

// Tracker returns the activity tracker the proxy reports to.
func (p *Proxy) Tracker() *activity.Tracker { return p.tracker }

// Close stops background work (wakes in progress are cancelled) and waits
// for it, and closes idle backend connections. In-flight requests are not
// touched: stop the http.Server first.
func (p *Proxy) Close() {
	p.cancel()
	p.bg.Wait()
	if p.blobTemp {
		_ = os.RemoveAll(p.blobPath)
	}
	if t, ok := p.tr.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Run serves on ln until ctx ends, refreshing model lists in the background
// and, with a StateDir, publishing activity for idle shutdown. On ctx's end
// it stops accepting, lets requests and streams finish for up to
// DrainTimeout, then cuts what is left: streams end with an error record
// in their own format, requests not yet answered get 503.
func (p *Proxy) Run(ctx context.Context, ln net.Listener) error {
	srv := p.Server()
	addr := ln.Addr()
	p.listenAddr.Store(&addr)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var wg sync.WaitGroup
	bgCtx, bgCancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() { defer wg.Done(); p.refreshLoop(bgCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); p.trimLoop(bgCtx) }()
	pubErr := make(chan error, 1)
	if p.o.StateDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pubErr <- activity.Publish(bgCtx, p.o.StateDir, ln.Addr().String(), p.tracker, time.Second)
		}()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case err = <-pubErr:
		err = fmt.Errorf("publish activity in %s: %w", p.o.StateDir, err)
	}
	p.shutdown(srv)
	bgCancel()
	wg.Wait()
	p.Close()
	select {
	case perr := <-pubErr:
		if err == nil && perr != nil {
			err = fmt.Errorf("publish activity in %s: %w", p.o.StateDir, perr)
		}
	default:
	}
	return err
}

// Server returns an http.Server for the proxy with header, idle and header
// size limits. Its WriteTimeout covers the proxy's own small answers;
// proxied requests clear it so streams are never cut.
func (p *Proxy) Server() *http.Server {
	return &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnState:         p.trim.connState,
	}
}

// ServeHTTP dispatches one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Ollama's Host/Origin guard first (as its middleware runs before
	// routing), then what serve never forwards (methods, dot segments).
	if p.guard(w, r) || p.refuseRequest(w, r) {
		return
	}
	switch path := r.URL.Path; {
	case path == "/healthz":
		p.healthz(w, r)
	case path == "/metrics":
		p.metrics.ServeHTTP(w, r)
	case path == activity.Path:
		p.tracker.ServeHTTP(w, r)
	case p.o.Page != nil && (path == "/gpuctl" || hasPrefix(path, "/gpuctl/")):
		p.o.Page.ServeHTTP(w, r)
	case path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Ollama is running"))
	case path == "/":
		// Ollama's router (gin, HandleMethodNotAllowed) answers so.
		plainText(w, http.StatusMethodNotAllowed, "405 method not allowed")
	case hasPrefix(path, "/api/") || hasPrefix(path, "/v1/"):
		p.serveAPI(w, r)
	default:
		plainText(w, http.StatusNotFound, "404 page not found")
	}
}

// plainText answers as gin does for paths and methods it has no route for.
func plainText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

func (p *Proxy) healthz(w http.ResponseWriter, _ *http.Request) {
	type hs struct {
		Up       *bool `json:"up,omitempty"`
		InFlight int   `json:"in_flight"`
	}
	out := struct {
		Status string        `json:"status"`
		Hosts  map[string]hs `json:"hosts"`
	}{Status: "ok", Hosts: map[string]hs{}}
	p.mu.Lock()
	for _, n := range p.order {
		h := hs{InFlight: p.tracker.InFlight(n)}
		if s, ok := p.states[n]; ok {
			up := s.up
			h.Up = &up
		}
		out.Hosts[n] = h
	}
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// retryAfter formats a Retry-After value in whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s)
}

// targetURL is the base URL of host's Ollama.
func (p *Proxy) targetURL(host string) *url.URL { return p.hosts[host].OllamaURL.URL }
