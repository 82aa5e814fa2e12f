// Package activity tracks the routing proxy's requests per host and lets
// `gpuctl shutdown --if-idle` read them, so a box is never powered off while a
// request is in flight.
//
// The running proxy (`gpuctl serve`) keeps a Tracker. It announces itself in
// STATE_DIR/serve.json (its PID and listen address) and serves the live
// snapshot at GET /gpuctl/activity on its own listener; it also saves the
// snapshot to STATE_DIR/activity.json every second and when it stops, so the
// time the last request ended survives restarts.
//
// Read applies the rule idle shutdown relies on:
//   - no serve.json, or its PID is gone: the proxy is stopped, so no request
//     can be in flight (the saved last-end times still count);
//   - the proxy runs but its snapshot cannot be read in time: an error, which
//     callers must treat as busy.
package activity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/controller/hosthttp"
	"github.com/ollamalive/gpuctl/controller/statedir"
)

// Path is where the proxy serves its live snapshot.
const Path = "/gpuctl/activity"

// Host is the proxy's view of one backend host.
type Host struct {
	InFlight  int       `json:"in_flight"`
	Requests  uint64    `json:"requests"`
	LastStart time.Time `json:"last_start,omitzero"`
	// LastEnd is when the latest request to finish ended; the idle clock
	// starts there, not at the request's start.
	LastEnd time.Time `json:"last_end,omitzero"`
}

// Snapshot is every host's activity at one moment.
type Snapshot struct {
	PID     int             `json:"pid"`
	Listen  string          `json:"listen,omitempty"`
	Taken   time.Time       `json:"taken"`
	Hosts   map[string]Host `json:"hosts"`
	Started time.Time       `json:"started,omitzero"`
}

// Tracker counts requests per host. It is safe for concurrent use.
type Tracker struct {
	now     func() time.Time
	mu      sync.Mutex
	hosts   map[string]*Host
	started time.Time
	changed chan struct{}
}

// NewTracker returns a Tracker reading time from now (time.Now when nil).
func NewTracker(now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	return &Tracker{now: now, hosts: map[string]*Host{}, started: now(), changed: make(chan struct{}, 1)}
}

// Begin records a request to host starting; call the returned func exactly
// once when it ends (it is safe to call more than once).
func (t *Tracker) Begin(host string) (end func()) {
	t.mu.Lock()
	h := t.hosts[host]
	if h == nil {
		h = &Host{}
		t.hosts[host] = h
	}
	h.InFlight++
	h.Requests++
	h.LastStart = t.now()
	t.mu.Unlock()
	t.notify()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			h.InFlight--
			h.LastEnd = t.now()
			t.mu.Unlock()
			t.notify()
		})
	}
}

func (t *Tracker) notify() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// InFlight returns the number of requests in flight to host.
func (t *Tracker) InFlight(host string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.hosts[host]; h != nil {
		return h.InFlight
	}
	return 0
}

// Snapshot copies the current state.
func (t *Tracker) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Snapshot{PID: os.Getpid(), Taken: t.now(), Started: t.started, Hosts: make(map[string]Host, len(t.hosts))}
	for k, v := range t.hosts {
		s.Hosts[k] = *v
	}
	return s
}

// Restore seeds last-end times from a saved snapshot (after a restart), so
// the idle clock does not restart with the proxy.
func (t *Tracker) Restore(s Snapshot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range s.Hosts {
		h := t.hosts[k]
		if h == nil {
			h = &Host{}
			t.hosts[k] = h
		}
		if v.LastEnd.After(h.LastEnd) {
			h.LastEnd = v.LastEnd
		}
		h.Requests += v.Requests
	}
}

// ServeHTTP serves the live snapshot as JSON.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(t.Snapshot())
}

// announcement is STATE_DIR/serve.json.
type announcement struct {
	PID     int       `json:"pid"`
	Listen  string    `json:"listen"`
	Started time.Time `json:"started"`
}

// Publish announces the proxy listening on listen (host:port) and saves the
// tracker's snapshot every interval (and on each change, at most once per
// interval) until ctx ends; it then saves once more and removes the
// announcement. It restores saved last-end times first.
func Publish(ctx context.Context, stateDir, listen string, t *Tracker, interval time.Duration) error {
	if err := statedir.CheckOwner(stateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	var saved Snapshot
	if err := statedir.ReadJSON(statedir.ActivityFile(stateDir), &saved); err == nil {
		t.Restore(saved)
	}
	a := announcement{PID: os.Getpid(), Listen: listen, Started: t.started}
	if err := statedir.WriteJSON(statedir.ServeFile(stateDir), a); err != nil {
		return err
	}
	save := func() error {
		s := t.Snapshot()
		s.Listen = listen
		return statedir.WriteJSON(statedir.ActivityFile(stateDir), s)
	}
	if interval <= 0 {
		interval = time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	dirty := false
	for {
		select {
		case <-ctx.Done():
			err := save()
			if rmErr := removeIfOurs(stateDir); err == nil {
				err = rmErr
			}
			return err
		case <-t.changed:
			dirty = true
		case <-tick.C:
			if dirty {
				if err := save(); err != nil {
					return err
				}
				dirty = false
			}
		}
	}
}

func removeIfOurs(stateDir string) error {
	var a announcement
	b, err := os.ReadFile(statedir.ServeFile(stateDir))
	if err != nil {
		return nil
	}
	if json.Unmarshal(b, &a) == nil && a.PID == os.Getpid() {
		if err := os.Remove(statedir.ServeFile(stateDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", statedir.ServeFile(stateDir), err)
		}
	}
	return nil
}

// State says whether the proxy was found running.
type State string

const (
	Stopped State = "stopped"
	Running State = "running"
)

// Reading is what Read found.
type Reading struct {
	State State
	// Snapshot is live when Running, the last saved one when Stopped (empty
	// when none was ever saved).
	Snapshot Snapshot
}

// ErrUnreadable means the proxy runs but did not answer in time; treat the
// host as busy.
var ErrUnreadable = errors.New("the routing proxy is running but its activity could not be read")

// Alive reports whether a process with pid exists. It is a variable so tests
// can simulate processes.
var Alive = func(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Read reports the proxy's activity. The context bounds the HTTP request.
func Read(ctx context.Context, stateDir string, client *http.Client) (Reading, error) {
	var saved Snapshot
	_ = statedir.ReadJSON(statedir.ActivityFile(stateDir), &saved) // none saved yet, or unreadable: no last-end times
	b, err := os.ReadFile(statedir.ServeFile(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return Reading{State: Stopped, Snapshot: saved}, nil
	}
	if err != nil {
		return Reading{State: Running}, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	var a announcement
	if err := json.Unmarshal(b, &a); err != nil {
		return Reading{State: Running}, fmt.Errorf("%w: %s: %v", ErrUnreadable, statedir.ServeFile(stateDir), err)
	}
	if !statedir.Alive(a.PID) {
		return Reading{State: Stopped, Snapshot: saved}, nil
	}
	if client == nil {
		client = hosthttp.NewClient(hosthttp.Options{HeaderTimeout: 2 * time.Second})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Listen+Path, nil)
	if err != nil {
		return Reading{State: Running}, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Reading{State: Running}, fmt.Errorf("%w (pid %d at %s): %v", ErrUnreadable, a.PID, a.Listen, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Reading{State: Running}, fmt.Errorf("%w (pid %d at %s): HTTP %s", ErrUnreadable, a.PID, a.Listen, resp.Status)
	}
	var s Snapshot
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&s); err != nil {
		return Reading{State: Running}, fmt.Errorf("%w (pid %d at %s): %v", ErrUnreadable, a.PID, a.Listen, err)
	}
	return Reading{State: Running, Snapshot: s}, nil
}
