package idle

import (
	"fmt"
	"strings"
	"time"
)

// FormatDuration renders a measured duration (idle for, uptime, time to a
// model's expiry) the same way in reports, decisions and logs: under a
// minute with one decimal ("0.4s", "2.8s"), under an hour to the second
// ("4m10s", "5m"), longer to the minute ("2h5m"). Negative durations print as 0.
func FormatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if r := d.Round(100 * time.Millisecond); r < time.Minute {
		return fmt.Sprintf("%.1fs", r.Seconds())
	}
	if d < time.Hour {
		return FormatSetting(d.Round(time.Second))
	}
	return FormatSetting(d.Round(time.Minute))
}

// FormatSetting renders a configured duration (idle_after, min_uptime) as
// one would write it in the inventory: "2s", "20m", "1h30m", not "20m0s".
func FormatSetting(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// FormatAgainst renders d like FormatDuration, but finer when that would
// print it the same as the limit it is compared with (idle for against
// idle_after, uptime against min_uptime): a box idle for 2.03s
// is "idle for 2.03s (more than idle_after 2s)", not "2.0s".
func FormatAgainst(d, limit time.Duration) string {
	s := FormatDuration(d)
	if d == limit || d >= time.Minute || s != FormatDuration(limit) {
		return s
	}
	for _, prec := range []int{2, 3} {
		s = fmt.Sprintf("%.*fs", prec, d.Seconds())
		if s != fmt.Sprintf("%.*fs", prec, limit.Seconds()) {
			break
		}
	}
	return s
}
