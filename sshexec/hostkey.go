package sshexec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// preferredHostKeyAlgos is asked for when no key is on record, so the key an
// "unknown host" error shows is the one `gpuctl trust` records.
var preferredHostKeyAlgos = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// algosForKeyType lists the host key algorithms that make a server present a
// key of the given type.
func algosForKeyType(t string) []string {
	switch t {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	default:
		return []string{t}
	}
}

// hostKeyPolicy is the resolved host key check for one address.
type hostKeyPolicy struct {
	callback ssh.HostKeyCallback
	// algos is ClientConfig.HostKeyAlgorithms: the types on record for this
	// very address (golang/go#29286), or preferredHostKeyAlgos.
	algos []string
	// known lists the plain keys on record for the address.
	known []KnownKey
	files []string
}

// existingFiles returns the files that exist, in order, without duplicates.
func existingFiles(files []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range files {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		if _, err := os.Stat(f); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("known_hosts file %s: %w", f, err)
		}
		out = append(out, f)
	}
	return out, nil
}

var (
	probeKeyOnce sync.Once
	probeKey     ssh.PublicKey
)

// probe is a key no known_hosts file can hold; checking it makes knownhosts
// list every key on record for an address in KeyError.Want.
func probe() ssh.PublicKey {
	probeKeyOnce.Do(func() {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		probeKey, _ = ssh.NewPublicKey(pub)
	})
	return probeKey
}

// policy builds the host key check for cfg.Addr (called per hop).
func (cfg *Config) policy() (*hostKeyPolicy, error) {
	if cfg.HostKey != nil {
		src := cfg.HostKeySource
		if src == "" {
			src = "pinned host_key"
		}
		want := KnownKey{Key: cfg.HostKey, File: src}
		return &hostKeyPolicy{
			algos: algosForKeyType(cfg.HostKey.Type()),
			known: []KnownKey{want},
			callback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
				if bytes.Equal(key.Marshal(), cfg.HostKey.Marshal()) {
					return nil
				}
				return &HostKeyError{Kind: HostKeyMismatch, Host: cfg.name(), Addr: cfg.Addr, Key: key,
					Known: []KnownKey{want}, Hint: "put the new key in " + src}
			},
		}, nil
	}
	files, err := existingFiles(cfg.KnownHosts)
	if err != nil {
		return nil, err
	}
	p := &hostKeyPolicy{files: cfg.KnownHosts}
	var db ssh.HostKeyCallback
	certAuthority := false
	if len(files) > 0 {
		kh, err := loadKnownHosts(files)
		if err != nil {
			return nil, fmt.Errorf("read known_hosts: %w", err)
		}
		db, certAuthority = kh.check, kh.certAuthority
		// Ask the database what it holds for this address.
		var ke *knownhosts.KeyError
		if err := db(cfg.Addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}, probe()); errors.As(err, &ke) {
			seen := map[string]bool{}
			for _, w := range ke.Want {
				p.known = append(p.known, KnownKey{Key: w.Key, File: w.Filename, Line: w.Line})
				for _, a := range algosForKeyType(w.Key.Type()) {
					if !seen[a] {
						seen[a] = true
						p.algos = append(p.algos, a)
					}
				}
			}
		} else if err != nil {
			return nil, fmt.Errorf("known_hosts lookup for %s: %w", cfg.Addr, err)
		}
	}
	if len(p.algos) == 0 {
		// Nothing on record (or only @cert-authority lines, which the
		// default list, certificates first, serves).
		p.algos = preferredHostKeyAlgos
		if certAuthority {
			p.algos = nil // x/crypto's default: certificates first
		}
	}
	hint := cfg.TrustHint
	p.callback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if db == nil {
			return &HostKeyError{Kind: HostKeyUnknown, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: hint}
		}
		err := db(hostname, remote, key)
		if err == nil {
			return nil
		}
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return &HostKeyError{Kind: HostKeyUnknown, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: hint}
		case errors.As(err, &ke):
			he := &HostKeyError{Kind: HostKeyMismatch, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: hint}
			for _, w := range ke.Want {
				he.Known = append(he.Known, KnownKey{Key: w.Key, File: w.Filename, Line: w.Line})
			}
			return he
		case errors.As(err, &re):
			return &HostKeyError{Kind: HostKeyRevoked, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts,
				Known: []KnownKey{{Key: re.Revoked.Key, File: re.Revoked.Filename, Line: re.Revoked.Line}}}
		}
		return fmt.Errorf("host key of %s: %w", cfg.name(), err)
	}
	return p, nil
}

// CheckHostKey checks key as Dial would for cfg's address: nil when it is on
// record, otherwise a *HostKeyError (or an error reading known_hosts).
func CheckHostKey(cfg Config, key ssh.PublicKey) error {
	p, err := cfg.policy()
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", cfg.Addr, err)
	}
	pn, _ := strconv.Atoi(port)
	return p.callback(cfg.Addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: pn}, key)
}

// hasCertAuthority reports whether any file has a @cert-authority line.
func hasCertAuthority(files []string) bool {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "@cert-authority") {
				return true
			}
		}
	}
	return false
}
