package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// Option adjusts ConfigFor.
type Option func(*options)

type options struct {
	getenv func(string) string
	home   string
	logger *slog.Logger
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	signer []ssh.Signer
}

// WithLogger sets Config.Logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithEnv replaces the process environment ($SSH_AUTH_SOCK, $USER) and home
// directory (~ in ssh_config, default identity files).
func WithEnv(getenv func(string) string, home string) Option {
	return func(o *options) { o.getenv, o.home = getenv, home }
}

// ConfigFor resolves how to reach inventory host h; see the package
// documentation for where each setting comes from. It reads ~/.ssh/config
// (or [ssh].config) and fails on settings gpuctl cannot honour.
func ConfigFor(inv *inventory.Inventory, h *inventory.Host, opts ...Option) (Config, error) {
	o := newOptions(opts)
	cfg := Config{
		Host:           h.Name,
		User:           h.SSHUser,
		TrustHint:      "gpuctl trust " + h.Name,
		ConnectTimeout: time.Duration(inv.SSH.ConnectTimeout),
		Logger:         o.logger,
		DialContext:    o.dial,
		Signers:        o.signer,
	}
	sc, scFile, err := loadSSHConfig(inv, o.home)
	if err != nil {
		return Config{}, err
	}
	r, err := resolveHost(sc, scFile, h, o.home)
	if err != nil {
		return Config{}, err
	}
	cfg.Addr = net.JoinHostPort(r.hostname, strconv.Itoa(r.port))
	cfg.IdentitiesOnly = r.identitiesOnly
	if err := cfg.setHostKeys(inv, h, r); err != nil {
		return Config{}, err
	}
	if err := cfg.setIdentityFiles(inv, r, scFile, o); err != nil {
		return Config{}, err
	}
	// Agent: IdentityAgent, else $SSH_AUTH_SOCK.
	switch {
	case r.identityAgent == "none":
	case r.identityAgent != "":
		cfg.AgentSocket = r.identityAgent
	default:
		cfg.AgentSocket = o.getenv("SSH_AUTH_SOCK")
	}
	// ProxyJump hops, each resolved through ssh_config like `ssh -J` does.
	for _, spec := range r.jumps {
		hop, err := jumpConfig(sc, scFile, spec, o)
		if err != nil {
			return Config{}, fmt.Errorf("host %q: ProxyJump %s: %w", h.Name, spec, err)
		}
		hop.KnownHosts = cfg.KnownHosts
		hop.Signers, hop.IdentityFiles, hop.AgentSocket, hop.IdentitiesOnly = cfg.Signers, dedupe(append(hop.IdentityFiles, cfg.IdentityFiles...)), cfg.AgentSocket, cfg.IdentitiesOnly || hop.IdentitiesOnly
		cfg.Jumps = append(cfg.Jumps, hop)
	}
	return cfg, nil
}

// newOptions applies opts over the process's environment and home.
func newOptions(opts []Option) options {
	o := options{getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if o.home == "" {
		o.home = o.getenv("HOME")
		if o.home == "" {
			o.home, _ = os.UserHomeDir()
		}
	}
	return o
}

// resolveHost reads what ssh config sc (nil: none) says about h's address.
func resolveHost(sc *ssh_config.Config, scFile string, h *inventory.Host, home string) (resolved, error) {
	port := h.SSHPort
	if port == 0 {
		port = inventory.DefaultSSHPort
	}
	r := resolved{hostname: h.Address, port: port}
	if sc == nil {
		return r, nil
	}
	r, err := resolve(sc, scFile, h.Address, home)
	if err != nil {
		return resolved{}, fmt.Errorf("host %q: %w", h.Name, err)
	}
	if h.SSHPort != 0 && h.SSHPort != inventory.DefaultSSHPort || r.port == 0 {
		r.port = port // an explicit non-default ssh_port wins
	}
	return r, nil
}

// setHostKeys sets a pinned host_key, else the known_hosts files.
func (cfg *Config) setHostKeys(inv *inventory.Inventory, h *inventory.Host, r resolved) error {
	if h.HostKey != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKey))
		if err != nil {
			return fmt.Errorf("%s: host %q: host_key: %w", inv.Path, h.Name, err)
		}
		cfg.HostKey = k
		cfg.HostKeySource = fmt.Sprintf("%s (host %q host_key)", inv.Path, h.Name)
	}
	known := append([]string{}, inv.SSH.KnownHosts...)
	known = append(known, r.knownHosts...)
	known = append(known, inv.KnownHostsFile())
	cfg.KnownHosts = dedupe(known)
	return nil
}

// setIdentityFiles sets [ssh].identity_files, then ssh_config's
// IdentityFile; when neither names one, the defaults that exist.
func (cfg *Config) setIdentityFiles(inv *inventory.Inventory, r resolved, scFile string, o options) error {
	for _, f := range inv.SSH.IdentityFiles {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s: ssh.identity_files: %w", inv.Path, err)
		}
		cfg.IdentityFiles = append(cfg.IdentityFiles, f)
	}
	for _, f := range r.identityFiles {
		if _, err := os.Stat(f); err != nil {
			if o.logger != nil {
				o.logger.Warn("IdentityFile from ssh config does not exist", "file", f, "config", scFile)
			}
			continue
		}
		cfg.IdentityFiles = append(cfg.IdentityFiles, f)
	}
	if len(inv.SSH.IdentityFiles) == 0 && len(r.identityFiles) == 0 {
		cfg.IdentityFiles = DefaultIdentityFiles(inv.StateDir, o.home)
	}
	cfg.IdentityFiles = dedupe(cfg.IdentityFiles)
	return nil
}

// DefaultIdentityFiles are the identity files used when none is configured:
// stateDir/id_ed25519, then ~/.ssh/id_ed25519, id_ecdsa and id_rsa; only
// those that exist.
func DefaultIdentityFiles(stateDir, home string) []string {
	var out []string
	cands := []string{}
	if stateDir != "" {
		cands = append(cands, statedir.IdentityFile(stateDir))
	}
	if home != "" {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			cands = append(cands, filepath.Join(home, ".ssh", n))
		}
	}
	for _, f := range cands {
		if _, err := os.Stat(f); err == nil {
			out = append(out, f)
		}
	}
	return out
}

func dedupe(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func loadSSHConfig(inv *inventory.Inventory, home string) (*ssh_config.Config, string, error) {
	file := inv.SSH.Config
	explicit := file != ""
	switch file {
	case "none":
		return nil, "", nil
	case "":
		if home == "" {
			return nil, "", nil
		}
		file = filepath.Join(home, ".ssh", "config")
	}
	f, err := os.Open(file)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("%s: ssh.config: %w", inv.Path, err)
	}
	defer f.Close()
	sc, err := decodeSSHConfig(f, file)
	if err != nil {
		return nil, "", fmt.Errorf("ssh config %s: %w (gpuctl reads it with github.com/kevinburke/ssh_config; set [ssh].config = \"none\" to skip it)", file, err)
	}
	return sc, file, nil
}

// resolved is what ssh_config says about one alias.
type resolved struct {
	hostname       string
	port           int
	user           string
	identityFiles  []string
	identitiesOnly bool
	identityAgent  string
	knownHosts     []string
	jumps          []string
}

// resolve reads the settings gpuctl honours for alias and refuses the ones
// that would change how the connection is made or verified.
func resolve(sc *ssh_config.Config, file, alias, home string) (resolved, error) {
	rs := &resolver{sc: sc, file: file, alias: alias, home: home, r: resolved{hostname: alias}}
	for _, step := range []func(*resolver) error{
		(*resolver).refuseUnsupported,
		(*resolver).hostName,
		(*resolver).port,
		(*resolver).user,
		(*resolver).identityFiles,
		(*resolver).identitiesOnly,
		(*resolver).identityAgent,
		(*resolver).userKnownHostsFile,
		(*resolver).proxyJump,
	} {
		if err := step(rs); err != nil {
			return rs.r, err
		}
	}
	return rs.r, nil
}

// resolver fills r from what ssh config file says about alias, one
// keyword per step.
type resolver struct {
	sc                *ssh_config.Config
	file, alias, home string
	r                 resolved
}

func (rs *resolver) get(key string) (string, error) {
	v, err := rs.sc.Get(rs.alias, key)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", rs.file, key, err)
	}
	return strings.TrimSpace(v), nil
}

func (rs *resolver) refuseUnsupported() error {
	for _, key := range []string{"ProxyCommand", "HostKeyAlias", "RemoteCommand", "CanonicalizeHostname", "ControlPath", "KnownHostsCommand"} {
		v, err := rs.get(key)
		if err != nil {
			return err
		}
		lv := strings.ToLower(v)
		if v != "" && lv != "none" && lv != "no" && lv != "auto" {
			return fmt.Errorf("%s sets %s %q for %s, which gpuctl cannot honour; remove it for this host, or set [ssh].config = \"none\" and configure the host in the inventory", rs.file, key, v, rs.alias)
		}
	}
	return nil
}

func (rs *resolver) hostName() error {
	v, err := rs.get("HostName")
	if err != nil || v == "" {
		return err
	}
	if rs.r.hostname, err = expandTokens(v, rs.alias, rs.home); err != nil {
		return fmt.Errorf("%s: HostName: %w", rs.file, err)
	}
	return nil
}

func (rs *resolver) port() error {
	v, err := rs.get("Port")
	if err != nil || v == "" {
		return err
	}
	if rs.r.port, err = strconv.Atoi(v); err != nil || rs.r.port < 1 || rs.r.port > 65535 {
		return fmt.Errorf("%s: Port %q for %s is not a port number", rs.file, v, rs.alias)
	}
	return nil
}

func (rs *resolver) user() error {
	var err error
	rs.r.user, err = rs.get("User")
	return err
}

func (rs *resolver) identityFiles() error {
	ids, err := rs.sc.GetAll(rs.alias, "IdentityFile")
	if err != nil {
		return fmt.Errorf("%s: IdentityFile: %w", rs.file, err)
	}
	for _, f := range ids {
		p, err := expandPath(strings.TrimSpace(f), rs.alias, rs.home)
		if err != nil {
			return fmt.Errorf("%s: IdentityFile: %w", rs.file, err)
		}
		if p != "none" {
			rs.r.identityFiles = append(rs.r.identityFiles, p)
		}
	}
	return nil
}

func (rs *resolver) identitiesOnly() error {
	v, err := rs.get("IdentitiesOnly")
	if err != nil {
		return err
	}
	rs.r.identitiesOnly = strings.EqualFold(v, "yes")
	return nil
}

func (rs *resolver) identityAgent() error {
	v, err := rs.get("IdentityAgent")
	if err != nil {
		return err
	}
	switch {
	case v == "" || v == "SSH_AUTH_SOCK" || v == "$SSH_AUTH_SOCK":
	case strings.EqualFold(v, "none"):
		rs.r.identityAgent = "none"
	default:
		if rs.r.identityAgent, err = expandPath(v, rs.alias, rs.home); err != nil {
			return fmt.Errorf("%s: IdentityAgent: %w", rs.file, err)
		}
	}
	return nil
}

func (rs *resolver) userKnownHostsFile() error {
	v, err := rs.get("UserKnownHostsFile")
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(v) {
		if strings.EqualFold(f, "none") {
			continue
		}
		p, err := expandPath(f, rs.alias, rs.home)
		if err != nil {
			return fmt.Errorf("%s: UserKnownHostsFile: %w", rs.file, err)
		}
		rs.r.knownHosts = append(rs.r.knownHosts, p)
	}
	return nil
}

func (rs *resolver) proxyJump() error {
	v, err := rs.get("ProxyJump")
	if err != nil {
		return err
	}
	if v != "" && !strings.EqualFold(v, "none") {
		for _, j := range strings.Split(v, ",") {
			if j = strings.TrimSpace(j); j != "" {
				rs.r.jumps = append(rs.r.jumps, j)
			}
		}
	}
	return nil
}

// jumpConfig resolves one ProxyJump hop, "[user@]host[:port]".
func jumpConfig(sc *ssh_config.Config, file, spec string, o options) (Config, error) {
	if strings.Contains(spec, "://") {
		return Config{}, errors.New("ssh:// URIs in ProxyJump are not supported; write [user@]host[:port]")
	}
	u, hp := "", spec
	if i := strings.LastIndex(spec, "@"); i >= 0 {
		u, hp = spec[:i], spec[i+1:]
	}
	alias, port := hp, 0
	if h, p, err := net.SplitHostPort(hp); err == nil {
		alias = h
		if port, err = strconv.Atoi(p); err != nil {
			return Config{}, fmt.Errorf("port %q is not a number", p)
		}
	}
	r := resolved{hostname: alias}
	if sc != nil {
		var err error
		if r, err = resolve(sc, file, alias, o.home); err != nil {
			return Config{}, err
		}
		if len(r.jumps) > 0 {
			return Config{}, fmt.Errorf("%s gives jump host %s its own ProxyJump; gpuctl supports one chain: list every hop in the target's ProxyJump", file, alias)
		}
	}
	if port == 0 {
		port = r.port
	}
	if port == 0 {
		port = inventory.DefaultSSHPort
	}
	if u == "" {
		u = r.user
	}
	if u == "" {
		u = o.getenv("USER")
	}
	if u == "" {
		if cu, err := user.Current(); err == nil {
			u = cu.Username
		}
	}
	return Config{
		Host:           alias,
		Addr:           net.JoinHostPort(r.hostname, strconv.Itoa(port)),
		User:           u,
		TrustHint:      "ssh " + alias + " (to record its key in ~/.ssh/known_hosts)",
		IdentityFiles:  r.identityFiles,
		IdentitiesOnly: r.identitiesOnly,
	}, nil
}

// expandTokens expands the ssh_config tokens gpuctl supports (%h, %%) and
// rejects the others.
func expandTokens(s, alias, home string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("%q ends in a lone %%", s)
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
		case 'h', 'n':
			b.WriteString(alias)
		case 'd':
			b.WriteString(home)
		default:
			return "", fmt.Errorf("%q uses token %%%c, which gpuctl does not expand", s, s[i])
		}
	}
	return b.String(), nil
}

func expandPath(s, alias, home string) (string, error) {
	s = strings.Trim(s, `"`)
	if s == "~" {
		s = home
	} else if rest, ok := strings.CutPrefix(s, "~/"); ok {
		s = filepath.Join(home, rest)
	}
	return expandTokens(s, alias, home)
}
