package inventory

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ollama/ollama/types/model"
)

// MAC is a 48-bit Ethernet hardware address, the target of a magic packet.
type MAC [6]byte

// ParseMAC accepts the usual spellings of a 48-bit MAC address:
// aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff and aabbccddeeff.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	bad := fmt.Errorf("%q is not a MAC address (want six hex pairs such as aa:bb:cc:dd:ee:ff)", s)
	var digits string
	switch {
	case len(s) == 17 && (strings.Count(s, ":") == 5 || strings.Count(s, "-") == 5):
		sep := s[2]
		if sep != ':' && sep != '-' {
			return m, bad
		}
		for i := 0; i < 6; i++ {
			if i > 0 && s[3*i-1] != sep {
				return m, bad
			}
			digits += s[3*i : 3*i+2]
		}
	case len(s) == 14 && s[4] == '.' && s[9] == '.':
		digits = s[0:4] + s[5:9] + s[10:14]
	case len(s) == 12:
		digits = s
	default:
		return m, bad
	}
	b, err := hex.DecodeString(digits)
	if err != nil || len(b) != 6 {
		return m, bad
	}
	copy(m[:], b)
	if m == (MAC{}) {
		return m, fmt.Errorf("%q is the all-zero MAC address, which no NIC has", s)
	}
	if m[0]&1 == 1 {
		return m, fmt.Errorf("%q is a multicast or broadcast address, not a NIC's MAC", s)
	}
	return m, nil
}

// String formats the address as lowercase aa:bb:cc:dd:ee:ff.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsZero reports whether the MAC was left unset.
func (m MAC) IsZero() bool { return m == MAC{} }

// HardwareAddr returns a copy as a net.HardwareAddr.
func (m MAC) HardwareAddr() net.HardwareAddr { return append(net.HardwareAddr(nil), m[:]...) }

func (m *MAC) UnmarshalText(b []byte) error {
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// HostPort is an "ip:port" or "host:port" pair with a numeric port.
type HostPort struct {
	Host string
	Port uint16
}

// ParseHostPort parses "192.168.1.255:9", "[fe80::1]:9" or "gaming-pc.lan:22".
func ParseHostPort(s string) (HostPort, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return HostPort{}, fmt.Errorf("%q is not host:port", s)
	}
	if h == "" {
		return HostPort{}, fmt.Errorf("%q has no host before the port", s)
	}
	if strings.ContainsAny(h, " \t\n/\\'\"`$;&|<>") {
		return HostPort{}, fmt.Errorf("%q: host %q has characters no host name has", s, h)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return HostPort{}, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, p)
	}
	return HostPort{Host: h, Port: uint16(n)}, nil
}

func (hp HostPort) String() string {
	if hp.Host == "" && hp.Port == 0 {
		return ""
	}
	return net.JoinHostPort(hp.Host, strconv.Itoa(int(hp.Port)))
}

// Addr returns the host as an IP address, or false when it is a name.
func (hp HostPort) Addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(hp.Host)
	return a, err == nil
}

func (hp *HostPort) UnmarshalText(b []byte) error {
	v, err := ParseHostPort(string(b))
	if err != nil {
		return err
	}
	*hp = v
	return nil
}

func (hp HostPort) MarshalText() ([]byte, error) { return []byte(hp.String()), nil }

// Duration is a time.Duration written as Go writes them ("90s", "5m", "1h30m").
type Duration time.Duration

// ParseDuration parses a Go duration string, rejecting bare numbers (whose unit
// would be a guess) and negative values.
func ParseDuration(s string) (Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration (write one such as \"90s\" or \"5m\")")
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("%q has no unit (write %ss or %sm)", s, s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write one such as \"90s\", \"5m\" or \"1h30m\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return Duration(d), nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }
func (d Duration) String() string   { return time.Duration(d).String() }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a size in bytes, written with a unit: "24GiB", "500MB", "1.5TiB".
type ByteSize uint64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseByteSize parses a size with an IEC (KiB, MiB, GiB, TiB) or SI (KB, MB,
// GB, TB) unit, or B. Units are case-sensitive, as in "24GiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	for _, u := range byteUnits {
		if !strings.HasSuffix(t, u.suffix) {
			continue
		}
		num := strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || num == "" || strings.ContainsAny(num, "eEx_") || math.IsNaN(f) || math.IsInf(f, 0) {
			break
		}
		if f < 0 {
			return 0, fmt.Errorf("%q is negative", s)
		}
		v := f * u.mult
		if v >= math.MaxUint64/2 {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return ByteSize(math.Round(v)), nil
	}
	return 0, fmt.Errorf("%q is not a size (write one such as \"24GiB\" or \"500MB\")", s)
}

func (b ByteSize) String() string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", uint64(b))
	}
	div, exp := uint64(unit), 0
	for n := uint64(b) / unit; n >= unit && exp < 3; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGT"[exp])
}

func (b *ByteSize) UnmarshalText(t []byte) error {
	v, err := ParseByteSize(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b ByteSize) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatUint(uint64(b), 10) + "B"), nil
}

// ModelName is an Ollama model reference: [host[:port]/][namespace/]model[:tag].
// Anything a shell or a path could misread is rejected: the names travel into
// remote commands (quoted, still) and onto the model drive's directory tree.
type ModelName string

// ParseModelName validates an Ollama model name.
func ParseModelName(s string) (ModelName, error) {
	if s == "" {
		return "", fmt.Errorf("empty model name")
	}
	if len(s) > 350 {
		return "", fmt.Errorf("model name %.40q… is longer than 350 characters", s)
	}
	if strings.Contains(s, "..") {
		return "", fmt.Errorf("model name %q contains \"..\"", s)
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "-") || strings.HasPrefix(s, ".") {
		return "", fmt.Errorf("model name %q must start with a letter or digit", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '.' || r == '-' || r == '_' || r == ':' || r == '/'
		if !ok {
			return "", fmt.Errorf("model name %q contains %q (allowed: letters, digits, . - _ : /)", s, r)
		}
	}
	rest := s
	if i := strings.LastIndex(s, "/"); i >= 0 {
		rest = s[i+1:]
	}
	if rest == "" {
		return "", fmt.Errorf("model name %q ends in \"/\"", s)
	}
	if strings.Count(rest, ":") > 1 {
		return "", fmt.Errorf("model name %q has more than one tag", s)
	}
	if model, tag, ok := strings.Cut(rest, ":"); ok && (model == "" || tag == "") {
		return "", fmt.Errorf("model name %q has an empty model or tag", s)
	}
	if strings.Contains(s, "//") {
		return "", fmt.Errorf("model name %q has an empty path part", s)
	}
	return ModelName(s), nil
}

// Normalize returns the model's normal form, the one every comparison of
// model names in gpuctl uses (routes, the catalogue, size fit, declared
// models): the name as Ollama reads it (model.ParseName: default registry
// registry.ollama.ai, namespace library, tag latest), written as Ollama
// lists it (DisplayShortest: "heavy:latest", "ns/m:tag",
// "host:5000/ns/m:tag") and lower-cased, since Ollama compares names
// case-insensitively. So "HEAVY", "library/heavy" and
// "registry.ollama.ai/library/heavy:latest" are one model. A name Ollama
// would refuse keeps its text, lower-cased, with ":latest" added when its
// last part has no tag.
func (m ModelName) Normalize() ModelName { return ModelName(NormalModel(string(m))) }

// NormalModel is ModelName.Normalize for any string (a request's model
// field, a name from /api/tags).
func NormalModel(s string) string {
	s = strings.TrimSpace(s)
	if n := model.ParseName(s); n.IsValid() {
		return strings.ToLower(n.DisplayShortest())
	}
	rest := s
	if i := strings.LastIndex(s, "/"); i >= 0 {
		rest = s[i+1:]
	}
	if !strings.Contains(rest, ":") {
		s += ":latest"
	}
	return strings.ToLower(s)
}

func (m ModelName) String() string { return string(m) }

func (m *ModelName) UnmarshalText(b []byte) error {
	v, err := ParseModelName(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// URL is an absolute http or https URL.
type URL struct{ *url.URL }

// ParseURL parses an absolute http(s) URL with a host.
func ParseURL(s string) (URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return URL{}, fmt.Errorf("%q is not a URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return URL{}, fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return URL{}, fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return URL{}, fmt.Errorf("%q: credentials in the URL are not supported", u.Redacted())
	}
	return URL{u}, nil
}

func (u URL) IsZero() bool { return u.URL == nil }

func (u URL) String() string {
	if u.URL == nil {
		return ""
	}
	return u.URL.String()
}

func (u *URL) UnmarshalText(b []byte) error {
	v, err := ParseURL(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

func (u URL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// Secret is a value that must never be printed or logged (a SecureOn password).
type Secret []byte

// ParseSecureOn parses a SecureOn password: 4 or 6 bytes, written as
// hex pairs separated by ':' or '-', or as plain hex.
func ParseSecureOn(s string) (Secret, error) {
	clean := strings.NewReplacer(":", "", "-", "").Replace(s)
	b, err := hex.DecodeString(clean)
	if err != nil || (len(b) != 4 && len(b) != 6) {
		return nil, fmt.Errorf("the SecureOn password is not 4 or 6 hex bytes (such as 01:02:03:04:05:06)")
	}
	return Secret(b), nil
}

func (s *Secret) UnmarshalText(b []byte) error {
	v, err := ParseSecureOn(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func (s Secret) String() string {
	if len(s) == 0 {
		return ""
	}
	return "(redacted)"
}

// MarshalJSON and GoString keep the secret out of JSON and %#v output.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }
func (s Secret) GoString() string             { return s.String() }

// Equal compares two secrets.
func (s Secret) Equal(o Secret) bool { return bytes.Equal(s, o) }
