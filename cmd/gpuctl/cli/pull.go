package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

func pullCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "pull",
		Usage: "Pull models onto a host's model drive (default: its declared models that are missing)",
		Description: "Checks the drive's free space over SSH against the model's size (when the registry can be asked) and\n" +
			"refuses a pull that cannot fit, pulls through the host's Ollama API, then checks that the manifest and\n" +
			"blobs are on the drive under models_dir. An interrupted pull resumes when run again.",
		ArgsUsage: "HOST [MODEL...]",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.BoolFlag{Name: "insecure", Usage: "talk plain HTTP to the model's registry (a private registry host in the name)"},
			&cli.IntFlag{Name: "concurrency", Value: 1, Usage: "pull at most `N` models at once"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, -1, "HOST")
			if err != nil {
				return err
			}
			if c.Int("concurrency") < 1 {
				return usageError("--concurrency must be at least 1")
			}
			inv, h, err := loadHost(c, env, a[0])
			if err != nil {
				return err
			}
			var names []inventory.ModelName
			for _, s := range a[1:] {
				n, err := inventory.ParseModelName(s)
				if err != nil {
					return usageError("%v", err)
				}
				names = append(names, n)
			}
			return runPull(c.Context, env, inv, h, pullOptions{
				Models: names, JSON: c.Bool("json"), Insecure: c.Bool("insecure"), Concurrency: c.Int("concurrency"),
			})
		},
	}
}

type pullOptions struct {
	Models      []inventory.ModelName // none: the declared models that are missing
	JSON        bool
	Insecure    bool
	Concurrency int
}

// modelsManager builds a models.Manager for a host: its Ollama API client
// and an SSH runner for the drive checks. It returns a func that releases
// both. Tests replace it.
var modelsManager = func(env *Env, inv *loadedInventory, h *inventory.Host, insecure bool) (*models.Manager, func(), error) {
	if h.OllamaURL.IsZero() {
		return nil, nil, usageError("host %s has no ollama_url in %s", h.Name, inv.Path)
	}
	ctl := newController(env, inv)
	runner := ctl.Runner(h)
	m := &models.Manager{
		Client:    api.NewClient(h.OllamaURL.URL, ctl.HTTP),
		Runner:    runner,
		Host:      h,
		Logger:    env.Logger,
		Manifests: &models.Registry{HTTP: ctl.HTTP, Insecure: insecure},
		Insecure:  insecure,
		Now:       env.Now,
	}
	return m, func() { runner.Close(); ctl.HTTP.CloseIdleConnections() }, nil
}

// modelsExit maps a models error to an exit code.
func modelsExit(err error) error {
	var ue *models.UnreachableError
	if errors.As(err, &ue) {
		return withCode(ExitUnreachable, err)
	}
	return withCode(ExitFailure, err)
}

func runPull(ctx context.Context, env *Env, inv *loadedInventory, h *inventory.Host, o pullOptions) error {
	m, release, err := modelsManager(env, inv, h, o.Insecure)
	if err != nil {
		return err
	}
	defer release()
	m.Concurrency = o.Concurrency
	names := o.Models
	if len(names) == 0 {
		if len(h.Models) == 0 {
			fmt.Fprintf(env.Stderr, "%s declares no models (models = [...] in %s); name the models to pull\n", h.Name, inv.Path)
			return nil
		}
		names, err = m.Missing(ctx)
		if err != nil {
			return modelsExit(err)
		}
		if len(names) == 0 {
			if len(h.Models) == 1 {
				fmt.Fprintf(env.Stderr, "%s: its declared model %s is present\n", h.Name, h.Models[0])
			} else {
				fmt.Fprintf(env.Stderr, "%s: all %d declared models are present\n", h.Name, len(h.Models))
			}
			return nil
		}
	}
	mode := models.RenderLines
	switch {
	case o.JSON:
		mode = models.RenderJSON
	case env.StdoutTTY:
		mode = models.RenderBars
	}
	// While it pulls, idle shutdown counts the host as busy.
	unmark, err := markPull(inv.StateDir, h.Name, names)
	if err != nil {
		return withCode(ExitFailure, err)
	}
	defer unmark()
	r := models.NewRenderer(env.Stdout, mode)
	err = m.Pull(ctx, names, r)
	r.Close()
	if err != nil {
		return modelsExit(err)
	}
	return nil
}

// markPull records, for idle shutdown, that this process pulls names onto
// host until the returned func is called (statedir.MarkPull): a `gpuctl
// shutdown --if-idle` from cron then reports the pull as busy instead of
// powering the box off under it. It fails rather than pull unmarked.
func markPull(stateDir, host string, names []inventory.ModelName) (func(), error) {
	if stateDir == "" {
		return func() {}, nil
	}
	what := make([]string, len(names))
	for i, n := range names {
		what[i] = string(n)
	}
	done, err := statedir.MarkPull(stateDir, host, strings.Join(what, ", "))
	switch {
	case errors.Is(err, statedir.ErrDraining):
		return nil, err // says what is happening and what to do
	case err != nil:
		return nil, fmt.Errorf("%w; not pulling, since idle shutdown could power %s off mid-pull", err, host)
	}
	return done, nil
}
