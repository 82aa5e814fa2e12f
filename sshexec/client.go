package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for the zero fields of Config.
const (
	DefaultConnectTimeout    = 5 * time.Second
	DefaultKeepaliveInterval = 10 * time.Second
	DefaultKeepaliveTimeout  = 5 * time.Second
	DefaultKeepaliveMisses   = 3
	// DefaultMaxSessions stays below OpenSSH's MaxSessions (10), leaving room
	// for an interactive user's sessions on the same account.
	DefaultMaxSessions = 8
	// DefaultMaxOutput caps each of stdout and stderr when Cmd.MaxOutput is 0.
	DefaultMaxOutput = 1 << 20
)

// Config is how to reach and verify one host. Build it with ConfigFor from
// the inventory, or by hand in tests.
type Config struct {
	// Host names the host in messages ("gaming-pc"); default Addr.
	Host string
	// Addr is the host:port to dial (after ~/.ssh/config's HostName/Port).
	Addr string
	User string

	// KnownHosts are the known_hosts files to check the server's key
	// against; files that do not exist are skipped. Ignored when HostKey is set.
	KnownHosts []string
	// HostKey pins the host's key (inventory host_key); when set it is the
	// only key accepted.
	HostKey ssh.PublicKey
	// HostKeySource says where HostKey came from, for messages.
	HostKeySource string
	// TrustHint is the command an "unknown host key" error tells the user to
	// run ("gpuctl trust gaming-pc").
	TrustHint string

	// Signers are keys offered first (tests, embedded keys).
	Signers []ssh.Signer
	// IdentityFiles are private key files offered next.
	IdentityFiles []string
	// AgentSocket is the ssh-agent socket ($SSH_AUTH_SOCK); "" means no agent.
	AgentSocket string
	// IdentitiesOnly offers agent keys only when they belong to an identity
	// file, as ssh_config's IdentitiesOnly (avoids "Too many authentication
	// failures" with a full agent).
	IdentitiesOnly bool

	// Jumps are ProxyJump hops, dialed in order; each is verified like the
	// target. Their own Jumps are ignored.
	Jumps []Config

	// ConnectTimeout bounds each hop's TCP connect plus SSH handshake.
	ConnectTimeout time.Duration
	// KeepaliveInterval is how often keepalive@openssh.com is sent; < 0
	// turns keepalives off.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout is how long one keepalive may go unanswered.
	KeepaliveTimeout time.Duration
	// KeepaliveMisses consecutive failed keepalives close the connection.
	KeepaliveMisses int
	// MaxSessions bounds concurrent commands on the connection.
	MaxSessions int

	// DialContext opens the TCP connection to the first hop; default
	// net.Dialer (tests inject pipes or a network namespace's dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger      *slog.Logger
}

func (cfg *Config) name() string {
	if cfg.Host != "" {
		return cfg.Host
	}
	return cfg.Addr
}

func (cfg Config) withDefaults() Config {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = min(DefaultKeepaliveTimeout, max(cfg.KeepaliveInterval, time.Millisecond))
	}
	if cfg.KeepaliveMisses <= 0 {
		cfg.KeepaliveMisses = DefaultKeepaliveMisses
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.DialContext == nil {
		var d net.Dialer
		cfg.DialContext = d.DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Client is one SSH connection to a host, running each command in its own
// session. It is safe for concurrent use; at most MaxSessions commands run at
// once and the rest wait their turn (bounded by their context).
type Client struct {
	cfg     Config
	conn    *ssh.Client
	jumps   []*ssh.Client
	hostKey ssh.PublicKey
	sem     chan struct{}
	log     *slog.Logger

	done      chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	closeErr  error
	wg        sync.WaitGroup
}

var _ Runner = (*Client)(nil)

// Dial connects to cfg.Addr (through cfg.Jumps), verifies every hop's host
// key and authenticates. Each hop's connect and handshake is bounded by
// ConnectTimeout and by ctx; ctx does not bound the connection's life.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("sshexec: Config.Addr is empty")
	}
	log := cfg.Logger.With("host", cfg.name())
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return cfg.DialContext(ctx, "tcp", addr) }
	var jumps []*ssh.Client
	closeJumps := func() {
		for i := len(jumps) - 1; i >= 0; i-- {
			jumps[i].Close()
		}
	}
	for _, hop := range cfg.Jumps {
		hop.ConnectTimeout = cfg.ConnectTimeout
		hop.Logger = cfg.Logger
		if hop.Signers == nil && hop.IdentityFiles == nil && hop.AgentSocket == "" {
			hop.Signers, hop.IdentityFiles, hop.AgentSocket, hop.IdentitiesOnly = cfg.Signers, cfg.IdentityFiles, cfg.AgentSocket, cfg.IdentitiesOnly
		}
		c, _, err := handshake(ctx, &hop, dial, nil)
		if err != nil {
			closeJumps()
			return nil, fmt.Errorf("via ProxyJump %s: %w", hop.name(), err)
		}
		log.Debug("connected to jump host", "jump", hop.Addr)
		jumps = append(jumps, c)
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return c.DialContext(ctx, "tcp", addr) }
	}
	conn, key, err := handshake(ctx, &cfg, dial, nil)
	if err != nil {
		closeJumps()
		return nil, err
	}
	c := &Client{
		cfg: cfg, conn: conn, jumps: jumps, hostKey: key, log: log,
		sem:  make(chan struct{}, cfg.MaxSessions),
		done: make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := conn.Wait()
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("the server closed the connection")
		}
		c.closeWith(&OpError{Op: "connection", Host: cfg.name(), Addr: cfg.Addr, Err: err})
	}()
	if cfg.KeepaliveInterval > 0 {
		c.wg.Add(1)
		go c.keepalive()
	}
	log.Debug("ssh connected", "addr", cfg.Addr, "host_key", ssh.FingerprintSHA256(key))
	return c, nil
}

// errScanned aborts a handshake once the host key is captured.
var errScanned = errors.New("host key captured")

// handshake dials cfg.Addr with dial and runs the SSH handshake, both within
// cfg.ConnectTimeout. With scan set it records the host key and stops before
// authentication.
func handshake(ctx context.Context, cfg *Config, dial func(context.Context, string) (net.Conn, error), scan *ssh.PublicKey) (*ssh.Client, ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	opErr := func(op string, err error) error {
		return &OpError{Op: op, Host: cfg.name(), Addr: cfg.Addr, Err: err}
	}
	timeoutErr := func(what string) error {
		if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%s within %s: %w", what, cfg.ConnectTimeout, context.DeadlineExceeded)
	}
	policy, err := cfg.policy()
	if err != nil {
		return nil, nil, opErr("handshake", err)
	}
	conn, err := dial(ctx, cfg.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, opErr("dial", timeoutErr("no TCP connection"))
		}
		return nil, nil, opErr("dial", err)
	}
	// A deadline on the socket where it supports one, and a close when ctx
	// ends for everything else (golang/go#51926: the handshake has no timeout).
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })

	var presented ssh.PublicKey
	cc := &ssh.ClientConfig{
		User:              cfg.User,
		HostKeyAlgorithms: policy.algos,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			presented = key
			if scan != nil {
				*scan = key
				return errScanned
			}
			return policy.callback(hostname, remote, key)
		},
	}
	var auth *authSet
	if scan == nil {
		auth, err = cfg.loadAuth(ctx)
		if err != nil {
			stop()
			conn.Close()
			return nil, nil, opErr("handshake", err)
		}
		defer auth.close()
		cc.Auth = []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) { return auth.signers, nil })}
	}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, cfg.Addr, cc)
	fired := !stop()
	if err != nil {
		conn.Close()
		var he *HostKeyError
		switch {
		case scan != nil && errors.Is(err, errScanned):
			return nil, *scan, nil
		case errors.As(err, &he):
			return nil, nil, he
		case fired || errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil, opErr("handshake", timeoutErr("no SSH handshake"))
		case isAuthFailure(err):
			return nil, nil, &AuthError{Host: cfg.name(), Addr: cfg.Addr, User: cfg.User,
				Offered: auth.offered, Notes: auth.notes, Err: err}
		}
		return nil, nil, opErr("handshake", err)
	}
	if fired {
		sconn.Close()
		return nil, nil, opErr("handshake", timeoutErr("no SSH handshake"))
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sconn, chans, reqs), presented, nil
}

// HostKey is the key the server presented (and that was verified).
func (c *Client) HostKey() ssh.PublicKey { return c.hostKey }

// Config is the configuration the client was dialed with, defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// Done is closed when the connection is gone (Close, server gone, or
// keepalives unanswered); Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection closed, or nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Close closes the connection (and its jump hosts), ends running commands
// with ErrClosed and waits for the client's goroutines.
func (c *Client) Close() error {
	c.closeWith(&OpError{Op: "run", Host: c.cfg.name(), Addr: c.cfg.Addr, Err: ErrClosed})
	c.wg.Wait()
	return nil
}

func (c *Client) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeErr = err
		c.mu.Unlock()
		close(c.done)
		c.conn.Close()
		for i := len(c.jumps) - 1; i >= 0; i-- {
			c.jumps[i].Close()
		}
		if !errors.Is(err, ErrClosed) {
			c.log.Warn("ssh connection closed", "err", err)
		}
	})
}

// keepalive sends keepalive@openssh.com every interval, each with its own
// timeout (the request blocks on a black-holed network), and closes the
// client after KeepaliveMisses consecutive failures.
func (c *Client) keepalive() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.KeepaliveInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		if c.ping() {
			misses = 0
			continue
		}
		misses++
		c.log.Debug("keepalive unanswered", "misses", misses)
		if misses >= c.cfg.KeepaliveMisses {
			c.closeWith(&OpError{Op: "keepalive", Host: c.cfg.name(), Addr: c.cfg.Addr,
				Err: fmt.Errorf("%d %w within %s each; closed the connection", misses, ErrKeepalive, c.cfg.KeepaliveTimeout)})
			return
		}
	}
}

func (c *Client) ping() bool {
	res := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
		res <- err
	}()
	t := time.NewTimer(c.cfg.KeepaliveTimeout)
	defer t.Stop()
	select {
	case err := <-res:
		return err == nil
	case <-t.C:
		return false
	case <-c.done:
		return false
	}
}
