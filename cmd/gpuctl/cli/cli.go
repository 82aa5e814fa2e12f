// Package cli implements the gpuctl command line: one file per verb, each a
// urfave/cli command whose action calls a runX(ctx, env, opts) function.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// Exit codes, documented in docs/exit-codes.md and the README.
const (
	ExitOK          = 0 // success; for status and wake: every host asked about is ready
	ExitFailure     = 1 // the command failed
	ExitUsage       = 2 // bad usage or an invalid inventory
	ExitUnreachable = 3 // a host did not answer in time
	ExitDegraded    = 4 // a host is up but a check failed
	ExitOff         = 5 // a host is off or asleep
	// ExitInterrupted is returned when SIGINT or SIGTERM cancelled the command.
	ExitInterrupted = 130
)

// ExitError carries an exit code with the error that caused it.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// exitf returns an error with an exit code.
func exitf(code int, format string, args ...any) error {
	return &ExitError{Code: code, Err: fmt.Errorf(format, args...)}
}

// withCode attaches an exit code to err (nil stays nil).
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// usageError reports a usage mistake (exit 2).
func usageError(format string, args ...any) error { return exitf(ExitUsage, format, args...) }

// Env is what a command may touch of the outside world. Tests build one with
// buffers and a fixed environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Logger receives structured logs (never prompts, keys or tokens).
	Logger *slog.Logger
	// Now is the clock; tests inject one.
	Now func() time.Time
	// StdoutTTY reports whether Stdout is a terminal (progress bars,
	// colours); false for pipes, files and `ssh server gpuctl status`.
	StdoutTTY bool
	// StdinTTY reports whether Stdin is a terminal (confirmation prompts).
	StdinTTY bool
	Version  string
	// Hangup subscribes a long-running command (serve) to SIGHUP: while
	// subscribed, a hangup (the terminal or SSH session that started it
	// closed, or `systemctl reload`) is delivered on the channel instead
	// of killing the process; stop unsubscribes. Nil: no hangups (tests
	// inject their own).
	Hangup func() (hup <-chan os.Signal, stop func())
}

// OSEnv is the environment of the running process.
func OSEnv(version string) *Env {
	level := slog.LevelWarn
	if lv := os.Getenv("GPUCTL_LOG"); lv != "" {
		_ = level.UnmarshalText([]byte(lv))
	}
	return &Env{
		Stdin:     os.Stdin,
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		Getenv:    os.Getenv,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Now:       time.Now,
		StdoutTTY: term.IsTerminal(int(os.Stdout.Fd())),
		StdinTTY:  term.IsTerminal(int(os.Stdin.Fd())),
		Version:   version,
		Hangup: func() (<-chan os.Signal, func()) {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGHUP)
			return c, func() { signal.Stop(c) }
		},
	}
}

func (e *Env) fill() {
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = func(string) string { return "" }
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Version == "" {
		e.Version = "devel"
	}
}

// Run runs gpuctl with args (args[0] is the program name) and returns the
// process exit code. Errors are printed to env.Stderr.
func Run(ctx context.Context, env *Env, args []string) int {
	env.fill()
	app := newApp(env)
	err := app.RunContext(ctx, interspersed(app, args))
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	var ee *ExitError
	var ce cli.ExitCoder
	switch {
	case errors.As(err, &ee):
		code = ee.Code
	case errors.As(err, &ce):
		code = ce.ExitCode()
	case isUsage(err):
		code = ExitUsage
	}
	if ctx.Err() != nil && code == ExitFailure {
		code = ExitInterrupted
	}
	msg := err.Error()
	var oe *statedir.OwnerError
	if errors.As(err, &oe) && oe.Command == "" {
		// Suggest this very command, as the state directory's owner. (The
		// wrapping errors formatted their text already: replace it there.)
		with := *oe
		with.Command = shellJoin(args[1:])
		msg = strings.Replace(msg, oe.Error(), with.Error(), 1)
	}
	if msg != "" {
		fmt.Fprintf(env.Stderr, "gpuctl: %s\n", msg)
	}
	return code
}

// isUsage recognises urfave/cli's own parse errors.
func isUsage(err error) bool {
	msg := err.Error()
	for _, s := range []string{"flag provided but not defined", "flag needs an argument", "invalid value", "invalid boolean", "Required flag", "No help topic"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// configFlag is the global --config flag.
var configFlag = &cli.StringFlag{
	Name:    "config",
	Aliases: []string{"c"},
	Usage:   "read the inventory from `FILE` (default: $GPUCTL_CONFIG, ~/.config/gpuctl/gpuctl.toml, /etc/gpuctl/gpuctl.toml)",
}

func newApp(env *Env) *cli.App {
	app := &cli.App{
		Name:                 "gpuctl",
		Usage:                "wake, check, feed and power off an on-demand GPU box for Ollama",
		Version:              env.Version,
		Reader:               env.Stdin,
		Writer:               env.Stdout,
		ErrWriter:            env.Stderr,
		EnableBashCompletion: true,
		HideVersion:          true,
		Suggest:              true,
		Flags:                []cli.Flag{configFlag},
		ExitErrHandler:       func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError("%v (see: %s --help)", err, c.Command.HelpName)
		},
		Commands: commands(env),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("unknown command %q (see: gpuctl --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	for _, cmd := range app.Commands {
		setUsageHandlers(cmd)
	}
	return app
}

func setUsageHandlers(cmd *cli.Command) {
	if cmd.OnUsageError == nil {
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			return usageError("%v (see: %s --help)", err, c.Command.HelpName)
		}
	}
	for _, sub := range cmd.Subcommands {
		setUsageHandlers(sub)
	}
}

// commands lists every verb, in the order `gpuctl --help` shows them.
func commands(env *Env) []*cli.Command {
	return []*cli.Command{
		hostsCommand(env),
		statusCommand(env), wakeCommand(env),
		shutdownCommand(env),
		serveCommand(env),
		configCommand(env),
		trustCommand(env),
		nixosCommand(env),
		wolCommand(env),
		pullCommand(env), modelsCommand(env), unloadCommand(env),
		versionCommand(env),
		completionCommand(env),
	}
}

// args checks the number of positional arguments. (Flags may follow them:
// Run reorders the command line first, see interspersed.)
func args(c *cli.Context, minN, maxN int, names string) ([]string, error) {
	a := c.Args().Slice()
	usage := strings.TrimSpace(c.Command.HelpName + " [options] " + strings.TrimSpace(c.Command.ArgsUsage))
	if len(a) < minN {
		return nil, usageError("missing %s (usage: %s)", names, usage)
	}
	if maxN >= 0 && len(a) > maxN {
		return nil, usageError("unexpected argument %q (usage: %s)", a[maxN], usage)
	}
	return a, nil
}

// loadedInventory is an inventory with where it came from.
type loadedInventory struct {
	*inventory.Inventory
	Source string
}

// findInventory resolves the inventory path using the search order.
func findInventory(c *cli.Context, env *Env) (file, source string, err error) {
	home := env.Getenv("HOME")
	file, source, err = inventory.Find(inventory.Lookup{
		Getenv:   env.Getenv,
		Home:     home,
		Explicit: c.String("config"),
	})
	if err != nil {
		return "", "", withCode(ExitUsage, err)
	}
	return file, source, nil
}

// loadInventory finds, reads and validates the inventory; errors exit 2.
func loadInventory(c *cli.Context, env *Env) (*loadedInventory, error) {
	file, source, err := findInventory(c, env)
	if err != nil {
		return nil, err
	}
	inv, err := inventory.Load(file, inventory.Env{
		Getenv: env.Getenv,
		Home:   env.Getenv("HOME"),
		Root:   os.Geteuid() == 0 && env.Getenv("GPUCTL_STATE_DIR") == "",
	})
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	if d := env.Getenv("GPUCTL_STATE_DIR"); d != "" {
		inv.StateDir = d
	}
	return &loadedInventory{Inventory: inv, Source: source}, nil
}

// loadHost loads the inventory and resolves the host named on the command
// line; both kinds of mistake exit 2.
func loadHost(c *cli.Context, env *Env, name string) (*loadedInventory, *inventory.Host, error) {
	inv, err := loadInventory(c, env)
	if err != nil {
		return nil, nil, err
	}
	h, err := inv.host(name)
	if err != nil {
		return nil, nil, err
	}
	return inv, h, nil
}

// hostsByName resolves host names given on the command line; none means all.
func (inv *loadedInventory) hostsByName(names []string) ([]*inventory.Host, error) {
	if len(names) == 0 {
		out := make([]*inventory.Host, len(inv.Hosts))
		for i := range inv.Hosts {
			out[i] = &inv.Hosts[i]
		}
		return out, nil
	}
	var out []*inventory.Host
	for _, n := range names {
		h, err := inv.host(n)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// host resolves one host name, exiting 2 with the known names when it is wrong.
func (inv *loadedInventory) host(name string) (*inventory.Host, error) {
	h, ok := inv.Host(name)
	if !ok {
		return nil, usageError("no host %q in %s (hosts: %s)", name, inv.Path, strings.Join(inv.HostNames(), ", "))
	}
	return h, nil
}

// jsonFlag is shared by every command with machine-readable output.
var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON on stdout instead of a table"}

// shellJoin quotes args for a POSIX shell, leaving plain words bare.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=@%+") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
