package sshexec

import (
	"bufio"
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

// certHostKeyAlgos are asked for first when a @cert-authority line covers
// the address.
var certHostKeyAlgos = []string{
	ssh.CertAlgoED25519v01,
	ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
	ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01,
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
		return cfg.pinnedPolicy(), nil
	}
	files, err := existingFiles(cfg.KnownHosts)
	if err != nil {
		return nil, err
	}
	p := &hostKeyPolicy{files: cfg.KnownHosts}
	kc := &knownHostsCheck{cfg: cfg, hint: cfg.TrustHint}
	if len(files) > 0 {
		kh, err := loadKnownHosts(files)
		if err != nil {
			return nil, fmt.Errorf("read known_hosts: %w", err)
		}
		kc.db = kh.check
		kc.isCA = func(k knownhosts.KnownKey) bool { return kh.caLines[lineRef{k.Filename, k.Line}] }
		if err := kc.onRecord(p); err != nil {
			return nil, err
		}
	}
	if len(p.algos) == 0 {
		// Nothing on record for this address.
		p.algos = preferredHostKeyAlgos
	}
	p.callback = kc.check
	return p, nil
}

// pinnedPolicy accepts exactly cfg.HostKey.
func (cfg *Config) pinnedPolicy() *hostKeyPolicy {
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
	}
}

// knownHostsCheck checks host keys against the known_hosts files of cfg.
type knownHostsCheck struct {
	cfg *Config
	// db is the known_hosts database; nil when no file exists.
	db   ssh.HostKeyCallback
	isCA func(knownhosts.KnownKey) bool
	hint string
}

// onRecord asks the database what it holds for cfg.Addr and records in p
// the plain keys and the host key algorithms to ask for.
func (kc *knownHostsCheck) onRecord(p *hostKeyPolicy) error {
	var ke *knownhosts.KeyError
	err := kc.db(kc.cfg.Addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}, probe())
	if !errors.As(err, &ke) {
		if err != nil {
			return fmt.Errorf("known_hosts lookup for %s: %w", kc.cfg.Addr, err)
		}
		return nil
	}
	seen := map[string]bool{}
	caCovers := false
	for _, w := range ke.Want {
		if kc.isCA(w) {
			// A @cert-authority line for the address: its key is
			// the CA's, and says nothing of the host key's type.
			caCovers = true
			continue
		}
		p.known = append(p.known, KnownKey{Key: w.Key, File: w.Filename, Line: w.Line})
		for _, a := range algosForKeyType(w.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				p.algos = append(p.algos, a)
			}
		}
	}
	if caCovers {
		// Certificates first, then the plain keys on record (or,
		// with none, the preferred types, so a host without a
		// certificate shows the key gpuctl trust would record).
		plain := p.algos
		if len(plain) == 0 {
			plain = preferredHostKeyAlgos
		}
		p.algos = append(append([]string{}, certHostKeyAlgos...), plain...)
	}
	return nil
}

// check is the policy's ssh.HostKeyCallback.
func (kc *knownHostsCheck) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	cfg := kc.cfg
	if kc.db == nil {
		return &HostKeyError{Kind: HostKeyUnknown, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: kc.hint}
	}
	err := kc.db(hostname, remote, key)
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	if cert, ok := key.(*ssh.Certificate); ok && !errors.As(err, &ke) && !errors.As(err, &re) {
		// A certificate no @cert-authority line vouches for (another
		// CA, another principal, expired): check its plain key, as
		// OpenSSH does. The server proved it holds that key.
		key = cert.Key
		if err = kc.db(hostname, remote, key); err == nil {
			return nil
		}
		if !errors.As(err, &ke) && !errors.As(err, &re) {
			return fmt.Errorf("host key of %s: %w", cfg.name(), err)
		}
	}
	return kc.keyError(key, err)
}

// keyError turns the database's verdict on key into a *HostKeyError.
func (kc *knownHostsCheck) keyError(key ssh.PublicKey, err error) error {
	cfg := kc.cfg
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke):
		// Only plain keys on record make a mismatch: a @cert-authority
		// line for the address is no key the host could present.
		var known []KnownKey
		for _, w := range ke.Want {
			if !kc.isCA(w) {
				known = append(known, KnownKey{Key: w.Key, File: w.Filename, Line: w.Line})
			}
		}
		if len(known) == 0 {
			return &HostKeyError{Kind: HostKeyUnknown, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: kc.hint}
		}
		return &HostKeyError{Kind: HostKeyMismatch, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts, Hint: kc.hint, Known: known}
	case errors.As(err, &re):
		return &HostKeyError{Kind: HostKeyRevoked, Host: cfg.name(), Addr: cfg.Addr, Key: key, Files: cfg.KnownHosts,
			Known: []KnownKey{{Key: re.Revoked.Key, File: re.Revoked.Filename, Line: re.Revoked.Line}}}
	}
	return fmt.Errorf("host key of %s: %w", cfg.name(), err)
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

// lineRef is one line of a known_hosts file, numbered as knownhosts does.
type lineRef struct {
	file string
	line int
}

// certAuthorityLines lists the @cert-authority lines of files.
func certAuthorityLines(files []string) map[lineRef]bool {
	out := map[lineRef]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for n := 1; sc.Scan(); n++ {
			if w := strings.Fields(sc.Text()); len(w) > 0 && w[0] == "@cert-authority" {
				out[lineRef{f, n}] = true
			}
		}
	}
	return out
}
