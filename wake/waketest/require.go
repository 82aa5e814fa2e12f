// Package waketest holds helpers for the privileged test tiers: real OpenSSH
// sshd and Linux network namespaces. Outside CI a missing prerequisite skips
// the test; with CI=true it fails it, because CI must run every tier.
package waketest

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where no tier may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips (or, in CI, fails) the test unless it runs as root and every
// named program is on PATH (or at the absolute path given).
func Require(tb testing.TB, programs ...string) {
	tb.Helper()
	if testing.Short() && !InCI() {
		tb.Skip("privileged tier skipped with -short")
	}
	if os.Geteuid() != 0 {
		missing(tb, "root (network namespaces, raw sockets and sshd need it)")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing(tb, p+" (apt-get install "+packageOf(p)+")")
		}
	}
}

// RequireProgram is Require without the root check.
func RequireProgram(tb testing.TB, programs ...string) {
	tb.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing(tb, p+" (apt-get install "+packageOf(p)+")")
		}
	}
}

func missing(tb testing.TB, what string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("CI=true but this tier's prerequisite is missing: %s", what)
	}
	tb.Skipf("needs %s", what)
}

func packageOf(p string) string {
	switch p {
	case "ip":
		return "iproute2"
	case "sshd", "/usr/sbin/sshd", "ssh", "ssh-keygen":
		return "openssh-server openssh-client"
	case "nix-instantiate", "nix":
		return "nix-bin"
	case "nginx":
		return "nginx-light"
	case "systemd-analyze":
		return "systemd"
	case "ethtool":
		return "ethtool"
	}
	return p
}
