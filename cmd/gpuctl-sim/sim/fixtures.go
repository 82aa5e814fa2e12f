package sim

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

// The simulated box prints real captured outputs: the same files the parsers
// are tested on, from controller/fixtures (provenance in its
// testdata/SOURCES.md). Where a command's output depends on the box (a mount
// point, a time, free space) the capture is adjusted in that one place and
// nowhere else; see each function.

// Fixture file names.
const (
	fxGPUAllFields   = "nvidia-smi_query-gpu_all-fields_csv_rtx4080super_linux_595.71.05.csv"
	fxGPUList        = "nvidia-smi_L_rtx4080super.txt"
	fxNoDriver       = "nvidia-smi_error_driver-not-loaded.txt"
	fxDockerInspect  = "docker_inspect_running_nginx_20.10.5.json"
	fxFindmntRW      = "findmnt_json_ntfs-3g_fuseblk_LOCAL.json"
	fxFindmntRO      = "findmnt_json_ntfs-3g_readonly_LOCAL.json"
	fxDF             = "df_B1_output_ntfs-3g_LOCAL.txt"
	fxTouchRO        = "touch_on_readonly_ntfs-3g_LOCAL.txt"
	fxEthtoolMagic   = "ethtool_grep-Wake_magic_g.txt"
	fxRouteLocal     = "ip_o_route_get_local_LOCAL.txt"
	fxRouteOnLink    = "ip_o_route_get_onlink_LOCAL.txt"
	fxSSEstablished  = "ss_Htn_state-established_sport-11434_v4-v6_LOCAL.txt"
	fxProcUptime     = "proc_uptime_LOCAL.txt"
	fixtureMountFrom = "/tmp/ntfsmnt" // the mount point in the NTFS captures
)

// Fixture returns a captured output; it panics on an unknown name (a
// programming error caught by the tests).
func Fixture(name string) []byte { return fixtures.Must(name) }

// gpuTable is the RTX 4080 SUPER all-fields capture: header names (units
// stripped) and values as printed with units. There is no attributable RTX
// 3090 --query-gpu CSV capture (SOURCES.md §1), so the simulated gaming PC
// reports this card.
type gpuTable struct {
	names  []string
	units  []string // "MiB" for "memory.total [MiB]", "" when none
	values []string
}

func loadGPUTable() (*gpuTable, error) {
	r := csv.NewReader(bytes.NewReader(Fixture(fxGPUAllFields)))
	r.TrimLeadingSpace = true
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("gpu fixture: %w", err)
	}
	if len(recs) != 2 || len(recs[0]) != len(recs[1]) {
		return nil, fmt.Errorf("gpu fixture: want a header and one row of equal length")
	}
	t := &gpuTable{values: recs[1]}
	for _, h := range recs[0] {
		name, unit := h, ""
		if i := strings.Index(h, " ["); i >= 0 && strings.HasSuffix(h, "]") {
			name, unit = h[:i], h[i+2:len(h)-1]
		}
		t.names = append(t.names, name)
		t.units = append(t.units, unit)
	}
	return t, nil
}

// nvidiaSMIQuery answers `nvidia-smi --query-gpu=F,... --format=csv[,noheader][,nounits]`
// by projecting the capture's columns by header name, as nvidia-smi itself
// prints them: the header echoes the names with their units, values carry
// the unit unless nounits, fields joined by ", ". bad is nvidia-smi's
// message for an unknown field ("" when all are known).
func nvidiaSMIQuery(fields []string, header, units bool) (out, bad string, err error) {
	key := fmt.Sprint(strings.Join(fields, ","), header, units)
	if r, ok := queryCache.Load(key); ok {
		r := r.(queryResult)
		return r.out, r.bad, nil
	}
	t, err := capturedGPUs()
	if err != nil {
		return "", "", err
	}
	out, bad = t.query(fields, header, units)
	queryCache.Store(key, queryResult{out, bad})
	return out, bad, nil
}

// The capture never changes, so neither does an answer to a query: each is
// computed once (the simulator answers thousands of status checks).
var (
	capturedGPUs = sync.OnceValues(loadGPUTable)
	queryCache   sync.Map // fields, header, units → queryResult
)

type queryResult struct{ out, bad string }

func (t *gpuTable) query(fields []string, header, units bool) (out, bad string) {
	var hdr, row []string
	for _, f := range fields {
		i := -1
		for j, n := range t.names {
			if n == f {
				i = j
				break
			}
		}
		if i < 0 {
			// nvidia-smi's own message for an unknown field.
			return "", fmt.Sprintf("Field \"%s\" is not a valid field to query.\n", f)
		}
		h, v := t.names[i], t.values[i]
		if t.units[i] != "" {
			h += " [" + t.units[i] + "]"
			if !units {
				v = strings.TrimSuffix(v, " "+t.units[i])
			}
		}
		hdr = append(hdr, h)
		row = append(row, v)
	}
	var b strings.Builder
	if header {
		b.WriteString(strings.Join(hdr, ", ") + "\n")
	}
	b.WriteString(strings.Join(row, ", ") + "\n")
	return b.String(), ""
}

var (
	reStartedAt = regexp.MustCompile(`"StartedAt": "[^"]*"`)
	reName      = regexp.MustCompile(`(?m)^        "Name": "/[^"]*"`)
)

// dockerInspect is the nginx capture (a full `docker container inspect`
// array) with the values that make it the stick's Ollama container: the
// container's Name (docker inspect NAME reports that name), State.StartedAt
// (when the box booted), Config.Env (the ollama/ollama image's environment:
// no OLLAMA_MODELS, so Ollama keeps its models in $HOME/.ollama/models) and
// Mounts (models_dir bind-mounted at /root/.ollama, as the generated NixOS
// configuration runs it).
func dockerInspect(container, modelsDir string, started time.Time) string {
	t := inspectTemplate()
	var b strings.Builder
	b.Grow(t.size + 8*len(container) + 512)
	for _, p := range t.parts {
		switch p.kind {
		case partName:
			b.WriteString(`        "Name": "/` + container + `"`)
		case partStarted:
			b.WriteString(`"StartedAt": "` + started.UTC().Format(time.RFC3339Nano) + `"`)
		case partMounts:
			b.WriteString(`"Mounts": [
            {
                "Type": "bind",
                "Source": "` + jsonEscape(modelsDir) + `",
                "Destination": "/root/.ollama",
                "Mode": "",
                "RW": true,
                "Propagation": "rprivate"
            }
        ],`)
		default:
			b.WriteString(p.text)
		}
	}
	return b.String()
}

// ollamaImageEnv is Config.Env of the ollama/ollama image.
const ollamaImageEnv = `"Env": [
                "PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
                "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
                "NVIDIA_VISIBLE_DEVICES=all",
                "OLLAMA_HOST=0.0.0.0:11434"
            ],`

var (
	reEnv    = regexp.MustCompile(`"Env": \[[^\]]*\],`)
	reMounts = regexp.MustCompile(`"Mounts": \[\],`)
)

// inspectTemplate cuts the capture once, at every container Name and at the
// first StartedAt (the container's; later ones are health-check times).
var inspectTemplate = sync.OnceValue(func() *template {
	s := reEnv.ReplaceAllLiteralString(string(Fixture(fxDockerInspect)), ollamaImageEnv)
	var cuts []cut
	for _, m := range reMounts.FindAllStringIndex(s, -1) {
		cuts = append(cuts, cut{m[0], m[1], partMounts})
	}
	for _, m := range reName.FindAllStringIndex(s, -1) {
		cuts = append(cuts, cut{m[0], m[1], partName})
	}
	if m := reStartedAt.FindStringIndex(s); m != nil {
		cuts = append(cuts, cut{m[0], m[1], partStarted})
	}
	slices.SortFunc(cuts, func(a, b cut) int { return a.from - b.from })
	t := &template{size: len(s)}
	at := 0
	for _, c := range cuts {
		t.parts = append(t.parts, part{text: s[at:c.from]}, part{kind: c.kind})
		at = c.to
	}
	t.parts = append(t.parts, part{text: s[at:]})
	return t
})

type partKind int

const (
	partText partKind = iota
	partName
	partStarted
	partMounts
)

type part struct {
	kind partKind
	text string
}

type cut struct {
	from, to int
	kind     partKind
}

type template struct {
	parts []part
	size  int
}

// findmntJSON is the ntfs-3g capture (read-write or read-only) with the
// mount point rewritten to target.
func findmntJSON(target string, readOnly bool) string {
	key := fmt.Sprint(readOnly, target)
	if out, ok := findmntCache.Load(key); ok {
		return out.(string)
	}
	f := fxFindmntRW
	if readOnly {
		f = fxFindmntRO
	}
	out := strings.Replace(string(Fixture(f)), `"target": "`+fixtureMountFrom+`"`, `"target": "`+jsonEscape(target)+`"`, 1)
	findmntCache.Store(key, out)
	return out
}

var findmntCache sync.Map // readOnly, target → output

func jsonEscape(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// dfDefaultWidth is GNU df's minimum width per --output column
// (coreutils df.c field_data); every column is also as wide as its header
// and its widest value. Text is left-aligned, numbers right-aligned, the
// last column is not padded.
var dfColumns = map[string]struct {
	header string
	width  int
	right  bool
}{
	"source": {"Filesystem", 14, false},
	"fstype": {"Type", 4, false},
	"size":   {"1B-blocks", 5, true},
	"used":   {"Used", 5, true},
	"avail":  {"Avail", 5, true},
	"target": {"Mounted on", 0, false},
}

// dfRow is one filesystem as df reports it.
type dfRow struct {
	Source, FSType    string
	Size, Used, Avail int64
	Target            string
}

// dfSource is the device and type the NTFS capture shows.
var dfSource = sync.OnceValues(func() (source, fstype string) {
	lines := strings.Split(string(Fixture(fxDF)), "\n")
	f := strings.Fields(lines[1])
	return f[0], f[1]
})

// renderDF prints `df -B1 --output=COLS` for one row as GNU df aligns it.
func renderDF(cols []string, r dfRow) (string, error) {
	vals := make([]string, len(cols))
	hdrs := make([]string, len(cols))
	for i, c := range cols {
		spec, ok := dfColumns[c]
		if !ok {
			return "", fmt.Errorf("df: option --output: field %s unknown", strconv.Quote(c))
		}
		hdrs[i] = spec.header
		switch c {
		case "source":
			vals[i] = r.Source
		case "fstype":
			vals[i] = r.FSType
		case "size":
			vals[i] = strconv.FormatInt(r.Size, 10)
		case "used":
			vals[i] = strconv.FormatInt(r.Used, 10)
		case "avail":
			vals[i] = strconv.FormatInt(r.Avail, 10)
		case "target":
			vals[i] = r.Target
		}
	}
	var b strings.Builder
	for _, line := range [][]string{hdrs, vals} {
		for i, c := range cols {
			spec := dfColumns[c]
			w := max(spec.width, len(hdrs[i]), len(vals[i]))
			if i > 0 {
				b.WriteByte(' ')
			}
			switch {
			case i == len(cols)-1:
				if spec.right {
					fmt.Fprintf(&b, "%*s", w, line[i])
				} else {
					b.WriteString(line[i])
				}
			case spec.right:
				fmt.Fprintf(&b, "%*s", w, line[i])
			default:
				fmt.Fprintf(&b, "%-*s", w, line[i])
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// touchReadOnly is the captured `touch` error on a read-only ntfs-3g mount,
// for the file f.
func touchReadOnly(f string) string {
	s := string(Fixture(fxTouchRO))
	i, j := strings.Index(s, "'"), strings.LastIndex(s, "'")
	return s[:i+1] + f + s[j:]
}

// routeGet is `ip -o route get ADDR` as captured: the loopback form for
// 127.0.0.0/8, the on-link form otherwise, with the addresses and device
// rewritten.
func routeGet(dst, dev, src string) string {
	if strings.HasPrefix(dst, "127.") {
		s := string(Fixture(fxRouteLocal))
		return strings.NewReplacer("127.0.0.1", dst, " lo ", " "+dev+" ").Replace(strings.Replace(s, "src 127.0.0.1", "src "+src, 1))
	}
	s := string(Fixture(fxRouteOnLink))
	return strings.NewReplacer("192.0.2.1", dst, "192.0.2.2", src, " eth0 ", " "+dev+" ").Replace(s)
}

// ssEstablished prints `ss -Htn state established '( sport = :PORT )'` rows
// in the captured layout (Recv-Q, Send-Q, local, peer; no State column).
func ssEstablished(conns [][2]string) string {
	var b strings.Builder
	for _, c := range conns {
		fmt.Fprintf(&b, "%-6s %-6s %s %s\n", "0", "0", c[0], c[1])
	}
	return b.String()
}

// procUptime prints /proc/uptime as captured: seconds up and idle, two
// decimals.
func procUptime(up time.Duration) string {
	s := up.Seconds()
	return fmt.Sprintf("%.2f %.2f\n", s, s*1.67) // idle: as in the capture, about 1.7x (2 cores)
}
