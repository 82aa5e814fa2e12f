package cli

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/controller/testlog"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// main cancels the root context on SIGINT and thereby keeps the process
// alive: Ctrl-C at the "Trust it?" prompt must end gpuctl trust, not wait
// for a line that never comes.
func TestTrustPromptEndsOnInterrupt(t *testing.T) {
	_, cfg, kh := trustSetup(t)
	stdin, typist := io.Pipe() // a terminal nobody types into
	defer typist.Close()
	var errb testlog.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &Env{Stdout: io.Discard, Stderr: &errb, Stdin: stdin, StdinTTY: true, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() { done <- Run(ctx, e, []string{"gpuctl", "--config", cfg, "trust", "--timeout", "5s", "pc"}) }()

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), "Trust it?") {
		if time.Now().After(deadline) {
			t.Fatalf("no prompt after 10s; stderr %q", errb.String())
		}
		time.Sleep(5 * time.Millisecond) // polling for the prompt, not timing
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != ExitInterrupted {
			t.Errorf("exit %d, want %d; stderr %q", code, ExitInterrupted, errb.String())
		}
	case <-time.After(10 * time.Second):
		typist.Close() // let Run finish so the test can end
		<-done
		t.Fatal("gpuctl trust still waiting at the prompt 10s after the interrupt")
	}
	if _, err := os.Stat(kh); err == nil {
		t.Error("known_hosts written although nobody answered")
	}
}

// A host with a certificate from a CA that a @cert-authority line names for
// another fleet: gpuctl trust offers, and records, the plain host key that
// `ssh-keygen -lf` shows on the host, never the certificate.
func TestTrustRecordsPlainKeyOfUnvouchedCertificate(t *testing.T) {
	hostKey, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := sshtest.NewEd25519Signer()
	otherCA, _ := sshtest.NewEd25519Signer()
	cert := &ssh.Certificate{Key: hostKey.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"127.0.0.1"},
		ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := sshtest.New(t, sshtest.Options{HostKeys: []ssh.Signer{hostKey, certSigner}})
	host, port, _ := net.SplitHostPort(srv.Addr())
	dir := t.TempDir()
	userKH := filepath.Join(dir, "user_known_hosts")
	caLine := "@cert-authority " + knownhosts.Normalize(srv.Addr()) + " " + string(ssh.MarshalAuthorizedKey(otherCA.PublicKey()))
	if err := os.WriteFile(userKH, []byte(caLine), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeInventory(t, fmt.Sprintf("state_dir = %q\n[ssh]\nknown_hosts = [%q]\nconfig = \"none\"\n[[host]]\nname = \"pc\"\naddress = %q\nssh_port = %s\n",
		filepath.Join(dir, "state"), userKH, host, port))
	fp := ssh.FingerprintSHA256(hostKey.PublicKey())
	code, stdout, stderr := runTrustCLI(t, false, "", "--config", cfg, "trust", "--yes", "--fingerprint", fp, "pc")
	if code != ExitOK || !strings.Contains(stdout, fp) {
		t.Fatalf("trust --fingerprint %s: exit %d stdout %q stderr %q", fp, code, stdout, stderr)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "state", "known_hosts"))
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))); !strings.Contains(string(data), want) || strings.Contains(string(data), "cert-v01") {
		t.Errorf("known_hosts = %q, want the plain key %q", data, want)
	}
	// The host is then reachable: the certificate's plain key is on record.
	code, _, stderr = runTrustCLI(t, false, "", "--config", cfg, "trust", "pc")
	if code != ExitOK || !strings.Contains(stderr, "already trusted") {
		t.Errorf("second trust: exit %d %q", code, stderr)
	}
}
