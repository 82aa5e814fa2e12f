package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/cmd/gpuctl/dashboard"
	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/proxy"
	"github.com/ollamalive/gpuctl/inventory"
)

func serveCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "Run the Ollama- and OpenAI-compatible routing proxy that wakes on-demand hosts",
		ArgsUsage: " ",
		Description: "Point Open WebUI (OLLAMA_BASE_URL) or any Ollama or OpenAI client at it. Requests are routed by\n" +
			"model: the first matching [[route]], else to an on-demand host when the model is too big for the\n" +
			"default host's vram, else to the default host. A request for a sleeping host wakes it and is held\n" +
			"until the host is ready (or its boot_timeout passes: then the route's fallback, or 503). Model\n" +
			"lists never wake anything. Also serves /metrics, /healthz, " + activity.Path + ", a status page at\n" +
			dashboard.Prefix + " (read-only unless [serve] page_actions = true, which adds a wake button) and Go's\n" +
			"profiler on [serve] debug_listen (loopback only).\n" +
			"Runs until SIGINT or SIGTERM, then lets open streams finish for up to --drain; streams still open\n" +
			"then end with an error record. SIGHUP never stops it: it checks the inventory again and logs\n" +
			"whether it is valid; changes take effect on restart (systemctl restart gpuctl-serve).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "listen on `ADDR` (host:port; default: [serve] listen, else " + inventory.DefaultListen + ")"},
			&cli.DurationFlag{Name: "drain", Value: proxy.DefaultDrainTimeout, Usage: "on shutdown, how long open streams may take to finish (`DURATION`)"},
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			inv, err := loadInventory(c, env)
			if err != nil {
				return err
			}
			listen := inv.Serve.Listen.String()
			if l := c.String("listen"); l != "" {
				hp, err := inventory.ParseHostPort(l)
				if err != nil {
					return usageError("--listen: %v", err)
				}
				listen = hp.String()
			}
			if c.Duration("drain") <= 0 {
				return usageError("--drain must be positive")
			}
			return runServe(c.Context, env, serveOptions{inv: inv, listen: listen, drain: c.Duration("drain"),
				reload: func() (*inventory.Inventory, error) {
					l, err := loadInventory(c, env)
					if err != nil {
						return nil, err
					}
					return l.Inventory, nil
				}})
		},
	}
}

type serveOptions struct {
	inv    *loadedInventory
	listen string
	drain  time.Duration
	// backends replaces the controller (tests).
	backends proxy.Backends
	// ready, when set, receives the bound address once listening (tests).
	ready func(addr string)
	// reload reads the inventory again (on SIGHUP); nil skips the check.
	reload func() (*inventory.Inventory, error)
}

func runServe(ctx context.Context, env *Env, o serveOptions) error {
	backends := o.backends
	if backends == nil {
		backends = newControllerBackends(env, o.inv)
	}
	log := env.Logger.With("component", "serve")
	tracker := activity.NewTracker(env.Now)
	var p *proxy.Proxy
	page, err := newStatusPage(env, o.inv, tracker, func(ctx context.Context, host string) error { return p.Wake(ctx, host) })
	if err != nil {
		return err
	}
	defer page.Close()
	p, err = proxy.New(proxy.Options{
		Inventory:             o.inv.Inventory,
		Getenv:                env.Getenv,
		Backends:              backends,
		Tracker:               tracker,
		Logger:                log,
		StateDir:              o.inv.StateDir,
		DrainTimeout:          o.drain,
		ResponseHeaderTimeout: time.Duration(o.inv.Serve.HeaderTimeout),
		Now:                   env.Now,
		Page:                  page,
	})
	if err != nil {
		return withCode(ExitUsage, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.listen)
	if err != nil {
		return exitf(ExitFailure, "listen on %s: %w (is another gpuctl serve running? change [serve] listen in %s or pass --listen)", o.listen, err, o.inv.Path)
	}
	fmt.Fprintf(env.Stderr, "gpuctl serve: listening on http://%s (default host %s); status page at http://%s%s\n",
		ln.Addr(), o.inv.Serve.DefaultHost, ln.Addr(), dashboard.Prefix)
	if o.ready != nil {
		o.ready(ln.Addr().String())
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if env.Hangup != nil {
		hup, stop := env.Hangup()
		defer stop()
		wg.Go(func() { watchHangups(ctx, log, hup, o) })
	}
	if d := o.inv.Serve.DebugListen; d != (inventory.HostPort{}) {
		dln, err := lc.Listen(ctx, "tcp", d.String())
		if err != nil {
			ln.Close()
			return exitf(ExitFailure, "listen on %s for serve.debug_listen: %w (change it in %s)", d, err, o.inv.Path)
		}
		fmt.Fprintf(env.Stderr, "gpuctl serve: profiler on http://%s/debug/pprof/\n", dln.Addr())
		dsrv := &http.Server{Handler: proxy.DebugHandler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() { _ = dsrv.Serve(dln) })
		wg.Go(func() { <-ctx.Done(); _ = dsrv.Close() })
	}
	if err := p.Run(ctx, ln); err != nil {
		return err
	}
	return nil
}

// watchHangups answers SIGHUP: serve keeps running (a closed terminal or
// SSH session must not kill the proxy). Its routing tables, limits and
// in-flight counts are not swapped under running requests; instead the
// inventory is read and validated again, and the log says whether it is
// valid (and so whether a restart would pick it up) or why not.
func watchHangups(ctx context.Context, log *slog.Logger, hup <-chan os.Signal, o serveOptions) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if o.reload == nil {
			log.Warn("SIGHUP: ignored; gpuctl serve keeps running")
			continue
		}
		inv, err := o.reload()
		if err == nil {
			var check *proxy.Proxy
			if check, err = proxy.New(proxy.Options{Inventory: inv, Registry: prometheus.NewRegistry()}); err == nil {
				check.Close()
			}
		}
		if err != nil {
			log.Warn("SIGHUP: the inventory has errors; gpuctl serve keeps running with the one it started with", "file", o.inv.Path, "err", err)
			continue
		}
		log.Warn("SIGHUP: the inventory is valid; gpuctl serve keeps running with the one it started with: restart it to apply changes (systemctl restart gpuctl-serve)", "file", o.inv.Path)
	}
}

// controllerBackends adapts the controller to the proxy: Up asks the host's
// Ollama directly (cheap, never wakes); Wake is the controller's wake, with
// no model pulls: the proxy pulls the missing declared models itself once
// the host is ready, holding only the requests for those models.
type controllerBackends struct {
	c    *controller.Controller
	inv  *inventory.Inventory
	http *http.Client
}

func newControllerBackends(env *Env, inv *loadedInventory) *controllerBackends {
	return &controllerBackends{c: newController(env, inv), inv: inv.Inventory,
		http: hostHTTP(env, 5*time.Second)}
}

func (b *controllerBackends) Up(ctx context.Context, host string) (bool, error) {
	h, ok := b.inv.Host(host)
	if !ok {
		return false, fmt.Errorf("no host %q in the inventory", host)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.OllamaURL.JoinPath("/api/version").String(), nil)
	if err != nil {
		return false, err
	}
	res, err := b.http.Do(req)
	if err != nil {
		return false, nil // not answering: off, asleep or booting
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK, nil
}

func (b *controllerBackends) Wake(ctx context.Context, host string) error {
	return b.WakeProgress(ctx, host, nil)
}

// WakeProgress is Wake reporting each phase as `gpuctl wake` prints it
// ("boot: magic packets sent to …; waiting for SSH at …"), for the
// streaming requests serve holds meanwhile.
func (b *controllerBackends) WakeProgress(ctx context.Context, host string, report func(string)) error {
	h, ok := b.inv.Host(host)
	if !ok {
		return fmt.Errorf("no host %q in the inventory", host)
	}
	opts := controller.WakeOptions{NoPull: true}
	if report != nil {
		opts.Progress = func(pr controller.Progress) {
			report(fmt.Sprintf("[%4.0fs] %s: %s", pr.Elapsed.Seconds(), pr.Phase, pr.Waiting))
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		opts.Timeout = time.Until(dl)
	}
	res, err := b.c.Wake(ctx, h, opts)
	if err != nil {
		return fmt.Errorf("waking %s: %w", host, err)
	}
	switch res.Status.State {
	case controller.StateReady:
		return nil
	case controller.StateDegraded:
		// A failed check (a missing declared model, say) need not stop
		// requests if Ollama itself answers.
		if up, _ := b.Up(ctx, host); up {
			return nil
		}
	}
	reason := Clean(res.Status.Reason)
	if reason == "" {
		reason = "no reason given"
	}
	return errors.New(string(res.Status.State) + ": " + reason)
}

// newStatusPage builds the status page (/gpuctl/) over the controller's
// status, which never wakes a host; wake is the proxy's shared wake.
func newStatusPage(env *Env, inv *loadedInventory, tracker *activity.Tracker, wake func(ctx context.Context, host string) error) (*dashboard.Dashboard, error) {
	ctl := newController(env, inv)
	return dashboard.New(dashboard.Options{
		Inventory: inv.Inventory,
		Status:    ctl.StatusAll,
		History:   ctl.WakeHistory,
		Tracker:   tracker,
		HTTP:      hostHTTP(env, 5*time.Second),
		StateDir:  inv.StateDir,
		Wake:      wake,
		Logger:    env.Logger.With("component", "page"),
		Now:       env.Now,
	})
}
