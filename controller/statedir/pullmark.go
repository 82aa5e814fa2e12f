package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pull markers: whoever pulls models onto a host through gpuctl (gpuctl
// pull, a wake that syncs declared models) calls MarkPull for the duration
// of the pull, which writes STATE_DIR/pulls/HOST/PID-N.json. Idle shutdown
// treats a marker whose process is alive as an active pull. Markers of dead
// processes are ignored (and removed), so a crashed pull does not block
// shutdown forever; the partial-blob check still sees its files.

type pullMarker struct {
	PID     int       `json:"pid"`
	What    string    `json:"what"`
	Started time.Time `json:"started"`
}

// MarkPull records that this process is pulling what onto host until done
// is called.
func MarkPull(stateDir, host, what string) (done func(), err error) {
	dir := PullsDir(stateDir, host)
	if err := CheckOwner(dir); err != nil {
		return nil, fmt.Errorf("pull marker for %s: %w", host, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pull marker for %s: %w (check state_dir's permissions)", host, err)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%d-*.json", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("pull marker for %s: %w", host, err)
	}
	b, _ := json.Marshal(pullMarker{PID: os.Getpid(), What: what, Started: time.Now()})
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return nil, fmt.Errorf("pull marker for %s: %w", host, err)
	}
	name := f.Name()
	// The draining interlock (see package activity), pull side: the
	// marker is down, now look for a shutdown draining the host. Either
	// that shutdown's last look at the pull markers sees this one and
	// aborts, or this pull sees its draining marker and does not start on
	// a box about to go down. An unreadable draining marker is no reason
	// to refuse: the shutdown still sees this pull's marker.
	if dr, draining, _ := Draining(stateDir, host); draining {
		_ = os.Remove(name)
		return nil, fmt.Errorf("pull onto %s: %w (gpuctl shutdown, pid %d, since %s); once it is off, run `gpuctl wake %s` and pull again",
			host, ErrDraining, dr.PID, dr.Started.Format(time.RFC3339), host)
	}
	return func() { _ = os.Remove(name) }, nil
}

// ErrDraining is returned by MarkPull while a shutdown is powering the host
// off.
var ErrDraining = errors.New("the host is being powered off")

// ActivePulls lists the pulls gpuctl processes are running onto host, from
// the markers in stateDir.
func ActivePulls(stateDir, host string) ([]string, error) {
	ents, err := os.ReadDir(PullsDir(stateDir, host))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pull markers of %s: %w", host, err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(PullsDir(stateDir, host), e.Name())
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var m pullMarker
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			// Being written right now, or damaged: count it (busy is
			// safe), unless the process named in the file name (MarkPull
			// writes PID-*.json) is gone: a pull that crashed between
			// creating and writing its marker must not block idle
			// shutdown forever.
			if pid, ok := namePID(e.Name()); ok && !Alive(pid) {
				_ = os.Remove(p)
				continue
			}
			out = append(out, e.Name())
			continue
		}
		if !Alive(m.PID) {
			_ = os.Remove(p)
			continue
		}
		out = append(out, fmt.Sprintf("%s (pid %d, since %s)", m.What, m.PID, m.Started.Format(time.RFC3339)))
	}
	sort.Strings(out)
	return out, nil
}

// namePID reads the pid MarkPull puts at the start of a marker's name.
func namePID(name string) (int, bool) {
	s, _, ok := strings.Cut(name, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}
