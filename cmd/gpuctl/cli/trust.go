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
	h := o.host
	// Refuse before scanning and asking, not after the user said yes.
	if err := statedir.CheckOwner(filepath.Dir(o.inv.KnownHostsFile())); err != nil {
		return err
	}
	cfg, err := sshexec.ConfigFor(o.inv.Inventory, h, sshexec.WithEnv(env.Getenv, env.Getenv("HOME")), sshexec.WithLogger(env.Logger))
	if err != nil {
		return withCode(ExitUsage, err)
	}
	pinned := cfg.HostKey
	cfg.HostKey = nil // scan what the server presents, whatever is pinned
	cfg.ConnectTimeout = o.timeout
	scanCtx, cancel := context.WithTimeout(ctx, o.timeout+time.Second)
	defer cancel()
	key, err := sshexec.ScanHostKey(scanCtx, cfg)
	if err != nil {
		if sshexec.IsTimeout(err) {
			return withCode(ExitUnreachable, fmt.Errorf("trust %s: %w", h.Name, err))
		}
		return fmt.Errorf("trust %s: %w", h.Name, err)
	}
	if cert, ok := key.(*ssh.Certificate); ok && (pinned != nil || sshexec.CheckHostKey(cfg, key) != nil) {
		// A host certificate no @cert-authority line vouches for: what can
		// be recorded (and what ssh-keygen -lf shows on the host) is its
		// plain key.
		key = cert.Key
	}
	fp := ssh.FingerprintSHA256(key)
	fmt.Fprintf(env.Stdout, "%s %s %s\n", cfg.Addr, key.Type(), fp)

	if pinned != nil {
		if fp == ssh.FingerprintSHA256(pinned) {
			fmt.Fprintf(env.Stderr, "%s: the key matches host_key in %s; nothing to record\n", h.Name, o.inv.Path)
			return nil
		}
		return fmt.Errorf("%s presents %s %s but host_key in %s pins %s %s; gpuctl trust does not edit the inventory: if the new key is right, put it in host_key",
			h.Name, key.Type(), fp, o.inv.Path, pinned.Type(), ssh.FingerprintSHA256(pinned))
	}

	var he *sshexec.HostKeyError
	switch err := sshexec.CheckHostKey(cfg, key); {
	case err == nil:
		fmt.Fprintf(env.Stderr, "%s: this key is already trusted\n", h.Name)
		return nil
	case errors.As(err, &he) && he.Kind == sshexec.HostKeyRevoked:
		return err
	case errors.As(err, &he) && he.Kind == sshexec.HostKeyMismatch:
		var known []string
		for _, k := range he.Known {
			known = append(known, k.String())
		}
		if !o.replace {
			return fmt.Errorf("%s presents %s %s, but a different key is on record (%s); if the host was reinstalled and you checked the new key, rerun with --replace",
				h.Name, key.Type(), fp, strings.Join(known, "; "))
		}
		fmt.Fprintf(env.Stderr, "replacing: %s\n     with: %s %s\n", strings.Join(known, "; "), key.Type(), fp)
		for _, k := range he.Known {
			if k.File != o.inv.KnownHostsFile() {
				fmt.Fprintf(env.Stderr, "note: %s:%d is not gpuctl's file and stays as it is (remove it with: ssh-keygen -R %s -f %s)\n",
					k.File, k.Line, knownhosts.Normalize(cfg.Addr), k.File)
			}
		}
	case errors.As(err, &he):
	default:
		return err
	}

	switch {
	case o.fingerprint != "":
		if o.fingerprint != fp {
			return fmt.Errorf("%s presents %s %s, not the expected %s; refusing to trust it", h.Name, key.Type(), fp, o.fingerprint)
		}
	case !env.StdinTTY:
		return usageError("stdin is not a terminal, so gpuctl cannot ask: check the fingerprint, then run: gpuctl trust --yes --fingerprint %s %s", fp, h.Name)
	default:
		fmt.Fprintf(env.Stderr, "%s (%s) presents a %s key with fingerprint\n  %s\nCompare it with `ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub` run on the host.\nTrust it? [y/N] ",
			h.Name, cfg.Addr, key.Type(), fp, keyFileType(key.Type()))
		line, err := readAnswer(ctx, env.Stdin)
		if err != nil {
			fmt.Fprintln(env.Stderr)
			return fmt.Errorf("not trusted: %w", err)
		}
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not trusted: you did not answer yes")
		}
	}
	file := o.inv.KnownHostsFile()
	if err := sshexec.AddKnownHost(file, cfg.Addr, key, o.replace); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "%s: recorded %s %s in %s\n", h.Name, key.Type(), fp, file)
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
