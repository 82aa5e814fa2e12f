package sshexec

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ollamalive/gpuctl/inventory"
)

// SSHConnector is the Connector over sshexec: configFor gives each host's
// Config (ConfigFor with the inventory). A probe connection
// is reused for the handshake when the config dials exactly that address
// without jump hosts; otherwise it is closed and sshexec dials on its own.
func SSHConnector(configFor func(h *inventory.Host) (Config, error)) Connector {
	return func(ctx context.Context, h *inventory.Host, conn net.Conn) (Runner, io.Closer, error) {
		cfg, err := configFor(h)
		if err != nil {
			if conn != nil {
				conn.Close()
			}
			return nil, nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
		if conn != nil {
			if cfg.Addr == h.SSHAddr() && len(cfg.Jumps) == 0 {
				cfg.DialContext = onceDialer(conn, cfg.DialContext)
			} else {
				conn.Close()
			}
		}
		ec := &expectClose{}
		if cfg.Logger != nil {
			cfg.Logger = slog.New(&closeLogHandler{next: cfg.Logger.Handler(), expected: &ec.expected})
		}
		cl, err := Dial(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		ec.Client = cl
		return ec, ec, nil
	}
}

// CloseExpecter is implemented by the Runners SSHConnector returns. A caller
// that asks the host to go down (poweroff) calls ExpectClose(true) first:
// the connection dropping is then what it asked for, and is logged at Info
// instead of Warn. ExpectClose(false) undoes it (the command failed).
type CloseExpecter interface {
	ExpectClose(expected bool)
}

// expectClose is an Client whose close can be expected.
type expectClose struct {
	*Client
	expected atomic.Bool
}

func (e *expectClose) ExpectClose(expected bool) { e.expected.Store(expected) }

// closeLogHandler logs one connection's warnings at Info while its close
// is expected: sshexec warns when a server drops the connection, which is
// the point of a poweroff. Unexpected drops keep their Warn.
type closeLogHandler struct {
	next     slog.Handler
	expected *atomic.Bool
}

func (h *closeLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// A Warn may become Info: ask about the level it would have then.
	if l == slog.LevelWarn && h.expected.Load() {
		l = slog.LevelInfo
	}
	return h.next.Enabled(ctx, l)
}

func (h *closeLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && h.expected.Load() {
		r = r.Clone()
		r.Level = slog.LevelInfo
		r.AddAttrs(slog.Bool("expected", true))
		if !h.next.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.next.Handle(ctx, r)
}

func (h *closeLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &closeLogHandler{next: h.next.WithAttrs(as), expected: h.expected}
}

func (h *closeLogHandler) WithGroup(name string) slog.Handler {
	return &closeLogHandler{next: h.next.WithGroup(name), expected: h.expected}
}

// onceDialer returns conn on its first call and dials with next afterwards.
func onceDialer(conn net.Conn, next func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var mu sync.Mutex
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		c := conn
		conn = nil
		mu.Unlock()
		if c != nil {
			return c, nil
		}
		if next == nil {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		return next(ctx, network, addr)
	}
}

// Connector opens an SSH connection to h. conn, when not nil, is a TCP
// connection to h.SSHAddr() the prober already dialed: the connector must run
// the SSH handshake over it (and then owns it) rather than dial again, so
// that sshd sees no connection without authentication (OpenSSH's
// PerSourcePenalties). Closing the returned Closer ends the connection.
type Connector func(ctx context.Context, h *inventory.Host, conn net.Conn) (Runner, io.Closer, error)
