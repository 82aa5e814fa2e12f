package sshexec

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ollamalive/gpuctl/inventory"
)

// Pool keeps one Client per host, dialing on first use and again once a
// connection has closed (timeout, keepalive, server restart). Concurrent
// callers for a host share one dial.
type Pool struct {
	configFor func(host string) (Config, error)
	dial      func(context.Context, Config) (*Client, error)

	mu      sync.Mutex
	entries map[string]*poolEntry
	closed  bool
}

type poolEntry struct {
	lock   chan struct{} // held while dialing
	client *Client
}

// NewPool returns a pool that builds each host's Config with configFor.
func NewPool(configFor func(host string) (Config, error)) *Pool {
	return &Pool{configFor: configFor, dial: Dial, entries: map[string]*poolEntry{}}
}

// NewInventoryPool returns a pool for the inventory's hosts (ConfigFor with opts).
func NewInventoryPool(inv *inventory.Inventory, opts ...Option) *Pool {
	return NewPool(func(name string) (Config, error) {
		h, ok := inv.Host(name)
		if !ok {
			return Config{}, fmt.Errorf("no host %q in %s", name, inv.Path)
		}
		return ConfigFor(inv, h, opts...)
	})
}

// ErrPoolClosed is returned by a closed Pool.
var ErrPoolClosed = errors.New("sshexec: pool closed")

// Client returns host's open Client, dialing when there is none.
func (p *Pool) Client(ctx context.Context, host string) (*Client, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrPoolClosed
	}
	e := p.entries[host]
	if e == nil {
		e = &poolEntry{lock: make(chan struct{}, 1)}
		p.entries[host] = e
	}
	p.mu.Unlock()

	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("ssh %s: waiting for the connection: %w", host, ctx.Err())
	}
	defer func() { <-e.lock }()
	if c := e.client; c != nil {
		select {
		case <-c.Done():
			c.Close()
			e.client = nil
		default:
			return c, nil
		}
	}
	cfg, err := p.configFor(host)
	if err != nil {
		return nil, err
	}
	c, err := p.dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return nil, ErrPoolClosed
	}
	e.client = c
	p.mu.Unlock()
	return c, nil
}

// Run runs cmd on host over its pooled connection.
func (p *Pool) Run(ctx context.Context, host string, cmd Cmd) (Result, error) {
	c, err := p.Client(ctx, host)
	if err != nil {
		return Result{}, err
	}
	return c.Run(ctx, cmd)
}

// Runner is host's Runner backed by the pool.
func (p *Pool) Runner(host string) Runner { return hostRunner{p, host} }

type hostRunner struct {
	p    *Pool
	host string
}

func (r hostRunner) Run(ctx context.Context, cmd Cmd) (Result, error) {
	return r.p.Run(ctx, r.host, cmd)
}

// Forget closes host's connection, if any (after a reboot or power-off).
func (p *Pool) Forget(host string) {
	p.mu.Lock()
	e := p.entries[host]
	delete(p.entries, host)
	p.mu.Unlock()
	if e != nil {
		e.lock <- struct{}{}
		if e.client != nil {
			e.client.Close()
		}
		<-e.lock
	}
}

// Close closes every connection; the pool cannot be used afterwards.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.entries
	p.entries = map[string]*poolEntry{}
	p.mu.Unlock()
	for _, e := range entries {
		e.lock <- struct{}{}
		if e.client != nil {
			e.client.Close()
		}
		<-e.lock
	}
	return nil
}
