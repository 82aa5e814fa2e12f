//go:build linux

package main

// The state directory's owner rule, end to end with the built binary: a
// gpuctl started as root must not leave root-owned files in the service
// account's state directory, so the services (running as that account) keep
// working after an admin typed `sudo gpuctl shutdown gaming-pc`.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// serviceUser creates a system account for the test (the stand-in for the
// NixOS module's and contrib's `gpuctl` user) and removes it afterwards.
func serviceUser(t *testing.T) *user.User {
	t.Helper()
	waketest.Require(t, "useradd", "userdel")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "gpuctlt" + hex.EncodeToString(b)
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRootCLIDoesNotLockServicesOut(t *testing.T) {
	u := serviceUser(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	dir := t.TempDir()
	// The account must reach its state directory (t.TempDir's parent is 0700).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "gpuctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The state directory as StateDirectory= leaves it: 0700, the account's.
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, uid, gid); err != nil {
		t.Fatal(err)
	}
	// gaming-pc's SSH port refuses connections: the box is off, so an idle
	// check ends at once (after taking the host lock).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(dir, "gpuctl.toml")
	inv := fmt.Sprintf(`state_dir = %q
[[host]]
name = "gaming-pc"
on_demand = true
mac = "a8:a1:59:12:34:56"
address = "127.0.0.1"
ssh_port = %d
wol_to = ["127.0.0.1:9"]
`, state, port)
	if err := os.WriteFile(cfg, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(cred *syscall.Credential, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--config", cfg}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + state, "GPUCTL_LOG=warn"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("gpuctl %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), cmd.ProcessState.ExitCode()
	}
	asService := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}

	// 1. The admin, as root, runs a command that takes the host lock and
	// writes state. It is refused, names the command to run instead, and
	// writes nothing.
	out, code := run(nil, "shutdown", "gaming-pc")
	if code == 0 {
		t.Fatalf("gpuctl shutdown as root in %s's state directory succeeded:\n%s", u.Username, out)
	}
	want := "run it as that user, e.g. `sudo -u " + u.Username + " gpuctl --config " + cfg + " shutdown gaming-pc`"
	if !strings.Contains(out, "belongs to user "+u.Username) || !strings.Contains(out, want) {
		t.Errorf("root run said:\n%s\nwant it to name the owner and %s", out, want)
	}
	var rootOwned []string
	_ = filepath.Walk(state, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			rootOwned = append(rootOwned, p)
		}
		return nil
	})
	if len(rootOwned) != 0 {
		t.Errorf("the root run left root-owned files in the state directory: %q", rootOwned)
	}

	// 2. The service path, as the account: the idle timer's command takes
	// the lock and records its state.
	out, code = run(asService, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Fatalf("the idle check as %s after the root run: exit %d\n%s", u.Username, code, out)
	}
	fi, err := os.Stat(filepath.Join(state, "locks", "gaming-pc.lock"))
	if err != nil {
		t.Fatalf("the idle check took no lock: %v", err)
	}
	if got := fi.Sys().(*syscall.Stat_t).Uid; got != uint32(uid) {
		t.Errorf("lock file owned by uid %d, want the account's %d", got, uid)
	}

	// 3. Root reading is still fine (status writes nothing for an off host).
	if out, code := run(nil, "config", "check"); code != 0 {
		t.Errorf("gpuctl config check as root: exit %d\n%s", code, out)
	}
}
