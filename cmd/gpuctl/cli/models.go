package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/inventory"
)

func modelsCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "models",
		Usage:     "Show a host's declared, present, missing and loaded models",
		ArgsUsage: "HOST",
		Flags:     []cli.Flag{jsonFlag},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "HOST")
			if err != nil {
				return err
			}
			inv, h, err := loadHost(c, env, a[0])
			if err != nil {
				return err
			}
			return runModels(c.Context, env, inv, h, c.Bool("json"))
		},
	}
}

func runModels(ctx context.Context, env *Env, inv *loadedInventory, h *inventory.Host, asJSON bool) error {
	m, release, err := modelsManager(env, inv, h, false)
	if err != nil {
		return err
	}
	defer release()
	rep, err := m.List(ctx)
	if err != nil {
		return modelsExit(err)
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	now := env.Now()
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tDECLARED\tSTATE\tSIZE\tLOADED\tVRAM\tUNTIL")
	for _, s := range rep.Models {
		decl, state, sz, loaded, vram, until := "no", "missing", "-", "-", "-", "-"
		if s.Declared {
			decl = "yes"
		}
		if s.Present {
			state, sz = "present", inventory.ByteSize(s.Size).String()
		}
		if s.Loaded {
			loaded = inventory.ByteSize(s.LoadedSize).String()
			vram = inventory.ByteSize(s.VRAM).String()
			if s.ExpiresAt != nil {
				until = expiry(*s.ExpiresAt, now)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", models.Sanitize(s.Name), decl, state, sz, loaded, vram, until)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if miss := rep.Missing(); len(miss) > 0 {
		fmt.Fprintf(env.Stderr, "%d declared model(s) missing on %s; pull them with: gpuctl pull %s\n", len(miss), h.Name, h.Name)
	}
	return nil
}

// expiry renders when a loaded model unloads: "in 4m30s", or "forever" for
// Ollama's keep_alive -1 (a date centuries away).
func expiry(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case d > 100*365*24*time.Hour:
		return "forever"
	case d <= 0:
		return "now"
	}
	return "in " + d.Truncate(time.Second).String()
}
