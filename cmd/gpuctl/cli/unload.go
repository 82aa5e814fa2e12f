package cli

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/inventory"
)

func unloadCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "unload",
		Usage:     "Unload models from a host's GPU memory now (keep_alive 0)",
		ArgsUsage: "HOST [MODEL...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "unload every loaded model"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, -1, "HOST")
			if err != nil {
				return err
			}
			all := c.Bool("all")
			if all == (len(a) > 1) {
				return usageError("name the models to unload or give --all (usage: %s %s)", c.Command.HelpName, c.Command.ArgsUsage)
			}
			var names []inventory.ModelName
			for _, s := range a[1:] {
				n, err := inventory.ParseModelName(s)
				if err != nil {
					return usageError("%v", err)
				}
				names = append(names, n)
			}
			inv, h, err := loadHost(c, env, a[0])
			if err != nil {
				return err
			}
			return runUnload(c.Context, env, inv, h, names, all)
		},
	}
}

func runUnload(ctx context.Context, env *Env, inv *loadedInventory, h *inventory.Host, names []inventory.ModelName, all bool) error {
	m, release, err := modelsManager(env, inv, h, false)
	if err != nil {
		return err
	}
	defer release()
	var done []string
	if all {
		done, err = m.UnloadAll(ctx)
	} else {
		done, err = m.Unload(ctx, names)
	}
	for _, n := range done {
		fmt.Fprintf(env.Stderr, "%s: unloaded %s\n", h.Name, n)
	}
	if all && len(done) == 0 && err == nil {
		fmt.Fprintf(env.Stderr, "%s: no model was loaded\n", h.Name)
	}
	if err != nil {
		return modelsExit(err)
	}
	return nil
}
