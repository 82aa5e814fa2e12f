package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

const usage = `gpuctl-sim: simulated gaming PCs for gpuctl, on 127.0.0.1

Usage:
  gpuctl-sim [flags]        run simulated PCs until interrupted (SIGINT/SIGTERM)
  gpuctl-sim demo [flags]   build gpuctl and run the whole chain against one simulated PC
  nvidia-smi|docker|findmnt|df|sudo|who|ethtool ...
                            (as a symlink) a stand-in command of the box in $GPUCTL_SIM_BOX

Flags of the simulator:
`

// Main is gpuctl-sim's command line; it returns the exit status.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && IsStandIn(args[0]) {
		return StandIn(args[0], args[1:], getenv, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 1 && args[1] == "demo" {
		return demoMain(ctx, args[2:], stdout, stderr)
	}
	return runMain(ctx, args[1:], stdout, stderr)
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o simOptions
	fs := o.flagSet(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gpuctl-sim: unexpected argument %q (see gpuctl-sim -h)\n", fs.Arg(0))
		return 2
	}
	if code := o.complete(stderr); code != 0 {
		return code
	}
	if o.cfg.Dir == "" {
		d, err := os.MkdirTemp("", "gpuctl-sim-")
		if err != nil {
			fmt.Fprintf(stderr, "gpuctl-sim: %v\n", err)
			return 1
		}
		defer os.RemoveAll(d)
		o.cfg.Dir = d
	}
	return o.run(ctx, stdout, stderr)
}

// simOptions are the simulator's flags: most go straight into its Config,
// the others are completed into it (see complete).
type simOptions struct {
	cfg       Config
	invOut    string
	modelSize string
	models    []string
	quiet     bool
	ollama    string
}

func (o *simOptions) flagSet(stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gpuctl-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	cfg := &o.cfg
	fs.IntVar(&cfg.Hosts, "hosts", 1, "how many simulated gaming PCs")
	fs.StringVar(&cfg.Dir, "dir", "", "working directory for keys, state_dir and models (default: a new temporary directory, removed on exit)")
	fs.StringVar(&o.invOut, "inventory-out", "", "write a ready-to-use gpuctl inventory for the simulation to `FILE`")
	fs.DurationVar(&cfg.BootDelay, "boot-delay", 3*time.Second, "time from the magic packet to SSH answering (a slow boot: make it long)")
	fs.DurationVar(&cfg.LinkDelay, "link-delay", 0, "time from the magic packet to the ports refusing instead of dropping packets (default: half the boot delay)")
	fs.DurationVar(&cfg.StopDelay, "stop-delay", time.Second, "time from poweroff to the ports dropping packets again")
	fs.DurationVar(&cfg.CommandDelay, "command-delay", 0, "how long each remote command takes on a simulated PC")
	fs.Func("fault", "inject a fault, for every PC or one (`[HOST=]NAME`; "+strings.Join(FaultNames, ", ")+"); repeatable", o.addFault)
	fs.Func("model", "a model every PC declares and its Ollama can pull (default "+DefaultModel+"); repeatable", o.addModel)
	fs.StringVar(&o.modelSize, "model-size", "16MiB", "size of each simulated model's weights (placeholder bytes written to the models directory)")
	fs.Int64Var(&cfg.PullRate, "pull-rate", 16<<20, "pull speed in bytes per second (0: unlimited)")
	fs.BoolVar(&cfg.Server, "server", true, "also simulate the always-on server's own Ollama (host \"server\", the proxy's default host)")
	fs.BoolVar(&cfg.Up, "up", false, "start the PCs powered on")
	fs.DurationVar(&cfg.BootTimeout, "boot-timeout", 60*time.Second, "boot_timeout written to the inventory (at least 30s)")
	fs.DurationVar(&cfg.IdleAfter, "idle-after", 2*time.Second, "idle_after written to the inventory")
	fs.DurationVar(&cfg.MinUptime, "min-uptime", 2*time.Second, "min_uptime written to the inventory")
	fs.BoolVar(&o.quiet, "quiet", false, "do not log events")
	fs.StringVar(&o.ollama, "ollama", string(OllamaAuto), "the PCs' Ollama: `real` (the real server v0.17.4: make ollama, or GPUCTL_OLLAMA), fake (in-process), or auto (real when built)")
	return fs
}

// addFault is --fault: NAME for every PC, HOST=NAME for one.
func (o *simOptions) addFault(v string) error {
	host, name, ok := strings.Cut(v, "=")
	if !ok {
		return o.cfg.Faults.Set(v)
	}
	if o.cfg.HostFaults == nil {
		o.cfg.HostFaults = map[string]Faults{}
	}
	f := o.cfg.HostFaults[host]
	if err := f.Set(name); err != nil {
		return err
	}
	o.cfg.HostFaults[host] = f
	return nil
}

// addModel is --model.
func (o *simOptions) addModel(v string) error {
	if _, err := inventory.ParseModelName(v); err != nil {
		return err
	}
	o.models = append(o.models, v)
	return nil
}

// complete fills the Config from the flags that need parsing or choosing;
// it returns a non-zero exit status after saying why on stderr.
func (o *simOptions) complete(stderr io.Writer) int {
	cfg := &o.cfg
	sz, err := inventory.ParseByteSize(o.modelSize)
	if err != nil {
		fmt.Fprintf(stderr, "gpuctl-sim: --model-size: %v\n", err)
		return 2
	}
	cfg.ModelSize = int64(sz)
	bin, why, err := ResolveOllama(OllamaMode(o.ollama))
	if err != nil {
		fmt.Fprintf(stderr, "gpuctl-sim: --ollama %s: %v\n", o.ollama, err)
		return 2
	}
	if why != "" {
		fmt.Fprintf(stderr, "gpuctl-sim: the real Ollama server is not available (%s); the PCs run the in-process fake\n", why)
	}
	cfg.RealOllama = bin
	cfg.Models = o.models
	if cfg.Models == nil {
		cfg.Models = []string{DefaultModel}
	}
	if cfg.Server {
		cfg.LightModels = []string{"llama3.2:3b"}
	}
	if !o.quiet {
		cfg.Logf = func(format string, a ...any) {
			fmt.Fprintf(stderr, "%s gpuctl-sim: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
		}
	}
	return 0
}

// run starts the simulation, prints its inventory (or writes it to
// --inventory-out) and its PCs, and runs until ctx ends.
func (o *simOptions) run(ctx context.Context, stdout, stderr io.Writer) int {
	s, err := Start(o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gpuctl-sim: %v\n", err)
		return 1
	}
	defer s.Close()
	if o.invOut != "" {
		if err := s.WriteInventory(o.invOut); err != nil {
			fmt.Fprintf(stderr, "gpuctl-sim: writing the inventory: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "gpuctl-sim: inventory written to %s (gpuctl --config %s status)\n", o.invOut, o.invOut)
	} else {
		fmt.Fprint(stdout, s.Inventory())
	}
	for _, pc := range s.PCs() {
		fmt.Fprintf(stderr, "gpuctl-sim: %s (%s): %s, ssh %s, ollama %s, magic packets to %s\n",
			pc.Name(), pc.MAC(), pc.State(), pc.SSHAddr(), pc.OllamaURL(), s.WOLAddr())
	}
	<-ctx.Done()
	return 0
}
