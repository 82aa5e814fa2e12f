package ollamatest

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// DriveRunner is a fake sshexec.Runner for the commands gpuctl runs against
// a host's models drive. It maps the remote directory Remote onto the local
// directory Local (the one a fake Server writes to, or not) and implements,
// in Go, exactly these argv forms:
//
//	df -B1 --output=source,fstype,size,used,avail,target -- PATH
//	                                → GNU df's header and one row, Avail free
//	stat -c '%s %n' -- PATH...      → "<size> <path>" per existing file
//	cat -- PATH                     → the file's bytes
//
// with GNU coreutils' error messages and exit status 1 for missing paths.
// Anything else exits 127. Paths outside Remote do not exist.
type DriveRunner struct {
	Remote string
	Local  string
	// Avail is the free space df reports, in bytes.
	Avail int64
	// Err, when set, is returned by every Run (the SSH connection failing).
	Err error

	mu   sync.Mutex
	cmds [][]string
}

var _ sshexec.Runner = (*DriveRunner)(nil)

// Commands returns the argv of every command run so far.
func (d *DriveRunner) Commands() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.cmds)
}

// SetAvail changes the free space df reports.
func (d *DriveRunner) SetAvail(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Avail = n
}

func (d *DriveRunner) local(p string) (string, bool) {
	p = path.Clean(p)
	if p != d.Remote && !strings.HasPrefix(p, d.Remote+"/") {
		return "", false
	}
	return filepath.Join(d.Local, filepath.FromSlash(strings.TrimPrefix(p, d.Remote))), true
}

// Run implements sshexec.Runner.
func (d *DriveRunner) Run(ctx context.Context, cmd sshexec.Cmd) (sshexec.Result, error) {
	d.mu.Lock()
	d.cmds = append(d.cmds, slices.Clone(cmd.Args))
	avail, rerr := d.Avail, d.Err
	d.mu.Unlock()
	if rerr != nil {
		return sshexec.Result{}, rerr
	}
	if err := ctx.Err(); err != nil {
		return sshexec.Result{}, err
	}
	start := time.Now()
	var out, errb strings.Builder
	status := 0
	a := cmd.Args
	switch {
	case len(a) == 5 && a[0] == "df" && a[1] == "-B1" && a[2] == "--output=source,fstype,size,used,avail,target" && a[3] == "--":
		lp, ok := d.local(a[4])
		if _, err := os.Stat(lp); !ok || err != nil {
			fmt.Fprintf(&errb, "df: %s: No such file or directory\n", a[4])
			status = 1
			break
		}
		// The columns as GNU df prints them (see the df_B1_output capture).
		fmt.Fprintf(&out, "%-14s %-7s %9s %7s %9s %s\n", "Filesystem", "Type", "1B-blocks", "Used", "Avail", "Mounted on")
		fmt.Fprintf(&out, "%-14s %-7s %9d %7d %9d %s\n", "/dev/sdb1", "fuseblk", 2*avail, avail, avail, d.Remote)
	case len(a) >= 5 && a[0] == "stat" && a[1] == "-c" && a[2] == "%s %n" && a[3] == "--":
		for _, p := range a[4:] {
			lp, ok := d.local(p)
			fi, err := os.Stat(lp)
			if !ok || err != nil {
				fmt.Fprintf(&errb, "stat: cannot statx '%s': No such file or directory\n", p)
				status = 1
				continue
			}
			fmt.Fprintf(&out, "%d %s\n", fi.Size(), p)
		}
	case len(a) == 3 && a[0] == "cat" && a[1] == "--":
		lp, ok := d.local(a[2])
		b, err := os.ReadFile(lp)
		if !ok || err != nil {
			fmt.Fprintf(&errb, "cat: %s: No such file or directory\n", a[2])
			status = 1
			break
		}
		out.Write(b)
	default:
		prog := ""
		if len(a) > 0 {
			prog = a[0]
		}
		fmt.Fprintf(&errb, "sh: 1: %s: not found\n", prog)
		status = 127
	}
	return sshexec.Result{
		Stdout: []byte(out.String()), Stderr: []byte(errb.String()),
		ExitStatus: status, Duration: time.Since(start),
	}, nil
}
