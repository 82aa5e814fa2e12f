package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// HostStatus is where one host stands: the result of gpuctl status and of a
// wake. Its JSON form is documented in docs/status.md.
type HostStatus struct {
	Name   string `json:"name"`
	State  State  `json:"state"`
	Reason string `json:"reason"`
	// Since is when the host was first seen in State (by this state_dir).
	Since     time.Time `json:"since"`
	CheckedAt time.Time `json:"checked_at"`
	// DurationMS is how long finding out took.
	DurationMS int64              `json:"duration_ms"`
	Probe      ProbeReport        `json:"probe"`
	Checks     []Check            `json:"checks"`
	GPU        []hostcmd.GPU      `json:"gpu"`
	Container  *hostcmd.Container `json:"container"`
	Mount      *hostcmd.Mount     `json:"mount"`
	Ollama     *Ollama            `json:"ollama"`
	BootETA    *BootETA           `json:"boot_eta"`
	// Idle is filled by the idle-shutdown package (optional).
	Idle any `json:"idle,omitempty"`
}

// ProbeReport is what the reachability probes saw.
type ProbeReport struct {
	SSH     *Probe `json:"ssh"`
	OtherOS *Probe `json:"other_os,omitempty"`
	// SSHError is the SSH handshake or authentication error, if any.
	SSHError string `json:"ssh_error,omitempty"`
}

// Failing names the failing checks.
func (s *HostStatus) Failing() []string {
	var out []string
	for _, c := range s.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// reach probes h's SSH port and, when configured, its other-OS port, within
// ctx. conn is the open SSH-port connection when that probe succeeded.
func (c *Controller) reach(ctx context.Context, h *inventory.Host) (ssh Probe, conn net.Conn, other *Probe) {
	var wg sync.WaitGroup
	if h.OtherOSProbe != 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := c.probeOther(ctx, h)
			other = &p
		}()
	}
	ssh, conn = probeTCP(ctx, c.dial(), c.now, h.SSHAddr())
	wg.Wait()
	return ssh, conn, other
}

func (c *Controller) probeOther(ctx context.Context, h *inventory.Host) Probe {
	addr := inventory.HostPort{Host: h.Address, Port: uint16(h.OtherOSProbe)}.String()
	p, conn := probeTCP(ctx, c.dial(), c.now, addr)
	if conn != nil {
		conn.Close()
	}
	return p
}

// StatusAll asks every host at once; the result is in the order given.
func (c *Controller) StatusAll(ctx context.Context, hosts []*inventory.Host) []HostStatus {
	out := make([]HostStatus, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c.Status(ctx, h)
		}()
	}
	wg.Wait()
	return out
}

// Status finds out where h stands without waking it: probes within
// ProbeTimeout, then, if SSH answers, every check over one connection
// within CheckTimeout.
func (c *Controller) Status(ctx context.Context, h *inventory.Host) HostStatus {
	start := c.now()
	if len(sshChecksFor(h)) == 0 {
		st := c.statusHTTP(ctx, h)
		st.finish(c, h, start)
		return st
	}
	pctx, cancel := context.WithTimeout(ctx, durOr(c.ProbeTimeout, DefaultProbeTimeout))
	sshP, conn, other := c.reach(pctx, h)
	st := HostStatus{Name: h.Name, CheckedAt: start, Checks: []Check{}, GPU: []hostcmd.GPU{},
		Probe: ProbeReport{SSH: &sshP, OtherOS: other}}
	var runner sshexec.Runner
	var closer io.Closer
	k := &checker{c: c, h: h}
	// The Ollama check needs no SSH: it starts as soon as the host answers
	// and runs during the SSH handshake; its result counts only when SSH
	// answers too.
	var ollama chan []Check
	octx, ocancel := context.WithTimeout(ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
	defer ocancel()
	if conn != nil && c.SSH != nil {
		ollama = make(chan []Check, 1)
		if h.HasCheck(CheckOllama) {
			go func() { ollama <- k.ollama(octx) }()
		} else {
			ollama <- nil
		}
	}
	if conn != nil {
		if c.SSH == nil {
			conn.Close()
			st.State, st.Reason = StateUnknown, "no SSH connector configured"
		} else {
			r, cl, err := c.SSH(pctx, h, conn)
			if err != nil {
				conn.Close()
				st.Probe.SSHError = err.Error()
				st.State = StateUnknown
				if pctx.Err() != nil {
					st.Reason = fmt.Sprintf("%s accepted TCP but SSH did not answer within %s", h.SSHAddr(), durOr(c.ProbeTimeout, DefaultProbeTimeout))
				} else {
					st.Reason = "ssh: " + err.Error()
				}
			} else {
				runner, closer = r, cl
			}
		}
	}
	cancel()
	if runner == nil && ollama != nil {
		ocancel()
		<-ollama
	}
	switch {
	case runner != nil:
		k.runner = runner
		cctx, ccancel := context.WithTimeout(ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
		k.run(cctx, sshChecksFor(h))
		ccancel()
		closer.Close()
		k.merge(<-ollama)
		st.fill(k.report())
	case st.State != "":
		// set above
	case other != nil && other.Kind == sshexec.ProbeOK:
		st.State = StateOtherOS
		st.Reason = fmt.Sprintf("port %d answers while SSH does not: the PC runs its other OS; gpuctl will not wake or power it off", h.OtherOSProbe)
	default:
		st.State, st.Reason = stateFromProbe(sshP)
		if (st.State == StateOff || st.State == StateUnknown) && statedir.WakeInProgress(c.StateDir, h.Name) {
			st.State, st.Reason = StateBooting, "a wake is in progress; "+st.Reason
		}
	}
	st.finish(c, h, start)
	return st
}

// statusHTTP checks a host whose `checks` hold no SSH check (the always-on
// server, typically): its Ollama alone says whether it is ready.
func (c *Controller) statusHTTP(ctx context.Context, h *inventory.Host) HostStatus {
	st := HostStatus{Name: h.Name, CheckedAt: c.now(), Checks: []Check{}, GPU: []hostcmd.GPU{}}
	st.fill(c.checkHTTP(ctx, h))
	return st
}

// checkHTTP runs the checks of a host reached by HTTP alone.
func (c *Controller) checkHTTP(ctx context.Context, h *inventory.Host) Report {
	k := &checker{c: c, h: h}
	cctx, cancel := context.WithTimeout(ctx, durOr(c.CheckTimeout, DefaultCheckTimeout))
	defer cancel()
	k.run(cctx, nil)
	return k.report()
}

// stateFromProbe is the state a failed SSH probe implies.
func stateFromProbe(p Probe) (State, string) {
	switch p.Kind {
	case sshexec.ProbeRefused:
		return StateBooting, p.Describe()
	case sshexec.ProbeUnreachable, sshexec.ProbeTimeout:
		return StateOff, p.Describe()
	}
	return StateUnknown, p.Describe()
}

// fill copies a check report in and derives the state from it.
func (s *HostStatus) fill(r Report) {
	s.Checks = r.Checks
	if s.Checks == nil {
		s.Checks = []Check{}
	}
	s.GPU = r.GPU
	if s.GPU == nil {
		s.GPU = []hostcmd.GPU{}
	}
	s.Container, s.Mount, s.Ollama = r.Container, r.Mount, r.Ollama
	s.State, s.Reason = stateFromChecks(s.Checks)
}

// stateFromChecks: ready when all pass; unknown when the only failures are
// checks that ran out of time; degraded otherwise.
func stateFromChecks(cs []Check) (State, string) {
	var failed, timedOut []string
	for _, c := range cs {
		if c.OK {
			continue
		}
		if c.TimedOut {
			timedOut = append(timedOut, c.Name)
		} else {
			failed = append(failed, c.Name+": "+c.Detail)
		}
	}
	switch {
	case len(failed) > 0:
		return StateDegraded, "failing: " + strings.Join(append(failed, timedOutNames(timedOut)...), "; ")
	case len(timedOut) > 0:
		return StateUnknown, "checks did not finish in time: " + strings.Join(timedOut, ", ")
	case len(cs) == 0:
		return StateUnknown, "no checks ran"
	}
	return StateReady, fmt.Sprintf("all %d checks passed", len(cs))
}

func timedOutNames(ns []string) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n + ": timed out"
	}
	return out
}

func (s *HostStatus) finish(c *Controller, h *inventory.Host, start time.Time) {
	now := c.now()
	s.DurationMS = ms(now.Sub(start))
	s.Since = c.noteState(h.Name, s.State, now)
	if recs, err := c.WakeHistory(h.Name); err == nil {
		s.BootETA = BootETAOf(recs)
	}
}
