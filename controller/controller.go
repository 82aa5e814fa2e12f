// Package controller knows where each GPU host stands and brings it to
// ready: it probes (TCP, SSH, the other-OS port), runs the readiness checks
// over one SSH connection (GPU, container, model drive, Ollama; the commands
// and their parsers are in hostcmd), wakes hosts
// with Wake-on-LAN and waits for them, and records how long boots take.
//
// Everything that touches the outside world is injected (clock, dialer, SSH
// connector, magic-packet sender, HTTP client, model puller) so the same code
// runs against fakes, an in-process SSH server and the real network.
package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/hosthttp"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Waker sends Wake-on-LAN magic packets.
type Waker interface {
	// Wake sends a burst of magic packets for h at once, then keeps
	// re-sending on a schedule until ctx ends, when it returns nil. It
	// returns an error early only when packets cannot be sent at all.
	Wake(ctx context.Context, h *inventory.Host) error
}

// Puller pulls models onto a host (the models package implements it).
type Puller interface {
	// Pull pulls the models through the host's Ollama API, reporting
	// progress lines, and returns the first failure. runner is the wake's
	// open SSH connection to the host (for drive checks).
	Pull(ctx context.Context, h *inventory.Host, runner sshexec.Runner, models []inventory.ModelName, progress func(line string)) error
}

// Defaults for the Controller's knobs.
const (
	DefaultProbeTimeout   = 1500 * time.Millisecond
	DefaultCheckTimeout   = 10 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultMaxBackoff     = 250 * time.Millisecond
	DefaultHistory        = 20
	firstBackoff          = 25 * time.Millisecond
	checkRetryInterval    = 500 * time.Millisecond
	maxProbesInFlight     = 8
	probeAttemptTimeout   = 3 * time.Second
	wakeProbeTimeout      = 500 * time.Millisecond
)

// Controller probes, checks and wakes hosts. Fill in what you need; zero
// fields get defaults (the real clock and network), except SSH, which must
// be set for checks to run, and Waker, which Wake needs.
type Controller struct {
	// StateDir holds locks, wake results and the boot-time history.
	StateDir string
	Now      func() time.Time
	// Dial dials TCP (the SSH and other-OS probes).
	Dial sshexec.DialFunc
	// SSH opens the SSH connection the checks run over.
	SSH    sshexec.Connector
	Waker  Waker
	Puller Puller
	// HTTP is the client for the Ollama API; it should carry timeouts.
	HTTP   *http.Client
	Logger *slog.Logger

	// ProbeTimeout bounds status's reachability probe (TCP and SSH
	// handshake): a sleeping host answers within it.
	ProbeTimeout time.Duration
	// CheckTimeout bounds one round of checks once SSH answers.
	CheckTimeout time.Duration
	// ConnectTimeout bounds the SSH handshake while waking.
	ConnectTimeout time.Duration
	// MaxBackoff caps the interval between SSH probes while waking.
	MaxBackoff time.Duration
	// History is how many wakes per host the boot-time history keeps.
	History int

	mu       sync.Mutex
	inflight map[string]*wakeCall

	// defaultHTTP is the client used when HTTP is nil: one per Controller,
	// so that every host's Ollama check shares one transport.
	defaultHTTP     *http.Client
	defaultHTTPOnce sync.Once
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Controller) dial() sshexec.DialFunc {
	if c.Dial != nil {
		return c.Dial
	}
	d := &net.Dialer{}
	return d.DialContext
}

func (c *Controller) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Controller) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	c.defaultHTTPOnce.Do(func() { c.defaultHTTP = hosthttp.NewClient(hosthttp.Options{Dial: c.dial()}) })
	return c.defaultHTTP
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Connect dials h's SSH port and opens an SSH connection over it, within
// ctx. It is how other packages (models, idle shutdown) reach a host.
func (c *Controller) Connect(ctx context.Context, h *inventory.Host) (sshexec.Runner, io.Closer, error) {
	if c.SSH == nil {
		return nil, nil, fmt.Errorf("host %q: no SSH connector configured", h.Name)
	}
	p, conn := probeTCP(ctx, c.dial(), c.now, h.SSHAddr())
	if conn == nil {
		return nil, nil, &ProbeError{Host: h.Name, Probe: p}
	}
	r, cl, err := c.SSH(ctx, h, conn)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("host %q: ssh %s: %w", h.Name, h.SSHAddr(), err)
	}
	return r, cl, nil
}

// ProbeError is a failed TCP probe.
type ProbeError struct {
	Host  string
	Probe Probe
}

func (e *ProbeError) Error() string { return fmt.Sprintf("host %q: %s", e.Host, e.Probe.Describe()) }

func ms(d time.Duration) int64 { return d.Milliseconds() }
