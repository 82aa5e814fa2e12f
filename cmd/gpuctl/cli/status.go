package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/hosthttp"
	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func statusCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "Show where each host stands, without waking anything",
		ArgsUsage: "[HOST...]",
		Description: "Probes every host (or those named) at once: SSH, the other-OS port, then the readiness checks\n" +
			"over one SSH connection. Exit code: 0 all ready, 4 degraded, 5 off or in its other OS,\n" +
			"3 not reachable in time or unknown (the worst host decides). On-demand hosts also get a line with\n" +
			"idle shutdown's last view (idle since when, or why busy), from STATE_DIR/idle. JSON schema: docs/status.md.",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.DurationFlag{Name: "timeout", Value: controller.DefaultProbeTimeout,
				Usage: "how long to wait for a host to answer before calling it off (`DURATION`)"},
		},
		Action: func(c *cli.Context) error {
			names, err := args(c, 0, -1, "HOST")
			if err != nil {
				return err
			}
			if c.Duration("timeout") <= 0 {
				return usageError("--timeout must be positive")
			}
			inv, err := loadInventory(c, env)
			if err != nil {
				return err
			}
			hosts, err := inv.hostsByName(names)
			if err != nil {
				return err
			}
			return runStatus(c.Context, env, statusOptions{inv: inv, hosts: hosts, json: c.Bool("json"),
				timeout: c.Duration("timeout"), details: len(names) > 0})
		},
	}
}

type statusOptions struct {
	inv     *loadedInventory
	hosts   []*inventory.Host
	json    bool
	timeout time.Duration
	details bool
}

func runStatus(ctx context.Context, env *Env, o statusOptions) error {
	ctl := newController(env, o.inv)
	ctl.ProbeTimeout = o.timeout
	sts := ctl.StatusAll(ctx, o.hosts)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	now := env.Now()
	idles := idleSummaries(o.inv.StateDir, o.hosts, now)
	for i := range sts {
		if sum, ok := idles[sts[i].Name]; ok && sum.Checked() {
			sts[i].Idle = sum
		}
	}
	var err error
	if o.json {
		err = WriteJSON(env.Stdout, sts)
	} else {
		err = WriteTable(env.Stdout, sts, now, o.details)
		if err == nil {
			err = writeIdleTable(env.Stdout, o.hosts, idles, now)
		}
	}
	if err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	worst := controller.StateReady
	for _, s := range sts {
		worst = controller.Worse(worst, s.State)
	}
	if code := worst.ExitCode(); code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// idleSummaries reads what idle shutdown last saved for each on-demand
// host (STATE_DIR/idle/HOST.json), without asking the host anything.
func idleSummaries(stateDir string, hosts []*inventory.Host, now time.Time) map[string]idle.Summary {
	out := map[string]idle.Summary{}
	for _, h := range hosts {
		if !h.OnDemand {
			continue
		}
		st, err := idle.LoadState(stateDir, h.Name)
		if err != nil {
			out[h.Name] = idle.Summary{Error: err.Error()}
			continue
		}
		out[h.Name] = idle.Summarize(st, now)
	}
	return out
}

// writeIdleTable prints, after the status table, one line per on-demand
// host: its idle state as the last gpuctl shutdown run saw it, and when
// that run checked. Nothing when no host is on demand.
func writeIdleTable(w io.Writer, hosts []*inventory.Host, idles map[string]idle.Summary, now time.Time) error {
	if len(idles) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tIDLE SHUTDOWN\tCHECKED")
	for _, h := range hosts {
		sum, ok := idles[h.Name]
		if !ok {
			continue
		}
		checked := "-"
		if sum.LastCheck != nil {
			checked = Ago(now, *sum.LastCheck) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", Clean(h.Name), clipRunes(Clean(sum.Line(now)), 100), checked)
	}
	return tw.Flush()
}

func clipRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// pullHeaderTimeout bounds the wait for the Ollama API's response headers on
// the CLI's client; every call's own deadline comes from its context.
const pullHeaderTimeout = 60 * time.Second

// hostHTTP is the CLI's HTTP client for hosts, registries and serve:
// hosthttp's one constructor, with the command's environment for the proxy
// variables.
func hostHTTP(env *Env, headerTimeout time.Duration) *http.Client {
	return hosthttp.NewClient(hosthttp.Options{HeaderTimeout: headerTimeout, Getenv: env.Getenv})
}

// newController builds the controller for the inventory: the real network,
// sshexec for SSH, package wake for magic packets, package models for pulls.
func newController(env *Env, inv *loadedInventory) *controller.Controller {
	httpClient := hostHTTP(env, pullHeaderTimeout)
	return &controller.Controller{
		StateDir: inv.StateDir,
		Now:      env.Now,
		Logger:   env.Logger,
		HTTP:     httpClient,
		// One round of checks; [ssh] command_timeout.
		CheckTimeout: inv.SSH.CommandTimeout.D(),
		SSH: sshexec.SSHConnector(func(h *inventory.Host) (sshexec.Config, error) {
			return sshexec.ConfigFor(inv.Inventory, h,
				sshexec.WithEnv(env.Getenv, env.Getenv("HOME")), sshexec.WithLogger(env.Logger))
		}),
		Waker:  &controller.ActionWaker{WOL: &controller.PlanWaker{}, Getenv: env.Getenv, Logger: env.Logger},
		Puller: modelsPuller{http: httpClient, logger: env.Logger, stateDir: inv.StateDir},
	}
}
