package hostcmd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/ollamalive/gpuctl/sshexec"
)

// Mount is what the mount, free-space and write-probe checks learned about
// the filesystem holding models_dir.
type Mount struct {
	Dir      string   `json:"dir"`
	Target   string   `json:"target"`
	Source   string   `json:"source"`
	FSType   string   `json:"fstype"`
	Options  []string `json:"options"`
	ReadOnly bool     `json:"read_only"`
	// Writable is the write probe's verdict (nil: not probed).
	Writable  *bool  `json:"writable"`
	SizeBytes *int64 `json:"size_bytes"`
	FreeBytes *int64 `json:"free_bytes"`
}

// FindmntArgs is the argv of the mount check.
func FindmntArgs(dir string) []string { return []string{"findmnt", "--json", "--target", dir} }

// DFArgs is the argv of the free-space check.
func DFArgs(dir string) []string {
	return []string{"df", "-B1", "--output=source,fstype,size,used,avail,target", "--", dir}
}

// DFCmd is DFArgs with its deadline: the free-space check, and the room
// a pull checks for first.
func DFCmd(dir string) sshexec.Cmd {
	return sshexec.Cmd{Args: DFArgs(dir), Timeout: remoteTimeout, MaxOutput: 64 << 10}
}

// writeProbeScript creates, fsyncs and removes a file under $1. It is fixed:
// the directory arrives as an argument, never inside the script.
const writeProbeScript = `f="$1/.gpuctl-probe.$$"; touch "$f" || exit 1; sync "$f"; s=$?; rm -f "$f" || s=1; exit $s`

// WriteProbeArgs is the argv of the write probe.
func WriteProbeArgs(dir string) []string { return []string{"sh", "-c", writeProbeScript, "sh", dir} }

// FindmntEntry is one filesystem in findmnt --json output.
type FindmntEntry struct {
	Target   string         `json:"target"`
	Source   string         `json:"source"`
	FSType   string         `json:"fstype"`
	Options  string         `json:"options"`
	Children []FindmntEntry `json:"children"`
}

// ParseFindmnt parses `findmnt --json --target DIR`; the innermost
// filesystem listed is the one holding DIR.
func ParseFindmnt(data []byte) (Mount, error) {
	var doc struct {
		Filesystems []FindmntEntry `json:"filesystems"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return Mount{}, fmt.Errorf("findmnt output is not JSON: %w", err)
	}
	if len(doc.Filesystems) == 0 {
		return Mount{}, fmt.Errorf("findmnt lists no filesystem")
	}
	e := doc.Filesystems[len(doc.Filesystems)-1]
	for len(e.Children) > 0 {
		e = e.Children[len(e.Children)-1]
	}
	if e.Target == "" {
		return Mount{}, fmt.Errorf("findmnt entry has no target")
	}
	m := Mount{Target: e.Target, Source: e.Source, FSType: e.FSType}
	if e.Options != "" {
		m.Options = strings.Split(e.Options, ",")
	}
	for _, o := range m.Options {
		if o == "ro" {
			m.ReadOnly = true
		}
	}
	return m, nil
}

// DFRow is one data row of df --output=source,fstype,size,used,avail,target.
type DFRow struct {
	Source string
	FSType string
	Size   int64
	Used   int64
	Avail  int64
	Target string
}

// ParseDF parses `df -B1 --output=source,fstype,size,used,avail,target -- DIR`.
func ParseDF(data []byte) (DFRow, error) {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) < 2 {
		return DFRow{}, fmt.Errorf("df printed %d lines, want a header and a row", len(lines))
	}
	hdr := strings.Fields(lines[0])
	if len(hdr) < 6 || hdr[0] != "Filesystem" || hdr[1] != "Type" {
		return DFRow{}, fmt.Errorf("unexpected df header %.80q", lines[0])
	}
	f := strings.Fields(lines[1])
	if len(f) < 6 {
		return DFRow{}, fmt.Errorf("df row has %d fields, want 6: %.80q", len(f), lines[1])
	}
	var nums [3]int64
	for i := range nums {
		n, err := strconv.ParseInt(f[2+i], 10, 64)
		if err != nil || n < 0 {
			return DFRow{}, fmt.Errorf("df: %q is not a byte count", f[2+i])
		}
		nums[i] = n
	}
	// The target is the rest of the line (mount points may contain spaces).
	rest := lines[1]
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " \t")
		rest = rest[strings.IndexAny(rest+" ", " \t"):]
	}
	return DFRow{Source: f[0], FSType: f[1], Size: nums[0], Used: nums[1], Avail: nums[2], Target: strings.TrimSpace(rest)}, nil
}

// NTFSHint explains known NTFS mount and write failures (ntfs-3g and ntfs3
// texts, "Read-only file system") with what to do; "" if none applies.
func NTFSHint(text string) string {
	switch {
	case strings.Contains(text, "Windows is hibernated") || strings.Contains(text, "Metadata kept in Windows cache") ||
		strings.Contains(text, "unclean file system") || strings.Contains(text, "Falling back to read-only mount"):
		return "Windows left the NTFS volume hibernated (Fast Startup or hibernation), so it can only be mounted read-only: " +
			"boot Windows, turn off Fast Startup (powercfg /h off) and shut down fully"
	case strings.Contains(text, "Read-only file system"):
		return "the model drive is read-only; on NTFS that usually means Windows Fast Startup or hibernation: " +
			"boot Windows, turn off Fast Startup (powercfg /h off), shut down fully, then wake again"
	case strings.Contains(text, `volume is dirty and "force" flag is not set`):
		return "the NTFS volume is marked dirty and ntfs3 refused it: run chkdsk in Windows (or ntfsfix -d)"
	case strings.Contains(text, "wrong fs type, bad option, bad superblock"):
		return "mounting the model drive failed; dmesg on the host says why (ntfs3 refuses dirty volumes: run chkdsk in Windows)"
	}
	return ""
}

// MountProblem says what is wrong with the mount holding models_dir.
func MountProblem(m Mount) (msg string, transient bool) {
	if m.Target == "/" {
		return fmt.Sprintf("%s is on the root filesystem: the model drive is not mounted", m.Dir), true
	}
	if m.ReadOnly {
		return fmt.Sprintf("%s (%s) is mounted read-only: %s", m.Target, m.FSType, NTFSHint("Read-only file system")), false
	}
	return "", false
}

// WriteProbeProblem classifies a failed write probe.
func WriteProbeProblem(dir string, stdout, stderr []byte, exit int) string {
	all := string(stderr) + "\n" + string(stdout)
	if h := NTFSHint(all); h != "" {
		return "cannot write to " + dir + ": " + h
	}
	switch {
	case strings.Contains(all, "Permission denied"):
		return "cannot write to " + dir + ": permission denied (on NTFS set uid=/gid= or permissions in the mount options)"
	case strings.Contains(all, "No such file or directory"):
		return dir + " does not exist on the host"
	case strings.Contains(all, "No space left on device"):
		return "cannot write to " + dir + ": the drive is full"
	}
	return fmt.Sprintf("write probe in %s failed (exit %d): %s", dir, exit, FirstLine(stderr, stdout))
}
