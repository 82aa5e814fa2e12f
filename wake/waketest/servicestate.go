package waketest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ollamalive/gpuctl/controller/statedir"
)

// ServiceState is a service account's gpuctl setup for the tests of the
// state directory's owner rule: a state directory as systemd's
// StateDirectory= leaves it (0700, the account's), under a directory the
// account can reach, and an inventory (Config) naming one on-demand host,
// gaming-pc, whose SSH port refuses connections: the box is off, so an idle
// check ends at once after taking the host lock.
type ServiceState struct {
	Dir, State, Config string
	UID, GID           int
	// Cred runs a command as the account.
	Cred *syscall.Credential
}

// NewServiceState sets up u's state in dir (a t.TempDir: its parent and
// itself are opened to 0755 for the account).
func NewServiceState(tb testing.TB, u *user.User, dir string) *ServiceState {
	tb.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	s := &ServiceState{Dir: dir, State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "gpuctl.toml"),
		UID: uid, GID: gid, Cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Mkdir(s.State, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chown(s.State, uid, gid); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	inv := fmt.Sprintf(`state_dir = %q
[[host]]
name = "gaming-pc"
on_demand = true
mac = "a8:a1:59:12:34:56"
address = "127.0.0.1"
ssh_port = %d
wol_to = ["127.0.0.1:9"]
`, s.State, port)
	if err := os.WriteFile(s.Config, []byte(inv), 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Run runs prog --config Config args… with env and cred (nil: as the test,
// root); it returns stdout and stderr together, and the exit code.
func (s *ServiceState) Run(tb testing.TB, prog string, cred *syscall.Credential, env []string, args ...string) (string, int) {
	tb.Helper()
	cmd := exec.Command(prog, append([]string{"--config", s.Config}, args...)...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		tb.Fatalf("%s %s: %v", prog, strings.Join(args, " "), err)
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// RootOwned lists the files and directories under State that root owns.
func (s *ServiceState) RootOwned() []string {
	var found []string
	_ = filepath.Walk(s.State, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// LockOwner is the uid owning gaming-pc's lock file, or an error when
// there is none.
func (s *ServiceState) LockOwner() (uint32, error) {
	fi, err := os.Stat(statedir.LockPath(s.State, "gaming-pc"))
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Uid, nil
}
