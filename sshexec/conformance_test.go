package sshexec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshdtest"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// target is a running SSH server of either backend.
type target struct {
	addr     string
	user     string
	hostKeys []ssh.PublicKey // ed25519 and RSA
	signer   ssh.Signer
	// after runs backend-specific checks after a subtest (may be nil).
	maxConcurrent func() int
}

func (tg target) key(typ string) ssh.PublicKey {
	for _, k := range tg.hostKeys {
		if k.Type() == typ {
			return k
		}
	}
	return nil
}

// The commands of the suite; sshtest emulates them, sshd runs them.
var (
	outErrExit    = []string{"sh", "-c", "echo out; echo err >&2; exit 3"}
	barrierScript = `touch "$1/$2"; n=0; while [ "$(ls "$1" | wc -l)" -lt "$3" ]; do n=$((n+1)); [ $n -gt 500 ] && exit 9; sleep 0.02; done; echo "$2"`
	printfFormat  = `%s\0`
)

var hostile = []string{
	"'; touch /tmp/pwned; '", "$(id)", "`id`", "a\nb", "ünï€ødé 🚀", "", " ", "a b\tc",
	`"dq"`, `\`, `\\n`, "*", "~", "#x", "x=y", "-n", "--", "$HOME", "!", "a'b\"c", "\t\n", "%s",
}

func startSSHTest(t *testing.T) target {
	ed, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	rsaK, err := sshtest.NewRSASigner(2048)
	if err != nil {
		t.Fatal(err)
	}
	s := sshtest.New(t, sshtest.Options{HostKeys: []ssh.Signer{rsaK, ed}})
	s.Handle(sshexec.Quote(outErrExit...), sshtest.Reply{Stdout: "out\n", Stderr: "err\n", Exit: 3})
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	arrived := map[string]int{}
	s.HandleFunc(func(_ string, argv []string) bool {
		return len(argv) == 7 && argv[0] == "sh" && argv[2] == barrierScript
	}, func(raw string, _ io.Reader, stdout, _ io.Writer) int {
		argv, _ := sshtest.SplitWords(raw)
		n, _ := strconv.Atoi(argv[6])
		mu.Lock()
		arrived[argv[4]]++
		cond.Broadcast()
		deadline := time.AfterFunc(10*time.Second, func() { mu.Lock(); arrived[argv[4]] = -1 << 30; cond.Broadcast(); mu.Unlock() })
		for arrived[argv[4]] >= 0 && arrived[argv[4]] < n {
			cond.Wait()
		}
		ok := arrived[argv[4]] >= n
		mu.Unlock()
		deadline.Stop()
		if !ok {
			return 9
		}
		fmt.Fprintln(stdout, argv[5])
		return 0
	})
	s.HandleFunc(func(_ string, argv []string) bool {
		return len(argv) >= 2 && argv[0] == "printf" && argv[1] == printfFormat
	}, func(raw string, _ io.Reader, stdout, _ io.Writer) int {
		argv, _ := sshtest.SplitWords(raw)
		for _, a := range argv[2:] {
			io.WriteString(stdout, a+"\x00")
		}
		return 0
	})
	return target{addr: s.Addr(), user: "gpuctl", hostKeys: s.HostKeys(), signer: s.ClientSigner(),
		maxConcurrent: s.MaxConcurrent}
}

func startSSHD(t *testing.T) target {
	s := sshdtest.Start(t, sshdtest.Options{})
	return target{addr: s.Addr, user: s.User, hostKeys: s.HostKeys(), signer: s.ClientSigner()}
}

// config returns a client config for tg whose known_hosts file holds lines.
func (tg target) config(t testing.TB, lines ...string) sshexec.Config {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sshexec.Config{
		Host: "conf-host", Addr: tg.addr, User: tg.user,
		KnownHosts: []string{kh}, TrustHint: "gpuctl trust conf-host",
		Signers: []ssh.Signer{tg.signer}, ConnectTimeout: 10 * time.Second,
		Logger: testLogger(t),
	}
}

func (tg target) knownLine(k ssh.PublicKey) string {
	return knownhosts.Line([]string{tg.addr}, k)
}

func dial(t *testing.T, cfg sshexec.Config) *sshexec.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sshexec.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	for _, b := range []struct {
		name  string
		start func(*testing.T) target
	}{
		{"sshtest", startSSHTest},
		{"sshd", startSSHD},
	} {
		t.Run(b.name, func(t *testing.T) {
			tg := b.start(t)
			runConformance(t, tg)
		})
	}
}

func runConformance(t *testing.T, tg target) {
	ed := tg.key(ssh.KeyAlgoED25519)
	rsaK := tg.key(ssh.KeyAlgoRSA)
	if ed == nil || rsaK == nil {
		t.Fatalf("backend must have ed25519 and RSA host keys, has %v", tg.hostKeys)
	}
	ctx := context.Background()

	t.Run("StdoutStderrExit", func(t *testing.T) {
		c := dial(t, tg.config(t, tg.knownLine(ed)))
		res, err := c.Run(ctx, sshexec.Cmd{Args: outErrExit, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" || res.ExitStatus != 3 || res.Signal != "" || res.Truncated {
			t.Errorf("got stdout %q stderr %q exit %d signal %q truncated %v; want out/err/3",
				res.Stdout, res.Stderr, res.ExitStatus, res.Signal, res.Truncated)
		}
		if res.Duration <= 0 {
			t.Errorf("Duration = %v", res.Duration)
		}
	})

	t.Run("EightConcurrentOverOneConnection", func(t *testing.T) {
		c := dial(t, tg.config(t, tg.knownLine(ed)))
		// Every command waits until all 8 have started: they can only
		// finish if they run at the same time.
		dir := t.TempDir()
		var wg sync.WaitGroup
		errs := make([]error, 8)
		outs := make([]string, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.Run(ctx, sshexec.Cmd{Args: []string{"sh", "-c", barrierScript, "_", dir, strconv.Itoa(i), "8"}, Timeout: 20 * time.Second})
				errs[i], outs[i] = err, string(res.Stdout)
				if err == nil && res.ExitStatus != 0 {
					errs[i] = fmt.Errorf("exit %d, stderr %q", res.ExitStatus, res.Stderr)
				}
			}()
		}
		wg.Wait()
		for i := range 8 {
			if errs[i] != nil {
				t.Errorf("command %d: %v", i, errs[i])
			} else if outs[i] != strconv.Itoa(i)+"\n" {
				t.Errorf("command %d printed %q", i, outs[i])
			}
		}
		if tg.maxConcurrent != nil && tg.maxConcurrent() < 8 {
			t.Errorf("server saw at most %d concurrent commands", tg.maxConcurrent())
		}
	})

	t.Run("HostileArgvArrivesByteIdentical", func(t *testing.T) {
		os.Remove("/tmp/pwned")
		c := dial(t, tg.config(t, tg.knownLine(ed)))
		args := append([]string{"printf", printfFormat}, hostile...)
		res, err := c.Run(ctx, sshexec.Cmd{Args: args, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if res.ExitStatus != 0 {
			t.Fatalf("exit %d, stderr %q", res.ExitStatus, res.Stderr)
		}
		got := strings.Split(strings.TrimSuffix(string(res.Stdout), "\x00"), "\x00")
		if len(got) != len(hostile) {
			t.Fatalf("got %d argv elements %q, want %d", len(got), got, len(hostile))
		}
		for i := range hostile {
			if !bytes.Equal([]byte(got[i]), []byte(hostile[i])) {
				t.Errorf("argument %d arrived as %q, want %q", i, got[i], hostile[i])
			}
		}
		if _, err := os.Stat("/tmp/pwned"); err == nil {
			os.Remove("/tmp/pwned")
			t.Error("/tmp/pwned exists: an argument was run as shell code")
		}
	})

	t.Run("KnownHostOK", func(t *testing.T) {
		c := dial(t, tg.config(t, "# comment", tg.knownLine(ed)))
		if got := c.HostKey(); !bytes.Equal(got.Marshal(), ed.Marshal()) {
			t.Errorf("verified key %s, want the known ed25519 key", ssh.FingerprintSHA256(got))
		}
		if _, err := c.Run(ctx, sshexec.Cmd{Args: outErrExit}); err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// The server has RSA and ed25519 keys; only one is known. x/crypto's
	// default order asks for RSA first (golang/go#29286).
	for _, known := range []ssh.PublicKey{ed, rsaK} {
		t.Run("OnlyOneOfTwoKeysKnown/"+known.Type(), func(t *testing.T) {
			c := dial(t, tg.config(t, tg.knownLine(known)))
			if got := c.HostKey(); got.Type() != known.Type() {
				t.Errorf("server presented %s, want %s", got.Type(), known.Type())
			}
		})
	}

	t.Run("UnknownHostRefused", func(t *testing.T) {
		other, _ := sshtest.NewEd25519Signer()
		cfg := tg.config(t, knownhosts.Line([]string{"192.0.2.7:22"}, other.PublicKey()))
		_, err := sshexec.Dial(ctx, cfg)
		var he *sshexec.HostKeyError
		if !errors.As(err, &he) || he.Kind != sshexec.HostKeyUnknown {
			t.Fatalf("Dial error = %v, want an unknown-host HostKeyError", err)
		}
		msg := err.Error()
		for _, want := range []string{ssh.FingerprintSHA256(ed), "ssh-ed25519", "gpuctl trust conf-host", cfg.KnownHosts[0]} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
	})

	t.Run("RotatedHostKeyRefused", func(t *testing.T) {
		old, _ := sshtest.NewEd25519Signer()
		cfg := tg.config(t, "# gpuctl", knownhosts.Line([]string{"192.0.2.7:22"}, ed), tg.knownLine(old.PublicKey()))
		_, err := sshexec.Dial(ctx, cfg)
		var he *sshexec.HostKeyError
		if !errors.As(err, &he) || he.Kind != sshexec.HostKeyMismatch {
			t.Fatalf("Dial error = %v, want a mismatch HostKeyError", err)
		}
		msg := err.Error()
		for _, want := range []string{cfg.KnownHosts[0] + ":3", ssh.FingerprintSHA256(ed), ssh.FingerprintSHA256(old.PublicKey()), "gpuctl trust --replace conf-host"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
		if len(he.Known) != 1 || he.Known[0].Line != 3 || he.Known[0].File != cfg.KnownHosts[0] {
			t.Errorf("Known = %v, want the entry at line 3", he.Known)
		}
	})

	t.Run("PinnedHostKey", func(t *testing.T) {
		cfg := tg.config(t)
		cfg.HostKey, cfg.HostKeySource = rsaK, "inv.toml"
		c := dial(t, cfg)
		if c.HostKey().Type() != ssh.KeyAlgoRSA {
			t.Errorf("presented %s, want the pinned RSA key", c.HostKey().Type())
		}
	})
}
