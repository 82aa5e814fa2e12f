package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/ollamalive/gpuctl/controller"
)

// Clean makes text from remote hosts safe for a terminal or a log: control
// characters (escape sequences, carriage returns, C1 codes) become spaces,
// runs of spaces collapse, and the result is trimmed.
func Clean(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r) {
			r = ' '
		}
		if r == ' ' || r == '\t' {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

func clip(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// Ago renders how long ago t was, coarsely ("12s", "5m", "3h", "2d").
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// WriteTable writes statuses as an aligned plain-text table (no colours, no
// control characters, fit for `ssh server gpuctl status`). Each host's checks
// follow when details is set, and for every host that is not ready.
func WriteTable(w io.Writer, sts []controller.HostStatus, now time.Time, details bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tSINCE\tBOOT ETA\tDETAIL")
	for _, s := range sts {
		eta := "-"
		if s.BootETA != nil {
			eta = s.BootETA.Median
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", Clean(s.Name), s.State, Ago(now, s.Since), eta, clip(Clean(summary(s)), 100))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sts {
		if len(s.Checks) == 0 || (!details && s.State == controller.StateReady) {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", Clean(s.Name))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CHECK\tRESULT\tTIME\tDETAIL")
		for _, c := range s.Checks {
			res := "ok"
			if !c.OK {
				res = "FAIL"
				if c.TimedOut {
					res = "TIMEOUT"
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, res, c.Duration.Round(time.Millisecond), clip(Clean(c.Detail), 160))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// summary is the one-line detail of a host in the table.
func summary(s controller.HostStatus) string {
	if s.State != controller.StateReady {
		return s.Reason
	}
	var parts []string
	for _, g := range s.GPU {
		parts = append(parts, g.Name)
	}
	if s.Ollama != nil {
		models := fmt.Sprintf("%d models", len(s.Ollama.Models))
		if len(s.Ollama.Models) == 1 {
			models = "1 model"
		}
		parts = append(parts, fmt.Sprintf("Ollama %s, %s", s.Ollama.Version, models))
	}
	if s.Mount != nil && s.Mount.FreeBytes != nil {
		parts = append(parts, fmt.Sprintf("%s free", byteSize(*s.Mount.FreeBytes)))
	}
	if len(parts) == 0 {
		return s.Reason
	}
	return strings.Join(parts, ", ")
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
