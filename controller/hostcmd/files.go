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

// StatCmd asks for the size of each path ("<bytes> <path>" per line).
func StatCmd(paths ...string) sshexec.Cmd {
	return sshexec.Cmd{Args: append([]string{"stat", "-c", "%s %n", "--"}, paths...), Timeout: remoteTimeout, MaxOutput: 1 << 20}
}

// CatCmd reads one (small) file.
func CatCmd(p string) sshexec.Cmd {
	return sshexec.Cmd{Args: []string{"cat", "--", p}, Timeout: remoteTimeout, MaxOutput: 1 << 20}
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
