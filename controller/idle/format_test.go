package idle

import (
	"testing"
	"time"
)

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.0s"},
		{-time.Second, "0.0s"},
		{40 * time.Millisecond, "0.0s"},
		{2800 * time.Millisecond, "2.8s"},
		{2849 * time.Millisecond, "2.8s"},
		{2 * time.Second, "2.0s"},
		{59940 * time.Millisecond, "59.9s"},
		{59960 * time.Millisecond, "1m"},
		{4*time.Minute + 10*time.Second + 400*time.Millisecond, "4m10s"},
		{4 * time.Minute, "4m"},
		{2*time.Hour + 5*time.Minute + 31*time.Second, "2h6m"},
		{3 * time.Hour, "3h"},
	} {
		if got := FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestFormatSetting(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{2 * time.Second, "2s"},
		{20 * time.Minute, "20m"},
		{90 * time.Minute, "1h30m"},
		{time.Hour, "1h"},
		{90 * time.Second, "1m30s"},
		{1500 * time.Millisecond, "1.5s"},
	} {
		if got := FormatSetting(tc.d); got != tc.want {
			t.Errorf("FormatSetting(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// The decision says how long the box was idle to a tenth of a second, so a
// box idle for 2.8s is not reported as idle for 2s (which would contradict
// "more than idle_after 2s").
func TestDecisionDurations(t *testing.T) {
	now := time.Date(2026, 11, 25, 15, 3, 11, 580e6, time.UTC)
	for _, tc := range []struct {
		idleFor, uptime time.Duration
		want            string
	}{
		{2800 * time.Millisecond, 4 * time.Second, "idle for 2.8s (more than idle_after 2s): power off"},
		{1500 * time.Millisecond, 4 * time.Second, "idle for 1.5s, not more than idle_after 2s yet"},
		{2*time.Second + 400*time.Millisecond, 1900 * time.Millisecond, "idle, but up only 1.9s of min_uptime 2s: not eligible"},
		// Just past the limit: finer than a tenth, so it does not read "2.0s, more than 2s".
		{2030 * time.Millisecond, 4 * time.Second, "idle for 2.03s (more than idle_after 2s): power off"},
		{2000*time.Millisecond + 400*time.Microsecond, 4 * time.Second, "idle for 2.000s (more than idle_after 2s): power off"},
		{1970 * time.Millisecond, 4 * time.Second, "idle for 1.97s, not more than idle_after 2s yet"},
		{2 * time.Second, 4 * time.Second, "idle for 2.0s, not more than idle_after 2s yet"},
	} {
		rep := Report{Host: "pc", IdleAfter: 2 * time.Second, MinUptime: 2 * time.Second, Uptime: tc.uptime}
		sigs := []Signal{{Name: SigProxy, exact: true, hint: now.Add(-tc.idleFor)}}
		apply(&rep, sigs, State{}, now)
		if rep.Decision != tc.want {
			t.Errorf("decision %q, want %q", rep.Decision, tc.want)
		}
	}
}
