package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// The draining interlock is described in the package comment.

// StaleDrain is how old a marker that cannot be parsed may get before
// Draining ignores it (and removes it). A shutdown's drain (unload, the
// poweroff, the wait for the box to go quiet) takes a few minutes at most.
const StaleDrain = 15 * time.Minute

// Drain is the content of a draining marker.
type Drain struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// MarkDraining writes host's draining marker atomically (a temporary file
// renamed into place), naming this process. The returned clear removes it
// if it is still this process's marker; call it when the shutdown aborts or
// once the box is confirmed off. The caller holds the host lock.
func MarkDraining(stateDir, host string, now time.Time) (clear func() error, err error) {
	if stateDir == "" {
		return nil, fmt.Errorf("draining marker for %s: no state_dir configured", host)
	}
	p := DrainingPath(stateDir, host)
	if err := WriteJSON(p, Drain{Host: host, PID: os.Getpid(), Started: now}); err != nil {
		return nil, fmt.Errorf("draining marker for %s: %w", host, err)
	}
	return func() error {
		d, ok, _ := readDrain(p)
		if ok && d.PID != os.Getpid() {
			return nil // another process's marker: not ours to remove
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w (requests for %s are held until it is gone; delete it by hand)", p, err, host)
		}
		return nil
	}, nil
}

// readDrain reads a marker; ok is false when it cannot be parsed.
func readDrain(p string) (Drain, bool, error) {
	var d Drain
	b, err := os.ReadFile(p)
	if err != nil {
		return d, false, err
	}
	if json.Unmarshal(b, &d) != nil || d.PID <= 0 {
		return d, false, nil
	}
	return d, true, nil
}

// Draining reports whether a shutdown is draining host now: its marker
// exists and the process that wrote it is alive. A marker whose process is
// gone (a shutdown that crashed) is ignored and removed, as is one that
// cannot be parsed and is older than StaleDrain. The common case (no
// marker) costs one stat. An error means the marker could not be read.
func Draining(stateDir, host string) (Drain, bool, error) {
	if stateDir == "" {
		return Drain{}, false, nil
	}
	p := DrainingPath(stateDir, host)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Drain{}, false, nil
	}
	if err != nil {
		return Drain{}, false, fmt.Errorf("draining marker of %s: %w", host, err)
	}
	d, ok, err := readDrain(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Drain{}, false, nil // removed since the stat
	case err != nil:
		return Drain{}, false, fmt.Errorf("draining marker of %s: %w", host, err)
	case !ok:
		if time.Since(fi.ModTime()) > StaleDrain {
			_ = os.Remove(p)
			return Drain{}, false, nil
		}
		return Drain{Host: host, Started: fi.ModTime()}, true, nil
	case !Alive(d.PID):
		removeIfSame(p, d)
		return Drain{}, false, nil
	}
	return d, true, nil
}

// removeIfSame removes p if it still holds d (a new shutdown may have
// replaced the dead one's marker since it was read).
func removeIfSame(p string, d Drain) {
	if cur, ok, _ := readDrain(p); ok && cur.PID == d.PID && cur.Started.Equal(d.Started) {
		_ = os.Remove(p)
	}
}
