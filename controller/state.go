package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
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

// ProbeKind classifies a TCP dial.
type ProbeKind string

// Probe outcomes.
const (
	ProbeOK          ProbeKind = "ok"
	ProbeRefused     ProbeKind = "refused"     // the host is up, the port closed
	ProbeUnreachable ProbeKind = "unreachable" // no route / host unreachable
	ProbeTimeout     ProbeKind = "timeout"     // no answer in time
	ProbeOther       ProbeKind = "error"       // anything else
)

// Probe is the result of one TCP dial.
type Probe struct {
	Addr     string        `json:"addr"`
	Kind     ProbeKind     `json:"result"`
	Detail   string        `json:"detail,omitempty"`
	Duration time.Duration `json:"-"`
}

// ClassifyDialError sorts a dial error into refused, unreachable, timeout or
// error; nil is ok.
func ClassifyDialError(err error) ProbeKind {
	if err == nil {
		return ProbeOK
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ProbeRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return ProbeUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return ProbeTimeout
	case errors.As(err, &ne) && ne.Timeout():
		return ProbeTimeout
	}
	return ProbeOther
}

// Describe says in words what a probe result means for a host.
func (p Probe) Describe() string {
	switch p.Kind {
	case ProbeOK:
		return p.Addr + " answers"
	case ProbeRefused:
		return p.Addr + " refused the connection: the host is up, its SSH server not yet"
	case ProbeUnreachable:
		return p.Addr + " is unreachable (" + p.Detail + "): the host is off or on another network segment"
	case ProbeTimeout:
		return p.Addr + " did not answer in time: the host is off, asleep or filtered"
	}
	return fmt.Sprintf("%s: %s", p.Addr, p.Detail)
}

// DialFunc dials a network address; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// probeTCP dials addr once and classifies the result. On success the
// connection is returned open.
func probeTCP(ctx context.Context, dial DialFunc, now func() time.Time, addr string) (Probe, net.Conn) {
	start := now()
	conn, err := dial(ctx, "tcp", addr)
	p := Probe{Addr: addr, Kind: ClassifyDialError(err), Duration: now().Sub(start)}
	if err != nil {
		p.Detail = errDetail(err)
		if ctx.Err() != nil && p.Kind == ProbeOther {
			p.Kind = ProbeTimeout
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
