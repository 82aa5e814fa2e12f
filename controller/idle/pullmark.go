package idle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
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

func pullDir(stateDir, host string) string { return filepath.Join(stateDir, "pulls", host) }

// MarkPull records that this process is pulling what onto host until done
// is called.
func MarkPull(stateDir, host, what string) (done func(), err error) {
	dir := pullDir(stateDir, host)
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
	return func() { _ = os.Remove(name) }, nil
}

// ActivePulls lists the pulls gpuctl processes are running onto host, from
// the markers in stateDir.
func ActivePulls(stateDir, host string) ([]string, error) {
	ents, err := os.ReadDir(pullDir(stateDir, host))
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
		p := filepath.Join(pullDir(stateDir, host), e.Name())
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var m pullMarker
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			// Being written right now, or damaged: count it (busy is safe).
			out = append(out, e.Name())
			continue
		}
		if !activity.Alive(m.PID) {
			_ = os.Remove(p)
			continue
		}
		out = append(out, fmt.Sprintf("%s (pid %d, since %s)", m.What, m.PID, m.Started.Format(time.RFC3339)))
	}
	sort.Strings(out)
	return out, nil
}
