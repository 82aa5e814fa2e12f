package nixconfig

import "strings"

// Nix tools print warnings on stderr ("warning: the group 'nixbld'
// specified in 'build-users-group' does not exist" on a Debian nix-bin
// without the group, "warning: unknown setting ..." for a newer nix.conf),
// mixed with the real error. Stdout is the only data; stderr is read for an
// error message only after its warnings are gone.

// splitNixStderr separates a Nix tool's stderr into the error text and the
// warnings. A warning is a line starting with "warning:" and the indented
// lines that continue it.
func splitNixStderr(stderr string) (errText string, warnings []string) {
	var keep []string
	inWarning := false
	for _, l := range strings.Split(strings.ReplaceAll(stderr, "\r\n", "\n"), "\n") {
		trim := strings.TrimLeft(l, " \t")
		switch {
		case strings.HasPrefix(l, "warning:"):
			warnings = append(warnings, strings.TrimSpace(strings.TrimPrefix(l, "warning:")))
			inWarning = true
			continue
		case inWarning && trim != "" && trim != l:
			warnings[len(warnings)-1] += " " + strings.TrimSpace(l)
			continue
		}
		inWarning = false
		keep = append(keep, l)
	}
	return strings.TrimSpace(strings.Join(keep, "\n")), warnings
}
