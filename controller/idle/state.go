package idle

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"
)

// Phase is where the idle-shutdown machinery left a host.
type Phase string

const (
	// PhaseReady: up and in service (also after a failed shutdown).
	PhaseReady Phase = "ready"
	// PhaseDraining: a shutdown is unloading models and checking Wake-on-LAN.
	PhaseDraining Phase = "draining"
	// PhasePoweringOff: the poweroff command was sent; waiting for the box
	// to stop answering.
	PhasePoweringOff Phase = "powering-off"
	// PhaseOff: the box was powered off and stopped answering.
	PhaseOff Phase = "off"
)

// State is what one host's idle checks remember between cron runs, in
// STATE_DIR/idle/HOST.json.
type State struct {
	Host string `json:"host"`
	// IdleSince is when every signal last became idle (this machine's
	// clock); nil while a signal is busy or a check fails.
	IdleSince *time.Time `json:"idle_since,omitempty"`
	// Since is, per signal, since when it has been seen idle; a signal
	// missing here was busy (or its check failed) at the last check.
	Since map[string]time.Time `json:"since,omitempty"`
	// LastCheck is when the last check ran.
	LastCheck time.Time `json:"last_check,omitzero"`
	// Failed names the signals whose check failed last time; their clocks
	// restart at the next check that reads them.
	Failed []string `json:"failed,omitempty"`
	// BusyReasons are the last check's busy signals, in words.
	BusyReasons []string `json:"busy_reasons,omitempty"`
	// Partials is the last sample of partial downloads, keyed by path.
	Partials map[string]hostcmd.Partial `json:"partials,omitempty"`
	Phase    Phase                      `json:"phase,omitempty"`
	// LastPoweroff is when gpuctl last powered the box off.
	LastPoweroff *time.Time `json:"last_poweroff,omitempty"`
	// LastError is why the last shutdown attempt failed or was refused.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// LoadState reads a host's idle state; a missing file is an empty state.
func LoadState(stateDir, host string) (State, error) {
	st := State{Host: host}
	err := statedir.ReadJSON(statedir.IdleFile(stateDir, host), &st)
	if errors.Is(err, fs.ErrNotExist) {
		return State{Host: host}, nil
	}
	if err != nil {
		return State{Host: host}, fmt.Errorf("idle state of %s: %w", host, err)
	}
	st.Host = host
	return st, nil
}

// SaveState writes a host's idle state atomically. Callers hold the host
// lock (statedir.LockHost).
func SaveState(stateDir string, st State) error {
	if err := statedir.WriteJSON(statedir.IdleFile(stateDir, st.Host), st); err != nil {
		return fmt.Errorf("idle state of %s: %w", st.Host, err)
	}
	return nil
}

// Summary is the idle part of `gpuctl status` (controller.HostStatus.Idle),
// from the state the last shutdown run saved: no SSH round trip.
type Summary struct {
	// IdleSince is when every signal became idle, as of LastCheck; null
	// while a signal was busy (or a check failed).
	IdleSince *time.Time `json:"idle_since"`
	// IdleForS is now - IdleSince, in whole seconds (absent when busy).
	IdleForS    float64    `json:"idle_for_s,omitempty"`
	BusyReasons []string   `json:"busy_reasons,omitempty"`
	LastCheck   *time.Time `json:"last_check,omitempty"`
	Phase       Phase      `json:"phase,omitempty"`
	// LastPoweroff is when gpuctl last powered the box off.
	LastPoweroff *time.Time `json:"last_poweroff,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	// Error is why the saved state could not be read.
	Error string `json:"error,omitempty"`
}

// Summarize turns a saved state into a Summary as of now.
func Summarize(st State, now time.Time) Summary {
	s := Summary{IdleSince: st.IdleSince, BusyReasons: st.BusyReasons, Phase: st.Phase,
		LastPoweroff: st.LastPoweroff, LastError: st.LastError}
	if !st.LastCheck.IsZero() {
		t := st.LastCheck
		s.LastCheck = &t
	}
	if st.IdleSince != nil {
		s.IdleForS = max(now.Sub(*st.IdleSince), 0).Round(time.Second).Seconds()
	}
	return s
}

// Checked reports whether the summary comes from a saved state (a
// shutdown run has checked the host at least once).
func (s Summary) Checked() bool {
	return s.LastCheck != nil || s.Phase != "" || s.Error != ""
}

// String is Line as of the time now.
func (s Summary) String() string { return s.Line(time.Now()) }

// Line is the one-line idle column of `gpuctl status` as of now (which
// decides whether times carry their date): "idle 12m (since 14:02)", "busy: proxy: 1 request(s) in flight (+1 more)", "shutting down:
// draining", "shutting down: powering off", "powered off by gpuctl at
// 14:30", "idle state unreadable: …", or "not checked yet".
func (s Summary) Line(now time.Time) string {
	switch {
	case s.Error != "":
		return "idle state unreadable: " + s.Error
	case s.Phase == PhaseDraining:
		return "shutting down: draining"
	case s.Phase == PhasePoweringOff:
		return "shutting down: powering off"
	case s.Phase == PhaseOff && s.LastPoweroff != nil:
		return "powered off by gpuctl at " + clock(*s.LastPoweroff, now)
	case s.IdleSince != nil:
		return fmt.Sprintf("idle %s (since %s)", coarse(time.Duration(s.IdleForS)*time.Second), clock(*s.IdleSince, now))
	case len(s.BusyReasons) > 0:
		out := "busy: " + s.BusyReasons[0]
		if n := len(s.BusyReasons) - 1; n > 0 {
			out += fmt.Sprintf(" (+%d more)", n)
		}
		return out
	case s.LastCheck != nil:
		return "busy"
	}
	return "not checked yet"
}

// clock is a local wall-clock time, with the date when not today.
func clock(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y != now.Year() || m != now.Month() || d != now.Day() {
		return t.Format("2006-01-02 15:04")
	}
	return t.Format("15:04")
}

// coarse renders d in seconds below a minute, else in minutes ("12m",
// "1h5m").
func coarse(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
