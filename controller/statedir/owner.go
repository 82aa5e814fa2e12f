package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// The state directory's owner rule: gpuctl never writes into a directory that
// belongs to another (non-root) user. The services run as a dedicated
// account (`gpuctl` with the NixOS module and the contrib units) that owns
// the state directory; a `sudo gpuctl shutdown pc` that went ahead would
// leave root-owned 0700 lock directories and 0600 files there, and the
// services would then fail with "permission denied" until someone chowned
// them back (systemd's StateDirectory= does not: it skips the recursive
// chown when the top directory's owner is already right). So the CLI
// refuses, and names the command that works: the same one as that user.
//
// A directory owned by root is not refused: a non-root gpuctl that can write
// there (a sticky /tmp, say) leaves files root can still manage.

// OwnerError says that gpuctl was about to write into a directory owned by
// another user than the one it runs as.
type OwnerError struct {
	// Dir is the directory gpuctl would have written into.
	Dir string
	// Owner and Self are the user names (or uids) of the directory's owner
	// and of the running process.
	Owner, Self string
	// Command, when set, is the gpuctl command line (without the program
	// name) to suggest running as Owner.
	Command string
}

func (e *OwnerError) Error() string {
	cmd := "…"
	if e.Command != "" {
		cmd = e.Command
	}
	return fmt.Sprintf("state directory %s belongs to user %s, but gpuctl runs as %s: files it wrote there "+
		"would lock %s's services out; run it as that user, e.g. `sudo -u %s gpuctl %s`",
		e.Dir, e.Owner, e.Self, e.Owner, e.Owner, cmd)
}

// geteuid is the effective uid the rule compares against (tests replace it).
var geteuid = os.Geteuid

// CheckOwner applies the owner rule to dir, the directory gpuctl is about to
// create or write a file into: the nearest existing directory at or above dir
// must belong to the user gpuctl runs as, or to root. It returns an
// *OwnerError otherwise, and nil when nothing exists to check.
func CheckOwner(dir string) error {
	d := filepath.Clean(dir)
	for {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return nil // MkdirAll or the write reports this
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return nil
			}
			self := geteuid()
			if int(st.Uid) == self || st.Uid == 0 {
				return nil
			}
			return &OwnerError{Dir: d, Owner: userName(int(st.Uid)), Self: userName(self)}
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil // unreadable: the write itself reports it
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "#" + strconv.Itoa(uid) // sudo -u's spelling of a bare uid
}
