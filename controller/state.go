package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// State is where a host stands.
type State string

// Host states, from best to worst for a caller that wants to use the host.
const (
	// StateReady: SSH answers and every check passed.
	StateReady State = "ready"
	// StateDegraded: SSH answers but a check failed (see the checks).
	StateDegraded State = "degraded"
	// StateBooting: packets were sent or the port refuses: the host is on
	// its way up but SSH does not answer yet.
	StateBooting State = "booting"
	// StateOff: nothing answers (off, asleep, or not on this network).
	StateOff State = "off"
	// StateOtherOS: the host's other_os_probe port answers while SSH does
	// not: it runs its other OS (a game). Never woken, never powered off.
	StateOtherOS State = "in-use-other-os"
	// StateUnknown: the probe failed in a way that says nothing certain
	// (handshake refused, host key mismatch, checks that ran out of time).
	StateUnknown State = "unknown"
)

// rank orders states from best (0) to worst.
func (s State) rank() int {
	switch s {
	case StateReady:
		return 0
	case StateDegraded:
		return 1
	case StateBooting:
		return 2
	case StateOff:
		return 3
	case StateOtherOS:
		return 4
	}
	return 5
}

// Worse returns the worse of two states.
func Worse(a, b State) State {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// ExitCode is the process exit code gpuctl status and wake use for a state:
// 0 ready, 4 degraded, 5 off or in its other OS, 3 booting or unknown (not
// reachable in time).
func (s State) ExitCode() int {
	switch s {
	case StateReady:
		return 0
	case StateDegraded:
		return 4
	case StateOff, StateOtherOS:
		return 5
	}
	return 3
}

// Probe is the result of one TCP dial.
type Probe struct {
	Addr     string            `json:"addr"`
	Kind     sshexec.ProbeKind `json:"result"`
	Detail   string            `json:"detail,omitempty"`
	Duration time.Duration     `json:"-"`
}

// Describe says in words what a probe result means for a host.
func (p Probe) Describe() string {
	switch p.Kind {
	case sshexec.ProbeOK:
		return p.Addr + " answers"
	case sshexec.ProbeRefused:
		return p.Addr + " refused the connection: the host is up, its SSH server not yet"
	case sshexec.ProbeUnreachable:
		return p.Addr + " is unreachable (" + p.Detail + "): the host is off or on another network segment"
	case sshexec.ProbeTimeout:
		return p.Addr + " did not answer in time: the host is off, asleep or filtered"
	}
	return fmt.Sprintf("%s: %s", p.Addr, p.Detail)
}

// probeTCP dials addr once and classifies the result. On success the
// connection is returned open.
func probeTCP(ctx context.Context, dial sshexec.DialFunc, now func() time.Time, addr string) (Probe, net.Conn) {
	start := now()
	conn, err := dial(ctx, "tcp", addr)
	p := Probe{Addr: addr, Kind: sshexec.ClassifyDialError(err), Duration: now().Sub(start)}
	if err != nil {
		p.Detail = errDetail(err)
		if ctx.Err() != nil && p.Kind == sshexec.ProbeOther {
			p.Kind = sshexec.ProbeTimeout
		}
		return p, nil
	}
	return p, conn
}

// errDetail gives the innermost useful text of a dial error.
func errDetail(err error) string {
	var se syscall.Errno
	if errors.As(err, &se) {
		return se.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
