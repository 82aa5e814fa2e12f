package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// StandIns are the commands gpuctl-sim answers as when invoked under their
// name (a symlink): the box's nvidia-smi, docker, findmnt, df, sudo, who
// and ethtool for a real sshd in the end-to-end tier. Everything else on
// the box (sh, touch, sync, rm, stat, cat, find, ss, ip, date) is real.
var StandIns = []string{"nvidia-smi", "docker", "findmnt", "df", "sudo", "who", "ethtool"}

// BoxEnv names the environment variable holding the Box file's path.
const BoxEnv = "GPUCTL_SIM_BOX"

// IsStandIn reports whether argv0 names a stand-in command.
func IsStandIn(argv0 string) bool { return slices.Contains(StandIns, filepath.Base(argv0)) }

// WriteBox writes b for the stand-ins to read.
func WriteBox(file string, b *Box) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// InstallStandIns links every stand-in name in dir to the executable exe.
func InstallStandIns(dir, exe string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range StandIns {
		if err := os.Symlink(exe, filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// StandIn runs the stand-in command argv0 with args for the Box in
// $GPUCTL_SIM_BOX and returns its exit status. sudo -n poweroff writes
// "poweroff" to the Box's PowerSocket, where the simulation takes the box
// down.
func StandIn(argv0 string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	name := filepath.Base(argv0)
	file := getenv(BoxEnv)
	if file == "" {
		fmt.Fprintf(stderr, "%s (gpuctl-sim stand-in): $%s is not set\n", name, BoxEnv)
		return 127
	}
	data, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "%s (gpuctl-sim stand-in): %v\n", name, err)
		return 127
	}
	b := new(Box)
	if err := json.Unmarshal(data, b); err != nil {
		fmt.Fprintf(stderr, "%s (gpuctl-sim stand-in): %s: %v\n", name, file, err)
		return 127
	}
	b.sshConn = getenv("SSH_CONNECTION")
	var powerErr error
	b.powerOff = func() {
		if b.PowerSocket == "" {
			return
		}
		c, err := net.DialTimeout("unix", b.PowerSocket, 5*time.Second)
		if err != nil {
			powerErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, powerErr = io.WriteString(c, "poweroff\n")
	}
	r := b.Run(append([]string{name}, args...))
	if powerErr != nil {
		fmt.Fprintf(stderr, "poweroff: %v\n", powerErr)
		return 1
	}
	io.WriteString(stdout, r.Stdout)
	io.WriteString(stderr, r.Stderr)
	return r.Exit
}
