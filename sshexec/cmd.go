package sshexec

import (
	"context"
	"time"
)

// Cmd is one remote command, given as argv. It is quoted into a single POSIX
// shell string by this package (see Quote) and nowhere else.
type Cmd struct {
	// Args is the command and its arguments; Args[0] is the program.
	Args []string
	// Stdin, when set, is written to the command's standard input.
	Stdin []byte
	// Timeout bounds the command; 0 means the context's deadline alone.
	Timeout time.Duration
	// MaxOutput caps each of stdout and stderr in bytes; 0 means 1 MiB.
	MaxOutput int
}

// Result is what a command that ran to completion produced.
type Result struct {
	Stdout []byte
	Stderr []byte
	// ExitStatus is the remote exit status (0 on success).
	ExitStatus int
	// Signal is set when the remote command was killed by a signal ("KILL").
	Signal string
	// Truncated reports that stdout or stderr exceeded MaxOutput.
	Truncated bool
	Duration  time.Duration
}

// Runner runs commands on one host. Run returns a non-nil error only when the
// command could not be run to completion (connection, handshake, session,
// timeout, missing exit status); a command that ran and exited non-zero is
// reported in Result.ExitStatus with a nil error.
type Runner interface {
	Run(ctx context.Context, cmd Cmd) (Result, error)
}
