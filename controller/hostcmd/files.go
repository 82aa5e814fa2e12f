package hostcmd

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// Remote command templates. Values travel as argv; the Runner quotes them.
const remoteTimeout = 20 * time.Second

// DFCmd asks for the free bytes of the filesystem holding dir.
func DFCmd(dir string) sshexec.Cmd {
	return sshexec.Cmd{Args: []string{"df", "-B1", "--output=avail", "--", dir}, Timeout: remoteTimeout, MaxOutput: 64 << 10}
}

// StatCmd asks for the size of each path ("<bytes> <path>" per line).
func StatCmd(paths ...string) sshexec.Cmd {
	return sshexec.Cmd{Args: append([]string{"stat", "-c", "%s %n", "--"}, paths...), Timeout: remoteTimeout, MaxOutput: 1 << 20}
}

// CatCmd reads one (small) file.
func CatCmd(p string) sshexec.Cmd {
	return sshexec.Cmd{Args: []string{"cat", "--", p}, Timeout: remoteTimeout, MaxOutput: 1 << 20}
}

// ParseDFAvail reads the available bytes from `df -B1 --output=avail DIR`
// or any `df -B1 --output=…` listing with an "Avail" column: the value in
// that column on the last line.
func ParseDFAvail(out []byte) (int64, error) {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 {
		return 0, fmt.Errorf("df printed %d lines, want a header and a row", len(lines))
	}
	col := -1
	for i, h := range strings.Fields(lines[0]) {
		if h == "Avail" {
			col = i
		}
	}
	if col < 0 {
		return 0, fmt.Errorf("df header %q has no Avail column", strings.TrimSpace(lines[0]))
	}
	f := strings.Fields(lines[len(lines)-1])
	if col >= len(f) {
		return 0, fmt.Errorf("df row %q has no column %d", strings.TrimSpace(lines[len(lines)-1]), col+1)
	}
	n, err := strconv.ParseInt(f[col], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("df Avail %q is not a byte count (was -B1 given?)", f[col])
	}
	return n, nil
}

// ParseStat reads `stat -c '%s %n'` output: size by path. Paths may hold
// spaces; a line that does not start with a number is skipped.
func ParseStat(out []byte) map[string]int64 {
	m := map[string]int64{}
	for _, l := range bytes.Split(out, []byte("\n")) {
		size, name, ok := strings.Cut(string(l), " ")
		if !ok || name == "" {
			continue
		}
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n < 0 {
			continue
		}
		m[name] = n
	}
	return m
}

// RemoteError describes a remote command that ran and failed.
func RemoteError(host string, cmd sshexec.Cmd, res sshexec.Result) error {
	msg := strings.TrimSpace(string(res.Stderr))
	if msg == "" {
		msg = "no error output"
	}
	return fmt.Errorf("%s on %s exited %d: %s", cmd.Args[0], host, res.ExitStatus, msg)
}
