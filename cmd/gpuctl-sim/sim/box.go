package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// Faults are the ways a simulated box goes wrong.
type Faults struct {
	// DriverNotLoaded: nvidia-smi (on the host and in the container) fails
	// as after a kernel update without the driver module.
	DriverNotLoaded bool `json:"driver_not_loaded,omitempty"`
	// ReadOnlyDrive: the model drive is mounted read-only, as ntfs-3g does
	// for a hibernated Windows volume.
	ReadOnlyDrive bool `json:"read_only_drive,omitempty"`
	// NeverBoots: magic packets are received but the box never comes up.
	NeverBoots bool `json:"never_boots,omitempty"`
	// HostKeyRotated: the box boots with a new host key, not the one the
	// inventory pins (a reinstalled stick, or an impostor).
	HostKeyRotated bool `json:"host_key_rotated,omitempty"`
}

// FaultNames are the names --fault accepts.
var FaultNames = []string{"driver-not-loaded", "read-only-drive", "never-boots", "host-key-rotated"}

// Set turns the named fault on.
func (f *Faults) Set(name string) error {
	switch name {
	case "driver-not-loaded":
		f.DriverNotLoaded = true
	case "read-only-drive":
		f.ReadOnlyDrive = true
	case "never-boots":
		f.NeverBoots = true
	case "host-key-rotated":
		f.HostKeyRotated = true
	default:
		return fmt.Errorf("unknown fault %q (known: %s; slow boot is --boot-delay)", name, strings.Join(FaultNames, ", "))
	}
	return nil
}

// Box is what the stand-in commands know about the simulated gaming PC. The
// in-process simulator fills it per PC; the stand-in executables of the
// end-to-end tier read it, as JSON, from the file named by $GPUCTL_SIM_BOX.
type Box struct {
	Name string `json:"name"`
	// ModelsDir is models_dir as the inventory names it; LocalDir is where
	// that directory really is on this machine ("" means ModelsDir).
	ModelsDir string `json:"models_dir"`
	LocalDir  string `json:"local_dir,omitempty"`
	Container string `json:"container"`
	// Booted is when the box came up (docker's StartedAt, the uptime).
	Booted time.Time `json:"booted"`
	Faults Faults    `json:"faults"`
	// Interface is the NIC facing the gpuctl server (route and ethtool).
	Interface string `json:"interface"`
	// Address is the box's own address (the route's src).
	Address string `json:"address"`
	// PowerSocket, for the stand-in sudo, is a unix socket told "poweroff".
	PowerSocket string `json:"power_socket,omitempty"`

	// In-process only.
	now      func() time.Time
	sshConn  string                     // $SSH_CONNECTION
	conns    func(port int) [][2]string // established connections to port: local, peer
	powerOff func()                     // sudo -n poweroff
	probeSeq atomic.Int64
}

func (b *Box) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

func (b *Box) local() string {
	if b.LocalDir != "" {
		return b.LocalDir
	}
	return b.ModelsDir
}

// localPath maps a path under ModelsDir to this machine; false for paths
// outside it.
func (b *Box) localPath(p string) (string, bool) {
	p = path.Clean(p)
	if p != b.ModelsDir && !strings.HasPrefix(p, b.ModelsDir+"/") {
		return "", false
	}
	return filepath.Join(b.local(), filepath.FromSlash(strings.TrimPrefix(p, b.ModelsDir))), true
}

// readOnly reports whether the model drive is read-only: the fault, or the
// real directory's filesystem (a read-only bind mount in the e2e tier).
func (b *Box) readOnly() bool {
	if b.Faults.ReadOnlyDrive {
		return true
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.local(), &st); err == nil && st.Flags&0x1 != 0 { // ST_RDONLY
		return true
	}
	return false
}

// Result is a command's outcome.
type Result struct {
	Stdout, Stderr string
	Exit           int
}

func okR(out string) Result { return Result{Stdout: out} }

func fail(exit int, format string, args ...any) Result {
	return Result{Stderr: fmt.Sprintf(format, args...), Exit: exit}
}

func notFound(prog string) Result { return fail(127, "sh: 1: %s: not found\n", prog) }

// Exec runs one command line received over SSH, by argv: the exact
// templates gpuctl's controller, models and idle packages send (see
// hostcmd.GPUQueryArgs, InspectArgs, ContainerGPUArgs, FindmntArgs,
// DFArgs, WriteProbeArgs; StatCmd, CatCmd; the idle script;
// hostcmd.PoweroffCommand). Anything else is "not found" (exit 127), so a
// template that drifts shows up as a failing check, not as silence.
func (b *Box) Exec(raw string) Result {
	argv, err := sshtest.SplitWords(raw)
	if err != nil || len(argv) == 0 {
		return fail(2, "sh: 1: Syntax error: gpuctl-sim runs simple commands only (%v)\n", err)
	}
	return b.Run(argv)
}

// Run runs one argv.
func (b *Box) Run(argv []string) Result {
	switch argv[0] {
	case "timeout":
		if len(argv) < 3 {
			return fail(125, "timeout: missing operand\n")
		}
		return b.Run(argv[2:])
	case "true":
		return okR("")
	case "nvidia-smi":
		return b.nvidiaSMI(argv[1:])
	case "docker":
		// The gpuctl account is not in the docker group: only the sudo
		// rules reach the daemon (see sudo below).
		return fail(1, "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: "+
			"Get \"http://%%2Fvar%%2Frun%%2Fdocker.sock/v1.47/containers/json\": dial unix /var/run/docker.sock: connect: permission denied\n")
	case "findmnt":
		return b.findmnt(argv[1:])
	case "df":
		return b.df(argv[1:])
	case "sh":
		return b.sh(argv[1:])
	case "sudo":
		return b.sudo(argv[1:])
	case "stat":
		return b.stat(argv[1:])
	case "cat":
		return b.cat(argv[1:])
	case "date":
		if slices.Equal(argv[1:], []string{"+%s"}) {
			return okR(strconv.FormatInt(b.clock().Unix(), 10) + "\n")
		}
	case "printenv":
		if slices.Equal(argv[1:], []string{"SSH_CONNECTION"}) {
			if b.sshConn == "" {
				return Result{Exit: 1}
			}
			return okR(b.sshConn + "\n")
		}
	case "who":
		// Nobody is logged in on the simulated box (no public `who`
		// sample exists; an empty utmp prints nothing, exit 0).
		return okR("")
	case "ss":
		return b.ss(argv[1:])
	case "ethtool":
		if len(argv) == 2 {
			return okR(string(Fixture(fxEthtoolMagic)))
		}
	case "ip":
		if len(argv) == 5 && argv[1] == "-o" && argv[2] == "route" && argv[3] == "get" {
			return okR(routeGet(argv[4], b.Interface, b.Address))
		}
	}
	return notFound(argv[0])
}

func (b *Box) nvidiaSMI(args []string) Result {
	if b.Faults.DriverNotLoaded {
		// NVML_ERROR_DRIVER_NOT_LOADED is 9 (inferred, SOURCES.md §1).
		return Result{Stdout: string(Fixture(fxNoDriver)), Exit: 9}
	}
	if slices.Equal(args, []string{"-L"}) {
		return okR(string(Fixture(fxGPUList)))
	}
	var fields []string
	format := ""
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--query-gpu="):
			fields = strings.Split(strings.TrimPrefix(a, "--query-gpu="), ",")
		case strings.HasPrefix(a, "--format="):
			format = strings.TrimPrefix(a, "--format=")
		default:
			return fail(2, "gpuctl-sim nvidia-smi: %q is not simulated\n", a)
		}
	}
	if fields == nil || format == "" {
		return fail(2, "gpuctl-sim nvidia-smi: only --query-gpu=… --format=csv… and -L are simulated\n")
	}
	header, units := true, true
	for _, o := range strings.Split(format, ",") {
		switch o {
		case "csv":
		case "noheader":
			header = false
		case "nounits":
			units = false
		default:
			return fail(2, "gpuctl-sim nvidia-smi: format %q is not simulated\n", o)
		}
	}
	out, bad, err := nvidiaSMIQuery(fields, header, units)
	switch {
	case err != nil:
		return fail(2, "gpuctl-sim nvidia-smi: %v\n", err)
	case bad != "":
		return Result{Stdout: bad, Exit: 2}
	}
	return okR(out)
}

func (b *Box) docker(args []string) Result {
	cont := b.Container
	switch {
	case len(args) == 4 && args[0] == "inspect" && args[1] == "--type" && args[2] == "container":
		if args[3] != cont {
			return Result{Stdout: "[]\n", Stderr: "Error: No such container: " + args[3] + "\n", Exit: 1}
		}
		return okR(dockerInspect(cont, b.ModelsDir, b.Booted))
	case len(args) >= 3 && args[0] == "exec":
		if args[1] != cont {
			return fail(1, "Error response from daemon: No such container: %s\n", args[1])
		}
		if args[2] == "nvidia-smi" {
			return b.nvidiaSMI(args[3:])
		}
		return fail(127, "OCI runtime exec failed: exec failed: unable to start container process: exec: %q: executable file not found in $PATH: unknown\n", args[2])
	}
	return fail(1, "gpuctl-sim docker: %q is not simulated\n", strings.Join(args, " "))
}

func (b *Box) findmnt(args []string) Result {
	if len(args) != 3 || args[0] != "--json" || args[1] != "--target" {
		return fail(1, "gpuctl-sim findmnt: only --json --target DIR is simulated\n")
	}
	if _, ok := b.localPath(args[2]); !ok {
		return fail(1, "gpuctl-sim findmnt: %s is not on the simulated model drive\n", args[2])
	}
	return okR(findmntJSON(b.ModelsDir, b.readOnly()))
}

func (b *Box) statfs(p string) (dfRow, error) {
	lp, ok := b.localPath(p)
	if !ok {
		return dfRow{}, fs.ErrNotExist
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(lp, &st); err != nil {
		return dfRow{}, err
	}
	src, typ := dfSource()
	bs := int64(st.Bsize)
	size := int64(st.Blocks) * bs
	return dfRow{Source: src, FSType: typ, Size: size, Used: size - int64(st.Bfree)*bs,
		Avail: int64(st.Bavail) * bs, Target: b.ModelsDir}, nil
}

func (b *Box) df(args []string) Result {
	var cols []string
	var dirs []string
	blocks := false
	for _, a := range args {
		switch {
		case a == "-B1":
			blocks = true
		case strings.HasPrefix(a, "--output="):
			cols = strings.Split(strings.TrimPrefix(a, "--output="), ",")
		case a == "--":
		case strings.HasPrefix(a, "-"):
			return fail(1, "gpuctl-sim df: %q is not simulated\n", a)
		default:
			dirs = append(dirs, a)
		}
	}
	if !blocks || cols == nil || len(dirs) != 1 {
		return fail(1, "gpuctl-sim df: only df -B1 --output=… DIR is simulated\n")
	}
	row, err := b.statfs(dirs[0])
	if err != nil {
		return fail(1, "df: %s: No such file or directory\n", dirs[0])
	}
	out, err := renderDF(cols, row)
	if err != nil {
		return fail(1, "%v\n", err)
	}
	return okR(out)
}

var writeProbeScript = hostcmd.WriteProbeArgs("DIR")[2]

func (b *Box) sh(args []string) Result {
	if len(args) < 2 || args[0] != "-c" {
		return fail(2, "gpuctl-sim sh: only sh -c SCRIPT … is simulated\n")
	}
	switch {
	case args[1] == writeProbeScript && len(args) == 4:
		return b.writeProbe(args[3])
	case len(args) == 6 && args[2] == "gpuctl-idle":
		return b.idleScript(args[1], args[3], args[4], args[5])
	}
	return fail(2, "gpuctl-sim sh: this script is not simulated\n")
}

// writeProbe does what the controller's write probe does, for real, in the
// models directory: create and remove a file. It leaves out the fsync: its
// outcome on this machine's disk says nothing about the box, and its cost
// here (a journal commit per probe) is the box's own time, which
// CommandDelay stands for; what the probe reports (a missing directory, a
// read-only or full drive) comes from the create.
func (b *Box) writeProbe(dir string) Result {
	f := fmt.Sprintf("%s/.gpuctl-probe.%d", dir, 40000+b.probeSeq.Add(1))
	lp, ok := b.localPath(f)
	if !ok {
		return fail(1, "touch: cannot touch '%s': No such file or directory\n", f)
	}
	if b.readOnly() {
		return Result{Stderr: touchReadOnly(f), Exit: 1}
	}
	fh, err := os.OpenFile(lp, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		msg := "Permission denied"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			msg = "No such file or directory"
		case errors.Is(err, syscall.EROFS):
			msg = "Read-only file system"
		case errors.Is(err, syscall.ENOSPC):
			msg = "No space left on device"
		}
		return fail(1, "touch: cannot touch '%s': %s\n", f, msg)
	}
	fh.Close()
	if rerr := os.Remove(lp); rerr != nil {
		return fail(1, "sync: error syncing '%s'\n", f)
	}
	return okR("")
}

func (b *Box) sudo(args []string) Result {
	if slices.Equal(args, hostcmd.PoweroffArgs()[1:]) {
		if b.powerOff != nil {
			b.powerOff()
		}
		return okR("")
	}
	// The generated sudo rules: docker by its full path, exactly the
	// controller's two command lines for the configured container.
	for _, tmpl := range [][]string{hostcmd.InspectArgs(b.Container), hostcmd.ContainerGPUArgs(b.Container)} {
		if slices.Equal(append([]string{"sudo"}, args...), tmpl) {
			return b.docker(args[2:])
		}
	}
	// What sudo -n says for anything the sudoers rule does not allow.
	return fail(1, "sudo: a password is required\n")
}

func (b *Box) stat(args []string) Result {
	if len(args) < 4 || args[0] != "-c" || args[1] != "%s %n" || args[2] != "--" {
		return fail(1, "gpuctl-sim stat: only stat -c '%%s %%n' -- PATH… is simulated\n")
	}
	var r Result
	var out strings.Builder
	for _, p := range args[3:] {
		lp, ok := b.localPath(p)
		fi, err := os.Stat(lp)
		if !ok || err != nil {
			r.Stderr += fmt.Sprintf("stat: cannot statx '%s': No such file or directory\n", p)
			r.Exit = 1
			continue
		}
		fmt.Fprintf(&out, "%d %s\n", fi.Size(), p)
	}
	r.Stdout = out.String()
	return r
}

func (b *Box) cat(args []string) Result {
	if slices.Equal(args, []string{"/proc/uptime"}) {
		return okR(procUptime(b.clock().Sub(b.Booted)))
	}
	if len(args) != 2 || args[0] != "--" {
		return fail(1, "gpuctl-sim cat: only cat -- PATH is simulated\n")
	}
	lp, ok := b.localPath(args[1])
	data, err := os.ReadFile(lp)
	if !ok || err != nil {
		return fail(1, "cat: %s: No such file or directory\n", args[1])
	}
	return Result{Stdout: string(data)}
}

var reSport = regexp.MustCompile(`^\( sport = :(\d+) \)$`)

func (b *Box) ss(args []string) Result {
	if len(args) != 4 || args[0] != "-Htn" || args[1] != "state" || args[2] != "established" {
		return fail(1, "gpuctl-sim ss: only ss -Htn state established '( sport = :PORT )' is simulated\n")
	}
	m := reSport.FindStringSubmatch(args[3])
	if m == nil {
		return fail(1, "gpuctl-sim ss: filter %q is not simulated\n", args[3])
	}
	port, _ := strconv.Atoi(m[1])
	if b.conns == nil {
		return okR("")
	}
	return okR(ssEstablished(b.conns(port)))
}

var reRunLine = regexp.MustCompile(`^run ([a-z]+) (.+)$`)

// idleScript emulates the idle package's one-round-trip script: it reads
// the script's `run NAME COMMAND…` lines and runs each command here (the
// script's own shell functions partials, route and wol by name), printing
// the same marker-delimited sections.
func (b *Box) idleScript(script, marker, modelsDir, port string) Result {
	var out bytes.Buffer
	for _, line := range strings.Split(script, "\n") {
		m := reRunLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		name, cmd := m[1], strings.ReplaceAll(m[2], "$port", port)
		var r Result
		switch cmd {
		case "partials":
			r = b.partials(modelsDir)
		case "route":
			r = b.route()
		case "wol":
			r = b.wol()
		default:
			argv, err := sshtest.SplitWords(cmd)
			if err != nil || len(argv) == 0 {
				r = fail(2, "gpuctl-sim: cannot run %q\n", cmd)
			} else {
				r = b.Run(argv)
			}
		}
		fmt.Fprintf(&out, "%s begin %s\n%s%s\n%s end %s %d\n", marker, name, r.Stdout, r.Stderr, marker, name, r.Exit)
	}
	return okR(out.String())
}

// serverIP is the first field of $SSH_CONNECTION.
func (b *Box) serverIP() string {
	if f := strings.Fields(b.sshConn); len(f) > 0 {
		return f[0]
	}
	return ""
}

func (b *Box) route() Result {
	ip := b.serverIP()
	if ip == "" {
		return fail(1, "Error: inet prefix is expected rather than \"\".\n")
	}
	return okR(routeGet(ip, b.Interface, b.Address))
}

func (b *Box) wol() Result {
	if b.serverIP() == "" {
		return okR("no route back to the gpuctl server\n")
	}
	return okR("interface " + b.Interface + "\n" + string(Fixture(fxEthtoolMagic)))
}

// partials is find "$models" -maxdepth 3 -name 'sha256-*-partial*'
// -printf '%s %b %T@ %p\n'. GNU find prints %T@ with ten fractional
// digits, the nanoseconds and a trailing 0 ("1717538311.1234567890").
func (b *Box) partials(dir string) Result {
	lp, ok := b.localPath(dir)
	if fi, err := os.Stat(lp); !ok || err != nil || !fi.IsDir() {
		return Result{Stdout: "no such directory: " + dir + "\n", Exit: 2}
	}
	var out strings.Builder
	filepath.WalkDir(lp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(lp, p)
		if d.IsDir() && rel != "." && strings.Count(rel, string(filepath.Separator)) >= 2 {
			return fs.SkipDir
		}
		if ok, _ := path.Match("sha256-*-partial*", d.Name()); !ok || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		var blocks int64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			blocks = st.Blocks
		}
		mt := fi.ModTime()
		fmt.Fprintf(&out, "%d %d %d.%09d0 %s\n", fi.Size(), blocks, mt.Unix(), mt.Nanosecond(), path.Join(dir, filepath.ToSlash(rel)))
		return nil
	})
	return okR(out.String())
}
