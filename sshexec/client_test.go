package sshexec_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// fake starts an sshtest server and a config that trusts it.
func fake(t *testing.T, opts sshtest.Options) (*sshtest.Server, sshexec.Config) {
	t.Helper()
	s := sshtest.New(t, opts)
	tg := target{addr: s.Addr(), user: "gpuctl", hostKeys: s.HostKeys(), signer: s.ClientSigner()}
	cfg := tg.config(t, tg.knownLine(s.HostKey()))
	cfg.ConnectTimeout = 5 * time.Second
	return s, cfg
}

func TestSilentPortTimesOut(t *testing.T) {
	s := sshtest.New(t, sshtest.Options{Silent: true})
	cfg := sshexec.Config{Host: "mute", Addr: s.Addr(), User: "u", ConnectTimeout: time.Second,
		KnownHosts: []string{filepath.Join(t.TempDir(), "none")}, Signers: []ssh.Signer{mustKey(t)}}
	start := time.Now()
	_, err := sshexec.Dial(context.Background(), cfg)
	elapsed := time.Since(start)
	var oe *sshexec.OpError
	if !errors.As(err, &oe) || oe.Op != "handshake" || !oe.Timeout() || !sshexec.IsTimeout(err) {
		t.Fatalf("Dial error = %v, want a handshake timeout OpError", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	// Generous real-time bound (the synctest variant below is exact).
	if elapsed < time.Second || elapsed > 2*time.Second {
		t.Errorf("Dial took %v, want the 1s connect timeout (±1s)", elapsed)
	}
}

// The same against a peer that never speaks, on a synthetic clock: the
// handshake is cut at exactly ConnectTimeout.
func TestSilentPeerTimesOutExactly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var peers []net.Conn
		cfg := sshexec.Config{Host: "mute", Addr: "192.0.2.1:22", User: "u", ConnectTimeout: 3 * time.Second,
			Signers: []ssh.Signer{mustKey(t)},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				a, b := net.Pipe()
				peers = append(peers, b)
				go io.Copy(io.Discard, b) // reads the client banner, never answers
				return a, nil
			}}
		start := time.Now()
		_, err := sshexec.Dial(context.Background(), cfg)
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("Dial returned after %v, want exactly 3s", got)
		}
		if !sshexec.IsTimeout(err) {
			t.Errorf("Dial error = %v, want a timeout", err)
		}
		for _, p := range peers {
			p.Close()
		}
	})
}

func TestBlackHoleCutByKeepalive(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("hang", sshtest.Reply{Fault: sshtest.BlackHole})
	cfg.KeepaliveInterval, cfg.KeepaliveTimeout, cfg.KeepaliveMisses = 50*time.Millisecond, 50*time.Millisecond, 3
	c := dial(t, cfg)
	// No command timeout and no context deadline: only keepalives can end it.
	_, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"hang"}})
	if !errors.Is(err, sshexec.ErrKeepalive) || !sshexec.IsTimeout(err) {
		t.Fatalf("Run error = %v, want ErrKeepalive", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("client not closed after keepalive failures")
	}
	if _, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"true"}}); !errors.Is(err, sshexec.ErrKeepalive) {
		t.Errorf("Run on the dead client = %v, want the keepalive error", err)
	}
}

func TestKeepaliveKeepsHealthyConnection(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("slow", sshtest.Reply{Fault: sshtest.Stall})
	cfg.KeepaliveInterval, cfg.KeepaliveTimeout, cfg.KeepaliveMisses = 20*time.Millisecond, time.Second, 2
	c := dial(t, cfg)
	// The command stalls but the connection answers keepalives; the command
	// timeout (not keepalive) ends it, well after several keepalive rounds.
	_, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"slow"}, Timeout: 300 * time.Millisecond})
	if errors.Is(err, sshexec.ErrKeepalive) || !sshexec.IsTimeout(err) {
		t.Fatalf("Run error = %v, want a command timeout, not a keepalive failure", err)
	}
	<-c.Done() // a timed-out command closes the connection (golang/go#21699)
}

func TestCommandTimeoutClosesClient(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("stall", sshtest.Reply{Fault: sshtest.Stall})
	c := dial(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Run(ctx, sshexec.Cmd{Args: []string{"stall"}})
	var oe *sshexec.OpError
	if !errors.As(err, &oe) || oe.Op != "run" || !oe.Timeout() {
		t.Fatalf("Run error = %v, want a run timeout", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still open after a command timed out")
	}
}

func TestDropMidCommand(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("drop", sshtest.Reply{Stdout: "partial", Fault: sshtest.Drop})
	c := dial(t, cfg)
	res, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"drop"}, Timeout: 5 * time.Second})
	if err == nil {
		t.Fatalf("Run = %+v, nil error; want an error", res)
	}
	if res.ExitStatus != 0 {
		t.Errorf("ExitStatus = %d on a dropped connection", res.ExitStatus)
	}
}

func TestNoExitStatus(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("noexit", sshtest.Reply{Stdout: "x", Fault: sshtest.NoExitStatus})
	c := dial(t, cfg)
	res, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"noexit"}, Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exit status") {
		t.Fatalf("Run error = %v, want missing exit status", err)
	}
	if string(res.Stdout) != "x" {
		t.Errorf("stdout %q lost", res.Stdout)
	}
	// The connection itself is fine.
	if _, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"other"}}); err != nil {
		t.Errorf("next Run: %v", err)
	}
}

func TestSignalAndTruncation(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.Handle("killed", sshtest.Reply{Stdout: "so far", Signal: "KILL"})
	s.Handle("chatty", sshtest.Reply{Stdout: strings.Repeat("o", 100), Stderr: "e"})
	c := dial(t, cfg)
	res, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"killed"}})
	if err != nil || res.Signal != "KILL" || string(res.Stdout) != "so far" {
		t.Errorf("killed: %+v, %v; want Signal KILL and the output", res, err)
	}
	res, err = c.Run(context.Background(), sshexec.Cmd{Args: []string{"chatty"}, MaxOutput: 10})
	if err != nil || !res.Truncated || string(res.Stdout) != strings.Repeat("o", 10) || string(res.Stderr) != "e" {
		t.Errorf("chatty: stdout %q stderr %q truncated %v err %v", res.Stdout, res.Stderr, res.Truncated, err)
	}
	res, err = c.Run(context.Background(), sshexec.Cmd{Args: []string{"missing-prog"}})
	if err != nil || res.ExitStatus != 127 {
		t.Errorf("unknown command: exit %d err %v, want 127", res.ExitStatus, err)
	}
}

func TestStdinAndRecordedArgv(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	s.HandleFunc(func(_ string, argv []string) bool { return len(argv) > 0 && argv[0] == "cat" },
		func(_ string, stdin io.Reader, stdout, _ io.Writer) int { io.Copy(stdout, stdin); return 0 })
	c := dial(t, cfg)
	args := []string{"cat", "--", "$(id)", "a b", ""}
	res, err := c.Run(context.Background(), sshexec.Cmd{Args: args, Stdin: []byte("hello\n")})
	if err != nil || string(res.Stdout) != "hello\n" {
		t.Fatalf("cat: %q %v", res.Stdout, err)
	}
	got := s.Commands()
	if len(got) != 1 || got[0].ArgvErr != nil || strings.Join(got[0].Argv, "|") != strings.Join(args, "|") || len(got[0].Argv) != len(args) {
		t.Errorf("server recorded %+v, want argv %q", got, args)
	}
	if got[0].Raw != sshexec.Quote(args...) {
		t.Errorf("raw %q, want %q", got[0].Raw, sshexec.Quote(args...))
	}
}

func TestRotatedHostKeyOnSameServer(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	c := dial(t, cfg)
	c.Close()
	s.RotateHostKey()
	_, err := sshexec.Dial(context.Background(), cfg)
	var he *sshexec.HostKeyError
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyMismatch || !strings.Contains(err.Error(), cfg.KnownHosts[0]+":1") {
		t.Fatalf("Dial after rotation = %v, want a mismatch naming %s:1", err, cfg.KnownHosts[0])
	}
}

func TestRevokedHostKey(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	kh := cfg.KnownHosts[0]
	os.WriteFile(kh, []byte("@revoked * "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey())))+"\n"), 0o600)
	_, err := sshexec.Dial(context.Background(), cfg)
	var he *sshexec.HostKeyError
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyRevoked {
		t.Fatalf("Dial = %v, want revoked", err)
	}
}

func TestPinnedHostKeyMismatch(t *testing.T) {
	_, cfg := fake(t, sshtest.Options{})
	other := mustKey(t).PublicKey()
	cfg.HostKey, cfg.HostKeySource = other, "gpuctl.toml (host \"pc\" host_key)"
	_, err := sshexec.Dial(context.Background(), cfg)
	var he *sshexec.HostKeyError
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyMismatch || !strings.Contains(err.Error(), "gpuctl.toml (host \"pc\" host_key)") {
		t.Fatalf("Dial = %v, want a mismatch against the pinned key", err)
	}
}

func TestAuthRefused(t *testing.T) {
	_, cfg := fake(t, sshtest.Options{})
	wrong := mustKey(t)
	cfg.Signers = []ssh.Signer{wrong}
	_, err := sshexec.Dial(context.Background(), cfg)
	var ae *sshexec.AuthError
	if !errors.As(err, &ae) || len(ae.Offered) != 1 || !strings.Contains(err.Error(), ssh.FingerprintSHA256(wrong.PublicKey())) {
		t.Fatalf("Dial = %v, want an AuthError listing the offered key", err)
	}
}

// An encrypted identity file is used through the agent's copy of the key;
// without it the error says to ssh-add it.
func TestEncryptedIdentityFallsBackToAgent(t *testing.T) {
	s, cfg := fake(t, sshtest.Options{})
	_ = s
	dir := t.TempDir()
	priv, signer := newEd25519(t)
	blk, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "id_ed25519")
	os.WriteFile(idFile, pemEncode(blk), 0o600)
	srvWithKey := sshtest.New(t, sshtest.Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	tg := target{addr: srvWithKey.Addr(), user: "gpuctl"}
	cfg = tg.config(t, tg.knownLine(srvWithKey.HostKey()))
	cfg.Signers = nil
	cfg.IdentityFiles = []string{idFile}

	// No agent: a clear note.
	_, err = sshexec.Dial(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "ssh-add "+idFile) {
		t.Fatalf("Dial without agent = %v, want advice to ssh-add", err)
	}

	// Agent holding the key (and another one, which IdentitiesOnly hides).
	kr := agent.NewKeyring()
	kr.Add(agent.AddedKey{PrivateKey: priv})
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			agent.ServeAgent(kr, c)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	cfg.AgentSocket = sock
	cfg.IdentitiesOnly = true
	c := dial(t, cfg)
	if _, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"x"}}); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestProxyJumpVerifiesEveryHop(t *testing.T) {
	jump, jcfg := fake(t, sshtest.Options{})
	tgt, tcfg := fake(t, sshtest.Options{AuthorizedKeys: []ssh.PublicKey{jump.ClientSigner().PublicKey()}})
	tgt.Handle("hostname", sshtest.Reply{Stdout: "target\n"})
	// One known_hosts with both hosts; the client key is the jump's (the
	// target accepts it too).
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{jump.Addr()}, jump.HostKey())+"\n"+knownhosts.Line([]string{tgt.Addr()}, tgt.HostKey())+"\n"), 0o600)
	jcfg.KnownHosts, tcfg.KnownHosts = []string{kh}, []string{kh}
	tcfg.Signers = jcfg.Signers
	tcfg.Jumps = []sshexec.Config{jcfg}
	c := dial(t, tcfg)
	res, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"hostname"}})
	if err != nil || string(res.Stdout) != "target\n" {
		t.Fatalf("Run via jump: %q %v", res.Stdout, err)
	}
	c.Close()

	// An unknown jump host is refused, and named.
	os.WriteFile(kh, []byte(knownhosts.Line([]string{tgt.Addr()}, tgt.HostKey())+"\n"), 0o600)
	_, err = sshexec.Dial(context.Background(), tcfg)
	var he *sshexec.HostKeyError
	if !errors.As(err, &he) || he.Kind != sshexec.HostKeyUnknown || he.Addr != jump.Addr() || !strings.Contains(err.Error(), "ProxyJump") {
		t.Fatalf("Dial with unknown jump = %v, want the jump host's unknown-key error", err)
	}
}

func TestRunEmptyArgs(t *testing.T) {
	_, cfg := fake(t, sshtest.Options{})
	c := dial(t, cfg)
	if _, err := c.Run(context.Background(), sshexec.Cmd{}); err == nil {
		t.Error("empty Args accepted")
	}
}
