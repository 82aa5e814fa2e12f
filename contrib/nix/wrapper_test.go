package nix_test

// The `gpuctl` the NixOS module puts on the PATH: started by root, it runs
// the CLI as the service user, so a `sudo gpuctl …` leaves the state
// directory usable by the services.

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// testAccount creates a system account (the stand-in for the module's gpuctl
// user) and removes it when the test ends.
func testAccount(t *testing.T) *user.User {
	t.Helper()
	waketest.Require(t, "setpriv")
	return waketest.NewAccount(t, "gpuctlw")
}

func TestModuleWrapperRunsAsServiceUser(t *testing.T) {
	u := testAccount(t)
	st := waketest.NewServiceState(t, u, t.TempDir())
	dir, uid := st.Dir, st.UID
	bin := builtGpuctl(t, dir)
	envFile := filepath.Join(dir, "secrets.env")
	if err := os.WriteFile(envFile, []byte("GPUCTL_WOL_PASSWORD_GAMING_PC=0a:0b:0c\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The wrapper the module generates for this account, with the stub
	// store paths replaced by this machine's programs.
	wrapper := func(extra string) string {
		t.Helper()
		r := evalModule(t, fmt.Sprintf(`{ services.gpuctl = { user = %s; group = %s;
		  package = lib.mkForce { outPath = %s; name = "gpuctl"; meta.mainProgram = "gpuctl"; }; }; }) (%s`,
			nixString(u.Username), nixString(u.Username), nixString(filepath.Dir(filepath.Dir(bin))), extra))
		if r.Wrapper == "" {
			t.Fatal("the module defines no gpuctl wrapper")
		}
		text := strings.NewReplacer(
			"/nix/store/00000000000000000000000000000000-util-linux/bin/", "/usr/bin/",
			"/nix/store/00000000000000000000000000000000-coreutils/bin/", "/usr/bin/",
		).Replace(r.Wrapper)
		p := filepath.Join(t.TempDir(), "gpuctl")
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+text), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(prog string, cred *syscall.Credential, args ...string) (string, int) {
		t.Helper()
		return st.Run(t, prog, cred, []string{"PATH=/usr/bin:/bin", "HOME=/root"}, args...)
	}
	rootOwned := st.RootOwned

	w := wrapper("{ }")
	// root types `gpuctl shutdown gaming-pc`: the wrapper runs it as the
	// account, which owns the state directory, so nothing is refused.
	out, _ := run(w, nil, "shutdown", "gaming-pc")
	if strings.Contains(out, "belongs to user") {
		t.Errorf("gpuctl via the wrapper, as root, was refused:\n%s", out)
	}
	out, code := run(w, nil, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Errorf("gpuctl shutdown --if-idle via the wrapper, as root: exit %d\n%s", code, out)
	}
	if f := rootOwned(); len(f) != 0 {
		t.Errorf("root's runs through the wrapper left root-owned files: %q", f)
	}
	if owner, err := st.LockOwner(); err != nil || owner != uint32(uid) {
		t.Errorf("the lock file is not the account's (uid %d): %v", owner, err)
	}
	// Then the service path, as the account itself: not locked out.
	out, code = run(bin, st.Cred, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Errorf("the idle check as %s after root's runs: exit %d\n%s", u.Username, code, out)
	}
	// As the account, the wrapper runs gpuctl unchanged.
	out, code = run(w, st.Cred, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Errorf("the wrapper as %s: exit %d\n%s", u.Username, code, out)
	}

	// With an environmentFile, root's runs get its secrets (here a
	// malformed SecureOn password, which gpuctl names).
	w = wrapper(fmt.Sprintf(`{ services.gpuctl.environmentFile = %s; }`, nixString(envFile)))
	out, code = run(w, nil, "config", "check")
	if code == 0 || !strings.Contains(out, "$GPUCTL_WOL_PASSWORD_GAMING_PC") {
		t.Errorf("gpuctl config check via the wrapper with an environmentFile: exit %d\n%s\nwant it to read GPUCTL_WOL_PASSWORD_GAMING_PC", code, out)
	}
}
