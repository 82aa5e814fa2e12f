package controller

import (
	"os"
	"sort"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
)

// PhaseTiming is how long one phase of a wake took.
type PhaseTiming struct {
	Name       string `json:"name"`
	StartMS    int64  `json:"start_ms"`
	DurationMS int64  `json:"duration_ms"`
}

// WakeRecord is one wake, as kept in the history.
type WakeRecord struct {
	Host     string    `json:"host"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	State    State     `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	// Woke reports that magic packets were sent (the host was not up).
	Woke bool `json:"woke"`
	// SSHAfterMS is the time from the start to SSH answering.
	SSHAfterMS int64 `json:"ssh_after_ms,omitempty"`
	// ReadyAfterMS is the time from the start to every check passing
	// (before any pull).
	ReadyAfterMS int64         `json:"ready_after_ms,omitempty"`
	Phases       []PhaseTiming `json:"phases"`
	Failed       []string      `json:"failed,omitempty"`
}

// BootETA is the typical time a wake takes, from the history.
type BootETA struct {
	Median   string `json:"median"`
	MedianMS int64  `json:"median_ms"`
	Samples  int    `json:"samples"`
}

type historyFile struct {
	Wakes []WakeRecord `json:"wakes"`
}

// WakeHistory returns host's recorded wakes, oldest first.
func (c *Controller) WakeHistory(host string) ([]WakeRecord, error) {
	if c.StateDir == "" {
		return nil, nil
	}
	var h historyFile
	if err := statedir.ReadJSON(statedir.WakeHistoryFile(c.StateDir, host), &h); err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	return h.Wakes, nil
}

// appendHistory adds a record, keeping the last c.History.
func (c *Controller) appendHistory(rec WakeRecord) error {
	if c.StateDir == "" {
		return nil
	}
	old, err := c.WakeHistory(rec.Host)
	if err != nil {
		c.logger().Warn("discarding unreadable wake history", "host", rec.Host, "err", err)
		old = nil
	}
	old = append(old, rec)
	if n := max(1, intOr(c.History, DefaultHistory)); len(old) > n {
		old = old[len(old)-n:]
	}
	return statedir.WriteJSON(statedir.WakeHistoryFile(c.StateDir, rec.Host), historyFile{Wakes: old})
}

func intOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// BootETAOf is the median time-to-ready of the wakes in recs that booted
// the host and reached ready; nil without any.
func BootETAOf(recs []WakeRecord) *BootETA {
	var ds []int64
	for _, r := range recs {
		if r.Woke && r.State == StateReady && r.ReadyAfterMS > 0 {
			ds = append(ds, r.ReadyAfterMS)
		}
	}
	if len(ds) == 0 {
		return nil
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	m := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		m = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	d := time.Duration(m) * time.Millisecond
	r := time.Second
	if d < 10*time.Second {
		r = 100 * time.Millisecond
	}
	return &BootETA{Median: d.Round(r).String(), MedianMS: m, Samples: len(ds)}
}

// stateRecord is the last state seen of a host and since when.
type stateRecord struct {
	State State     `json:"state"`
	Since time.Time `json:"since"`
}

// noteState records st for host and returns since when the host has been
// in it.
func (c *Controller) noteState(host string, st State, now time.Time) time.Time {
	if c.StateDir == "" {
		return now
	}
	p := statedir.StatusFile(c.StateDir, host)
	var old stateRecord
	if err := statedir.ReadJSON(p, &old); err == nil && old.State == st && !old.Since.IsZero() && !old.Since.After(now) {
		return old.Since
	}
	if err := statedir.WriteJSON(p, stateRecord{State: st, Since: now}); err != nil {
		c.logger().Warn("cannot record host state", "host", host, "err", err)
	}
	return now
}
