package hostcmd

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// GPUFields is the --query-gpu field list the gpu check asks nvidia-smi for.
var GPUFields = []string{"index", "name", "uuid", "driver_version", "memory.total",
	"memory.used", "utilization.gpu", "temperature.gpu", "pstate"}

// GPUQueryArgs is the argv of the gpu check.
func GPUQueryArgs() []string {
	return []string{"nvidia-smi", "--query-gpu=" + strings.Join(GPUFields, ","), "--format=csv,noheader,nounits"}
}

// GPU is one row of nvidia-smi --query-gpu output. Numbers nvidia-smi could
// not give ("[N/A]", "[Not Supported]") are nil.
type GPU struct {
	Index          *int64   `json:"index"`
	Name           string   `json:"name"`
	UUID           string   `json:"uuid"`
	DriverVersion  string   `json:"driver_version"`
	MemoryTotalMiB *int64   `json:"memory_total_mib"`
	MemoryUsedMiB  *int64   `json:"memory_used_mib"`
	UtilizationPct *int64   `json:"utilization_gpu_percent"`
	TemperatureC   *int64   `json:"temperature_c"`
	PState         string   `json:"pstate"`
	FanSpeedPct    *int64   `json:"fan_speed_percent,omitempty"`
	PowerDrawW     *float64 `json:"power_draw_w,omitempty"`
}

// naValues are what nvidia-smi prints instead of a value it cannot give.
var naValues = []string{"[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]",
	"[GPU is lost]", "[Requested functionality has been deprecated]"}

// IsNA reports whether an nvidia-smi value means "not available".
func IsNA(v string) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return true
	}
	for _, na := range naValues {
		if v == na {
			return true
		}
	}
	// Other bracketed explanations are also non-values.
	return strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]")
}

// fieldName strips the unit nvidia-smi adds to a header ("memory.total [MiB]").
func fieldName(h string) string {
	h = strings.TrimSpace(h)
	if i := strings.Index(h, " ["); i >= 0 && strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	return h
}

// ParseQueryCSV parses `nvidia-smi --query-*=... --format=csv[,noheader][,nounits]`
// output into one map per row, keyed by field name (units stripped). With
// fields nil, the first line is the header nvidia-smi prints and names the
// columns; otherwise fields names them (the noheader form). Values keep their
// text, trimmed; use NumValue for numbers.
func ParseQueryCSV(data []byte, fields []string) ([]map[string]string, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.LazyQuotes = true
	r.ReuseRecord = false
	var rows []map[string]string
	names := fields
	line := 0
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line++
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if names == nil {
			names = make([]string, len(rec))
			for i, h := range rec {
				names[i] = fieldName(h)
				if names[i] == "" {
					return nil, fmt.Errorf("line %d: empty column name in header", line)
				}
			}
			continue
		}
		if len(rec) != len(names) {
			return nil, fmt.Errorf("line %d: %d values for %d fields (%.60q)", line, len(rec), len(names), strings.Join(rec, ","))
		}
		row := make(map[string]string, len(names))
		for i, v := range rec {
			row[names[i]] = strings.TrimSpace(v)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// NumValue parses a numeric nvidia-smi value, with or without its unit
// ("16376 MiB", "0 %", "26.20 W"). A not-available marker gives nil, nil.
func NumValue(v string) (*float64, error) {
	v = strings.TrimSpace(v)
	if IsNA(v) {
		return nil, nil
	}
	num := v
	if i := strings.IndexByte(v, ' '); i >= 0 {
		num = v[:i]
		unit := strings.TrimSpace(v[i+1:])
		switch unit {
		case "MiB", "%", "W", "MHz", "C", "us", "KiB", "GiB":
		default:
			return nil, fmt.Errorf("%q is not a number", v)
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return nil, fmt.Errorf("%q is not a number", v)
	}
	return &f, nil
}

func intValue(row map[string]string, key string) (*int64, error) {
	v, ok := row[key]
	if !ok {
		return nil, nil
	}
	f, err := NumValue(v)
	if err != nil || f == nil {
		if err != nil {
			err = fmt.Errorf("%s: %w", key, err)
		}
		return nil, err
	}
	n := int64(*f)
	return &n, nil
}

func strValue(row map[string]string, key string) string {
	v := row[key]
	if IsNA(v) {
		return ""
	}
	return v
}

// GPUFromRow builds a GPU from a parsed row; fields absent from the row stay
// empty.
func GPUFromRow(row map[string]string) (GPU, error) {
	g := GPU{Name: strValue(row, "name"), UUID: strValue(row, "uuid"),
		DriverVersion: strValue(row, "driver_version"), PState: strValue(row, "pstate")}
	var errs []error
	for _, f := range []struct {
		key string
		dst **int64
	}{
		{"index", &g.Index}, {"memory.total", &g.MemoryTotalMiB}, {"memory.used", &g.MemoryUsedMiB},
		{"utilization.gpu", &g.UtilizationPct}, {"temperature.gpu", &g.TemperatureC}, {"fan.speed", &g.FanSpeedPct},
	} {
		v, err := intValue(row, f.key)
		if err != nil {
			errs = append(errs, err)
		}
		*f.dst = v
	}
	if v, ok := row["power.draw"]; ok {
		p, err := NumValue(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("power.draw: %w", err))
		}
		g.PowerDrawW = p
	}
	return g, errors.Join(errs...)
}

// ParseGPUs parses query-gpu CSV (see ParseQueryCSV for fields) into GPUs.
func ParseGPUs(data []byte, fields []string) ([]GPU, error) {
	rows, err := ParseQueryCSV(data, fields)
	if err != nil {
		return nil, err
	}
	gpus := make([]GPU, 0, len(rows))
	for i, row := range rows {
		g, err := GPUFromRow(row)
		if err != nil {
			return nil, fmt.Errorf("gpu row %d: %w", i+1, err)
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

// GPUProblem is a classified nvidia-smi failure.
type GPUProblem struct {
	// Kind is "driver-not-loaded", "driver-mismatch", "not-installed",
	// "failed", "no-gpu", "unparsable" or "old-driver".
	Kind string
	// Msg says what went wrong and what to do.
	Msg string
}

// Texts nvidia-smi prints when it cannot reach the driver (see the fixtures
// nvidia-smi_error_*).
const (
	nvsmiNoDriver = "couldn't communicate with the NVIDIA driver"
	nvsmiMismatch = "Driver/library version mismatch"
)

// ClassifyNvidiaSMI turns the output and exit status of the gpu check's
// nvidia-smi into GPUs or a problem. minDriver ("550.54"), when set, is the
// lowest acceptable driver version.
func ClassifyNvidiaSMI(stdout, stderr []byte, exit int, minDriver string) ([]GPU, *GPUProblem) {
	all := string(stdout) + "\n" + string(stderr)
	switch {
	case strings.Contains(all, nvsmiNoDriver):
		return nil, &GPUProblem{Kind: "driver-not-loaded", Msg: "NVIDIA driver not loaded: nvidia-smi couldn't communicate with the driver " +
			"(usually a kernel update without the matching driver module; reboot into the right generation or rebuild the driver)"}
	case strings.Contains(all, nvsmiMismatch):
		msg := "NVIDIA driver/library version mismatch"
		if v := lineValue(all, "NVML library version:"); v != "" {
			msg += " (NVML library " + v + ")"
		}
		return nil, &GPUProblem{Kind: "driver-mismatch", Msg: msg + ": the driver was upgraded without a reboot; reboot the PC"}
	case exit == 127 || strings.Contains(all, "command not found") || strings.Contains(all, "not found in $PATH"):
		return nil, &GPUProblem{Kind: "not-installed", Msg: "nvidia-smi is not installed on the host (is the NVIDIA driver enabled in its NixOS config?)"}
	case exit != 0:
		return nil, &GPUProblem{Kind: "failed", Msg: fmt.Sprintf("nvidia-smi exited %d: %s", exit, FirstLine(stderr, stdout))}
	}
	gpus, err := ParseGPUs(stdout, GPUFields)
	if err != nil {
		return nil, &GPUProblem{Kind: "unparsable", Msg: fmt.Sprintf("unexpected nvidia-smi output: %v", err)}
	}
	if len(gpus) == 0 {
		return nil, &GPUProblem{Kind: "no-gpu", Msg: "nvidia-smi lists no GPU"}
	}
	if minDriver != "" {
		for _, g := range gpus {
			if c, ok := CompareVersions(g.DriverVersion, minDriver); ok && c < 0 {
				return gpus, &GPUProblem{Kind: "old-driver", Msg: fmt.Sprintf("driver %s is older than min_driver %s; update the host's NVIDIA driver", g.DriverVersion, minDriver)}
			} else if !ok {
				return gpus, &GPUProblem{Kind: "old-driver", Msg: fmt.Sprintf("cannot compare driver version %q with min_driver %s", g.DriverVersion, minDriver)}
			}
		}
	}
	return gpus, nil
}

// CompareVersions compares dotted numeric versions ("535.161.07" vs "550.54");
// missing components count as 0. ok is false when either is not numeric.
func CompareVersions(a, b string) (c int, ok bool) {
	pa, oka := splitVersion(a)
	pb, okb := splitVersion(b)
	if !oka || !okb {
		return 0, false
	}
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int64
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
	}
	return 0, true
}

func splitVersion(s string) ([]int64, bool) {
	if s == "" {
		return nil, false
	}
	parts := strings.Split(s, ".")
	out := make([]int64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// ListedGPU is one "GPU N: NAME (UUID: ...)" line of nvidia-smi -L.
type ListedGPU struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
}

// ParseNvidiaSMIList parses `nvidia-smi -L`. MIG device lines are skipped;
// any other line that is not a GPU line is an error.
func ParseNvidiaSMIList(data []byte) ([]ListedGPU, error) {
	var out []ListedGPU
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		l := strings.TrimRight(sc.Text(), "\r")
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "MIG ") {
			continue
		}
		rest, ok := strings.CutPrefix(t, "GPU ")
		if !ok {
			return nil, fmt.Errorf("line %d: not a GPU line: %.80q", n, t)
		}
		idx, rest, ok := strings.Cut(rest, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: not a GPU line: %.80q", n, t)
		}
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 {
			return nil, fmt.Errorf("line %d: bad GPU index %q", n, idx)
		}
		g := ListedGPU{Index: i, Name: rest}
		if j := strings.LastIndex(rest, " (UUID: "); j >= 0 && strings.HasSuffix(rest, ")") {
			g.Name = rest[:j]
			g.UUID = rest[j+len(" (UUID: ") : len(rest)-1]
		}
		out = append(out, g)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func lineValue(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FirstLine returns the first non-empty line of the first non-empty text.
func FirstLine(texts ...[]byte) string {
	for _, t := range texts {
		for _, l := range strings.Split(string(t), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				if len(l) > 200 {
					l = l[:200] + "…"
				}
				return l
			}
		}
	}
	return "(no output)"
}
