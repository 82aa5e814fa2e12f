package sshexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ErrClosed is returned by Run on a Client that was closed by its owner.
var ErrClosed = errors.New("ssh connection closed")

// ErrKeepalive is the cause when keepalive requests went unanswered and the
// connection was closed.
var ErrKeepalive = errors.New("keepalive requests unanswered")

// OpError is a failure at one step of talking to a host: "dial",
// "handshake", "auth-agent", "session", "run" or "keepalive".
type OpError struct {
	Op   string
	Host string // inventory name (or the address)
	Addr string // host:port dialed
	Err  error
}

func (e *OpError) Error() string {
	who := e.Host
	if e.Addr != "" && e.Addr != e.Host {
		who += " (" + e.Addr + ")"
	}
	return fmt.Sprintf("ssh %s %s: %v", e.Op, who, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the step ran out of time (the configured timeout,
// the context's deadline or unanswered keepalives).
func (e *OpError) Timeout() bool {
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, os.ErrDeadlineExceeded) ||
		errors.Is(e.Err, ErrKeepalive)
}

// IsTimeout reports whether err means the host did not answer in time
// (gpuctl's exit code 3).
func IsTimeout(err error) bool {
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Timeout()
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

// HostKeyErrorKind classifies a host key rejection.
type HostKeyErrorKind int

const (
	// HostKeyUnknown: no key is known for the address (enroll with gpuctl trust).
	HostKeyUnknown HostKeyErrorKind = iota + 1
	// HostKeyMismatch: keys are known for the address and the server's is not
	// among them (possible man-in-the-middle, or a reinstalled host).
	HostKeyMismatch
	// HostKeyRevoked: the key is listed under @revoked.
	HostKeyRevoked
)

func (k HostKeyErrorKind) String() string {
	switch k {
	case HostKeyUnknown:
		return "unknown"
	case HostKeyMismatch:
		return "mismatch"
	case HostKeyRevoked:
		return "revoked"
	}
	return fmt.Sprintf("HostKeyErrorKind(%d)", int(k))
}

// KnownKey is a key on record for a host, with where it is recorded: a
// known_hosts file and line, or the inventory's host_key (Line 0).
type KnownKey struct {
	Key  ssh.PublicKey
	File string
	Line int
}

func (k KnownKey) String() string {
	loc := k.File
	if k.Line > 0 {
		loc = fmt.Sprintf("%s:%d", k.File, k.Line)
	}
	return fmt.Sprintf("%s: %s %s", loc, k.Key.Type(), ssh.FingerprintSHA256(k.Key))
}

// HostKeyError is a rejected host key. It reaches callers through Dial's
// error chain (errors.As).
type HostKeyError struct {
	Kind HostKeyErrorKind
	Host string        // inventory host name, or the ProxyJump hop's alias
	Addr string        // the address checked (host:port)
	Key  ssh.PublicKey // the key the server presented
	// Known is what is on record for the address (mismatch) or the
	// @revoked entry (revoked).
	Known []KnownKey
	// Files are the known_hosts files consulted.
	Files []string
	// Hint is the command that enrolls the key ("gpuctl trust gaming-pc").
	Hint string
}

func (e *HostKeyError) Error() string {
	var b strings.Builder
	who := e.Host
	if e.Addr != "" && e.Addr != e.Host {
		who += " (" + e.Addr + ")"
	}
	presented := e.Key.Type() + " " + ssh.FingerprintSHA256(e.Key)
	switch e.Kind {
	case HostKeyUnknown:
		fmt.Fprintf(&b, "host key of %s is not known: the server presents %s", who, presented)
		if len(e.Files) > 0 {
			fmt.Fprintf(&b, " and none of %s has a key for it", strings.Join(e.Files, ", "))
		}
		b.WriteString("; check that fingerprint out of band (on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")
		if e.Hint != "" {
			fmt.Fprintf(&b, ", then run: %s", e.Hint)
		}
	case HostKeyMismatch:
		fmt.Fprintf(&b, "HOST KEY MISMATCH for %s: the server presents %s but ", who, presented)
		for i, k := range e.Known {
			if i > 0 {
				b.WriteString(" and ")
			}
			b.WriteString(k.String())
		}
		b.WriteString(" (someone may be intercepting the connection, or the host was reinstalled); refusing to connect")
		switch {
		case strings.HasPrefix(e.Hint, "gpuctl "):
			fmt.Fprintf(&b, "; if the new key is right, run: %s", replaceHint(e.Hint))
		case e.Hint != "":
			fmt.Fprintf(&b, "; if the new key is right, %s", e.Hint)
		}
	case HostKeyRevoked:
		fmt.Fprintf(&b, "host key of %s is revoked: the server presents %s", who, presented)
		for _, k := range e.Known {
			fmt.Fprintf(&b, ", marked @revoked at %s", k.String())
		}
		b.WriteString("; refusing to connect")
	default:
		fmt.Fprintf(&b, "host key of %s rejected", who)
	}
	return b.String()
}

// replaceHint turns "gpuctl trust HOST" into "gpuctl trust --replace HOST".
func replaceHint(h string) string {
	if rest, ok := strings.CutPrefix(h, "gpuctl trust "); ok {
		return "gpuctl trust --replace " + rest
	}
	return h
}

// AuthError is a failed public key authentication, with the keys offered and
// why others could not be used.
type AuthError struct {
	Host, Addr, User string
	// Offered describes each key offered ("~/.ssh/id_ed25519 ssh-ed25519 SHA256:…", "agent: …").
	Offered []string
	// Notes explain keys that could not be used (passphrase-protected and not
	// in the agent, agent unreachable).
	Notes []string
	Err   error
}

func (e *AuthError) Error() string {
	var b strings.Builder
	who := e.Host
	if e.Addr != "" && e.Addr != e.Host {
		who += " (" + e.Addr + ")"
	}
	if len(e.Offered) == 0 {
		fmt.Fprintf(&b, "no usable SSH key to log in to %s as %q", who, e.User)
	} else {
		fmt.Fprintf(&b, "%s refused every key for user %q (offered: %s)", who, e.User, strings.Join(e.Offered, "; "))
	}
	for _, n := range e.Notes {
		b.WriteString("; ")
		b.WriteString(n)
	}
	b.WriteString("; install a public key in that user's authorized_keys, or set [ssh].identity_files")
	return b.String()
}

func (e *AuthError) Unwrap() error { return e.Err }

// PermanentError marks connector errors that retrying cannot fix (a host key
// mismatch, refused authentication): wake stops at once on them.
type PermanentError interface{ Permanent() bool }

// IsPermanent reports whether a connector error cannot be fixed by retrying:
// a rejected host key, refused authentication, or an error that says so.
func IsPermanent(err error) bool {
	var p PermanentError
	if errors.As(err, &p) {
		return p.Permanent()
	}
	var hk *HostKeyError
	var ae *AuthError
	return errors.As(err, &hk) || errors.As(err, &ae)
}
