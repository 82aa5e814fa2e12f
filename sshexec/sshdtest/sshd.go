// Package sshdtest starts a real OpenSSH sshd for tests: host keys and an
// sshd_config in t.TempDir(), listening on a free loopback port (or a given
// address, e.g. inside a test's network namespace), logging at DEBUG2 to a
// file that is printed when the test fails. It needs root and
// /usr/sbin/sshd; see wake/waketest.Require.
package sshdtest

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// Path is the sshd binary; OpenSSH requires an absolute path to re-exec.
const Path = "/usr/sbin/sshd"

// Options configures a Server.
type Options struct {
	// HostKeys are private keys (ed25519.PrivateKey, *rsa.PrivateKey,
	// *ecdsa.PrivateKey); default: a new ed25519 and a new RSA-2048 key.
	HostKeys []crypto.Signer
	// AuthorizedKeys may log in; default: a new ed25519 client key
	// (Server.ClientSigner).
	AuthorizedKeys []ssh.PublicKey
	// ListenAddr is host:port to listen on; default 127.0.0.1 and a free port.
	ListenAddr string
	// Wrap, when set, prefixes the sshd command line (e.g. "ip", "netns",
	// "exec", "ns1" to run it in a network namespace).
	Wrap []string
	// ExtraConfig is appended to sshd_config.
	ExtraConfig string
}

// Server is a running sshd.
type Server struct {
	// Addr is where sshd listens (host:port).
	Addr string
	// User is the account the client keys log in as (the current user).
	User string
	// Dir holds the config, keys and log.
	Dir     string
	LogFile string

	hostKeys []ssh.PublicKey
	client   ssh.Signer
	cmd      *exec.Cmd
	waitErr  chan error
	stopOnce sync.Once
}

// Start starts sshd for the test and stops it in t.Cleanup. It skips the
// test (fails it under CI=true) unless running as root with /usr/sbin/sshd.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	waketest.Require(tb, Path)
	s, err := start(tb, opts)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return s
}

// HostKeys are the public halves of sshd's host keys.
func (s *Server) HostKeys() []ssh.PublicKey { return s.hostKeys }

// HostKey returns sshd's host key of type t ("ssh-ed25519", "ssh-rsa"), or nil.
func (s *Server) HostKey(t string) ssh.PublicKey {
	for _, k := range s.hostKeys {
		if k.Type() == t {
			return k
		}
	}
	return nil
}

// ClientSigner is the generated client key (nil when AuthorizedKeys was given).
func (s *Server) ClientSigner() ssh.Signer { return s.client }

// Log returns sshd's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

var (
	penaltiesOnce sync.Once
	penaltiesOK   bool
)

// supportsPerSourcePenalties: OpenSSH 9.8 added PerSourcePenalties (and
// penalises repeated no-auth connections from 127.0.0.1 by default); older
// sshd rejects the keyword.
func supportsPerSourcePenalties(dir string) bool {
	penaltiesOnce.Do(func() {
		cfg := filepath.Join(dir, "probe_config")
		if err := os.WriteFile(cfg, []byte("PerSourcePenalties no\nHostKey "+filepath.Join(dir, "ssh_host_ed25519_key")+"\n"), 0o600); err != nil {
			return
		}
		out, _ := exec.Command(Path, "-t", "-f", cfg).CombinedOutput()
		penaltiesOK = !bytes.Contains(out, []byte("PerSourcePenalties"))
	})
	return penaltiesOK
}

func start(tb testing.TB, opts Options) (*Server, error) {
	dir := tb.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	// Privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("create /run/sshd: %w", err)
	}
	s := &Server{Dir: dir, LogFile: filepath.Join(dir, "sshd.log"), waitErr: make(chan error, 1)}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	s.User = u.Username
	hostConf, err := s.writeHostKeys(opts.HostKeys)
	if err != nil {
		return nil, err
	}
	akFile, err := s.writeAuthorizedKeys(opts.AuthorizedKeys)
	if err != nil {
		return nil, err
	}
	addr := opts.ListenAddr
	for attempt := 0; ; attempt++ {
		if opts.ListenAddr == "" {
			if addr, err = freePort(); err != nil {
				return nil, err
			}
		}
		cfgFile := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgFile, []byte(s.config(hostConf, addr, akFile, opts.ExtraConfig)), 0o600); err != nil {
			return nil, err
		}
		os.Remove(s.LogFile)
		err = s.run(tb, opts.Wrap, cfgFile, addr)
		if err == nil {
			tb.Cleanup(func() {
				s.stop()
				if tb.Failed() {
					tb.Logf("sshd log (%s):\n%s", s.LogFile, s.Log())
				}
			})
			return s, nil
		}
		if opts.ListenAddr != "" || attempt >= 2 || !strings.Contains(s.Log(), "Address already in use") {
			return nil, fmt.Errorf("%w\nsshd log:\n%s", err, s.Log())
		}
	}
}

// writeHostKeys writes keys (default: a new ed25519 and a new RSA-2048
// key) into s.Dir and returns their sshd_config lines.
func (s *Server) writeHostKeys(keys []crypto.Signer) (string, error) {
	if len(keys) == 0 {
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return "", err
		}
		keys = []crypto.Signer{ed, rk}
	}
	var conf strings.Builder
	for i, k := range keys {
		blk, err := ssh.MarshalPrivateKey(k, "")
		if err != nil {
			return "", fmt.Errorf("host key %d: %w", i, err)
		}
		pub, err := ssh.NewPublicKey(k.Public())
		if err != nil {
			return "", err
		}
		name := filepath.Join(s.Dir, fmt.Sprintf("ssh_host_%d_%s_key", i, strings.TrimPrefix(pub.Type(), "ssh-")))
		if i == 0 && pub.Type() == ssh.KeyAlgoED25519 {
			// The probe config in supportsPerSourcePenalties refers to it.
			name = filepath.Join(s.Dir, "ssh_host_ed25519_key")
		}
		if err := os.WriteFile(name, pem.EncodeToMemory(blk), 0o600); err != nil {
			return "", err
		}
		s.hostKeys = append(s.hostKeys, pub)
		fmt.Fprintf(&conf, "HostKey %s\n", name)
	}
	return conf.String(), nil
}

// writeAuthorizedKeys writes the authorized_keys file (default: a new
// ed25519 client key, s.client) and returns its path.
func (s *Server) writeAuthorizedKeys(auth []ssh.PublicKey) (string, error) {
	if len(auth) == 0 {
		_, ck, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		if s.client, err = ssh.NewSignerFromKey(ck); err != nil {
			return "", err
		}
		auth = []ssh.PublicKey{s.client.PublicKey()}
	}
	var ak bytes.Buffer
	for _, k := range auth {
		ak.Write(ssh.MarshalAuthorizedKey(k))
	}
	akFile := filepath.Join(s.Dir, "authorized_keys")
	if err := os.WriteFile(akFile, ak.Bytes(), 0o644); err != nil {
		return "", err
	}
	return akFile, nil
}

// config is sshd_config for listening on addr.
func (s *Server) config(hostConf, addr, akFile, extra string) string {
	cfg := hostConf + fmt.Sprintf(`ListenAddress %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UseDNS no
MaxStartups 100:30:200
LogLevel DEBUG2
`, addr, filepath.Join(s.Dir, "sshd.pid"), akFile)
	if supportsPerSourcePenalties(s.Dir) {
		cfg += "PerSourcePenalties no\n"
	}
	return cfg + extra
}

// run starts sshd in the foreground and waits until it listens.
func (s *Server) run(tb testing.TB, wrap []string, cfgFile, addr string) error {
	args := append(append([]string{}, wrap...), Path, "-D", "-e", "-f", cfgFile, "-E", s.LogFile)
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	s.cmd = cmd
	s.waitErr = make(chan error, 1)
	go func() { s.waitErr <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		if strings.Contains(s.Log(), "Server listening on") {
			s.Addr = addr
			return nil
		}
		select {
		case err := <-s.waitErr:
			s.waitErr <- err
			return fmt.Errorf("sshd exited before listening: %v %s", err, stderr.String())
		case <-time.After(delay): // polling sshd's log for readiness
		}
		if time.Now().After(deadline) {
			s.stop()
			return errors.New("sshd did not report listening within 15s")
		}
	}
}

// Stop stops sshd (also done by t.Cleanup).
func (s *Server) Stop() { s.stop() }

func (s *Server) stop() {
	s.stopOnce.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.waitErr:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.waitErr
		}
	})
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
