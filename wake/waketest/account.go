package waketest

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"os/user"
	"testing"
)

// NewAccount creates a system account named prefix+random (a stand-in for
// the `gpuctl` service user of the NixOS module and contrib's units) and
// deletes it when the test ends. It calls Require(tb, "useradd",
// "userdel") first.
func NewAccount(tb testing.TB, prefix string) *user.User {
	tb.Helper()
	Require(tb, "useradd", "userdel")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		tb.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			tb.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}
