package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/nixconfig"
)

func nixosCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "nixos",
		Usage: "Generate and check the NixOS flake for the on-demand PC's USB stick",
		Subcommands: []*cli.Command{
			{
				Name:      "generate",
				Usage:     "Write flake.nix, configuration.nix, gpuctl.nix, the CI workflow and FLASHING.md for a host",
				ArgsUsage: "HOST",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write into `DIR` (created if missing)", Required: true},
					&cli.BoolFlag{Name: "force", Usage: "overwrite generated files even if they were edited by hand"},
					&cli.BoolFlag{Name: "new-stick-layout", Usage: "accept a changed image_size_mib: every stick must then be flashed from scratch (PERSIST is lost)"},
				},
				Action: func(c *cli.Context) error {
					a, err := args(c, 1, 1, "HOST")
					if err != nil {
						return err
					}
					return runNixosGenerate(c.Context, env, c, nixosGenerateOpts{Host: a[0], Out: c.String("out"), Force: c.Bool("force"), NewLayout: c.Bool("new-stick-layout")})
				},
			},
			{
				Name:      "check",
				Usage:     "Parse, stub-evaluate and lint a generated flake directory offline",
				ArgsUsage: "DIR",
				Flags: []cli.Flag{
					jsonFlag,
					&cli.BoolFlag{Name: "no-flake-check", Usage: "never run nix flake check, even with network access"},
				},
				Action: func(c *cli.Context) error {
					a, err := args(c, 1, 1, "DIR")
					if err != nil {
						return err
					}
					mode := nixconfig.FlakeCheckAuto
					if c.Bool("no-flake-check") {
						mode = nixconfig.FlakeCheckNever
					}
					return runNixosCheck(c.Context, env, nixosCheckOpts{Dir: a[0], JSON: c.Bool("json"), FlakeCheck: mode})
				},
			},
		},
	}
}

type nixosGenerateOpts struct {
	Host      string
	Out       string
	Force     bool
	NewLayout bool
}

func runNixosGenerate(_ context.Context, env *Env, c *cli.Context, o nixosGenerateOpts) error {
	inv, err := loadInventory(c, env)
	if err != nil {
		return err
	}
	if _, err := inv.host(o.Host); err != nil {
		return err
	}
	for _, n := range inv.Notes {
		fmt.Fprintf(env.Stderr, "note: %s\n", n)
	}
	cfg, err := nixconfig.FromInventory(inv.Inventory, o.Host)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	files, err := nixconfig.Render(cfg)
	if err != nil {
		return err
	}
	res, err := nixconfig.Write(o.Out, cfg, files, nixconfig.WriteOptions{Force: o.Force, NewLayout: o.NewLayout})
	var ee *nixconfig.EditedError
	if errors.As(err, &ee) {
		fmt.Fprint(env.Stdout, ee.Diff)
		return withCode(ExitFailure, err)
	}
	var le *nixconfig.LayoutChangedError
	if errors.As(err, &le) {
		return withCode(ExitFailure, err)
	}
	if err != nil {
		return err
	}
	for _, p := range res.Written {
		fmt.Fprintf(env.Stderr, "wrote %s\n", p)
	}
	for _, p := range res.Overwritten {
		fmt.Fprintf(env.Stderr, "overwrote %s (it had been edited; --force)\n", p)
	}
	if len(res.Unchanged) > 0 {
		fmt.Fprintf(env.Stderr, "unchanged: %s\n", strings.Join(res.Unchanged, ", "))
	}
	switch {
	case res.LayoutCreated:
		fmt.Fprintf(env.Stderr, "wrote %s: sticks flashed from %s have a %d MiB system image and PERSIST from sector %d; keep this file with the flake\n",
			nixconfig.LayoutName, o.Out, res.Layout.ImageSizeMiB, res.Layout.PersistStartSector())
	case res.LayoutReplaced:
		fmt.Fprintf(env.Stderr, "WARNING: replaced %s: the image is now %d MiB; every stick flashed before must be flashed from scratch (first flash in FLASHING.md), PERSIST and its host keys are lost\n",
			nixconfig.LayoutName, res.Layout.ImageSizeMiB)
	}
	if res.LocalCreated {
		fmt.Fprintf(env.Stderr, "created %s for your own additions (never overwritten)\n", nixconfig.LocalName)
	}
	fmt.Fprintf(env.Stderr, "next: gpuctl nixos check %s, then see %s/FLASHING.md\n", o.Out, o.Out)
	return nil
}

type nixosCheckOpts struct {
	Dir        string
	JSON       bool
	FlakeCheck nixconfig.FlakeCheckMode
}

func runNixosCheck(ctx context.Context, env *Env, o nixosCheckOpts) error {
	rep, err := nixconfig.Check(ctx, o.Dir, nixconfig.CheckOptions{FlakeCheck: o.FlakeCheck})
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if rep.Findings == nil {
			rep.Findings = []nixconfig.Finding{}
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		for _, f := range rep.Findings {
			fmt.Fprintf(env.Stdout, "%s/%s\n", strings.TrimSuffix(o.Dir, "/"), f)
		}
	}
	fmt.Fprintf(env.Stderr, "checked %s: %s", o.Dir, strings.Join(rep.Ran, ", "))
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(env.Stderr, "; skipped %s", strings.Join(rep.Skipped, ", "))
	}
	fmt.Fprintf(env.Stderr, "; %d error(s), %d finding(s) in all\n", len(rep.Errors()), len(rep.Findings))
	return withCode(ExitFailure, rep.Err())
}
