package cli

import (
	"context"
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
			"timeout, 5 the PC runs its other OS (never woken). Concurrent wakes of a host share one wake.",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.DurationFlag{Name: "timeout", Usage: "how long to wait for the host (default: its boot_timeout)"},
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
			inv, err := loadInventory(c, env)
			if err != nil {
				return err
			}
			h, err := inv.host(a[0])
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
		err = controller.WriteJSON(env.Stdout, res)
	} else {
		err = controller.WriteTable(env.Stdout, []controller.HostStatus{res.Status}, env.Now(), res.Status.State != controller.StateReady)
	}
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	st := res.Status
	switch code := res.ExitCode(); code {
	case ExitOK:
		return nil
	case ExitDegraded:
		return exitf(code, "host %s is up but degraded: failing checks: %s", o.host.Name, strings.Join(st.Failing(), ", "))
	case ExitOff:
		return exitf(code, "host %s: %s", o.host.Name, controller.Clean(st.Reason))
	default:
		timeout := o.timeout
		if timeout == 0 {
			timeout = o.host.BootTimeout.D()
		}
		return exitf(code, "host %s is not ready after %s (%s): %s; is Wake-on-LAN armed, and the PC on this network? (gpuctl wol listen on another machine shows the packets)",
			o.host.Name, timeout, st.State, controller.Clean(st.Reason))
	}
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
	fmt.Fprintf(p.w, "%s: [%6.1fs] %s: %s\n", controller.Clean(pr.Host), pr.Elapsed.Seconds(), pr.Phase, controller.Clean(pr.Waiting))
}

// draw rewrites the terminal line; p.mu is held.
func (p *progressPrinter) draw() {
	if !p.started {
		return
	}
	el := p.last.Elapsed + p.now().Sub(p.at)
	line := fmt.Sprintf("%s: %s %5.1fs  %s", controller.Clean(p.last.Host), p.last.Phase, el.Seconds(), controller.Clean(p.last.Waiting))
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
// marked for idle shutdown (idle.MarkPull in stateDir) while it runs.
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
		line := e.Model + ": " + string(e.Kind)
		if e.Status != "" {
			line = e.Model + ": " + e.Status
		}
		if e.Total > 0 {
			line += fmt.Sprintf(" %d%%", e.Completed*100/e.Total)
		}
		if e.Error != "" {
			line += ": " + e.Error
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
