package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// capBuffer keeps the first max bytes written and discards the rest, so a
// chatty command never blocks the channel or grows memory.
type capBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

// copyBufs are ReadFrom's read buffers. Without ReadFrom, x/crypto's
// session copies each of stdout and stderr through io.Copy, which allocates
// 32 KiB per stream per command: most of what a status of many hosts
// allocates, for outputs of a few KiB.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// ReadFrom reads r to its end, keeping the first max bytes (io.Copy uses
// it instead of allocating a buffer of its own).
func (b *capBuffer) ReadFrom(r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			n += int64(m)
			b.Write(buf[:m])
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (b *capBuffer) bytes() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes()), b.truncated
}

// startError is a failed Session.Start in Run's wait channel.
type startError struct{ err error }

func (e startError) Error() string { return "start: " + e.err.Error() }

// Run runs cmd in a new session on the connection. The command line is
// Quote(cmd.Args...). It waits for a free session slot, bounded by ctx.
//
// When cmd.Timeout or ctx ends the command, Run sends SIGKILL, returns what
// output arrived with a timeout *OpError, and closes the whole connection:
// a session whose remote command does not end cannot be reclaimed
// (golang/go#21699), and a connection that stopped answering is useless.
// Dial again (Pool does) for the next command.
func (c *Client) Run(ctx context.Context, cmd Cmd) (Result, error) {
	if len(cmd.Args) == 0 {
		return Result{}, errors.New("sshexec: Run: empty Cmd.Args")
	}
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmd.Timeout)
		defer cancel()
	}
	r := &run{c: c, cmd: cmd, line: Quote(cmd.Args...), start: time.Now()}
	if ok, res, err := r.acquire(ctx); !ok {
		return res, err
	}
	defer func() { <-c.sem }()

	sess, err := c.newSession(ctx)
	if err != nil {
		return Result{Duration: time.Since(r.start)}, err
	}
	defer sess.Close()
	r.attach(sess)
	c.log.Debug("ssh run", "cmd", r.line)
	r.startCommand()
	select {
	case err = <-r.waitc:
		if se, ok := err.(startError); ok {
			if c.Err() != nil {
				return r.result(), c.Err()
			}
			return r.result(), r.opErr(fmt.Errorf("start: %w", se.err))
		}
	case <-ctx.Done():
		return r.result(), r.abandon(ctx)
	case <-c.done:
		<-r.waitc
		return r.result(), c.Err()
	}
	return r.finish(err)
}

// run carries one command through Run's phases.
type run struct {
	c              *Client
	cmd            Cmd
	line           string
	start          time.Time
	sess           *ssh.Session
	stdout, stderr *capBuffer
	// started is closed once the server accepted the exec request; waitc
	// then gets the command's end (or a startError).
	started chan struct{}
	waitc   chan error
}

func (r *run) opErr(err error) error {
	return &OpError{Op: "run", Host: r.c.cfg.name(), Addr: r.c.cfg.Addr, Err: fmt.Errorf("%s: %w", r.cmd.Args[0], err)}
}

// acquire takes a session slot; ok is false, with Run's result, when the
// client closed or ctx ended first.
func (r *run) acquire(ctx context.Context) (ok bool, res Result, err error) {
	c := r.c
	select {
	case <-c.done:
		return false, Result{}, c.Err()
	default:
	}
	select {
	case c.sem <- struct{}{}:
		return true, Result{}, nil
	case <-ctx.Done():
		return false, Result{Duration: time.Since(r.start)}, r.opErr(fmt.Errorf("waiting for a free session: %w", ctx.Err()))
	case <-c.done:
		return false, Result{}, c.Err()
	}
}

// attach gives the session the command's capped output buffers and stdin.
func (r *run) attach(sess *ssh.Session) {
	maxOut := r.cmd.MaxOutput
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}
	r.sess = sess
	r.stdout, r.stderr = &capBuffer{max: maxOut}, &capBuffer{max: maxOut}
	sess.Stdout, sess.Stderr = r.stdout, r.stderr
	if r.cmd.Stdin != nil {
		sess.Stdin = bytes.NewReader(r.cmd.Stdin)
	}
}

// startCommand starts the command and waits for it in a goroutine. Start
// waits for the server's reply to "exec", which a server whose session
// setup hangs never sends: it runs beside Run's select, so the command's
// deadline covers it as it covers Wait.
func (r *run) startCommand() {
	r.started = make(chan struct{})
	r.waitc = make(chan error, 1)
	r.c.wg.Add(1)
	go func() {
		defer r.c.wg.Done()
		if err := r.sess.Start(r.line); err != nil {
			r.waitc <- startError{err}
			return
		}
		close(r.started)
		r.waitc <- r.sess.Wait()
	}()
}

// result is the output so far.
func (r *run) result() Result {
	res := Result{Duration: time.Since(r.start)}
	var t1, t2 bool
	res.Stdout, t1 = r.stdout.bytes()
	res.Stderr, t2 = r.stderr.bytes()
	res.Truncated = t1 || t2
	return res
}

// abandon ends a command ctx cut short: it kills it (when it started),
// closes the connection and returns the timeout error.
func (r *run) abandon(ctx context.Context) error {
	late, closing := "no exit", "did not finish"
	select {
	case <-r.started:
		_ = r.sess.Signal(ssh.SIGKILL)
	default:
		// The exec request is unanswered: nothing runs to signal.
		late, closing = "no reply to the exec request", "could not start"
	}
	cause := ctx.Err()
	if errors.Is(cause, context.DeadlineExceeded) {
		cause = fmt.Errorf("%s after %s: %w", late, time.Since(r.start).Round(time.Millisecond), cause)
	}
	terr := r.opErr(cause)
	r.c.closeWith(&OpError{Op: "run", Host: r.c.cfg.name(), Addr: r.c.cfg.Addr,
		Err: fmt.Errorf("closed the connection after %s %s in time: %w", r.cmd.Args[0], closing, ErrClosed)})
	<-r.waitc
	return terr
}

// finish turns the command's end (Session.Wait's error) into Run's result.
func (r *run) finish(err error) (Result, error) {
	res := r.result()
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &ee):
		res.ExitStatus = ee.ExitStatus()
		res.Signal = ee.Signal()
		return res, nil
	}
	if cerr := r.c.Err(); cerr != nil {
		return res, cerr
	}
	var em *ssh.ExitMissingError
	if errors.As(err, &em) {
		return res, r.opErr(errors.New("the session ended without an exit status (the remote command was cut off)"))
	}
	return res, r.opErr(err)
}

// newSession opens a session, bounded by ctx (golang/go#26643: NewSession
// can block forever). A session that cannot be opened in time means the
// connection is stuck, so it is closed.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	type res struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan res, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s, err := c.conn.NewSession()
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			if cerr := c.Err(); cerr != nil {
				return nil, cerr
			}
			return nil, &OpError{Op: "session", Host: c.cfg.name(), Addr: c.cfg.Addr, Err: r.err}
		}
		return r.s, nil
	case <-ctx.Done():
		err := &OpError{Op: "session", Host: c.cfg.name(), Addr: c.cfg.Addr, Err: fmt.Errorf("no session opened: %w", ctx.Err())}
		c.closeWith(err)
		if r := <-ch; r.s != nil {
			r.s.Close()
		}
		return nil, err
	case <-c.done:
		if r := <-ch; r.s != nil {
			r.s.Close()
		}
		return nil, c.Err()
	}
}
