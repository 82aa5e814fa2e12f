package sshexec

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// DialFunc dials a network address; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

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
