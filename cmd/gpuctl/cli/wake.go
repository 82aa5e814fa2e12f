package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func wakeCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "wake",
		Usage:     "Wake a host and wait until it is ready to serve",
		ArgsUsage: "HOST",
		Description: "Returns at once when the host is ready already. Otherwise sends Wake-on-LAN packets (again and\n" +
			"again while waiting), waits for SSH, runs the readiness checks until they pass and pulls missing\n" +
			"declared models. Exit code: 0 ready, 4 degraded (failing checks named), 3 not reachable by the\n" +
			"timeout, 5 the PC runs its other OS (never woken), 1 stopped at once on an SSH error that waiting\n" +
			"cannot fix (host key mismatch, login refused). Concurrent wakes of a host share one wake.",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.DurationFlag{Name: "timeout", Usage: "how long to wait for the host (`DURATION`)", DefaultText: "its boot_timeout"},
			&cli.BoolFlag{Name: "no-pull", Usage: "do not pull missing declared models (they leave the host degraded)"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "HOST")
			if err != nil {
				return err
			}
			if c.Duration("timeout") < 0 {
				return usageError("--timeout must be positive")
			}
			inv, h, err := loadHost(c, env, a[0])
			if err != nil {
				return err
			}
			return runWake(c.Context, env, wakeOptions{inv: inv, host: h, json: c.Bool("json"),
				timeout: c.Duration("timeout"), noPull: c.Bool("no-pull")})
		},
	}
}

type wakeOptions struct {
	inv     *loadedInventory
	host    *inventory.Host
	json    bool
	timeout time.Duration
	noPull  bool
}

func runWake(ctx context.Context, env *Env, o wakeOptions) error {
	ctl := newController(env, o.inv)
	pr := newProgressPrinter(env.Stderr, isTTY(env.Stderr), env.Now)
	res, err := ctl.Wake(ctx, o.host, controller.WakeOptions{Timeout: o.timeout, NoPull: o.noPull, Progress: pr.update})
	pr.close()
	if err != nil {
		if ctx.Err() != nil {
			return withCode(ExitInterrupted, fmt.Errorf("wake %s: %w", o.host.Name, ctx.Err()))
		}
		return fmt.Errorf("wake %s: %w", o.host.Name, err)
	}
	if res.Coalesced {
		fmt.Fprintf(env.Stderr, "another wake of %s was in progress; this is its result\n", o.host.Name)
	}
	if o.json {
		err = WriteJSON(env.Stdout, res)
	} else {
		err = WriteTable(env.Stdout, []controller.HostStatus{res.Status}, env.Now(), res.Status.State != controller.StateReady)
	}
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	st := res.Status
	if res.Stopped != "" {
		return withCode(res.ExitCode(), stoppedError(o.host.Name, res))
	}
	switch code := res.ExitCode(); code {
	case ExitOK:
		return nil
	case ExitDegraded:
		return exitf(code, "host %s is up but degraded: failing checks: %s; the table above says why (gpuctl status %s checks again)",
			o.host.Name, strings.Join(st.Failing(), ", "), o.host.Name)
	case ExitOff:
		return exitf(code, "host %s: %s", o.host.Name, Clean(st.Reason))
	default:
		timeout := o.timeout
		if timeout == 0 {
			timeout = o.host.BootTimeout.D()
		}
		return exitf(code, "host %s is not ready after %s (%s): %s%s", o.host.Name, timeout, st.State,
			Clean(st.Reason), notReadyHint(o, res, timeout))
	}
}

// notReadyHint is what to check when a wake timed out, by where the host
// got to: only a host that never answered points at Wake-on-LAN.
func notReadyHint(o wakeOptions, res *controller.WakeResult, timeout time.Duration) string {
	switch {
	case res.Status.State == controller.StateOff && res.Record.Woke:
		return "; is Wake-on-LAN armed, and the PC on this network? (gpuctl wol listen on another machine shows the packets)"
	case res.Status.State == controller.StateOff:
		return fmt.Sprintf("; no magic packet was sent (host %s has no mac in %s): power it on by hand, or add its mac", o.host.Name, o.inv.Path)
	case res.Status.State == controller.StateBooting:
		return fmt.Sprintf("; the host answers on the network but SSH never became usable: check that sshd runs on it, or allow a slower boot (--timeout, or boot_timeout, now %s)", timeout)
	}
	return ""
}

// stoppedError says why a wake stopped at once on an SSH error that waiting
// cannot fix, and what to do about it: no Wake-on-LAN hint, since the host
// is up and answering.
func stoppedError(host string, res *controller.WakeResult) error {
	var hk *sshexec.HostKeyError
	var ae *sshexec.AuthError
	switch {
	case errors.As(res.Err, &hk) && hk.Kind == sshexec.HostKeyMismatch:
		var b strings.Builder
		fmt.Fprintf(&b, "wake %s stopped: host key mismatch at %s: the host presents %s %s, but ", host, hk.Addr, hk.Key.Type(), ssh.FingerprintSHA256(hk.Key))
		for i, k := range hk.Known {
			if i > 0 {
				b.WriteString(" and ")
			}
			fmt.Fprintf(&b, "%s %s is on record in %s", k.Key.Type(), ssh.FingerprintSHA256(k.Key), knownKeySource(k))
		}
		if len(hk.Known) == 0 {
			b.WriteString("another key is on record")
		}
		b.WriteString("; someone may be intercepting the connection, or the host was reinstalled, so gpuctl did not log in; " +
			"compare with the key on the host itself (on its console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")
		switch {
		case strings.HasPrefix(hk.Hint, "gpuctl trust "):
			fmt.Fprintf(&b, "; if it matches, run: gpuctl trust %s --replace", host)
		case hk.Hint != "":
			fmt.Fprintf(&b, "; if it matches, %s", hk.Hint)
		}
		return errors.New(Clean(b.String()))
	case errors.As(res.Err, &ae) && len(ae.Offered) > 0:
		var b strings.Builder
		fmt.Fprintf(&b, "wake %s stopped: %s refused the login as %q with every key offered (%s)", host, ae.Addr, ae.User, strings.Join(ae.Offered, "; "))
		for _, n := range ae.Notes {
			b.WriteString("; ")
			b.WriteString(n)
		}
		fmt.Fprintf(&b, "; add one of these public keys to %s's ~/.ssh/authorized_keys on the host, or set [ssh].identity_files to the key it accepts", ae.User)
		return errors.New(Clean(b.String()))
	case res.Err != nil:
		return fmt.Errorf("wake %s stopped: %s", host, Clean(res.Err.Error()))
	}
	// A result recorded by another gpuctl: only its text.
	return fmt.Errorf("wake %s stopped: %s", host, Clean(res.Status.Reason))
}

// knownKeySource says where a recorded key comes from: file:line, or the
// inventory's host_key.
func knownKeySource(k sshexec.KnownKey) string {
	if k.Line > 0 {
		return fmt.Sprintf("%s:%d", k.File, k.Line)
	}
	return k.File
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressPrinter shows a wake's progress: on a terminal one line rewritten
// in place (phase, elapsed, what it waits for); otherwise one plain line per
// change, with no control characters.
type progressPrinter struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu      sync.Mutex
	last    controller.Progress
	at      time.Time
	started bool
	stop    chan struct{}
	done    chan struct{}
}

func newProgressPrinter(w io.Writer, tty bool, now func() time.Time) *progressPrinter {
	p := &progressPrinter{w: w, tty: tty, now: now}
	if tty {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.tick()
	}
	return p
}

func (p *progressPrinter) update(pr controller.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.at, p.started = pr, p.now(), true
	if p.tty {
		p.draw()
		return
	}
	fmt.Fprintf(p.w, "%s: [%6.1fs] %s: %s\n", Clean(pr.Host), pr.Elapsed.Seconds(), pr.Phase, Clean(pr.Waiting))
}

// draw rewrites the terminal line; p.mu is held.
func (p *progressPrinter) draw() {
	if !p.started {
		return
	}
	el := p.last.Elapsed + p.now().Sub(p.at)
	line := fmt.Sprintf("%s: %s %5.1fs  %s", Clean(p.last.Host), p.last.Phase, el.Seconds(), Clean(p.last.Waiting))
	if len(line) > 160 {
		line = line[:159] + "…"
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

func (p *progressPrinter) tick() {
	defer close(p.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.last.Phase != controller.PhaseDone {
				p.draw()
			}
			p.mu.Unlock()
		}
	}
}

func (p *progressPrinter) close() {
	if !p.tty {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// modelsPuller pulls missing models during a wake with package models,
// marked for idle shutdown (statedir.MarkPull in stateDir) while it runs.
type modelsPuller struct {
	http     *http.Client
	logger   *slog.Logger
	stateDir string
	// client replaces the host's Ollama API client (tests).
	client func(h *inventory.Host) *api.Client
}

func (p modelsPuller) Pull(ctx context.Context, h *inventory.Host, r sshexec.Runner, names []inventory.ModelName, progress func(string)) error {
	unmark, err := markPull(p.stateDir, h.Name, names)
	if err != nil {
		return err
	}
	defer unmark()
	client := api.NewClient(h.OllamaURL.URL, p.http)
	if p.client != nil {
		client = p.client(h)
	}
	m := &models.Manager{Client: client, Runner: r, Host: h, Logger: p.logger}
	var mu sync.Mutex
	lastLine := ""
	return m.Pull(ctx, names, models.SinkFunc(func(e models.Event) {
		line := pullLine(e)
		if line == "" {
			return
		}
		mu.Lock()
		changed := line != lastLine
		lastLine = line
		mu.Unlock()
		if changed {
			progress(line)
		}
	}))
}

// pullLine is a wake's progress text for one pull event: Ollama's status
// with the layer's percentage while it downloads, otherwise the event as
// gpuctl pull prints it.
func pullLine(e models.Event) string {
	if e.Kind != models.EventStatus {
		return models.Describe(e)
	}
	line := e.Model + ": " + e.Status
	if e.Total > 0 {
		line += fmt.Sprintf(" %d%%", min(e.Completed, e.Total)*100/e.Total)
	}
	return line
}
