package sshexec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/kevinburke/ssh_config"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// gpuctl status dials every host at once, and each dial would read and
// parse the same ssh_config, known_hosts and identity files. These caches
// parse each file once per process and per version of the file: an entry
// is used only while the file's size and modification time are those it
// was parsed at, so an edit (gpuctl trust appending a key, a new identity)
// is seen by the next dial, as without the cache. One entry per path.

// version identifies one version of a file: a file replaced by a rename
// has a new inode, one edited in place a new size or modification time.
type version struct {
	ino   uint64
	size  int64
	mtime int64
	mode  fs.FileMode
}

func versionOf(fi fs.FileInfo) version {
	v := version{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.ino = uint64(st.Ino)
	}
	return v
}

// identity is what one identity file holds.
type identity struct {
	signer ssh.Signer
	// missing is set for a passphrase-protected key.
	missing *ssh.PassphraseMissingError
	// parseErr is why the file is not a private key.
	parseErr error
}

type identityEntry struct {
	v  version
	id *identity
}

var (
	identityMu    sync.Mutex
	identityCache = map[string]identityEntry{}
)

// readIdentity reads and parses identity file f, or returns what an earlier
// call parsed from the same version of it. err is a failure to read it.
func readIdentity(f string) (*identity, error) {
	fh, err := os.Open(f)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	v := versionOf(fi)
	identityMu.Lock()
	e, ok := identityCache[f]
	identityMu.Unlock()
	if ok && e.v == v {
		return e.id, nil
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, err
	}
	id := &identity{}
	s, err := ssh.ParsePrivateKey(data)
	var pm *ssh.PassphraseMissingError
	switch {
	case err == nil:
		id.signer = s
	case errors.As(err, &pm):
		id.missing = pm
	default:
		id.parseErr = err
	}
	identityMu.Lock()
	identityCache[f] = identityEntry{v: v, id: id}
	identityMu.Unlock()
	return id, nil
}

// hostKeyDB is a parsed set of known_hosts files.
type hostKeyDB struct {
	versions []version
	check    ssh.HostKeyCallback
	// caLines are the @cert-authority lines: knownhosts reports them in
	// KeyError.Want like plain keys, but a CA's key is never the host's.
	caLines map[lineRef]bool
}

var (
	knownHostsMu    sync.Mutex
	knownHostsCache = map[string]*hostKeyDB{} // the files, joined by NUL
)

// loadKnownHosts parses the (existing) known_hosts files, or returns what
// an earlier call parsed from the same versions of them.
func loadKnownHosts(files []string) (*hostKeyDB, error) {
	vs := make([]version, len(files))
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("known_hosts file %s: %w", f, err)
		}
		vs[i] = versionOf(fi)
	}
	key := strings.Join(files, "\x00")
	knownHostsMu.Lock()
	db, ok := knownHostsCache[key]
	knownHostsMu.Unlock()
	if ok && equalVersions(db.versions, vs) {
		return db, nil
	}
	check, err := knownhosts.New(files...)
	if err != nil {
		return nil, err
	}
	db = &hostKeyDB{versions: vs, check: check, caLines: certAuthorityLines(files)}
	knownHostsMu.Lock()
	knownHostsCache[key] = db
	knownHostsMu.Unlock()
	return db, nil
}

func equalVersions(a, b []version) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type sshConfigEntry struct {
	v   version
	cfg *ssh_config.Config
}

var (
	sshConfigMu    sync.Mutex
	sshConfigCache = map[string]sshConfigEntry{}
)

// decodeSSHConfig parses the open ssh_config file fh (named file), or
// returns what an earlier call parsed from the same version of it. A file
// with an Include directive is parsed every time: the included files may
// have changed.
func decodeSSHConfig(fh *os.File, file string) (*ssh_config.Config, error) {
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	v := versionOf(fi)
	sshConfigMu.Lock()
	e, ok := sshConfigCache[file]
	sshConfigMu.Unlock()
	if ok && e.v == v {
		return e.cfg, nil
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, err
	}
	cfg, err := ssh_config.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if !hasInclude(data) {
		sshConfigMu.Lock()
		sshConfigCache[file] = sshConfigEntry{v: v, cfg: cfg}
		sshConfigMu.Unlock()
	}
	return cfg, nil
}

func hasInclude(data []byte) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(strings.ToLower(f[0]), "include") {
			return true
		}
	}
	return false
}
