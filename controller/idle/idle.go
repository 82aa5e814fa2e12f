// Package idle decides when an on-demand GPU box may be powered off, and
// powers it off safely: `gpuctl shutdown HOST --if-idle` from cron.
//
// The one unforgivable bug is powering the box off during a generation, a
// pull, or while someone uses it, so the rules (from autosuspend, llama-swap
// and Sablier) are:
//
//   - Every signal must be idle: the routing proxy has no request in flight
//     (a running proxy whose activity cannot be read is busy; a stopped one
//     has none), /api/ps shows no model past its expiry (see below), no
//     gpuctl pull marker and no Ollama partial blob still being written, no
//     interactive login other than gpuctl's own SSH user, no GPU above
//     gpu_busy_percent, and no established connection to the Ollama port
//     from anything but the gpuctl server.
//   - Any check that fails, times out or prints something unexpected counts
//     as busy and restarts the idle clock.
//   - The idle clock starts when the last signal went idle: for the proxy,
//     when the last request ended (not started); for a partial blob, when it
//     was last written; for the sampled signals (logins, GPU, clients,
//     /api/ps, pulls), at the first check that saw them idle; never before
//     the box booted. idle_since is kept in STATE_DIR/idle/HOST.json so cron
//     runs accumulate.
//   - The box is idle only when now - idle_since > idle_after, strictly: at
//     exactly idle_after it is not yet.
//   - The box is not eligible while its uptime is below min_uptime (it was
//     just woken for something).
//
// /api/ps: a loaded model is not busy (Ollama keeps models loaded for
// keep_alive after a request, and the shutdown unloads them first). But
// Ollama refreshes expires_at only when a request ends and defers an expiry
// that falls during a request, so a model still listed after its expires_at
// (by more than ExpiryGrace, judged by the box's own clock from the HTTP
// Date header) is probably generating: busy. A failed or timed-out /api/ps
// is busy.
//
// Before powering off, Run checks that the NIC carrying the route back to
// the gpuctl server (`ip -o route get <address the SSH connection comes
// from>`) has Wake-on-LAN armed (`ethtool IF` shows "Wake-on: g"; otherwise
// it refuses and says how to arm it), writes the draining marker
// STATE_DIR/draining/HOST (statedir.MarkDraining), unloads the loaded models
// (keep_alive 0), re-reads the proxy's in-flight count, runs exactly
// `sudo -n /run/current-system/sw/bin/poweroff`, and waits until the SSH
// port stops answering (two probes in a row, within OffTimeout). Any
// failure puts the host back to ready and records the reason. All of it runs under statedir.LockHost, the lock
// wake takes, so a wake and a shutdown never interleave and a second cron
// run exits on the lock.
//
// The draining marker closes the race between that last read and a request
// arriving at the proxy a moment later. The shutdown writes the marker
// before the read; the proxy counts a request as in flight before it looks
// for the marker. So either the read sees the request (the shutdown aborts,
// removes the marker, and the host stays ready), or the request sees the
// marker and is held, not forwarded, until the marker is removed once the
// box is confirmed off, and then wakes it again. The marker names the
// shutdown's pid; one left by a dead process is ignored.
package idle

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Signal names, as they appear in reports and in State.Since.
const (
	SigProxy   = "proxy"
	SigOllama  = "ollama"
	SigPulls   = "pulls"
	SigLogins  = "logins"
	SigGPU     = "gpu"
	SigClients = "clients"
	SigUptime  = "uptime"
)

// signalOrder is the order reports list signals in.
var signalOrder = []string{SigProxy, SigOllama, SigPulls, SigLogins, SigGPU, SigClients, SigUptime}

// SignalNames lists every idle signal, in the order reports list them.
func SignalNames() []string { return slices.Clone(signalOrder) }

// Defaults.
const (
	// ExpiryGrace is how long past its expires_at a loaded model may still
	// be listed before it counts as generating.
	ExpiryGrace = 5 * time.Second
	// PullRecent: a partial blob written less than this long ago (box
	// clock) is an active download even without an earlier sample.
	PullRecent = 2 * time.Minute
	// DefaultCheckTimeout bounds the proxy read and /api/ps.
	DefaultCheckTimeout = 10 * time.Second
	// DefaultProbeTimeout bounds the SSH-port and other-OS probes.
	DefaultProbeTimeout = 3 * time.Second
	// DefaultOffTimeout bounds the wait for a powered-off box to go quiet.
	DefaultOffTimeout = 2 * time.Minute
	// DefaultOffPoll is how often that wait probes the SSH port.
	DefaultOffPoll = 2 * time.Second
)

// Deps is what the idle checks and the shutdown need from the world. Zero
// fields get the real thing where one exists.
type Deps struct {
	// StateDir holds the idle state, the host lock and the proxy's
	// activity files.
	StateDir string
	Now      func() time.Time
	Logger   *slog.Logger
	// Dial dials TCP: the SSH-port probe (its connection is handed to
	// Connect), the other-OS probe and the poweroff confirmation.
	Dial sshexec.DialFunc
	// Connect runs the SSH handshake over conn (already dialed to the SSH
	// port) and returns a Runner; required.
	Connect sshexec.Connector
	// HTTP reaches Ollama's /api/ps; each call also carries CheckTimeout.
	HTTP *http.Client
	// Activity reads the routing proxy's activity; default
	// activity.Read(ctx, StateDir, nil).
	Activity func(ctx context.Context) (activity.Reading, error)
	// Pulls lists gpuctl's own pulls in progress to a host; default
	// ActivePulls(StateDir, host).
	Pulls func(ctx context.Context, host string) ([]string, error)
	// Unload unloads models (keep_alive 0); required by Run when models
	// are loaded.
	Unload func(ctx context.Context, h *inventory.Host, models []string) error
	// ServerAddrs are more addresses of the gpuctl server, whose
	// connections to Ollama are its own; the address the box sees the SSH
	// connection come from is always one.
	ServerAddrs []netip.Addr

	CheckTimeout time.Duration
	ProbeTimeout time.Duration
	OffTimeout   time.Duration
	OffPoll      time.Duration
}

func (d *Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Deps) log() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (d *Deps) dial() sshexec.DialFunc {
	if d.Dial != nil {
		return d.Dial
	}
	var nd net.Dialer
	return nd.DialContext
}

func (d *Deps) activity(ctx context.Context) (activity.Reading, error) {
	if d.Activity != nil {
		return d.Activity(ctx)
	}
	return activity.Read(ctx, d.StateDir, nil)
}

func (d *Deps) pulls(ctx context.Context, host string) ([]string, error) {
	if d.Pulls != nil {
		return d.Pulls(ctx, host)
	}
	return statedir.ActivePulls(d.StateDir, host)
}

// Signal is one idle signal as one check saw it.
type Signal struct {
	Name string `json:"name"`
	// Busy: the signal shows work (or its check failed).
	Busy bool `json:"busy"`
	// Failed: the check could not be read; counted as busy.
	Failed bool `json:"failed,omitempty"`
	// Value is what was seen, in words.
	Value string `json:"value"`
	// Since is since when the signal has been idle (absent while busy).
	Since *time.Time `json:"idle_since,omitempty"`

	// hint is a known time the signal's last activity ended (last request
	// end, last partial write, boot); exact marks signals whose hint is
	// their whole history (the proxy, uptime).
	hint  time.Time
	exact bool
}

// WOL is the Wake-on-LAN check of the box's NIC.
type WOL struct {
	Interface string `json:"interface,omitempty"`
	hostcmd.WakeOn
	Armed bool `json:"armed"`
	// Err is why it could not be read; Fix is how to arm it.
	Err string `json:"error,omitempty"`
	Fix string `json:"fix,omitempty"`
}

// Reachability of the box when the check ran.
const (
	BoxUp      = "up"
	BoxOff     = "off"
	BoxOtherOS = "in-use-other-os" // the word of controller.StateOtherOS (TestIdleBoxWords)
	BoxBooting = "booting"
	BoxUnknown = "unknown"
)

// Report is one evaluation of a host.
type Report struct {
	Host    string    `json:"host"`
	Checked time.Time `json:"checked"`
	// Box is up, off, in-use-other-os, booting or unknown; signals are
	// gathered only when it is up (or unknown: SSH failed, all busy).
	Box string `json:"box"`
	// sshErr is why SSH failed when Box is unknown.
	sshErr    error
	BoxDetail string   `json:"box_detail,omitempty"`
	Signals   []Signal `json:"signals"`
	// Busy reports whether any signal is busy; BusyReasons say which.
	Busy        bool     `json:"busy"`
	BusyReasons []string `json:"busy_reasons,omitempty"`
	// IdleSince is when every signal became idle; nil while busy.
	IdleSince *time.Time    `json:"idle_since,omitempty"`
	IdleFor   time.Duration `json:"idle_for_ns"`
	IdleAfter time.Duration `json:"idle_after_ns"`
	// Idle: not busy and idle for strictly longer than idle_after.
	Idle bool `json:"idle"`
	// Uptime is the box's uptime (0 when unknown); Eligible is uptime >=
	// min_uptime.
	Uptime    time.Duration `json:"uptime_ns"`
	MinUptime time.Duration `json:"min_uptime_ns"`
	Eligible  bool          `json:"eligible"`
	// InFlight is the proxy's in-flight count (-1 when unreadable).
	InFlight int `json:"in_flight"`
	// Loaded are the models /api/ps listed.
	Loaded []string `json:"loaded,omitempty"`
	WOL    WOL      `json:"wol"`
	// Decision says, in words, what an --if-idle run does with this report.
	Decision string `json:"decision"`

	next State
}

// PowerOff reports whether an --if-idle run would power the box off.
func (r *Report) PowerOff() bool { return r.Box == BoxUp && r.Idle && r.Eligible && !r.Busy }

// connect probes h's SSH port and, when it answers, opens SSH over that
// connection. The report says where the box stands when it is not up.
func connect(ctx context.Context, d *Deps, h *inventory.Host) (sshexec.Runner, io.Closer, Report) {
	rep := Report{Host: h.Name, Checked: d.now(), InFlight: -1, IdleAfter: h.IdleAfter.D(), MinUptime: h.MinUptime.D(), Signals: []Signal{}}
	pt := cmp.Or(d.ProbeTimeout, DefaultProbeTimeout)
	pctx, cancel := context.WithTimeout(ctx, pt)
	defer cancel()
	conn, err := d.dial()(pctx, "tcp", h.SSHAddr())
	if err != nil {
		kind := sshexec.ClassifyDialError(err)
		if kind == sshexec.ProbeRefused {
			rep.Box, rep.BoxDetail = BoxBooting, h.SSHAddr()+" refused the connection: the box is starting or stopping"
			return nil, nil, rep
		}
		if h.OtherOSProbe != 0 {
			addr := inventory.HostPort{Host: h.Address, Port: uint16(h.OtherOSProbe)}.String()
			if c, err := d.dial()(pctx, "tcp", addr); err == nil {
				c.Close()
				rep.Box, rep.BoxDetail = BoxOtherOS, fmt.Sprintf("port %d answers while SSH does not: the PC runs its other OS", h.OtherOSProbe)
				return nil, nil, rep
			}
		}
		if kind == sshexec.ProbeUnreachable || kind == sshexec.ProbeTimeout {
			rep.Box, rep.BoxDetail = BoxOff, h.SSHAddr()+" does not answer: the box is off"
			return nil, nil, rep
		}
		rep.Box, rep.BoxDetail = BoxUnknown, fmt.Sprintf("probing %s: %v", h.SSHAddr(), err)
		return nil, nil, rep
	}
	if d.Connect == nil {
		conn.Close()
		rep.Box, rep.BoxDetail = BoxUnknown, "no SSH connector configured"
		return nil, nil, rep
	}
	r, cl, err := d.Connect(pctx, h, conn)
	if err != nil {
		conn.Close()
		rep.Box, rep.BoxDetail, rep.sshErr = BoxUnknown, "ssh: "+err.Error(), err
		return nil, nil, rep
	}
	rep.Box = BoxUp
	return r, cl, rep
}

// remote is what the script found.
type remote struct {
	err   error // the whole round trip failed
	secs  map[string]hostcmd.Section
	perr  error // the output could not be split into sections
	local time.Time
}

func (r *remote) get(name string) ([]byte, error) {
	if r.err != nil {
		return nil, fmt.Errorf("ssh: %w", r.err)
	}
	s, ok := r.secs[name]
	if !ok {
		if r.perr != nil {
			return nil, fmt.Errorf("%s: no output (%v)", name, r.perr)
		}
		return nil, fmt.Errorf("%s: no output", name)
	}
	if s.Exit != 0 {
		return s.Out, errors.New(hostcmd.DescribeExit(name, s))
	}
	return s.Out, nil
}

type psResult struct {
	models  []api.ProcessModelResponse
	boxTime time.Time
	err     error
}

// evaluate gathers every signal (the proxy, /api/ps and the SSH script at
// once) and applies the rules against prev.
func evaluate(ctx context.Context, d *Deps, h *inventory.Host, runner sshexec.Runner, prev State) Report {
	rep := Report{Host: h.Name, Checked: d.now(), Box: BoxUp, InFlight: -1,
		IdleAfter: h.IdleAfter.D(), MinUptime: h.MinUptime.D()}
	in := signalInput{d: d, h: h, port: ollamaPort(h), prev: prev, now: rep.Checked, rep: &rep}
	in.readings = gather(ctx, d, h, runner, in.port)
	var sigs []Signal
	for _, read := range signalReaders {
		sigs = append(sigs, read(&in))
	}
	rep.WOL = wolCheck(&in.rem)

	apply(&rep, sigs, prev, in.now)
	rep.next.Partials = in.partials
	return rep
}

// readings is what evaluate's reads found.
type readings struct {
	act   activity.Reading
	actE  error
	ps    psResult
	rem   remote
	pulls []string
	pullE error
}

// gather reads the proxy's activity (then gpuctl's pull markers), Ollama's
// /api/ps and the box's idle script at once.
func gather(ctx context.Context, d *Deps, h *inventory.Host, runner sshexec.Runner, port uint16) readings {
	ct := cmp.Or(d.CheckTimeout, DefaultCheckTimeout)
	var (
		wg sync.WaitGroup
		rd readings
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		c, cancel := context.WithTimeout(ctx, ct)
		defer cancel()
		rd.act, rd.actE = d.activity(c)
		if rd.actE == nil {
			rd.pulls, rd.pullE = d.pulls(c, h.Name)
		}
	}()
	go func() {
		defer wg.Done()
		c, cancel := context.WithTimeout(ctx, ct)
		defer cancel()
		rd.ps = listRunning(c, d.HTTP, h)
	}()
	go func() {
		defer wg.Done()
		rd.rem = runIdleScript(ctx, d, h, runner, port)
	}()
	wg.Wait()
	if rd.actE != nil {
		rd.pulls, rd.pullE = d.pulls(ctx, h.Name)
	}
	return rd
}

// runIdleScript runs the idle script on the box and splits its output.
func runIdleScript(ctx context.Context, d *Deps, h *inventory.Host, runner sshexec.Runner, port uint16) remote {
	marker := hostcmd.NewMarker()
	c, cancel := context.WithTimeout(ctx, hostcmd.ScriptTimeout+5*time.Second)
	defer cancel()
	res, err := runner.Run(c, hostcmd.IdleScriptCmd(marker, h.ModelsDir, port))
	var rem remote
	rem.local = d.now()
	switch {
	case err != nil:
		rem.err = err
	case res.Truncated:
		rem.err = errors.New("the idle script's output was cut at its size limit")
	default:
		rem.secs, rem.perr = hostcmd.ParseSections(res.Stdout, marker)
	}
	return rem
}

// signalInput is what the signal readers read from; the pulls reader
// leaves the partial-blob sample in partials for the next state.
type signalInput struct {
	readings
	d        *Deps
	h        *inventory.Host
	port     uint16
	prev     State
	now      time.Time
	rep      *Report
	partials map[string]hostcmd.Partial
}

// signalReaders turn the readings into the signals, in report order
// (signalOrder).
var signalReaders = []func(in *signalInput) Signal{
	// The routing proxy.
	func(in *signalInput) Signal { return proxySignal(in.h, in.act, in.actE, in.rep) },
	// /api/ps.
	func(in *signalInput) Signal { return ollamaSignal(in.ps, in.rep) },
	// Pulls: gpuctl's markers and Ollama's partial blobs.
	func(in *signalInput) Signal {
		boxNow, boxErr := parseSection(&in.rem, hostcmd.SecNow, hostcmd.ParseEpoch)
		var s Signal
		s, in.partials = pullSignal(&in.rem, in.pulls, in.pullE, boxNow, boxErr, in.prev, in.now)
		return s
	},
	func(in *signalInput) Signal { return loginSignal(&in.rem, in.h) },
	func(in *signalInput) Signal { return gpuSignal(&in.rem, in.h) },
	func(in *signalInput) Signal {
		serverIP, connErr := parseSection(&in.rem, hostcmd.SecConn, hostcmd.ParseSSHConnection)
		return clientSignal(&in.rem, in.d, in.port, serverIP, connErr)
	},
	func(in *signalInput) Signal { return uptimeSignal(&in.rem, in.h, in.now, in.rep) },
}

// parseSection parses the script's section name with parse.
func parseSection[T any](rem *remote, name string, parse func([]byte) (T, error)) (T, error) {
	b, err := rem.get(name)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(b)
}

// apply combines the signals with the previous state: per-signal idle
// onsets, idle_since, the strict threshold and the decision.
func apply(rep *Report, sigs []Signal, prev State, now time.Time) {
	next := prev
	next.Host = rep.Host
	next.LastCheck = now
	next.Since = map[string]time.Time{}
	next.BusyReasons, next.Failed = nil, nil
	var idleSince time.Time
	allIdle := true
	for i := range sigs {
		s := &sigs[i]
		if s.Failed {
			s.Busy = true
		}
		if s.Failed {
			next.Failed = append(next.Failed, s.Name)
		}
		if s.Busy {
			allIdle = false
			rep.BusyReasons = append(rep.BusyReasons, s.Name+": "+s.Value)
			continue
		}
		var since time.Time
		if s.exact {
			// The signal's own record is its history, except that a
			// failed read restarts the clock like any failed check.
			since = s.hint
			if p, ok := prev.Since[s.Name]; ok && p.After(since) && !p.After(now) {
				since = p
			} else if !ok && slices.Contains(prev.Failed, s.Name) && now.After(since) {
				since = now
			}
		} else {
			since = now
			if p, ok := prev.Since[s.Name]; ok && !prev.LastCheck.IsZero() && !p.After(now) {
				since = p
			}
			if s.hint.After(since) {
				since = s.hint
			}
		}
		if since.After(now) {
			since = now
		}
		if !since.IsZero() {
			t := since
			s.Since = &t
			next.Since[s.Name] = since
		}
		if since.After(idleSince) {
			idleSince = since
		}
	}
	rep.Signals = sigs
	rep.Busy = !allIdle
	next.BusyReasons = rep.BusyReasons
	if allIdle {
		if idleSince.IsZero() {
			idleSince = now
		}
		t := idleSince
		rep.IdleSince, next.IdleSince = &t, &t
		rep.IdleFor = now.Sub(idleSince)
		// Strictly longer: at exactly idle_after the box is not idle yet.
		rep.Idle = rep.IdleFor > rep.IdleAfter
	} else {
		next.IdleSince = nil
	}
	rep.Eligible = rep.Uptime > 0 && rep.Uptime >= rep.MinUptime
	switch {
	case rep.Busy:
		rep.Decision = "busy: " + strings.Join(rep.BusyReasons, "; ")
	case !rep.Idle:
		rep.Decision = fmt.Sprintf("idle for %s, not more than idle_after %s yet", FormatAgainst(rep.IdleFor, rep.IdleAfter), FormatSetting(rep.IdleAfter))
	case !rep.Eligible:
		rep.Decision = fmt.Sprintf("idle, but up only %s of min_uptime %s: not eligible", FormatAgainst(rep.Uptime, rep.MinUptime), FormatSetting(rep.MinUptime))
	default:
		rep.Decision = fmt.Sprintf("idle for %s (more than idle_after %s): power off", FormatAgainst(rep.IdleFor, rep.IdleAfter), FormatSetting(rep.IdleAfter))
	}
	rep.next = next
}

func ollamaPort(h *inventory.Host) uint16 {
	if h.OllamaURL.URL == nil {
		return inventory.DefaultOllamaPort
	}
	if p := h.OllamaURL.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			return uint16(n)
		}
	}
	if h.OllamaURL.Scheme == "https" {
		return 443
	}
	return 80
}

func proxySignal(h *inventory.Host, r activity.Reading, err error, rep *Report) Signal {
	s := Signal{Name: SigProxy, exact: true}
	if err != nil {
		s.Failed, s.Value = true, err.Error()
		return s
	}
	a := r.Snapshot.Hosts[h.Name]
	rep.InFlight = a.InFlight
	s.hint = a.LastEnd
	var b strings.Builder
	if r.State == activity.Stopped {
		b.WriteString("proxy stopped; ")
	}
	switch {
	case a.InFlight > 0:
		s.Busy = true
		fmt.Fprintf(&b, "%d request(s) in flight", a.InFlight)
	default:
		b.WriteString("0 in flight")
	}
	if !a.LastEnd.IsZero() {
		fmt.Fprintf(&b, ", last request ended %s", a.LastEnd.Format(time.RFC3339))
	} else {
		b.WriteString(", no request recorded")
	}
	s.Value = b.String()
	return s
}

// listRunning asks /api/ps, keeping the server's Date header as the box's
// clock.
func listRunning(ctx context.Context, hc *http.Client, h *inventory.Host) psResult {
	if hc == nil {
		hc = http.DefaultClient
	}
	if h.OllamaURL.URL == nil {
		return psResult{err: errors.New("no ollama_url")}
	}
	u := h.OllamaURL.JoinPath("api", "ps")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return psResult{err: err}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return psResult{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return psResult{err: fmt.Errorf("GET %s: HTTP %s %s", u, resp.Status, strings.TrimSpace(string(b)))}
	}
	var pr api.ProcessResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&pr); err != nil {
		return psResult{err: fmt.Errorf("GET %s: %w", u, err)}
	}
	out := psResult{models: pr.Models}
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		out.boxTime = t
	}
	return out
}

func ollamaSignal(ps psResult, rep *Report) Signal {
	s := Signal{Name: SigOllama}
	if ps.err != nil {
		s.Failed, s.Value = true, "/api/ps: "+ps.err.Error()
		return s
	}
	if len(ps.models) == 0 {
		s.Value = "no model loaded"
		return s
	}
	boxNow := ps.boxTime
	var parts, busy []string
	for _, m := range ps.models {
		name := cmp.Or(m.Model, m.Name)
		rep.Loaded = append(rep.Loaded, name)
		switch {
		case boxNow.IsZero() || m.ExpiresAt.IsZero():
			parts = append(parts, name)
		case m.ExpiresAt.Before(boxNow.Add(-ExpiryGrace)):
			busy = append(busy, fmt.Sprintf("%s expired %s ago but is still loaded: probably generating",
				name, FormatDuration(boxNow.Sub(m.ExpiresAt))))
		default:
			parts = append(parts, fmt.Sprintf("%s (unloads in %s)", name, FormatDuration(m.ExpiresAt.Sub(boxNow))))
		}
	}
	if len(busy) > 0 {
		s.Busy, s.Value = true, strings.Join(busy, "; ")
		return s
	}
	s.Value = fmt.Sprintf("%d loaded, none past its expiry: %s", len(parts), strings.Join(parts, ", "))
	return s
}

func pullSignal(rem *remote, marks []string, markErr error, boxNow time.Time, boxErr error, prev State, now time.Time) (Signal, map[string]hostcmd.Partial) {
	s := Signal{Name: SigPulls}
	var busy []string
	if markErr != nil {
		s.Failed, s.Value = true, markErr.Error()
		return s, prev.Partials
	}
	for _, m := range marks {
		busy = append(busy, "gpuctl is pulling "+m)
	}
	out, err := rem.get(hostcmd.SecPartials)
	if err == nil && boxErr != nil {
		err = fmt.Errorf("the box's clock: %w", boxErr)
	}
	var parts []hostcmd.Partial
	if err == nil {
		parts, err = hostcmd.ParsePartials(out)
	}
	if err != nil {
		s.Failed = true
		s.Value = strings.Join(append(busy, "partial downloads: "+err.Error()), "; ")
		return s, prev.Partials
	}
	sample := make(map[string]hostcmd.Partial, len(parts))
	var last time.Time
	stale := 0
	for _, p := range parts {
		sample[p.Path] = p
		age := boxNow.Sub(p.MTime)
		old, seen := prev.Partials[p.Path]
		switch {
		case seen && (old.Size != p.Size || old.Blocks != p.Blocks || !old.MTime.Equal(p.MTime)):
			busy = append(busy, fmt.Sprintf("%s is growing (%d→%d blocks, written %s ago)", p.Path, old.Blocks, p.Blocks, FormatDuration(max(age, 0))))
		case age < PullRecent:
			busy = append(busy, fmt.Sprintf("%s was written %s ago", p.Path, FormatDuration(max(age, 0))))
		default:
			stale++
		}
		if p.MTime.After(last) {
			last = p.MTime
		}
	}
	if !last.IsZero() {
		// The last write, on this machine's clock.
		s.hint = now.Add(-boxNow.Sub(last))
	}
	if len(busy) > 0 {
		s.Busy, s.Value = true, strings.Join(busy, "; ")
		return s, sample
	}
	if stale > 0 {
		s.Value = fmt.Sprintf("no active pull; %d stale partial file(s), last written %s", stale, last.UTC().Format(time.RFC3339))
	} else {
		s.Value = "no active pull"
	}
	return s, sample
}

func loginSignal(rem *remote, h *inventory.Host) Signal {
	s := Signal{Name: SigLogins}
	out, err := rem.get(hostcmd.SecWho)
	var ls []hostcmd.Login
	if err == nil {
		ls, err = hostcmd.ParseWho(out)
	}
	if err != nil {
		s.Failed, s.Value = true, err.Error()
		return s
	}
	var others []string
	ours := 0
	for _, l := range ls {
		if l.User == h.SSHUser {
			ours++
			continue
		}
		others = append(others, l.String())
	}
	if len(others) > 0 {
		s.Busy, s.Value = true, strings.Join(others, "; ")
		return s
	}
	s.Value = "nobody logged in"
	if ours > 0 {
		s.Value += fmt.Sprintf(" (ignoring %d session(s) of gpuctl's user %s)", ours, h.SSHUser)
	}
	return s
}

func gpuSignal(rem *remote, h *inventory.Host) Signal {
	s := Signal{Name: SigGPU}
	out, err := rem.get(hostcmd.SecGPU)
	var us []hostcmd.GPUUtil
	if err == nil {
		us, err = hostcmd.ParseGPUUtil(out, []string{"utilization.gpu"})
	}
	if err != nil {
		s.Failed, s.Value = true, err.Error()
		return s
	}
	th := h.GPUBusyPercent
	var vals, busy []string
	for _, u := range us {
		if u.Percent == nil {
			if th >= 100 {
				vals = append(vals, fmt.Sprintf("GPU%d n/a", u.Index))
				continue
			}
			s.Failed = true
			busy = append(busy, fmt.Sprintf("GPU%d cannot report its utilisation (set gpu_busy_percent = 100 to ignore GPU load)", u.Index))
			continue
		}
		v := fmt.Sprintf("GPU%d %d%%", u.Index, *u.Percent)
		vals = append(vals, v)
		if *u.Percent > int64(th) {
			busy = append(busy, v)
		}
	}
	if len(busy) > 0 {
		s.Busy, s.Value = true, strings.Join(busy, ", ")+fmt.Sprintf(" (busy above %d%%)", th)
		return s
	}
	s.Value = strings.Join(vals, ", ") + fmt.Sprintf(" (busy above %d%%)", th)
	return s
}

func clientSignal(rem *remote, d *Deps, port uint16, server netip.Addr, serverErr error) Signal {
	s := Signal{Name: SigClients}
	if serverErr != nil {
		s.Failed, s.Value = true, "cannot tell the gpuctl server's address: "+serverErr.Error()
		return s
	}
	out, err := rem.get(hostcmd.SecClients)
	var cs []hostcmd.Conn
	if err == nil {
		cs, err = hostcmd.ParseSS(out, port)
	}
	if err != nil {
		s.Failed, s.Value = true, err.Error()
		return s
	}
	var others []string
	ours := 0
	for _, c := range cs {
		if c.Peer.Addr() == server || slices.Contains(d.ServerAddrs, c.Peer.Addr()) {
			ours++
			continue
		}
		others = append(others, c.Peer.String())
	}
	if len(others) > 0 {
		s.Busy, s.Value = true, fmt.Sprintf("%d direct client(s) on :%d: %s", len(others), port, strings.Join(others, ", "))
		return s
	}
	s.Value = fmt.Sprintf("no client on :%d but the gpuctl server (%d connection(s) from %s)", port, ours, server)
	return s
}

func uptimeSignal(rem *remote, h *inventory.Host, now time.Time, rep *Report) Signal {
	s := Signal{Name: SigUptime, exact: true}
	out, err := rem.get(hostcmd.SecUptime)
	var up time.Duration
	if err == nil {
		up, err = hostcmd.ParseUptime(out)
	}
	if err != nil {
		s.Failed, s.Value = true, err.Error()
		return s
	}
	rep.Uptime = up
	// The idle clock never starts before the box booted.
	s.hint = rem.local.Add(-up)
	s.Value = fmt.Sprintf("up %s (min_uptime %s)", FormatAgainst(up, h.MinUptime.D()), FormatSetting(h.MinUptime.D()))
	return s
}

func wolCheck(rem *remote) WOL {
	var w WOL
	fail := func(err error) WOL {
		w.Armed, w.Err = false, err.Error()
		w.Fix = "check on the box that `ethtool IF` shows \"Wake-on: g\" for the interface facing the gpuctl server"
		return w
	}
	rb, err := rem.get(hostcmd.SecRoute)
	if err != nil {
		return fail(err)
	}
	dev, err := hostcmd.ParseRouteDev(rb)
	if err != nil {
		return fail(err)
	}
	w.Interface = dev
	out, err := rem.get(hostcmd.SecWOL)
	if err != nil {
		return fail(err)
	}
	first, rest, _ := strings.Cut(string(out), "\n")
	if got, ok := strings.CutPrefix(first, "interface "); !ok || got != dev {
		return fail(fmt.Errorf("the script's interface %q is not the route's %q", first, dev))
	}
	wo, err := hostcmd.ParseEthtool([]byte(rest))
	if err != nil {
		return fail(err)
	}
	w.WakeOn = wo
	w.Armed = wo.Armed()
	if !w.Armed {
		w.Fix = fmt.Sprintf("arm it now with `sudo ethtool -s %s wol g` on the box; to keep it armed across boots, regenerate the box's NixOS config with `gpuctl nixos generate` (it sets networking.interfaces.%s.wakeOnLan.enable) or add a systemd .link file with WakeOnLan=magic", dev, dev)
		if wo.Supports != "" && !strings.ContainsRune(wo.Supports, 'g') {
			w.Fix = fmt.Sprintf("the NIC %s does not support magic-packet wake (Supports Wake-on: %s); use another NIC or wake method", dev, wo.Supports)
		}
	}
	return w
}
