package sshexec_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// The parsed known_hosts, identity and ssh_config files are cached per
// process; an edit between two dials must still be seen by the second.

func TestKnownHostsEditsSeenBetweenChecks(t *testing.T) {
	kh := filepath.Join(t.TempDir(), "known_hosts")
	a, b := mustKey(t).PublicKey(), mustKey(t).PublicKey()
	cfg := sshexec.Config{Host: "pc", Addr: "192.0.2.7:22", KnownHosts: []string{kh}}
	line := func(k ssh.PublicKey) string { return "[192.0.2.7]:22 " + string(ssh.MarshalAuthorizedKey(k)) }
	kind := func(k ssh.PublicKey) sshexec.HostKeyErrorKind {
		t.Helper()
		err := sshexec.CheckHostKey(cfg, k)
		var he *sshexec.HostKeyError
		if err == nil {
			return 0
		}
		if !errors.As(err, &he) {
			t.Fatalf("CheckHostKey: %v", err)
		}
		return he.Kind
	}
	if err := os.WriteFile(kh, []byte(line(a)), 0o600); err != nil {
		t.Fatal(err)
	}
	if k := kind(a); k != 0 {
		t.Fatalf("recorded key: %v", k)
	}
	if k := kind(b); k != sshexec.HostKeyMismatch {
		t.Fatalf("other key: %v, want a mismatch", k)
	}
	// Same size, in place, with the old modification time: only the
	// replacement by rename (a new inode) tells the versions apart.
	fi, _ := os.Stat(kh)
	tmp := kh + ".new"
	if err := os.WriteFile(tmp, []byte(line(b)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, kh); err != nil {
		t.Fatal(err)
	}
	if k := kind(b); k != 0 {
		t.Errorf("after replacing the file, the new key: %v, want accepted", k)
	}
	if k := kind(a); k != sshexec.HostKeyMismatch {
		t.Errorf("after replacing the file, the old key: %v, want a mismatch", k)
	}
	// Appended in place (gpuctl trust): a new size.
	f, _ := os.OpenFile(kh, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(line(a))
	f.Close()
	if k := kind(a); k != 0 {
		t.Errorf("after appending, the old key: %v, want accepted", k)
	}
}

func TestIdentityFileEditSeenBetweenDials(t *testing.T) {
	oldPriv, oldSigner := newEd25519(t)
	newPriv, newSigner := newEd25519(t)
	_, cfg := fake(t, sshtest.Options{AuthorizedKeys: []ssh.PublicKey{newSigner.PublicKey()}})
	id := filepath.Join(t.TempDir(), "id_ed25519")
	cfg.Signers, cfg.IdentityFiles = nil, []string{id}
	// Each version replaces the file by rename, with the same size and
	// modification time: only the inode tells them apart.
	var mtime time.Time
	write := func(priv any) {
		t.Helper()
		blk, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(id+".new", pemEncode(blk), 0o600); err != nil {
			t.Fatal(err)
		}
		if mtime.IsZero() {
			fi, _ := os.Stat(id + ".new")
			mtime = fi.ModTime()
		}
		os.Chtimes(id+".new", mtime, mtime)
		if err := os.Rename(id+".new", id); err != nil {
			t.Fatal(err)
		}
	}
	write(oldPriv)
	ctx := context.Background()
	if c, err := sshexec.Dial(ctx, cfg); err == nil {
		c.Close()
		t.Fatal("dialed with a key the server does not accept")
	} else if !strings.Contains(err.Error(), ssh.FingerprintSHA256(oldSigner.PublicKey())) {
		t.Fatalf("the auth error does not name the offered key: %v", err)
	}
	write(newPriv)
	c, err := sshexec.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial after replacing the identity file: %v", err)
	}
	c.Close()
}

func TestSSHConfigEditSeenBetweenResolves(t *testing.T) {
	inv, home := testInventory(t, "Host gaming-pc\n  HostName 192.0.2.10\n")
	h := &inv.Hosts[0]
	cfg, err := sshexec.ConfigFor(inv, h, sshexec.WithEnv(func(string) string { return "" }, home))
	if err != nil || cfg.Addr != "192.0.2.10:22" {
		t.Fatalf("first: %q %v", cfg.Addr, err)
	}
	f := filepath.Join(home, ".ssh", "config")
	tmp := f + ".new"
	os.WriteFile(tmp, []byte("Host gaming-pc\n  HostName 192.0.2.11\n"), 0o600)
	fi, _ := os.Stat(f)
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	cfg, err = sshexec.ConfigFor(inv, h, sshexec.WithEnv(func(string) string { return "" }, home))
	if err != nil || cfg.Addr != "192.0.2.11:22" {
		t.Errorf("after the edit: %q %v, want 192.0.2.11:22", cfg.Addr, err)
	}
}
