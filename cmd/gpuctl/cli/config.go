package cli

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"
)

func configCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "Check the inventory or show which file is used",
		Subcommands: []*cli.Command{
			{
				Name:      "check",
				Usage:     "Validate the inventory and report every problem with its file:line:col",
				ArgsUsage: " ",
				Action: func(c *cli.Context) error {
					if _, err := args(c, 0, 0, ""); err != nil {
						return err
					}
					return runConfigCheck(c.Context, env, c)
				},
			},
			{
				Name:      "path",
				Usage:     "Print the inventory file gpuctl would use, and why",
				ArgsUsage: " ",
				Action: func(c *cli.Context) error {
					if _, err := args(c, 0, 0, ""); err != nil {
						return err
					}
					file, source, err := findInventory(c, env)
					if err != nil {
						return err
					}
					fmt.Fprintln(env.Stdout, file)
					fmt.Fprintf(env.Stderr, "(from %s)\n", source)
					return nil
				},
			},
		},
	}
}

func runConfigCheck(_ context.Context, env *Env, c *cli.Context) error {
	inv, err := loadInventory(c, env)
	if err != nil {
		return err
	}
	for _, n := range inv.Notes {
		fmt.Fprintf(env.Stderr, "note: %s\n", n)
	}
	onDemand := 0
	for _, h := range inv.Hosts {
		if h.OnDemand {
			onDemand++
		}
	}
	fmt.Fprintf(env.Stderr, "%s: ok (%d hosts, %d on demand, %d routes; state in %s)\n",
		inv.Path, len(inv.Hosts), onDemand, len(inv.Routes), inv.StateDir)
	return nil
}
