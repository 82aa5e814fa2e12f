package nix_test

// The `gpuctl` the NixOS module puts on the PATH: started by root, it runs
// the CLI as the service user, so a `sudo gpuctl …` leaves the state
// directory usable by the services.

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

// testAccount creates a system account (the stand-in for the module's gpuctl
// user) and removes it when the test ends.
func testAccount(t *testing.T) *user.User {
	t.Helper()
	waketest.Require(t, "useradd", "userdel", "setpriv")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "gpuctlw" + hex.EncodeToString(b)
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

func TestModuleWrapperRunsAsServiceUser(t *testing.T) {
	u := testAccount(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the account must reach its files
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := builtGpuctl(t, dir)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, uid, gid); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // gaming-pc's SSH port refuses: the box is off
	cfg := filepath.Join(dir, "gpuctl.toml")
	inv := fmt.Sprintf("state_dir = %q\n[[host]]\nname = \"gaming-pc\"\non_demand = true\nmac = \"a8:a1:59:12:34:56\"\naddress = \"127.0.0.1\"\nssh_port = %d\nwol_to = [\"127.0.0.1:9\"]\n", state, port)
	if err := os.WriteFile(cfg, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
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
		cmd := exec.Command(prog, append([]string{"--config", cfg}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s %s: %v", prog, strings.Join(args, " "), err)
		}
		return out.String(), cmd.ProcessState.ExitCode()
	}
	rootOwned := func() []string {
		var found []string
		_ = filepath.Walk(state, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
				found = append(found, p)
			}
			return nil
		})
		return found
	}

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
	if fi, err := os.Stat(filepath.Join(state, "locks", "gaming-pc.lock")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Errorf("the lock file is not the account's: %v", err)
	}
	// Then the service path, as the account itself: not locked out.
	out, code = run(bin, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, "shutdown", "--if-idle", "gaming-pc")
	if code != 0 {
		t.Errorf("the idle check as %s after root's runs: exit %d\n%s", u.Username, code, out)
	}
	// As the account, the wrapper runs gpuctl unchanged.
	out, code = run(w, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, "shutdown", "--if-idle", "gaming-pc")
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
