package sshexec_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func testInventory(t *testing.T, sshConfig string) (*inventory.Inventory, string) {
	t.Helper()
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	cfgFile := "none"
	if sshConfig != "" {
		cfgFile = filepath.Join(home, ".ssh", "config")
		os.WriteFile(cfgFile, []byte(sshConfig), 0o600)
	}
	inv := &inventory.Inventory{
		Path:     "/etc/gpuctl/gpuctl.toml",
		StateDir: filepath.Join(home, "state"),
		SSH: inventory.SSH{User: "gpuctl", KnownHosts: []string{filepath.Join(home, ".ssh", "known_hosts")},
			ConnectTimeout: inventory.Duration(7 * time.Second), Config: cfgFile},
		Hosts: []inventory.Host{{Name: "pc", Address: "gaming-pc", SSHPort: 22, SSHUser: "gpuctl"}},
	}
	return inv, home
}

func TestConfigForSSHConfig(t *testing.T) {
	inv, home := testInventory(t, `
Host gaming-pc
  HostName 192.0.2.10
  Port 2222
  User someone
  IdentityFile ~/.ssh/pc_key
  IdentitiesOnly yes
  ProxyJump admin@bastion:2200

Host bastion
  HostName 192.0.2.1
  IdentityFile ~/.ssh/bastion_key
`)
	os.WriteFile(filepath.Join(home, ".ssh", "pc_key"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "bastion_key"), []byte("x"), 0o600)
	cfg, err := sshexec.ConfigFor(inv, &inv.Hosts[0], sshexec.WithEnv(func(k string) string {
		return map[string]string{"SSH_AUTH_SOCK": "/run/agent.sock"}[k]
	}, home))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "192.0.2.10:2222" || cfg.User != "gpuctl" || cfg.Host != "pc" || cfg.TrustHint != "gpuctl trust pc" {
		t.Errorf("addr %s user %s host %s hint %q", cfg.Addr, cfg.User, cfg.Host, cfg.TrustHint)
	}
	if !slices.Equal(cfg.IdentityFiles, []string{filepath.Join(home, ".ssh", "pc_key")}) || !cfg.IdentitiesOnly {
		t.Errorf("identity files %q only %v", cfg.IdentityFiles, cfg.IdentitiesOnly)
	}
	if cfg.AgentSocket != "/run/agent.sock" || cfg.ConnectTimeout != 7*time.Second {
		t.Errorf("agent %q timeout %v", cfg.AgentSocket, cfg.ConnectTimeout)
	}
	wantKH := []string{filepath.Join(home, ".ssh", "known_hosts"), filepath.Join(home, "state", "known_hosts")}
	if !slices.Equal(cfg.KnownHosts, wantKH) {
		t.Errorf("known hosts %q, want %q", cfg.KnownHosts, wantKH)
	}
	if len(cfg.Jumps) != 1 {
		t.Fatalf("jumps %+v", cfg.Jumps)
	}
	j := cfg.Jumps[0]
	if j.Addr != "192.0.2.1:2200" || j.User != "admin" || j.IdentityFiles[0] != filepath.Join(home, ".ssh", "bastion_key") || !slices.Equal(j.KnownHosts, wantKH) {
		t.Errorf("jump %+v", j)
	}

	// An explicit non-default ssh_port wins over ssh_config's Port.
	inv.Hosts[0].SSHPort = 2022
	cfg, _ = sshexec.ConfigFor(inv, &inv.Hosts[0], sshexec.WithEnv(os.Getenv, home))
	if cfg.Addr != "192.0.2.10:2022" {
		t.Errorf("addr %s, want the inventory's port", cfg.Addr)
	}
}

func TestConfigForRefusesWhatItCannotHonour(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"Host gaming-pc\n  ProxyCommand nc %h %p\n", "ProxyCommand"},
		{"Host gaming-pc\n  HostKeyAlias other\n", "HostKeyAlias"},
		{"Match exec \"true\"\n  User x\n", "Match"},
		{"Host gaming-pc\n  HostName %r.example\n", "%r"},
		{"Host gaming-pc\n  ProxyJump ssh://bastion\n", "ssh://"},
	} {
		inv, home := testInventory(t, tc.conf)
		_, err := sshexec.ConfigFor(inv, &inv.Hosts[0], sshexec.WithEnv(os.Getenv, home))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: err = %v, want one naming %s", tc.conf, err, tc.want)
		}
	}
}

func TestConfigForDefaultsAndPinnedKey(t *testing.T) {
	inv, home := testInventory(t, "")
	os.MkdirAll(inv.StateDir, 0o700)
	for _, f := range []string{filepath.Join(inv.StateDir, "id_ed25519"), filepath.Join(home, ".ssh", "id_rsa")} {
		os.WriteFile(f, []byte("x"), 0o600)
	}
	k := mustKey(t).PublicKey()
	inv.Hosts[0].HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	cfg, err := sshexec.ConfigFor(inv, &inv.Hosts[0], sshexec.WithEnv(func(string) string { return "" }, home))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(inv.StateDir, "id_ed25519"), filepath.Join(home, ".ssh", "id_rsa")}
	if !slices.Equal(cfg.IdentityFiles, want) || cfg.AgentSocket != "" || cfg.Addr != "gaming-pc:22" {
		t.Errorf("identity files %q agent %q addr %s", cfg.IdentityFiles, cfg.AgentSocket, cfg.Addr)
	}
	if cfg.HostKey == nil || !strings.Contains(cfg.HostKeySource, "gpuctl.toml") {
		t.Errorf("pinned key %v from %q", cfg.HostKey, cfg.HostKeySource)
	}
	// A configured identity file that is missing is a config error.
	inv.SSH.IdentityFiles = []string{filepath.Join(home, "missing")}
	if _, err := sshexec.ConfigFor(inv, &inv.Hosts[0], sshexec.WithEnv(os.Getenv, home)); err == nil || !strings.Contains(err.Error(), "identity_files") {
		t.Errorf("missing identity file: %v", err)
	}
}
