package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// trustSetup starts a fake SSH server and an inventory pointing at it, with
// its own empty known_hosts and state_dir.
func trustSetup(t *testing.T) (srv *sshtest.Server, cfg, stateKH string) {
	t.Helper()
	srv = sshtest.New(t, sshtest.Options{})
	host, port, _ := net.SplitHostPort(srv.Addr())
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg = writeInventory(t, fmt.Sprintf(`state_dir = %q
[ssh]
known_hosts = [%q]
config = "none"

[[host]]
name = "pc"
address = %q
ssh_port = %s
`, state, filepath.Join(dir, "user_known_hosts"), host, port))
	return srv, cfg, filepath.Join(state, "known_hosts")
}

func runTrustCLI(t *testing.T, tty bool, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), StdinTTY: tty,
		Getenv: func(string) string { return "" }}
	code := Run(context.Background(), e, append([]string{"gpuctl"}, args...))
	return code, out.String(), errb.String()
}

func TestTrust(t *testing.T) {
	srv, cfg, kh := trustSetup(t)
	fp := ssh.FingerprintSHA256(srv.HostKey())

	// Not a terminal and no --yes: refuse, and say what to run.
	code, stdout, stderr := runTrustCLI(t, false, "", "--config", cfg, "trust", "pc")
	if code != ExitUsage || !strings.Contains(stdout, fp) || !strings.Contains(stderr, "gpuctl trust --yes --fingerprint "+fp+" pc") {
		t.Fatalf("non-tty: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	// --yes without --fingerprint is a usage error.
	if code, _, _ := runTrustCLI(t, false, "", "--config", cfg, "trust", "--yes", "pc"); code != ExitUsage {
		t.Errorf("--yes alone: exit %d", code)
	}
	// A wrong fingerprint is refused.
	if code, _, stderr := runTrustCLI(t, false, "", "--config", cfg, "trust", "--yes", "--fingerprint", "SHA256:nope", "pc"); code != ExitFailure || !strings.Contains(stderr, "not the expected") {
		t.Errorf("wrong fingerprint: exit %d %q", code, stderr)
	}
	// A TTY answer other than yes records nothing.
	if code, _, _ := runTrustCLI(t, true, "n\n", "--config", cfg, "trust", "pc"); code != ExitFailure {
		t.Errorf("answer n: exit %d", code)
	}
	if _, err := os.Stat(kh); err == nil {
		t.Fatal("known_hosts written without confirmation")
	}
	// Confirmed on a TTY.
	code, _, stderr = runTrustCLI(t, true, "yes\n", "--config", cfg, "trust", "pc")
	if code != ExitOK || !strings.Contains(stderr, "Trust it?") {
		t.Fatalf("tty yes: exit %d %q", code, stderr)
	}
	st, err := os.Stat(kh)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts %v mode %v", err, st)
	}
	if d, _ := os.Stat(filepath.Dir(kh)); d.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", d.Mode().Perm())
	}
	// Again: already trusted, file unchanged.
	before, _ := os.ReadFile(kh)
	if code, _, stderr := runTrustCLI(t, false, "", "--config", cfg, "trust", "pc"); code != ExitOK || !strings.Contains(stderr, "already trusted") {
		t.Errorf("second trust: exit %d %q", code, stderr)
	}
	if after, _ := os.ReadFile(kh); !bytes.Equal(before, after) {
		t.Errorf("known_hosts changed: %q -> %q", before, after)
	}

	// The host key changes: refused without --replace, naming both keys.
	newKey := srv.RotateHostKey()
	nfp := ssh.FingerprintSHA256(newKey)
	code, _, stderr = runTrustCLI(t, false, "", "--config", cfg, "trust", "--yes", "--fingerprint", nfp, "pc")
	if code != ExitFailure || !strings.Contains(stderr, fp) || !strings.Contains(stderr, nfp) || !strings.Contains(stderr, "--replace") || !strings.Contains(stderr, kh+":1") {
		t.Fatalf("changed key without --replace: exit %d %q", code, stderr)
	}
	code, _, stderr = runTrustCLI(t, false, "", "--config", cfg, "trust", "--yes", "--replace", "--fingerprint", nfp, "pc")
	if code != ExitOK || !strings.Contains(stderr, "replacing") {
		t.Fatalf("--replace: exit %d %q", code, stderr)
	}
	data, _ := os.ReadFile(kh)
	if n := strings.Count(string(data), "\n"); n != 1 || !strings.Contains(string(data), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newKey)))) {
		t.Errorf("known_hosts after replace:\n%s", data)
	}
}

func TestTrustUnreachable(t *testing.T) {
	srv := sshtest.New(t, sshtest.Options{Silent: true})
	host, port, _ := net.SplitHostPort(srv.Addr())
	cfg := writeInventory(t, fmt.Sprintf("state_dir = %q\n[ssh]\nconfig = \"none\"\n[[host]]\nname = \"pc\"\naddress = %q\nssh_port = %s\n", t.TempDir(), host, port))
	code, _, stderr := runTrustCLI(t, false, "", "--config", cfg, "trust", "--timeout", "300ms", "pc")
	if code != ExitUnreachable {
		t.Errorf("exit %d %q, want 3", code, stderr)
	}
}
