package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func shutdownCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "shutdown",
		Usage:     "Power off an on-demand host, at once or once it has been idle long enough",
		ArgsUsage: "HOST",
		Description: "With --if-idle (for cron or a systemd timer) the host is powered off only when every idle signal\n" +
			"has been idle for longer than idle_after: no request in flight through `gpuctl serve` (timed from\n" +
			"the last request's end), no model past its expiry in /api/ps, no pull, no login but gpuctl's, no\n" +
			"GPU above gpu_busy_percent, no direct client on the Ollama port, and uptime at least min_uptime.\n" +
			"A failed check counts as busy. Without --if-idle it powers off now, refusing only while requests\n" +
			"are in flight (override with --force). Either way it refuses unless Wake-on-LAN is armed on the\n" +
			"box's NIC, unloads the models, runs `sudo -n /run/current-system/sw/bin/poweroff` and waits for\n" +
			"the box to stop answering. Wakes and shutdowns of one host take the same lock.\n\n" +
			"Exit code: 0 powered off, or (with --if-idle) left up because busy (also when requests arrived\n" +
			"while it drained), not idle long enough, just booted, already off, in its other OS, or locked by a\n" +
			"running wake or shutdown; 1 refused or failed (the host stays up; the reason is printed and kept\n" +
			"in STATE_DIR/idle/HOST.json); 2 usage or not an on_demand host; 3 the host cannot be reached\n" +
			"to decide.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "if-idle", Usage: "power off only when every idle signal has been idle for longer than idle_after"},
			&cli.DurationFlag{Name: "idle-after", Usage: "override the host's idle_after (`DURATION`, such as 20m)", DefaultText: "the host's idle_after"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print every signal and the decision; change nothing"},
			&cli.BoolFlag{Name: "force", Usage: "power off even with requests in flight (not with --if-idle; never skips the Wake-on-LAN check)"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "HOST")
			if err != nil {
				return err
			}
			if c.IsSet("idle-after") && c.Duration("idle-after") <= 0 {
				return usageError("--idle-after must be positive")
			}
			if c.Bool("force") && c.Bool("if-idle") {
				return usageError("--force and --if-idle contradict each other: --force is for an explicit shutdown")
			}
			inv, h, err := loadHost(c, env, a[0])
			if err != nil {
				return err
			}
			return runShutdown(c.Context, env, shutdownOptions{inv: inv, host: h, idleAfter: c.Duration("idle-after"),
				opts: idle.Options{IfIdle: c.Bool("if-idle"), DryRun: c.Bool("dry-run"), Force: c.Bool("force")},
				json: c.Bool("json")})
		},
	}
}

type shutdownOptions struct {
	inv       *loadedInventory
	host      *inventory.Host
	idleAfter time.Duration
	opts      idle.Options
	json      bool
}

// shutdownDeps wires the idle package to the real world through the same
// controller wake and status use.
func shutdownDeps(env *Env, inv *loadedInventory, h *inventory.Host) *idle.Deps {
	ctl := newController(env, inv)
	d := &idle.Deps{
		StateDir:     inv.StateDir,
		CheckTimeout: inv.SSH.CommandTimeout.D(),
		Now:          env.Now,
		Logger:       env.Logger,
		Connect:      ctl.SSH,
		HTTP:         ctl.HTTP,
		Unload: func(ctx context.Context, h *inventory.Host, names []string) error {
			m := &models.Manager{Client: api.NewClient(h.OllamaURL.URL, ctl.HTTP), Host: h, Logger: env.Logger, Now: env.Now}
			ns := make([]inventory.ModelName, 0, len(names))
			for _, n := range names {
				ns = append(ns, inventory.ModelName(n))
			}
			_, err := m.Unload(ctx, ns)
			return err
		},
	}
	if h.NixOS != nil && h.NixOS.ServerAddress != "" {
		if a, err := netip.ParseAddr(h.NixOS.ServerAddress); err == nil {
			d.ServerAddrs = append(d.ServerAddrs, a)
		}
	}
	return d
}

func runShutdown(ctx context.Context, env *Env, o shutdownOptions) error {
	h := *o.host
	if o.idleAfter > 0 {
		h.IdleAfter = inventory.Duration(o.idleAfter)
	}
	if !o.opts.DryRun {
		// Idle clocks, the host lock and the draining marker live there:
		// without them a cron run would decide blind, and say nothing.
		if err := statedir.CheckWritable(o.inv.StateDir); err != nil {
			return withCode(ExitFailure, fmt.Errorf("host %q: %w", h.Name, err))
		}
	}
	out, err := idle.Run(ctx, shutdownDeps(env, o.inv, &h), &h, o.opts)
	if o.json {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(shutdownJSON(out, err)); jerr != nil {
			return fmt.Errorf("write shutdown report: %w", jerr)
		}
	}
	// A run that failed before looking at the host (the lock, the state
	// directory) has no report to show.
	report := !o.json && out.Report.Host != "" && (o.opts.DryRun || out.Action == idle.ActPoweredOff || out.Action == idle.ActFailed)
	if report {
		writeIdleReport(env.Stdout, out.Report, o.opts.IfIdle)
	}
	code := shutdownExit(out, err, o.opts)
	msg := h.Name + ": " + string(out.Action) + ": " + out.Reason
	if report {
		// The report's last lines say why: the outcome alone, not its
		// reason a second time.
		msg = h.Name + ": " + string(out.Action)
		switch {
		case o.opts.DryRun:
			msg += " (dry run: nothing changed)"
		case !o.opts.IfIdle:
			msg += " (explicit shutdown)"
		}
	}
	switch {
	case code != ExitOK:
		if o.json {
			return &ExitError{Code: code}
		}
		return withCode(code, err)
	case routineShutdown(out.Action, o.opts):
		// Routine cron outcomes: logged, not printed, so cron mails nothing.
		env.Logger.Info("idle shutdown", "host", h.Name, "action", string(out.Action), "reason", out.Reason)
		if o.opts.DryRun && !o.json {
			fmt.Fprintln(env.Stderr, msg)
		}
	default:
		if !o.json {
			fmt.Fprintln(env.Stderr, msg)
		}
	}
	return nil
}

// routineShutdown reports whether an outcome is one cron should not mail
// about: with --if-idle, the host was left alone for one of the expected
// reasons (docs/exit-codes.md). An explicit shutdown always says what it
// did.
func routineShutdown(a idle.Action, opts idle.Options) bool {
	switch a {
	case idle.ActAlreadyOff, idle.ActBusy, idle.ActNotYet, idle.ActNotElig, idle.ActLocked, idle.ActOtherOS, idle.ActNotReady:
		return opts.IfIdle
	}
	return false
}

// shutdownExit maps an outcome to the documented exit code.
func shutdownExit(out idle.Outcome, err error, opts idle.Options) int {
	switch {
	case errors.Is(err, idle.ErrNotOnDemand):
		return ExitUsage
	case errors.Is(err, idle.ErrLocked):
		if opts.IfIdle {
			return ExitOK
		}
		return ExitFailure
	case sshexec.IsPermanent(err):
		// A rejected host key or login: not "try again later".
		return ExitFailure
	case out.Action == idle.ActNotReady && !opts.IfIdle:
		return ExitUnreachable
	case err != nil:
		return ExitFailure
	}
	return ExitOK
}

type shutdownOut struct {
	Action string      `json:"action"`
	Reason string      `json:"reason"`
	Error  string      `json:"error,omitempty"`
	Report idle.Report `json:"report"`
}

func shutdownJSON(out idle.Outcome, err error) shutdownOut {
	j := shutdownOut{Action: string(out.Action), Reason: out.Reason, Report: out.Report}
	if err != nil {
		j.Error = err.Error()
	}
	return j
}

// writeIdleReport prints every signal and the decision (what an --if-idle
// run does; labelled so when the shutdown is explicit). Times are those of
// the check the decision was made on (r.Checked), not of the printing:
// after a poweroff that is many seconds later.
func writeIdleReport(w io.Writer, r idle.Report, ifIdle bool) {
	if r.Host == "" {
		// Nothing was checked (the run failed before): no report.
		return
	}
	if r.Box != idle.BoxUp {
		fmt.Fprintf(w, "%s: %s (%s)\n", r.Host, r.Box, r.BoxDetail)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SIGNAL\tSTATE\tIDLE SINCE\tVALUE")
	for _, s := range r.Signals {
		state := "idle"
		switch {
		case s.Failed:
			state = "FAILED"
		case s.Busy:
			state = "BUSY"
		}
		since := "-"
		if s.Since != nil {
			since = s.Since.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, state, since, oneLine(s.Value))
	}
	wol := "not armed"
	if r.WOL.Armed {
		wol = "armed"
	}
	v := r.WOL.Interface
	if r.WOL.Mode != "" {
		v += " Wake-on: " + r.WOL.Mode
	}
	if r.WOL.Err != "" {
		v += " " + r.WOL.Err
	}
	fmt.Fprintf(tw, "wake-on-lan\t%s\t-\t%s\n", wol, oneLine(strings.TrimSpace(v)))
	tw.Flush()
	since := "- (busy)"
	if r.IdleSince != nil {
		since = fmt.Sprintf("%s (idle for %s at the check, %s)", r.IdleSince.Local().Format("2006-01-02 15:04:05"),
			idle.FormatAgainst(r.IdleFor, r.IdleAfter), r.Checked.Local().Format("15:04:05"))
	}
	uptime := "unknown"
	if r.Uptime > 0 {
		uptime = idle.FormatAgainst(r.Uptime, r.MinUptime)
	}
	fmt.Fprintf(w, "idle since: %s; idle_after %s; uptime %s, min_uptime %s\n", since, idle.FormatSetting(r.IdleAfter),
		uptime, idle.FormatSetting(r.MinUptime))
	if ifIdle {
		fmt.Fprintf(w, "decision: %s\n", r.Decision)
	} else {
		fmt.Fprintf(w, "--if-idle would decide: %s\n", r.Decision)
	}
	if !r.WOL.Armed && r.WOL.Fix != "" {
		fmt.Fprintf(w, "wake-on-lan: %s\n", r.WOL.Fix)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
