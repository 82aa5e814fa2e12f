package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func trustCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "trust",
		Usage:     "Record a host's SSH host key in gpuctl's own known_hosts",
		ArgsUsage: "HOST",
		Description: "Connects to HOST, shows the SHA256 fingerprint of its host key and, once you confirm it\n" +
			"(compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host), appends it to\n" +
			"state_dir/known_hosts. Scripts pass --yes with the expected --fingerprint. A host whose\n" +
			"recorded key differs is refused unless --replace is given.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask; requires --fingerprint"},
			&cli.StringFlag{Name: "fingerprint", Usage: "the expected key fingerprint (`SHA256:...`); refuse any other"},
			&cli.BoolFlag{Name: "replace", Usage: "replace a different key already recorded for the host"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait for the host to answer (`DURATION`)"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "HOST")
			if err != nil {
				return err
			}
			o := trustOptions{yes: c.Bool("yes"), fingerprint: c.String("fingerprint"), replace: c.Bool("replace"), timeout: c.Duration("timeout")}
			if o.yes && o.fingerprint == "" {
				return usageError("--yes needs --fingerprint SHA256:... (the key you expect; see: %s --help)", c.Command.HelpName)
			}
			if o.fingerprint != "" && !strings.HasPrefix(o.fingerprint, "SHA256:") {
				return usageError("--fingerprint %q: give the SHA256:... form that ssh-keygen -lf prints", o.fingerprint)
			}
			if o.timeout <= 0 {
				return usageError("--timeout must be positive")
			}
			inv, err := loadInventory(c, env)
			if err != nil {
				return err
			}
			o.inv = inv
			if o.host, err = inv.host(a[0]); err != nil {
				return err
			}
			return runTrust(c.Context, env, o)
		},
	}
}

type trustOptions struct {
	inv         *loadedInventory
	host        *inventory.Host
	yes         bool
	fingerprint string
	replace     bool
	timeout     time.Duration
}

func runTrust(ctx context.Context, env *Env, o trustOptions) error {
	// Refuse before scanning and asking, not after the user said yes.
	if err := statedir.CheckOwner(filepath.Dir(o.inv.KnownHostsFile())); err != nil {
		return err
	}
	t, err := scanForTrust(ctx, env, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s %s %s\n", t.cfg.Addr, t.key.Type(), t.fp)
	if t.pinned != nil {
		return t.comparePinned(env)
	}
	if done, err := t.checkRecorded(env); done || err != nil {
		return err
	}
	if err := t.confirm(ctx, env); err != nil {
		return err
	}
	file := o.inv.KnownHostsFile()
	if err := sshexec.AddKnownHost(file, t.cfg.Addr, t.key, o.replace); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "%s: recorded %s %s in %s\n", o.host.Name, t.key.Type(), t.fp, file)
	return nil
}

// trustScan is what gpuctl trust learned from the host, carried from the
// scan to the record.
type trustScan struct {
	o   trustOptions
	cfg sshexec.Config // the host's SSH configuration, its host_key unset
	// pinned is the host_key of the inventory (nil when none).
	pinned ssh.PublicKey
	// key is what the host presents; fp its SHA256 fingerprint.
	key ssh.PublicKey
	fp  string
}

// scanForTrust connects to the host and takes the key it presents,
// whatever is pinned.
func scanForTrust(ctx context.Context, env *Env, o trustOptions) (*trustScan, error) {
	h := o.host
	cfg, err := sshexec.ConfigFor(o.inv.Inventory, h, sshexec.WithEnv(env.Getenv, env.Getenv("HOME")), sshexec.WithLogger(env.Logger))
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	t := &trustScan{o: o, cfg: cfg, pinned: cfg.HostKey}
	t.cfg.HostKey = nil // scan what the server presents, whatever is pinned
	t.cfg.ConnectTimeout = o.timeout
	scanCtx, cancel := context.WithTimeout(ctx, o.timeout+time.Second)
	defer cancel()
	key, err := sshexec.ScanHostKey(scanCtx, t.cfg)
	if err != nil {
		if sshexec.IsTimeout(err) {
			return nil, withCode(ExitUnreachable, fmt.Errorf("trust %s: %w", h.Name, err))
		}
		return nil, fmt.Errorf("trust %s: %w", h.Name, err)
	}
	if cert, ok := key.(*ssh.Certificate); ok && (t.pinned != nil || sshexec.CheckHostKey(t.cfg, key) != nil) {
		// A host certificate no @cert-authority line vouches for: what can
		// be recorded (and what ssh-keygen -lf shows on the host) is its
		// plain key.
		key = cert.Key
	}
	t.key, t.fp = key, ssh.FingerprintSHA256(key)
	return t, nil
}

// comparePinned is the answer for a host whose key the inventory pins:
// gpuctl trust records nothing and never edits the inventory.
func (t *trustScan) comparePinned(env *Env) error {
	h, o := t.o.host, t.o
	if t.fp == ssh.FingerprintSHA256(t.pinned) {
		fmt.Fprintf(env.Stderr, "%s: the key matches host_key in %s; nothing to record\n", h.Name, o.inv.Path)
		return nil
	}
	return fmt.Errorf("%s presents %s %s but host_key in %s pins %s %s; gpuctl trust does not edit the inventory: if the new key is right, put it in host_key",
		h.Name, t.key.Type(), t.fp, o.inv.Path, t.pinned.Type(), ssh.FingerprintSHA256(t.pinned))
}

// checkRecorded compares the key with the known_hosts files: done when it
// is already trusted; an error when it is revoked, or differs from the
// recorded one without --replace (with it, says what is replaced).
func (t *trustScan) checkRecorded(env *Env) (done bool, err error) {
	var he *sshexec.HostKeyError
	switch err := sshexec.CheckHostKey(t.cfg, t.key); {
	case err == nil:
		fmt.Fprintf(env.Stderr, "%s: this key is already trusted\n", t.o.host.Name)
		return true, nil
	case errors.As(err, &he) && he.Kind == sshexec.HostKeyRevoked:
		return false, err
	case errors.As(err, &he) && he.Kind == sshexec.HostKeyMismatch:
		return false, t.replacing(env, he.Known)
	case errors.As(err, &he):
		return false, nil
	default:
		return false, err
	}
}

// replacing refuses a key that differs from the recorded ones unless
// --replace is given, and then says what it replaces.
func (t *trustScan) replacing(env *Env, recorded []sshexec.KnownKey) error {
	var known []string
	for _, k := range recorded {
		known = append(known, k.String())
	}
	if !t.o.replace {
		return fmt.Errorf("%s presents %s %s, but a different key is on record (%s); if the host was reinstalled and you checked the new key, rerun with --replace",
			t.o.host.Name, t.key.Type(), t.fp, strings.Join(known, "; "))
	}
	fmt.Fprintf(env.Stderr, "replacing: %s\n     with: %s %s\n", strings.Join(known, "; "), t.key.Type(), t.fp)
	for _, k := range recorded {
		if k.File != t.o.inv.KnownHostsFile() {
			fmt.Fprintf(env.Stderr, "note: %s:%d is not gpuctl's file and stays as it is (remove it with: ssh-keygen -R %s -f %s)\n",
				k.File, k.Line, knownhosts.Normalize(t.cfg.Addr), k.File)
		}
	}
	return nil
}

// confirm checks the key against --fingerprint, or asks on a terminal.
func (t *trustScan) confirm(ctx context.Context, env *Env) error {
	h, fp := t.o.host, t.fp
	switch {
	case t.o.fingerprint != "":
		if t.o.fingerprint != fp {
			return fmt.Errorf("%s presents %s %s, not the expected %s; refusing to trust it", h.Name, t.key.Type(), fp, t.o.fingerprint)
		}
	case !env.StdinTTY:
		return usageError("stdin is not a terminal, so gpuctl cannot ask: check the fingerprint, then run: gpuctl trust --yes --fingerprint %s %s", fp, h.Name)
	default:
		fmt.Fprintf(env.Stderr, "%s (%s) presents a %s key with fingerprint\n  %s\nCompare it with `ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub` run on the host.\nTrust it? [y/N] ",
			h.Name, t.cfg.Addr, t.key.Type(), fp, keyFileType(t.key.Type()))
		line, err := readAnswer(ctx, env.Stdin)
		if err != nil {
			fmt.Fprintln(env.Stderr)
			return fmt.Errorf("not trusted: %w", err)
		}
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not trusted: you did not answer yes")
		}
	}
	return nil
}

// readAnswer reads one line from in, or gives up when ctx ends: main turns
// Ctrl-C into a cancelled context, so a read that ignored it could never be
// interrupted. The reading goroutine stays blocked until in yields a line
// or ends (the process exits soon after).
func readAnswer(ctx context.Context, in io.Reader) (string, error) {
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(in).ReadString('\n')
		ch <- answer{line, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil && a.line == "" && !errors.Is(a.err, io.EOF) {
			return "", a.err
		}
		return a.line, nil
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
}

func keyFileType(t string) string {
	switch {
	case t == ssh.KeyAlgoED25519:
		return "ed25519"
	case t == ssh.KeyAlgoRSA:
		return "rsa"
	case strings.HasPrefix(t, "ecdsa"):
		return "ecdsa"
	}
	return "*"
}
