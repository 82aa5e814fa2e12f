package sshexec_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// hostCert signs host's key with ca for the given principals.
func hostCert(t *testing.T, ca, host ssh.Signer, principals ...string) ssh.Signer {
	t.Helper()
	cert := &ssh.Certificate{
		Key: host.PublicKey(), CertType: ssh.HostCert, KeyId: "gpuctl-test",
		ValidPrincipals: principals, ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, host)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A known_hosts @cert-authority line that covers the host is how a fleet
// trusts host certificates. The CA's key on that line says nothing about the
// type of the host's own key: asking the server for the CA key's type (as if
// it were a plain key on record) makes it present its plain key, which no
// line lists, and the host is refused as a "HOST KEY MISMATCH" against the
// CA key.
func TestCertAuthorityLineTrustsHostCertificate(t *testing.T) {
	ca := mustKey(t)
	hostKey := mustKey(t)
	// The server has a plain ed25519 key and a certificate for it, as sshd
	// with HostKey and HostCertificate.
	s := sshtest.New(t, sshtest.Options{HostKeys: []ssh.Signer{hostKey, hostCert(t, ca, hostKey, "127.0.0.1")}})
	tg := target{addr: s.Addr(), user: "gpuctl", signer: s.ClientSigner()}
	pattern := knownhosts.Normalize(s.Addr()) // [127.0.0.1]:port
	caLine := "@cert-authority " + pattern + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	cfg := tg.config(t, caLine)
	cfg.ConnectTimeout = 5 * time.Second
	c := dial(t, cfg)
	cert, ok := c.HostKey().(*ssh.Certificate)
	if !ok {
		t.Fatalf("verified host key is a plain %s, want the host certificate", c.HostKey().Type())
	}
	if string(cert.SignatureKey.Marshal()) != string(ca.PublicKey().Marshal()) {
		t.Errorf("certificate signed by %s, want the CA", ssh.FingerprintSHA256(cert.SignatureKey))
	}

	// A revoked host key is refused, and said to be, inside a certificate
	// the CA vouches for.
	revoked := "@revoked * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey())))
	if err := os.WriteFile(cfg.KnownHosts[0], []byte(caLine+"\n"+revoked+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sshexec.Dial(context.Background(), cfg); !isKind(err, sshexec.HostKeyRevoked) {
		t.Fatalf("Dial with the host key @revoked = %v, want a revoked HostKeyError", err)
	}

	// A certificate from another CA is refused as an unknown host, showing
	// the plain key that gpuctl trust would record (as OpenSSH, which
	// falls back to the certificate's plain key).
	other := mustKey(t)
	otherCA := "@cert-authority " + pattern + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey())))
	if err := os.WriteFile(cfg.KnownHosts[0], []byte(otherCA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sshexec.Dial(context.Background(), cfg)
	var he *sshexec.HostKeyError
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyUnknown || string(he.Key.Marshal()) != string(hostKey.PublicKey().Marshal()) {
		t.Fatalf("Dial with another CA on record = %v, want an unknown-host HostKeyError showing the plain key", err)
	}

	// ... and accepted once that plain key is on record too.
	if err := os.WriteFile(cfg.KnownHosts[0], []byte(otherCA+"\n"+tg.knownLine(hostKey.PublicKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dial(t, cfg)

	// A different plain key on record beside the CA line is a mismatch
	// that names that key, not the CA's.
	stale := mustKey(t).PublicKey()
	if err := os.WriteFile(cfg.KnownHosts[0], []byte(otherCA+"\n"+tg.knownLine(stale)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = sshexec.Dial(context.Background(), cfg)
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyMismatch || len(he.Known) != 1 || he.Known[0].Line != 2 {
		t.Fatalf("Dial with a stale plain key beside another CA = %v (known %v), want a mismatch naming line 2 only", err, he.Known)
	}
}

func isKind(err error, k sshexec.HostKeyErrorKind) bool {
	var he *sshexec.HostKeyError
	return errors.As(err, &he) && he.Kind == k
}
