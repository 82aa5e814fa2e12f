package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// wakeStopped runs a wake that must stop at once on a permanent SSH error
// and checks what every such wake must say, and must not.
func wakeStopped(t *testing.T, pc *simPC) (stdout, stderr string) {
	t.Helper()
	code, out, errs := pc.run(t, "wake", "gaming-pc")
	t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	if code != ExitFailure {
		t.Errorf("exit %d, want %d (stopped on an SSH error waiting cannot fix)", code, ExitFailure)
	}
	for _, bad := range []string{"not ready after", "Wake-on-LAN", "wol listen"} {
		if strings.Contains(errs, bad) {
			t.Errorf("stderr says %q, which does not apply to a host that answered:\n%s", bad, errs)
		}
	}
	if !strings.Contains(errs, "gpuctl: wake gaming-pc stopped: ") {
		t.Errorf("no lowercase error naming the host:\n%s", errs)
	}
	if !strings.Contains(errs, "done: stopped: ") {
		t.Errorf("the last progress line does not say the wake stopped:\n%s", errs)
	}
	if strings.ContainsAny(out+errs, "\x1b\r") {
		t.Errorf("control characters in non-TTY output: %q", out+errs)
	}
	return out, errs
}

func fingerprint(k ssh.PublicKey) string { return ssh.FingerprintSHA256(k) }

// A host whose key differs from the inventory's host_key: the message gives
// both fingerprints, where the old one is recorded and how to fix it.
func TestWakeCLIHostKeyMismatchPinned(t *testing.T) {
	pc := newSimPC(t)
	other, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	pc.bootKey = other
	_, errs := wakeStopped(t, pc)
	for _, want := range []string{
		"host key mismatch",
		"the host presents ssh-ed25519 " + fingerprint(other.PublicKey()),
		"ssh-ed25519 " + fingerprint(pc.hostKey.PublicKey()) + " is on record in " + pc.config + ` (host "gaming-pc" host_key)`,
		"ssh-keygen -lf",
		"if it matches, put the new key in " + pc.config,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// The same with the key recorded in known_hosts: the fix is gpuctl trust
// HOST --replace.
func TestWakeCLIHostKeyMismatchKnownHosts(t *testing.T) {
	pc := newSimPC(t)
	other, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	pc.bootKey = other
	inv, err := os.ReadFile(pc.config)
	if err != nil {
		t.Fatal(err)
	}
	noPin := regexp.MustCompile(`(?m)^host_key = .*\n`).ReplaceAll(inv, nil)
	if len(noPin) == len(inv) {
		t.Fatal("no host_key line in the simulated PC's inventory")
	}
	if err := os.WriteFile(pc.config, noPin, 0o600); err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(pc.dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(pc.sshAddr)}, pc.hostKey.PublicKey()) + "\n"
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs := wakeStopped(t, pc)
	for _, want := range []string{
		"host key mismatch at " + pc.sshAddr,
		fingerprint(other.PublicKey()),
		fingerprint(pc.hostKey.PublicKey()) + " is on record in " + kh + ":1",
		"if it matches, run: gpuctl trust gaming-pc --replace",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// A login refused: the message names the user and the keys offered.
func TestWakeCLIAuthRefused(t *testing.T) {
	pc := newSimPC(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pc.authKey = other
	ours, err := ssh.NewPublicKey(pc.client)
	if err != nil {
		t.Fatal(err)
	}
	_, errs := wakeStopped(t, pc)
	for _, want := range []string{
		`refused the login as "gpuctl"`,
		filepath.Join(pc.dir, "id_ed25519") + " ssh-ed25519 " + fingerprint(ours),
		"authorized_keys",
		"[ssh].identity_files",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}
