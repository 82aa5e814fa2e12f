//go:build linux

package main

// The state directory's owner rule, end to end with the built binary: a
// gpuctl started as root must not leave root-owned files in the service
// account's state directory, so the services (running as that account) keep
// working after an admin typed `sudo gpuctl shutdown gaming-pc`.

import (
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// serviceUser creates a system account for the test (the stand-in for the
// NixOS module's and contrib's `gpuctl` user) and removes it afterwards.
func serviceUser(t *testing.T) *user.User {
	t.Helper()
	return waketest.NewAccount(t, "gpuctlt")
}

func TestRootCLIDoesNotLockServicesOut(t *testing.T) {
	u := serviceUser(t)
	st := waketest.NewServiceState(t, u, t.TempDir())
	bin := filepath.Join(st.Dir, "gpuctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + st.State, "GPUCTL_LOG=warn"}
	run := func(cred *syscall.Credential, args ...string) (string, int) {
		t.Helper()
		return st.Run(t, bin, cred, env, args...)
	}
	cfg := st.Config

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
	if rootOwned := st.RootOwned(); len(rootOwned) != 0 {
		t.Errorf("the root run left root-owned files in the state directory: %q", rootOwned)
	}

	// 2. The service path, as the account: the idle timer's command takes
	// the lock and records its state.
	out, code = run(st.Cred, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Fatalf("the idle check as %s after the root run: exit %d\n%s", u.Username, code, out)
	}
	got, err := st.LockOwner()
	if err != nil {
		t.Fatalf("the idle check took no lock: %v", err)
	}
	if got != uint32(st.UID) {
		t.Errorf("lock file owned by uid %d, want the account's %d", got, st.UID)
	}

	// 3. Root reading is still fine (status writes nothing for an off host).
	if out, code := run(nil, "config", "check"); code != 0 {
		t.Errorf("gpuctl config check as root: exit %d\n%s", code, out)
	}
}
