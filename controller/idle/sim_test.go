package idle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// simBox is a simulated gaming PC for tests inside a testing/synctest
// bubble: it answers the idle script section by section from its state,
// takes the poweroff command, and answers TCP probes while it is up.
type simBox struct {
	mu sync.Mutex

	up      bool
	booting bool // SSH port refuses
	bootAt  time.Time
	wol     string // ethtool fixture
	who     string
	gpu     string // nvidia-smi output
	gpuExit int
	clients string // ss output
	// partials: path → sample; writing marks the ones being downloaded
	// (their mtime and blocks advance on every look).
	partials map[string]hostcmd.Partial
	writing  map[string]bool
	server   string // SSH_CONNECTION client address

	stallScript  bool          // the script never answers (SSH timeout)
	scriptDelay  time.Duration // the script takes this long
	poweroffExit int           // sudo's exit status
	stayUp       bool          // poweroff exits 0 but the box stays up
	poweroffs    int
	onPoweroff   func() // runs when a poweroff is accepted (invariant checks)
	cmds         []string
}

func newSimBox() *simBox {
	return &simBox{
		up: true, bootAt: time.Now().Add(-time.Hour),
		wol:      "ethtool_grep-Wake_magic_g.txt",
		gpu:      "3\n",
		partials: map[string]hostcmd.Partial{}, writing: map[string]bool{},
		server: "192.0.2.10",
	}
}

var (
	wolG   = string(fixtures.Must("ethtool_grep-Wake_magic_g.txt"))
	wolD   = string(fixtures.Must("ethtool_grep-Wake_disabled_d.txt"))
	gpuErr = string(fixtures.Must("nvidia-smi_error_driver-not-loaded.txt"))
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (b *simBox) set(f func(b *simBox)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func (b *simBox) boot() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.up, b.booting, b.bootAt = true, false, time.Now()
}

func (b *simBox) isUp() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up
}

func (b *simBox) poweroffCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.poweroffs
}

// Run implements sshexec.Runner.
func (b *simBox) Run(ctx context.Context, cmd sshexec.Cmd) (sshexec.Result, error) {
	b.mu.Lock()
	b.cmds = append(b.cmds, cmd.String())
	if !b.up {
		b.mu.Unlock()
		return sshexec.Result{}, errors.New("ssh: connection lost")
	}
	if len(cmd.Args) == 3 && cmd.String() == "sudo -n /run/current-system/sw/bin/poweroff" {
		b.poweroffs++
		if b.onPoweroff != nil {
			b.onPoweroff()
		}
		if b.poweroffExit != 0 {
			b.mu.Unlock()
			return sshexec.Result{ExitStatus: b.poweroffExit, Stderr: []byte("sudo: a password is required\n")}, nil
		}
		if b.stayUp {
			b.mu.Unlock()
			return sshexec.Result{}, nil
		}
		b.up = false
		b.mu.Unlock()
		return sshexec.Result{}, &sshexec.OpError{Op: "run", Err: io.EOF}
	}
	if len(cmd.Args) != 7 || cmd.Args[0] != "sh" || cmd.Args[2] != hostcmd.IdleScript {
		b.mu.Unlock()
		return sshexec.Result{ExitStatus: 127, Stderr: []byte("unexpected command " + cmd.String())}, nil
	}
	stall, delay := b.stallScript, b.scriptDelay
	b.mu.Unlock()
	if stall {
		<-ctx.Done()
		return sshexec.Result{}, &sshexec.OpError{Op: "run", Err: ctx.Err()}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return sshexec.Result{}, ctx.Err()
		case <-t.C:
		}
	}
	return sshexec.Result{Stdout: b.output(cmd.Args[4], cmd.Args[6])}, nil
}

func (b *simBox) output(m, port string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var out strings.Builder
	sec := func(name, body string, rc int) {
		fmt.Fprintf(&out, "%s begin %s\n%s\n%s end %s %d\n", m, name, body, m, name, rc)
	}
	sec(hostcmd.SecNow, strconv.FormatInt(now.Unix(), 10), 0)
	up := now.Sub(b.bootAt).Seconds()
	sec(hostcmd.SecUptime, fmt.Sprintf("%.2f %.2f", up, up*1.5), 0)
	sec(hostcmd.SecConn, b.server+" 50522 192.0.2.20 22", 0)
	sec(hostcmd.SecWho, b.who, 0)
	sec(hostcmd.SecGPU, b.gpu, b.gpuExit)
	sec(hostcmd.SecClients, b.clients, 0)
	var ps []string
	paths := make([]string, 0, len(b.partials))
	for p := range b.partials {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		pt := b.partials[p]
		if b.writing[p] {
			pt.Blocks += 2048
			pt.MTime = now
			b.partials[p] = pt
		}
		ps = append(ps, fmt.Sprintf("%d %d %d.%09d %s", pt.Size, pt.Blocks, pt.MTime.Unix(), pt.MTime.Nanosecond(), pt.Path))
	}
	sec(hostcmd.SecPartials, strings.Join(ps, "\n"), 0)
	sec(hostcmd.SecRoute, "192.0.2.10 dev enp40s0 src 192.0.2.20 uid 1000 \\    cache ", 0)
	sec(hostcmd.SecWOL, "interface enp40s0\nSettings for enp40s0:\n"+b.wolText(), 0)
	return []byte(out.String())
}

func (b *simBox) wolText() string {
	if b.wol == "d" {
		return wolD
	}
	return wolG
}

// dial answers for the box's SSH port while it is up.
func (b *simBox) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	b.mu.Lock()
	up, booting := b.up, b.booting
	b.mu.Unlock()
	switch {
	case booting:
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	case !up:
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (b *simBox) connect(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
	conn.Close()
	if !b.isUp() {
		return nil, nil, errors.New("ssh: handshake failed: EOF")
	}
	return b, io.NopCloser(nil), nil
}

// handlerTransport serves HTTP requests from a handler in memory (no
// sockets inside the synctest bubble) and stamps a Date header, as
// net/http's server does.
type handlerTransport struct {
	h       http.Handler
	psFault *atomic.Bool
}

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	if r.URL.Path == "/api/ps" && t.psFault != nil && t.psFault.Load() {
		http.Error(rec, `{"error":"internal error"}`, http.StatusInternalServerError)
	} else {
		t.h.ServeHTTP(rec, r)
	}
	resp := rec.Result()
	if resp.Header.Get("Date") == "" {
		resp.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	resp.Request = r
	return resp, nil
}

// env is one simulated host with everything around it.
type env struct {
	t        testing.TB
	box      *simBox
	ollama   *ollamatest.Server
	psFault  atomic.Bool
	tracker  *activity.Tracker
	proxyErr atomic.Bool
	pullMu   sync.Mutex
	pulls    map[string]int
	host     *inventory.Host
	deps     *Deps
	logs     *strings.Builder
}

func newEnv(t testing.TB) *env {
	e := &env{t: t, box: newSimBox(), tracker: activity.NewTracker(nil), pulls: map[string]int{}, logs: &strings.Builder{}}
	e.ollama = ollamatest.New(ollamatest.Config{Dir: t.TempDir(), Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	if err := e.ollama.Install("tiny"); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: handlerTransport{h: e.ollama, psFault: &e.psFault}}
	u := must(inventory.ParseURL("http://192.0.2.20:11434"))
	e.host = &inventory.Host{
		Name: "gaming-pc", OnDemand: true, Address: "192.0.2.20", SSHPort: 22, SSHUser: "gpuctl",
		OllamaURL: u, ModelsDir: "/mnt/models/ollama", IdleAfter: inventory.Duration(5 * time.Minute),
		MinUptime: inventory.Duration(10 * time.Minute), GPUBusyPercent: 10,
	}
	var logMu sync.Mutex
	e.deps = &Deps{
		StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return e.logs.Write(p)
		}), nil)),
		Dial:    e.box.dial,
		Connect: e.box.connect,
		HTTP:    hc,
		Activity: func(ctx context.Context) (activity.Reading, error) {
			if e.proxyErr.Load() {
				return activity.Reading{State: activity.Running}, fmt.Errorf("%w: timeout", activity.ErrUnreadable)
			}
			return activity.Reading{State: activity.Running, Snapshot: e.tracker.Snapshot()}, nil
		},
		Pulls: func(ctx context.Context, host string) ([]string, error) {
			e.pullMu.Lock()
			defer e.pullMu.Unlock()
			var out []string
			for k, n := range e.pulls {
				if n > 0 {
					out = append(out, k)
				}
			}
			sort.Strings(out)
			return out, nil
		},
		Unload: func(ctx context.Context, h *inventory.Host, names []string) error {
			var ns []inventory.ModelName
			for _, n := range names {
				ns = append(ns, inventory.ModelName(n))
			}
			m := &models.Manager{Client: api.NewClient(h.OllamaURL.URL, hc), Host: h}
			_, err := m.Unload(ctx, ns)
			return err
		},
		OffPoll: 2 * time.Second,
	}
	return e
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (e *env) cron() (Outcome, error) {
	return Run(context.Background(), e.deps, e.host, Options{IfIdle: true})
}

func (e *env) state() State {
	st, err := LoadState(e.deps.StateDir, e.host.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) pull(name string, delta int) {
	e.pullMu.Lock()
	defer e.pullMu.Unlock()
	e.pulls[name] += delta
}
