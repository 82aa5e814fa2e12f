package idle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Options are a shutdown's flags.
type Options struct {
	// IfIdle powers off only when every signal has been idle for longer
	// than idle_after (the cron mode). Without it the shutdown is explicit
	// and refuses only while the proxy has requests in flight.
	IfIdle bool
	// DryRun evaluates and decides but changes nothing (no lock, no state
	// written, nothing unloaded or powered off).
	DryRun bool
	// Force powers off despite requests in flight (explicit mode only).
	// It never skips the Wake-on-LAN check.
	Force bool
}

// Action is what a shutdown did.
type Action string

const (
	ActPoweredOff Action = "powered-off"
	ActWouldPower Action = "would-power-off" // dry run
	ActBusy       Action = "busy"            // a signal is busy
	ActNotYet     Action = "not-idle-long-enough"
	ActNotElig    Action = "not-eligible" // uptime below min_uptime
	ActLocked     Action = "locked"       // another gpuctl holds the host lock
	ActAlreadyOff Action = "already-off"
	ActOtherOS    Action = "in-use-other-os"
	ActNotReady   Action = "not-ready" // booting or unknown: left alone
	ActRefused    Action = "refused"   // explicit shutdown refused, or WoL not armed
	ActFailed     Action = "failed"    // unload, poweroff or confirmation failed
)

// Outcome is the result of Run.
type Outcome struct {
	Action Action `json:"action"`
	// Reason says why, in words (also for powered-off).
	Reason string `json:"reason"`
	Report Report `json:"report"`
}

// Errors Run returns with its Outcome; callers map them to exit codes.
var (
	// ErrNotOnDemand: the host is always-on; idle shutdown never touches it.
	ErrNotOnDemand = errors.New("not an on_demand host")
	// ErrLocked: another gpuctl holds the host lock (a wake or a shutdown).
	ErrLocked = statedir.ErrLocked
	// ErrRefused: the shutdown was refused (requests in flight, WoL not
	// armed, the PC in its other OS).
	ErrRefused = errors.New("shutdown refused")
	// ErrFailed: the shutdown was attempted and failed; the host is back to
	// ready.
	ErrFailed = errors.New("shutdown failed")
)

// Run carries out `gpuctl shutdown` for h. Under the host lock it checks
// every signal, records the idle state, and when the rules allow it unloads
// the models, checks Wake-on-LAN, re-reads the proxy, powers the box off and
// waits for it to stop answering. Not powering off is an Outcome with a nil
// error when that is the expected answer (busy, not idle long enough, off,
// locked in --if-idle mode); refusals and failures also return an error
// wrapping ErrRefused, ErrFailed, ErrLocked or ErrNotOnDemand.
func Run(ctx context.Context, d *Deps, h *inventory.Host, opts Options) (Outcome, error) {
	if !h.OnDemand {
		return Outcome{Action: ActRefused, Reason: h.Name + " is not on_demand"},
			fmt.Errorf("host %q: %w: gpuctl powers off only on_demand hosts (set on_demand = true in the inventory if it can be woken)", h.Name, ErrNotOnDemand)
	}
	// Lock: a dry run changes nothing, so it takes no lock.
	if !opts.DryRun {
		lock, s := lockHost(ctx, d, h)
		if s != nil {
			return s.out, s.err
		}
		defer lock.Unlock()
	}
	prev, err := LoadState(d.StateDir, h.Name)
	if err != nil {
		return Outcome{Action: ActFailed, Reason: err.Error()}, err
	}
	// Connect, and stop here unless the box is up.
	runner, closer, rep := connect(ctx, d, h)
	if closer != nil {
		defer closer.Close()
	}
	if s := notUp(d, h, prev, rep, opts); s != nil {
		return s.out, s.err
	}
	// Evaluate, and record the idle clocks.
	rep = evaluate(ctx, d, h, runner, prev)
	st := rep.next
	st.Phase = PhaseReady
	if !opts.DryRun {
		if err := SaveState(d.StateDir, st); err != nil {
			return Outcome{Action: ActFailed, Reason: err.Error(), Report: rep}, err
		}
	}
	out := Outcome{Report: rep}
	// Decide.
	if s := decide(d, h, &st, out, opts); s != nil {
		return s.out, s.err
	}
	if opts.DryRun {
		out.Action, out.Reason = ActWouldPower, "would power off: "+rep.Decision
		if !opts.IfIdle {
			out.Reason = "would power off (explicit shutdown)"
		}
		return out, nil
	}
	// Drain, unload, power off, confirm off.
	return powerOff(ctx, d, h, runner, &st, out, opts)
}

// stop ends a shutdown before it powers the box off, with the outcome and
// error Run returns; a phase returns a nil *stop to let the shutdown go on.
type stop struct {
	out Outcome
	err error
}

func halt(out Outcome, err error) *stop { return &stop{out: out, err: err} }

// lockHost takes the host lock, the one wake takes, so a wake and a
// shutdown never interleave and a second cron run exits on it.
func lockHost(ctx context.Context, d *Deps, h *inventory.Host) (*statedir.Lock, *stop) {
	lock, err := statedir.LockHost(ctx, d.StateDir, h.Name, statedir.LockTry)
	if err != nil {
		if errors.Is(err, statedir.ErrLocked) {
			return nil, halt(Outcome{Action: ActLocked, Reason: err.Error() + "; another wake or shutdown of this host is running, so this run does nothing"}, err)
		}
		return nil, halt(Outcome{Action: ActFailed, Reason: err.Error()}, err)
	}
	return lock, nil
}

// notUp ends the run when connect found the box anything but up: off,
// in its other OS, booting, or unknown (SSH failed). It returns nil when
// the box is up.
func notUp(d *Deps, h *inventory.Host, prev State, rep Report, opts Options) *stop {
	if rep.Box != BoxUp && rep.Box != BoxUnknown && !opts.DryRun && len(prev.Since) > 0 {
		// The box could not be observed (off, unreachable, SSH refused,
		// in its other OS), so nothing is known of what ran on it
		// meanwhile: the sampled signals' clocks must not span this gap.
		// Their clocks restart at the next check that sees the box up.
		st := prev
		st.Since = nil
		if err := SaveState(d.StateDir, st); err != nil {
			return halt(Outcome{Action: ActFailed, Reason: err.Error(), Report: rep}, err)
		}
	}
	switch rep.Box {
	case BoxUp:
		return nil
	case BoxOff:
		return halt(Outcome{Action: ActAlreadyOff, Reason: rep.BoxDetail, Report: rep}, nil)
	case BoxOtherOS:
		out := Outcome{Action: ActOtherOS, Reason: rep.BoxDetail + "; gpuctl never powers it off", Report: rep}
		if opts.IfIdle {
			return halt(out, nil)
		}
		return halt(out, fmt.Errorf("host %q: %w: %s", h.Name, ErrRefused, out.Reason))
	}
	return halt(notReady(d, h, prev, rep, opts))
}

// notReady is the outcome for a box booting, or one whose SSH failed.
func notReady(d *Deps, h *inventory.Host, prev State, rep Report, opts Options) (Outcome, error) {
	out := Outcome{Action: ActNotReady, Reason: rep.BoxDetail, Report: rep}
	if !opts.DryRun && rep.Box == BoxUnknown {
		// An SSH failure is a failed check: it resets the idle clock.
		st := prev
		st.IdleSince, st.Since, st.LastCheck = nil, nil, rep.Checked
		st.BusyReasons = []string{"ssh: " + rep.BoxDetail}
		if err := SaveState(d.StateDir, st); err != nil {
			return out, err
		}
	}
	if opts.IfIdle && !sshexec.IsPermanent(rep.sshErr) {
		return out, nil
	}
	// A rejected host key or login never clears up by itself: say so
	// even from cron, or the box would silently never be powered off.
	if rep.sshErr != nil {
		// Keep the cause inspectable (sshexec.IsPermanent) for the CLI.
		return out, fmt.Errorf("host %q: %w: %w", h.Name, ErrRefused, rep.sshErr)
	}
	return out, fmt.Errorf("host %q: %w: %s", h.Name, ErrRefused, rep.BoxDetail)
}

// decide applies the rules to the evaluation in out.Report: an --if-idle
// run goes on only when the box is idle and eligible, an explicit one
// (without --force) only when nothing is in flight, and neither when the
// box could not be woken again. It returns nil to go on.
func decide(d *Deps, h *inventory.Host, st *State, out Outcome, opts Options) *stop {
	rep := out.Report
	if opts.IfIdle {
		switch {
		case rep.Busy:
			out.Action, out.Reason = ActBusy, rep.Decision
		case !rep.Idle:
			out.Action, out.Reason = ActNotYet, rep.Decision
		case !rep.Eligible:
			out.Action, out.Reason = ActNotElig, rep.Decision
		}
		if out.Action != "" {
			return halt(out, nil)
		}
	} else if !opts.Force {
		if err := inFlightRefusal(h, rep); err != nil {
			return halt(refuse(d, st, out, err, opts.DryRun))
		}
	}
	if err := wolRefusal(h, rep); err != nil {
		return halt(refuse(d, st, out, err, opts.DryRun))
	}
	return nil
}

// inFlightRefusal is why an explicit shutdown without --force is refused:
// requests in flight through the proxy, or a count that cannot be read.
func inFlightRefusal(h *inventory.Host, rep Report) error {
	switch {
	case rep.InFlight < 0:
		return fmt.Errorf("host %q: %w: the routing proxy's in-flight count cannot be read (%s); use --force to power off anyway",
			h.Name, ErrRefused, signalValue(rep, SigProxy))
	case rep.InFlight > 0:
		return fmt.Errorf("host %q: %w: %d request(s) in flight through the routing proxy; wait, or use --force",
			h.Name, ErrRefused, rep.InFlight)
	}
	return nil
}

// wolRefusal is why the box may not be powered off because it could not
// be woken again, or nil.
func wolRefusal(h *inventory.Host, rep Report) error {
	// A host woken by a command alone (a smart plug, a BMC) needs no
	// armed NIC; one woken by magic packets could never come back without.
	if rep.WOL.Armed || !h.WakesByWOL() {
		return nil
	}
	msg := "Wake-on-LAN is not armed"
	if rep.WOL.Interface != "" {
		msg += " on " + rep.WOL.Interface
	}
	if rep.WOL.Mode != "" {
		msg += fmt.Sprintf(" (Wake-on: %s)", rep.WOL.Mode)
	}
	if rep.WOL.Err != "" {
		msg = "cannot confirm Wake-on-LAN is armed: " + rep.WOL.Err
	}
	return fmt.Errorf("host %q: %w: %s, so it could never be woken again; %s", h.Name, ErrRefused, msg, rep.WOL.Fix)
}

func signalValue(r Report, name string) string {
	for _, s := range r.Signals {
		if s.Name == name {
			return s.Value
		}
	}
	return ""
}

// refuse records a refusal and returns it.
func refuse(d *Deps, st *State, out Outcome, err error, dry bool) (Outcome, error) {
	out.Action, out.Reason = ActRefused, err.Error()
	if !dry {
		st.LastError, st.LastErrorAt = err.Error(), d.now()
		if serr := SaveState(d.StateDir, *st); serr != nil {
			return out, errors.Join(err, serr)
		}
	}
	return out, err
}

// fail puts the host back to ready, logs why and returns the failure.
func fail(d *Deps, h *inventory.Host, st *State, out Outcome, err error) (Outcome, error) {
	err = fmt.Errorf("host %q: %w: %w; it stays up (state ready)", h.Name, ErrFailed, err)
	st.Phase = PhaseReady
	st.LastError, st.LastErrorAt = err.Error(), d.now()
	d.log().Warn("shutdown failed; host back to ready", "host", h.Name, "reason", err.Error())
	out.Action, out.Reason = ActFailed, err.Error()
	if serr := SaveState(d.StateDir, *st); serr != nil {
		return out, errors.Join(err, serr)
	}
	return out, err
}

// busyAgain aborts a shutdown because n requests arrived through the proxy
// while it drained: the host is in use again and stays up. With --if-idle
// that is a routine outcome (busy, no error: cron mails nothing); an
// explicit shutdown is refused.
func busyAgain(d *Deps, h *inventory.Host, st *State, out Outcome, n int, opts Options) (Outcome, error) {
	return busyAgainFor(d, h, st, out, SigProxy, fmt.Sprintf("%d request(s) arrived through the routing proxy while draining", n), opts)
}

// busyAgainFor aborts a shutdown because signal sig became busy (what)
// while it drained; see busyAgain.
func busyAgainFor(d *Deps, h *inventory.Host, st *State, out Outcome, sig, what string, opts Options) (Outcome, error) {
	st.Phase = PhaseReady
	st.IdleSince = nil
	delete(st.Since, sig)
	st.BusyReasons = []string{sig + ": " + what}
	if !opts.IfIdle {
		return refuse(d, st, out, fmt.Errorf("host %q: %w: %s; it stays up (state ready); run the shutdown again once they are done, or use --force",
			h.Name, ErrRefused, what), false)
	}
	out.Action, out.Reason = ActBusy, "busy: "+what+"; shutdown aborted, the host stays up"
	if err := SaveState(d.StateDir, *st); err != nil {
		return out, err
	}
	return out, nil
}

// powerOff drains the box (the draining marker, then unloading its
// models), takes a last look at the proxy and gpuctl's pulls, runs the
// poweroff command and waits until the box stops answering.
func powerOff(ctx context.Context, d *Deps, h *inventory.Host, runner sshexec.Runner, st *State, out Outcome, opts Options) (Outcome, error) {
	st.Phase = PhaseDraining
	if err := SaveState(d.StateDir, *st); err != nil {
		return fail(d, h, st, out, err)
	}
	// The draining interlock (see package activity): the marker goes down
	// before the last read of the proxy's in-flight count, and the proxy
	// counts a request before it looks for the marker, so a request either
	// shows in that read (and the shutdown aborts) or finds the marker
	// (and is held until the box is off). The marker stays until this
	// shutdown aborts or the box is confirmed off.
	clearDrain, err := statedir.MarkDraining(d.StateDir, h.Name, d.now())
	if err != nil {
		return fail(d, h, st, out, fmt.Errorf("%w; without it a request arriving now could be sent to a box going down", err))
	}
	defer func() {
		if err := clearDrain(); err != nil {
			d.log().Warn("cannot remove the draining marker", "host", h.Name, "err", err)
		}
	}()
	d.log().Info("draining", "host", h.Name, "loaded", out.Report.Loaded, "reason", out.Report.Decision)
	if err := unloadModels(ctx, d, h, out.Report.Loaded); err != nil {
		return fail(d, h, st, out, err)
	}
	if s := lastLook(ctx, d, h, st, out, opts); s != nil {
		return s.out, s.err
	}

	st.Phase = PhasePoweringOff
	if err := SaveState(d.StateDir, *st); err != nil {
		return fail(d, h, st, out, err)
	}
	if err := runPoweroff(ctx, d, h, runner); err != nil {
		return fail(d, h, st, out, err)
	}
	now := d.now()
	st.Phase, st.LastPoweroff = PhaseOff, &now
	st.IdleSince, st.Since, st.Partials = nil, nil, nil
	st.LastError, st.LastErrorAt = "", time.Time{}
	out.Action = ActPoweredOff
	out.Reason = "powered off: " + out.Report.Decision
	if !opts.IfIdle {
		out.Reason = "powered off (explicit shutdown)"
	}
	if err := SaveState(d.StateDir, *st); err != nil {
		return out, err
	}
	return out, nil
}

// unloadModels unloads what /api/ps listed, so Ollama does not die mid-write and
// the next boot starts clean. A failed unload (a 503 from a full queue, a
// timeout) means Ollama is not idle after all.
func unloadModels(ctx context.Context, d *Deps, h *inventory.Host, loaded []string) error {
	if len(loaded) == 0 {
		return nil
	}
	if d.Unload == nil {
		return errors.New("no model unloader configured")
	}
	uctx, cancel := context.WithTimeout(ctx, cmp.Or(d.CheckTimeout, DefaultCheckTimeout)*3)
	err := d.Unload(uctx, h, loaded)
	cancel()
	if err != nil {
		return fmt.Errorf("unloading %s: %w", strings.Join(loaded, ", "), err)
	}
	return nil
}

// lastLook re-reads the proxy and gpuctl's pull markers after the draining
// marker is down: a request or a pull may have arrived while draining. It
// returns nil when neither did.
func lastLook(ctx context.Context, d *Deps, h *inventory.Host, st *State, out Outcome, opts Options) *stop {
	actx, cancel := context.WithTimeout(ctx, cmp.Or(d.CheckTimeout, DefaultCheckTimeout))
	r, err := d.activity(actx)
	cancel()
	if !opts.Force {
		if err != nil {
			return halt(fail(d, h, st, out, fmt.Errorf("re-reading the routing proxy before poweroff: %w", err)))
		}
		if n := r.Snapshot.Hosts[h.Name].InFlight; n > 0 {
			return halt(busyAgain(d, h, st, out, n, opts))
		}
	}
	// The same interlock for gpuctl's own pulls (`gpuctl pull` takes no
	// host lock): MarkPull writes its marker and only then looks for the
	// draining marker, so a pull that started after the evaluation either
	// shows here or refuses to start.
	if opts.IfIdle {
		pctx, cancel := context.WithTimeout(ctx, cmp.Or(d.CheckTimeout, DefaultCheckTimeout))
		ps, err := d.pulls(pctx, h.Name)
		cancel()
		if err != nil {
			return halt(fail(d, h, st, out, fmt.Errorf("re-reading gpuctl's pull markers before poweroff: %w", err)))
		}
		if len(ps) > 0 {
			return halt(busyAgainFor(d, h, st, out, SigPulls, "a pull started while draining: gpuctl is pulling "+strings.Join(ps, ", "), opts))
		}
	}
	return nil
}

// runPoweroff runs the poweroff command and waits until the box stops
// answering.
func runPoweroff(ctx context.Context, d *Deps, h *inventory.Host, runner sshexec.Runner) error {
	d.log().Info("powering off", "host", h.Name, "command", "sudo -n "+hostcmd.PoweroffCommand)
	// The box will drop this connection as it goes down: that is no
	// warning (see sshexec.CloseExpecter).
	ce, _ := runner.(sshexec.CloseExpecter)
	if ce != nil {
		ce.ExpectClose(true)
	}
	res, runErr := runner.Run(ctx, hostcmd.PoweroffCmd())
	if runErr == nil && res.ExitStatus != 0 {
		if ce != nil {
			ce.ExpectClose(false)
		}
		return poweroffExit(h, res)
	}
	// A nil error with exit 0, or the connection dropping as the box goes
	// down: either way the box must now stop answering.
	if err := waitOff(ctx, d, h); err != nil {
		if runErr != nil {
			err = fmt.Errorf("%w (the poweroff command ended with: %v)", err, runErr)
		}
		return err
	}
	return nil
}

// poweroffExit describes a poweroff command that exited non-zero, with a
// hint when sudo refused it.
func poweroffExit(h *inventory.Host, res sshexec.Result) error {
	msg := strings.TrimSpace(string(res.Stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(res.Stdout))
	}
	hint := ""
	if strings.Contains(msg, "password") || strings.Contains(msg, "not allowed") || strings.Contains(msg, "sudoers") {
		hint = fmt.Sprintf(" (the box's sudo rule must let %s run exactly %s without a password; the generated NixOS config has it)", h.SSHUser, hostcmd.PoweroffCommand)
	}
	return fmt.Errorf("sudo -n %s exited %d: %s%s", hostcmd.PoweroffCommand, res.ExitStatus, msg, hint)
}

// waitOff probes the SSH port until two probes in a row find it closed or
// silent, within OffTimeout.
func waitOff(ctx context.Context, d *Deps, h *inventory.Host) error {
	bound := cmp.Or(d.OffTimeout, DefaultOffTimeout)
	poll := cmp.Or(d.OffPoll, DefaultOffPoll)
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	quiet := 0
	for {
		pctx, pcancel := context.WithTimeout(ctx, min(poll, cmp.Or(d.ProbeTimeout, DefaultProbeTimeout)))
		conn, err := d.dial()(pctx, "tcp", h.SSHAddr())
		pcancel()
		if err == nil {
			conn.Close()
			quiet = 0
		} else if ctx.Err() == nil {
			quiet++
			if quiet >= 2 {
				return nil
			}
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the box still answers on %s %s after the poweroff command", h.SSHAddr(), bound)
		case <-t.C:
		}
	}
}
