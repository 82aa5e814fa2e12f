package controller

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// ErrRunnerClosed is returned by a HostRunner after Close.
var ErrRunnerClosed = errors.New("ssh runner closed")

// HostRunner runs commands on one host over the Controller's one SSH path
// (Connect: the TCP probe, then the SSH connector), connecting on first use
// and again once the connection has dropped (a timeout, a keepalive failure,
// the box rebooting). Commands that never need the host (a model list over
// the Ollama API) never connect. Concurrent callers share one connection.
type HostRunner struct {
	c    *Controller
	h    *inventory.Host
	lock chan struct{} // guards the fields below; held while connecting

	r      sshexec.Runner
	cl     io.Closer
	closed bool
}

// Runner returns h's HostRunner; Close it when done.
func (c *Controller) Runner(h *inventory.Host) *HostRunner {
	return &HostRunner{c: c, h: h, lock: make(chan struct{}, 1)}
}

// donner is implemented by the Runners sshexec returns: Done is closed
// once the connection has ended.
type donner interface{ Done() <-chan struct{} }

// Run runs cmd on the host, connecting first when there is no open
// connection.
func (r *HostRunner) Run(ctx context.Context, cmd sshexec.Cmd) (sshexec.Result, error) {
	run, err := r.runner(ctx)
	if err != nil {
		return sshexec.Result{}, err
	}
	return run.Run(ctx, cmd)
}

func (r *HostRunner) runner(ctx context.Context) (sshexec.Runner, error) {
	select {
	case r.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("host %q: waiting for the SSH connection: %w", r.h.Name, ctx.Err())
	}
	defer func() { <-r.lock }()
	run := r.r
	if r.closed {
		return nil, ErrRunnerClosed
	}
	if run != nil {
		d, ok := run.(donner)
		if !ok {
			return run, nil
		}
		select {
		case <-d.Done():
			r.cl.Close()
		default:
			return run, nil
		}
	}
	run, cl, err := r.c.Connect(ctx, r.h)
	if err != nil {
		return nil, err
	}
	r.r, r.cl = run, cl
	return run, nil
}

// Close ends the connection, if any; Run fails afterwards.
func (r *HostRunner) Close() error {
	r.lock <- struct{}{}
	defer func() { <-r.lock }()
	r.closed = true
	if r.cl == nil {
		return nil
	}
	err := r.cl.Close()
	r.r, r.cl = nil, nil
	return err
}
