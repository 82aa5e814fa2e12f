package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller"
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
			"3 not reachable in time or unknown (the worst host decides). JSON schema: docs/status.md.",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.DurationFlag{Name: "timeout", Value: controller.DefaultProbeTimeout,
				Usage: "how long to wait for a host to answer before calling it off"},
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
	var err error
	if o.json {
		err = controller.WriteJSON(env.Stdout, sts)
	} else {
		err = controller.WriteTable(env.Stdout, sts, env.Now(), o.details)
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

// newController builds the controller for the inventory: the real network,
// sshexec for SSH, package wake for magic packets, package models for pulls.
func newController(env *Env, inv *loadedInventory) *controller.Controller {
	httpClient := controller.DefaultHTTPClient(nil)
	return &controller.Controller{
		StateDir: inv.StateDir,
		Now:      env.Now,
		Logger:   env.Logger,
		HTTP:     httpClient,
		SSH: controller.SSHConnector(func(h *inventory.Host) (sshexec.Config, error) {
			return sshexec.ConfigFor(inv.Inventory, h,
				sshexec.WithEnv(env.Getenv, env.Getenv("HOME")), sshexec.WithLogger(env.Logger))
		}),
		Waker:  &controller.PlanWaker{},
		Puller: modelsPuller{http: httpClient, logger: env.Logger},
	}
}
