package statedir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockMode says what LockHost does when another process holds the lock.
type LockMode int

const (
	// LockWait waits until the lock is free or ctx ends.
	LockWait LockMode = iota
	// LockTry returns ErrLocked at once.
	LockTry
)

// ErrLocked is returned by LockHost in LockTry mode when the lock is held.
var ErrLocked = errors.New("locked by another gpuctl")

// lockPoll is how often LockWait retries; flock cannot wait on a context.
const lockPoll = 50 * time.Millisecond

// Lock is a held host lock.
type Lock struct {
	f    *os.File
	path string
}

// LockHost takes the exclusive lock of host under stateDir
// (state_dir/locks/HOST.lock, flock(2)), so that wakes and shutdowns of one
// host, from any process, never interleave. The lock is released by Unlock or
// when the process exits. The holder's pid is written into the file and named
// in ErrLocked errors.
func LockHost(ctx context.Context, stateDir, host string, mode LockMode) (*Lock, error) {
	if stateDir == "" {
		return nil, fmt.Errorf("lock host %q: no state_dir configured", host)
	}
	p := LockPath(stateDir, host)
	if err := CheckOwner(filepath.Dir(p)); err != nil {
		return nil, fmt.Errorf("lock host %q: %w", host, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("lock host %q: create %s: %w (check state_dir's permissions)", host, filepath.Dir(p), err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock host %q: open %s: %w (check state_dir's permissions)", host, p, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock host %q: flock %s: %w", host, p, err)
		}
		if mode == LockTry {
			holder := readHolder(p)
			f.Close()
			return nil, fmt.Errorf("host %q: %w%s (%s)", host, ErrLocked, holder, p)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("host %q: waiting for the lock %s: %w", host, p, ctx.Err())
		case <-t.C:
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte("pid="+strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f, path: p}, nil
}

func readHolder(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if pid, ok := strings.CutPrefix(s, "pid="); ok && pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}

// Unlock releases the lock; it is safe to call more than once.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}

// HoldWaking takes host's waking marker (WakingPath) for the whole of a
// wake; Unlock releases it.
func HoldWaking(stateDir, host string) (*Lock, error) {
	p := WakingPath(stateDir, host)
	if err := CheckOwner(filepath.Dir(p)); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{f: f, path: p}, nil
}

// WakeInProgress reports whether some process is waking host right now.
func WakeInProgress(stateDir, host string) bool {
	if stateDir == "" {
		return false
	}
	f, err := os.Open(WakingPath(stateDir, host))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
