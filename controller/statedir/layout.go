// Package statedir owns gpuctl's state directory (`state_dir`): where every
// file in it lives, the one atomic writer the whole program uses, and the
// locks and markers by which `gpuctl serve`, `pull`, `wake` and `shutdown`
// (often separate processes: a service, a cron run, an admin's shell) keep
// out of each other's way.
//
// It imports only the standard library (and x/sys), so every layer may use
// it: sshexec writes known_hosts and nixconfig writes the flake with
// WriteFile.
//
// # Layout
//
//	STATE_DIR/
//	  id_ed25519                  the SSH key gpuctl generates when none is configured (IdentityFile)
//	  known_hosts                 host keys enrolled by `gpuctl trust` (KnownHosts)
//	  serve.json                  the running `gpuctl serve`: PID, listen address (ServeFile)
//	  activity.json               the proxy's last activity snapshot (ActivityFile)
//	  catalogue.json              models the proxy has seen per host (CatalogueFile)
//	  blobs/                      blobs uploaded through the proxy, spooled for a sleeping host (BlobsDir)
//	  status/HOST.json            the last state seen, and since when (StatusFile)
//	  wakes/HOST.history.json     recent wakes and their phase timings (WakeHistoryFile)
//	  wakes/HOST.last.json        the last wake's result (LastWakeFile)
//	  idle/HOST.json              idle shutdown's clocks (IdleFile)
//	  locks/HOST.lock             the host lock (LockHost)
//	  locks/HOST.waking           held for the whole of a wake (HoldWaking, WakeInProgress)
//	  draining/HOST               the draining marker (MarkDraining, Draining)
//	  pulls/HOST/PID-N.json       one per pull in progress (MarkPull, ActivePulls)
//
// Files are 0600 in 0700 directories, and gpuctl refuses to write into a
// directory another user owns (CheckOwner): run it as the state
// directory's owner.
//
// # Who may do what, when
//
// Four mechanisms, each for one question:
//
//   - The host lock (locks/HOST.lock, an flock) serialises the commands that
//     change a host's power state: wake, shutdown, and the pulls that run
//     inside them. A second wake either joins (LockTry fails, the caller
//     waits for the first one's result) or waits (LockWait).
//   - The waking marker (locks/HOST.waking, an flock held for the whole of
//     a wake) lets status tell "being woken" from "off" without taking the
//     host lock.
//   - The draining marker (draining/HOST, a file naming its PID) closes the
//     race between a request reaching the proxy and a shutdown powering the
//     box off. Each side writes before it reads: shutdown writes the marker,
//     then reads the proxy's in-flight count and aborts when it is above
//     zero; the proxy counts a request as in flight, then looks for the
//     marker and holds the request while it is there. So at least one side
//     sees the other. A marker whose process is dead is ignored.
//   - Pull markers (pulls/HOST/PID-N.json) tell idle shutdown that a pull
//     is running (gpuctl pull, or a wake that syncs declared models); a
//     marker of a dead process is ignored and removed. A pull does not
//     start while the host is draining (ErrDraining).
package statedir

import (
	"errors"
	"path/filepath"
	"syscall"
)

// The state directory's files, each named once.

// IdentityFile is the SSH key gpuctl generates and uses when the inventory
// names none.
func IdentityFile(dir string) string { return filepath.Join(dir, "id_ed25519") }

// KnownHosts is the known_hosts file `gpuctl trust` writes when the
// inventory names none.
func KnownHosts(dir string) string { return filepath.Join(dir, "known_hosts") }

// ServeFile announces the running `gpuctl serve` (its PID and address).
func ServeFile(dir string) string { return filepath.Join(dir, "serve.json") }

// ActivityFile is the proxy's last saved activity snapshot.
func ActivityFile(dir string) string { return filepath.Join(dir, "activity.json") }

// CatalogueFile is the models the proxy has learned each host has.
func CatalogueFile(dir string) string { return filepath.Join(dir, "catalogue.json") }

// BlobsDir spools blobs uploaded through the proxy.
func BlobsDir(dir string) string { return filepath.Join(dir, "blobs") }

// StatusFile is the last state seen for host, and since when.
func StatusFile(dir, host string) string { return filepath.Join(dir, "status", host+".json") }

// WakeHistoryFile is host's recent wakes.
func WakeHistoryFile(dir, host string) string {
	return filepath.Join(dir, "wakes", host+".history.json")
}

// LastWakeFile is host's last wake result.
func LastWakeFile(dir, host string) string { return filepath.Join(dir, "wakes", host+".last.json") }

// IdleFile is idle shutdown's clocks for host.
func IdleFile(dir, host string) string { return filepath.Join(dir, "idle", host+".json") }

// LockPath is host's lock file.
func LockPath(dir, host string) string { return filepath.Join(dir, "locks", host+".lock") }

// WakingPath is held (flock) for the whole of a wake of host.
func WakingPath(dir, host string) string { return filepath.Join(dir, "locks", host+".waking") }

// DrainingPath is the draining marker of host.
func DrainingPath(dir, host string) string { return filepath.Join(dir, "draining", host) }

// PullsDir holds host's pull markers.
func PullsDir(dir, host string) string { return filepath.Join(dir, "pulls", host) }

// writeProbeName is the file CheckWritable creates and removes.
const writeProbeName = ".write-probe"

// Alive reports whether a process with pid exists: the markers of dead
// processes are ignored. It is a variable so tests can simulate processes.
var Alive = func(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
