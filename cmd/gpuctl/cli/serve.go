package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/dashboard"
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
			"lists never wake anything. Also serves /metrics, /healthz, " + activity.Path + " and a status page at\n" +
			dashboard.Prefix + " (read-only unless [serve] page_actions = true, which adds a wake button).\n" +
			"Runs until SIGINT or SIGTERM, then lets open streams finish for up to --drain.",
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
			return runServe(c.Context, env, serveOptions{inv: inv, listen: listen, drain: c.Duration("drain")})
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
}

func runServe(ctx context.Context, env *Env, o serveOptions) error {
	backends := o.backends
	if backends == nil {
		backends = newControllerBackends(env, o.inv)
	}
	tracker := activity.NewTracker(env.Now)
	var p *proxy.Proxy
	page, err := newStatusPage(env, o.inv, tracker, func(ctx context.Context, host string) error { return p.Wake(ctx, host) })
	if err != nil {
		return err
	}
	defer page.Close()
	p, err = proxy.New(proxy.Options{
		Inventory:    o.inv.Inventory,
		Backends:     backends,
		Tracker:      tracker,
		Logger:       env.Logger.With("component", "serve"),
		StateDir:     o.inv.StateDir,
		DrainTimeout: o.drain,
		Now:          env.Now,
		Page:         page,
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
	if err := p.Run(ctx, ln); err != nil {
		return err
	}
	return nil
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
		http: &http.Client{Transport: proxy.NewTransport(nil, 5*time.Second)}}
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
	h, ok := b.inv.Host(host)
	if !ok {
		return fmt.Errorf("no host %q in the inventory", host)
	}
	opts := controller.WakeOptions{NoPull: true}
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
	reason := controller.Clean(res.Status.Reason)
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
		HTTP:      &http.Client{Transport: proxy.NewTransport(nil, 5*time.Second)},
		StateDir:  inv.StateDir,
		Wake:      wake,
		Logger:    env.Logger.With("component", "page"),
		Now:       env.Now,
	})
}
