package sshexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ScanHostKey connects to cfg.Addr (through its verified jumps) and returns
// the host key the server presents, without authenticating. It asks for the
// key types already on record for the address, else ed25519 first, so the
// key it returns is the one later connections will be shown.
func ScanHostKey(ctx context.Context, cfg Config) (ssh.PublicKey, error) {
	cfg = cfg.withDefaults()
	target := cfg
	target.Jumps = nil
	if len(cfg.Jumps) > 0 {
		// Verify and authenticate the hops as usual; scan only the target.
		jc := cfg.Jumps[len(cfg.Jumps)-1]
		jc.Jumps = cfg.Jumps[:len(cfg.Jumps)-1]
		jc.KeepaliveInterval = -1
		jc.ConnectTimeout, jc.DialContext, jc.Logger = cfg.ConnectTimeout, cfg.DialContext, cfg.Logger
		jump, err := Dial(ctx, jc)
		if err != nil {
			return nil, fmt.Errorf("via ProxyJump %s: %w", jc.name(), err)
		}
		defer jump.Close()
		var key ssh.PublicKey
		_, _, err = handshake(ctx, &target, func(ctx context.Context, addr string) (net.Conn, error) {
			return jump.conn.DialContext(ctx, "tcp", addr)
		}, &key)
		return key, err
	}
	var key ssh.PublicKey
	_, _, err := handshake(ctx, &target, func(ctx context.Context, addr string) (net.Conn, error) {
		return cfg.DialContext(ctx, "tcp", addr)
	}, &key)
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("ssh handshake %s: no host key presented", cfg.name())
	}
	return key, nil
}

// AddKnownHost appends "addr key" (knownhosts.Line) to file, creating it
// 0600 in a 0700 directory. With replace, lines of file naming exactly that
// address are dropped first. Other files are never edited.
func AddKnownHost(file, addr string, key ssh.PublicKey, replace bool) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(file), err)
	}
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", file, err)
	}
	norm := knownhosts.Normalize(addr)
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if replace && lineNames(line, norm) {
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	out.WriteString(knownhosts.Line([]string{addr}, key))
	out.WriteByte('\n')
	return statedir.WriteFile(file, out.Bytes(), 0o600, 0o700)
}

// lineNames reports whether a known_hosts line lists host (normalized) among
// its plain host patterns.
func lineNames(line, host string) bool {
	f := strings.Fields(line)
	if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], "@") {
		return false
	}
	for _, h := range strings.Split(f[0], ",") {
		if h == host {
			return true
		}
	}
	return false
}
