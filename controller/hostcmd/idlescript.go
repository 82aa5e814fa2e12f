package hostcmd

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// The remote half of the idle check is one fixed POSIX sh script, sent as
// `sh -c SCRIPT gpuctl-idle MARKER MODELS_DIR PORT`: nothing from the
// inventory is ever pasted into it (models_dir and the port travel as
// positional parameters, quoted by sshexec.Quote), so one SSH round trip
// gathers every remote signal.
//
// Each section prints
//
//	MARKER begin NAME
//	...the command's stdout and stderr...
//	MARKER end NAME EXIT
//
// MARKER is "@@gpuctl-" and 16 random hex digits chosen per run, so no
// output (a user name, a file name) can forge a section boundary. A section
// that is missing, or whose command exited non-zero, is a failed check.
//
// IdleScript is that script.
const IdleScript = `export LC_ALL=C
PATH="$PATH:/run/current-system/sw/bin:/usr/bin:/bin:/usr/sbin:/sbin"
m=$1 models=$2 port=$3
run() {
	name=$1; shift
	printf '%s begin %s\n' "$m" "$name"
	"$@" 2>&1
	rc=$?
	printf '\n%s end %s %d\n' "$m" "$name" "$rc"
}
server_ip() { printf '%s\n' "${SSH_CONNECTION%% *}"; }
partials() {
	[ -d "$models" ] || { printf 'no such directory: %s\n' "$models"; return 2; }
	timeout 20 find "$models" -maxdepth 3 -name 'sha256-*-partial*' -printf '%s %b %T@ %p\n'
}
route() { timeout 5 ip -o route get "$(server_ip)"; }
wol() {
	dev=$(timeout 5 ip -o route get "$(server_ip)" | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
	[ -n "$dev" ] || { echo "no route back to the gpuctl server"; return 2; }
	printf 'interface %s\n' "$dev"
	timeout 10 ethtool "$dev"
}
run now date +%s
run uptime cat /proc/uptime
run conn printenv SSH_CONNECTION
run who timeout 5 who
run gpu timeout 15 nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits
run clients timeout 5 ss -Htn state established "( sport = :$port )"
run partials partials
run route route
run wol wol
`

// Sec* are the section names, in script order.
const (
	SecNow      = "now"
	SecUptime   = "uptime"
	SecConn     = "conn"
	SecWho      = "who"
	SecGPU      = "gpu"
	SecClients  = "clients"
	SecPartials = "partials"
	SecRoute    = "route"
	SecWOL      = "wol"
)

// ScriptTimeout bounds the whole remote script.
const ScriptTimeout = 45 * time.Second

// IdleScriptCmd builds the command for one run.
func IdleScriptCmd(marker, modelsDir string, port uint16) sshexec.Cmd {
	return sshexec.Cmd{
		Args:      []string{"sh", "-c", IdleScript, "gpuctl-idle", marker, modelsDir, strconv.Itoa(int(port))},
		Timeout:   ScriptTimeout,
		MaxOutput: 256 << 10,
	}
}

func NewMarker() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "@@gpuctl-" + hex.EncodeToString(b[:])
}

// Section is one command's output and exit status.
type Section struct {
	Out  []byte
	Exit int
}

// ParseSections splits the script's stdout by marker. Text outside
// sections (a login banner, an rc file's echo) is ignored.
func ParseSections(out []byte, marker string) (map[string]Section, error) {
	secs := map[string]Section{}
	var cur string
	var body strings.Builder
	open := false
	for _, line := range strings.SplitAfter(string(out), "\n") {
		t := strings.TrimRight(line, "\n")
		rest, ok := strings.CutPrefix(t, marker+" ")
		if !ok {
			if open {
				body.WriteString(line)
			}
			continue
		}
		f := strings.Fields(rest)
		switch {
		case len(f) == 2 && f[0] == "begin":
			if open {
				return nil, fmt.Errorf("Section %q never ended", cur)
			}
			cur, open = f[1], true
			body.Reset()
		case len(f) == 3 && f[0] == "end" && open && f[1] == cur:
			rc, err := strconv.Atoi(f[2])
			if err != nil {
				return nil, fmt.Errorf("Section %q: bad exit status %q", cur, f[2])
			}
			b := body.String()
			// run() prints a newline before the end marker.
			b = strings.TrimSuffix(b, "\n")
			secs[cur] = Section{Out: []byte(b), Exit: rc}
			open = false
		default:
			return nil, fmt.Errorf("unexpected marker line %.80q", t)
		}
	}
	if open {
		return secs, fmt.Errorf("Section %q cut short (the script stopped or timed out)", cur)
	}
	return secs, nil
}

// DescribeExit explains a section's failure.
func DescribeExit(name string, s Section) string {
	msg := strings.TrimSpace(string(s.Out))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	switch s.Exit {
	case 124:
		return fmt.Sprintf("%s timed out on the box", name)
	case 127:
		return fmt.Sprintf("%s: command not found on the box (%s)", name, msg)
	}
	if msg == "" {
		return fmt.Sprintf("%s exited %d", name, s.Exit)
	}
	return fmt.Sprintf("%s exited %d: %s", name, s.Exit, msg)
}
