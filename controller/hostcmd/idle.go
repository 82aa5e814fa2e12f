package hostcmd

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Parsers for the outputs the idle script gathers. Each is strict: a line it
// does not recognise is an error, and the caller counts an error as busy
// (a check that cannot be read proves nothing about the box being idle).

// ParseUptime reads /proc/uptime ("12345.67 23456.78"): seconds since boot.
func ParseUptime(b []byte) (time.Duration, error) {
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("/proc/uptime: want 2 numbers, got %.60q", string(b))
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil || s < 0 || math.IsInf(s, 0) || math.IsNaN(s) || s > 1e10 {
		return 0, fmt.Errorf("/proc/uptime: %q is not a number of seconds", f[0])
	}
	return time.Duration(s * float64(time.Second)), nil
}

// ParseEpoch reads `date +%s`.
func ParseEpoch(b []byte) (time.Time, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("date +%%s: %.40q is not a Unix time", s)
	}
	return time.Unix(n, 0), nil
}

// ParseSSHConnection reads $SSH_CONNECTION: "client_ip client_port
// server_ip server_port". It returns the client's address, which is how the
// box sees the gpuctl server.
func ParseSSHConnection(b []byte) (netip.Addr, error) {
	f := strings.Fields(string(b))
	if len(f) != 4 {
		return netip.Addr{}, fmt.Errorf("SSH_CONNECTION: want 4 fields, got %.80q", string(b))
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("SSH_CONNECTION: %q is not an IP address", f[0])
	}
	return a.Unmap().WithZone(""), nil
}

// Login is one interactive session from `who`.
type Login struct {
	User string `json:"user"`
	Line string `json:"line"`
	Time string `json:"time"`
	From string `json:"from,omitempty"`
}

func (l Login) String() string {
	s := l.User + " on " + l.Line
	if l.From != "" {
		s += " from " + l.From
	}
	return s + " since " + l.Time
}

// whoLine is the default `who` format, documented in who(1) and coreutils'
// who.c: NAME LINE TIME [(COMMENT)]. TIME is "2024-06-04 21:58" in UTF-8
// locales and "Jun  4 21:58" in the C locale (see the LOCAL captures in
// testdata); the comment is the remote host, an X display or tmux's tag,
// which may itself hold parentheses.
var whoLine = regexp.MustCompile(`^(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d|[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d)(?:\s+\((.*)\))?\s*$`)

// ParseWho parses `who` output. Empty output means nobody is logged in.
func ParseWho(b []byte) ([]Login, error) {
	var out []Login
	for i, line := range lines(b) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		m := whoLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("who line %d: %.80q is not \"user tty date time (host)\"", i+1, line)
		}
		out = append(out, Login{User: m[1], Line: m[2], Time: m[3], From: m[4]})
	}
	return out, nil
}

// Conn is one established TCP connection to the Ollama port.
type Conn struct {
	Local netip.AddrPort `json:"local"`
	Peer  netip.AddrPort `json:"peer"`
}

// ParseSS parses `ss -Htn state established '( sport = :PORT )'`. With -H
// there is no header and, with one state selected, no State column: each
// line is "Recv-Q Send-Q LOCAL:PORT PEER:PORT" (see the LOCAL captures). A
// fifth leading "ESTAB" column, as printed when more states are selected, is
// accepted; anything else is an error. Every local port must be port.
func ParseSS(b []byte, port uint16) ([]Conn, error) {
	var out []Conn
	for i, line := range lines(b) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) == 5 && f[0] == "ESTAB" {
			f = f[1:]
		}
		if len(f) != 4 {
			return nil, fmt.Errorf("ss line %d: want \"Recv-Q Send-Q local peer\", got %.80q", i+1, line)
		}
		for _, q := range f[:2] {
			if _, err := strconv.ParseUint(q, 10, 64); err != nil {
				return nil, fmt.Errorf("ss line %d: queue %q is not a number", i+1, q)
			}
		}
		local, err := parseSSAddr(f[2])
		if err != nil {
			return nil, fmt.Errorf("ss line %d: local %w", i+1, err)
		}
		peer, err := parseSSAddr(f[3])
		if err != nil {
			return nil, fmt.Errorf("ss line %d: peer %w", i+1, err)
		}
		if local.Port() != port {
			return nil, fmt.Errorf("ss line %d: local port %d is not the filtered port %d", i+1, local.Port(), port)
		}
		out = append(out, Conn{Local: local, Peer: peer})
	}
	return out, nil
}

// parseSSAddr parses ss's "1.2.3.4:5", "[::1]:5", "[::ffff:1.2.3.4]:5" and
// the scoped forms "[fe80::1%eth0]:5" and "[fe80::1]%eth0:5". IPv4-mapped
// addresses are unmapped and zones dropped.
func parseSSAddr(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not address:port", s)
	}
	host, port := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		j := strings.IndexByte(host, ']')
		if j < 0 || (j != len(host)-1 && host[j+1] != '%') {
			return netip.AddrPort{}, fmt.Errorf("%q is not address:port", s)
		}
		host = host[1:j]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not a port", s, port)
	}
	return netip.AddrPortFrom(a.Unmap().WithZone(""), uint16(p)), nil
}

var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)

// ParseRouteDev finds the interface in `ip -o route get ADDR` output
// ("192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \    cache"): the word after
// "dev". The keyword scan does not depend on the order of the other fields.
func ParseRouteDev(b []byte) (string, error) {
	f := strings.Fields(string(b))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			if !ifaceName.MatchString(f[i+1]) {
				return "", fmt.Errorf("ip route get: %q is not an interface name", f[i+1])
			}
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("ip route get: no \"dev\" in %.80q", string(b))
}

// WakeOn is what `ethtool IF` says about Wake-on-LAN.
type WakeOn struct {
	// Supports is the "Supports Wake-on:" letters ("pumbg"); "" when absent.
	Supports string `json:"supports,omitempty"`
	// Mode is the "Wake-on:" letters ("g" = magic packet, "d" = disabled).
	Mode string `json:"mode"`
}

// Armed reports whether a magic packet wakes the box.
func (w WakeOn) Armed() bool { return strings.ContainsRune(w.Mode, 'g') }

// ParseEthtool reads the two Wake-on lines of `ethtool IF` (each indented by
// one tab, like every field; see the ethtool_grep-Wake_* fixtures). Other
// lines are ignored; a missing or repeated Wake-on line is an error (ethtool
// run without the right to read WoL settings prints none).
func ParseEthtool(b []byte) (WakeOn, error) {
	var w WakeOn
	seen := 0
	for _, line := range lines(b) {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "Supports Wake-on:"):
			w.Supports = strings.TrimSpace(strings.TrimPrefix(t, "Supports Wake-on:"))
		case strings.HasPrefix(t, "Wake-on:"):
			w.Mode = strings.TrimSpace(strings.TrimPrefix(t, "Wake-on:"))
			seen++
		}
	}
	switch {
	case seen == 0:
		return w, errors.New("ethtool printed no \"Wake-on:\" line (the NIC driver does not report Wake-on-LAN, or ethtool lacked the permission to read it)")
	case seen > 1:
		return w, errors.New("ethtool printed more than one \"Wake-on:\" line")
	case w.Mode == "" || strings.Trim(w.Mode, "pumbagsfd") != "":
		return w, fmt.Errorf("ethtool: %q is not a Wake-on mode", w.Mode)
	}
	return w, nil
}

// Partial is one `*-partial*` file of an Ollama download under models_dir.
type Partial struct {
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	Blocks int64     `json:"blocks"`
	MTime  time.Time `json:"mtime"`
}

// ParsePartials reads `find DIR -name 'sha256-*-partial*' -printf '%s %b
// %T@ %p\n'`: apparent size, 512-byte blocks allocated, mtime in seconds
// with a fraction, path. Ollama truncates `<blob>-partial` to the full size
// before writing (sparse), so a download shows as blocks and mtime growing,
// not size; the `-partial-N` part files are small JSON rewritten as it goes.
func ParsePartials(b []byte) ([]Partial, error) {
	var out []Partial
	for i, line := range lines(b) {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 || f[3] == "" {
			return nil, fmt.Errorf("find line %d: want \"size blocks mtime path\", got %.80q", i+1, line)
		}
		size, err1 := strconv.ParseInt(f[0], 10, 64)
		blocks, err2 := strconv.ParseInt(f[1], 10, 64)
		mt, err3 := parseFloatTime(f[2])
		if err1 != nil || err2 != nil || err3 != nil || size < 0 || blocks < 0 {
			return nil, fmt.Errorf("find line %d: bad numbers in %.80q", i+1, line)
		}
		if !strings.Contains(f[3], "-partial") || !strings.HasPrefix(f[3], "/") {
			return nil, fmt.Errorf("find line %d: %.80q is not a partial blob path", i+1, f[3])
		}
		out = append(out, Partial{Path: f[3], Size: size, Blocks: blocks, MTime: mt})
	}
	return out, nil
}

// parseFloatTime parses find's %T@ ("1717538311.1234567890").
func parseFloatTime(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("%q is not a time", s)
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		for len(frac) < 9 {
			frac += "0"
		}
		ns, err = strconv.ParseInt(frac, 10, 64)
		if err != nil || ns < 0 {
			return time.Time{}, fmt.Errorf("%q is not a time", s)
		}
	}
	return time.Unix(n, ns), nil
}

// GPUUtil is one GPU's utilisation; nil when nvidia-smi cannot measure it.
type GPUUtil struct {
	Index   int    `json:"index"`
	Percent *int64 `json:"percent"`
}

// ParseGPUUtil reads `nvidia-smi --query-gpu=utilization.gpu
// --format=csv,noheader,nounits` (one line per GPU), using the controller's
// nvidia-smi CSV parser. fields nil means the output has a header line
// (the --format=csv form), which the tests use to read more fixtures.
func ParseGPUUtil(b []byte, fields []string) ([]GPUUtil, error) {
	rows, err := ParseQueryCSV(b, fields)
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	if len(rows) == 0 {
		return nil, errors.New("nvidia-smi listed no GPU")
	}
	out := make([]GPUUtil, 0, len(rows))
	for i, row := range rows {
		v, ok := row["utilization.gpu"]
		if !ok {
			return nil, errors.New("nvidia-smi: no utilization.gpu column")
		}
		f, err := NumValue(v)
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi gpu %d: utilization.gpu %w", i, err)
		}
		u := GPUUtil{Index: i}
		if f != nil {
			if *f < 0 || *f > 100 {
				return nil, fmt.Errorf("nvidia-smi gpu %d: utilization.gpu %v is not a percentage", i, *f)
			}
			n := int64(math.Round(*f))
			u.Percent = &n
		}
		out = append(out, u)
	}
	return out, nil
}

// lines splits output into lines without their line ends.
func lines(b []byte) []string {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
