package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Env supplies what defaults depend on. The zero value reads the process's
// environment.
type Env struct {
	Getenv func(string) string
	Home   string
	// Root selects root's defaults (/var/lib/gpuctl).
	Root bool
}

func (e Env) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

func (e Env) home() string {
	if e.Home != "" {
		return e.Home
	}
	if h := e.getenv("HOME"); h != "" {
		return h
	}
	h, _ := os.UserHomeDir()
	return h
}

// Load reads, validates and completes the inventory in file.
func Load(file string, env Env) (*Inventory, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("inventory %s does not exist: %w", file, err)
		}
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	inv, err := Parse(file, data, env)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
		for _, h := range inv.Hosts {
			if len(h.WOLPassword) > 0 && !h.wolPasswordEnv {
				return nil, &ConfigError{File: file, Key: "host.wol_password",
					Msg: fmt.Sprintf("host %q: wol_password is a secret, but the file is readable by other users (mode %04o); run: chmod 600 %s",
						h.Name, st.Mode().Perm(), file)}
			}
		}
	}
	return inv, nil
}

// Parse decodes and validates an inventory held in memory; name is used in
// error messages.
func Parse(name string, data []byte, env Env) (*Inventory, error) {
	src := string(data)
	ps := scanPositions(src)
	inv := &Inventory{Path: name}
	md, err := toml.Decode(src, inv)
	if err != nil {
		return nil, decodeError(name, src, ps, err)
	}
	var errs Errors
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && undecoded[k[:len(k)-1].String()] {
			continue // reported with its table
		}
		errs = append(errs, unknownKey(name, ps, k, inv)...)
	}
	for i := range inv.Hosts {
		inv.Hosts[i].index = i
	}
	errs = append(errs, secretsFromEnv(name, ps, inv, env)...)
	if len(errs) > 0 {
		return nil, errs
	}
	v := &validator{file: name, src: src, ps: ps, inv: inv, md: md}
	v.check(env)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	inv.Notes = v.notes
	return inv, nil
}

// decodeError turns a decoder error into a located ConfigError.
func decodeError(name, src string, ps *positions, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return typeError(name, src, ps, err)
	}
	ce := &ConfigError{File: name, Line: pe.Position.Line, Col: pe.Position.Col, Err: err}
	// A document that does not parse on its own is a syntax error: the
	// parser's own words.
	var any map[string]any
	if _, serr := toml.Decode(src, &any); serr != nil {
		ce.Msg = "syntax error: " + pe.Message
		return ce
	}
	// A value a typed field rejected. Find which element it was in.
	p, ok := ps.onLine(pe.Position.Line)
	if !ok || stripIndices(p) != pe.LastKey {
		if q, ok2 := ps.find(pe.LastKey); ok2 {
			p = q
		} else {
			p = pe.LastKey
		}
	}
	if line, col := ps.at(p); line > 0 && (ce.Line == 0 || stripIndices(p) == pe.LastKey) {
		ce.Line, ce.Col = line, col
		if v := valueCol(src, line); v > 0 {
			ce.Col = v
		}
	}
	ce.Key = p
	ce.Msg = describe(p, looseNames(src)) + pe.Message
	return ce
}

// looseNames decodes just the host names, so a message can say which host
// even when the full decode failed.
func looseNames(src string) *Inventory {
	var loose struct {
		Hosts []struct {
			Name string `toml:"name"`
		} `toml:"host"`
	}
	inv := &Inventory{}
	if _, err := toml.Decode(src, &loose); err == nil {
		for _, h := range loose.Hosts {
			inv.Hosts = append(inv.Hosts, Host{Name: h.Name})
		}
	}
	return inv
}

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): incompatible types: TOML value has type (\w+); destination has type (\w+)`)

// typeError locates the decoder's "incompatible types" error, which carries
// only a line number in its text.
func typeError(name, src string, ps *positions, err error) error {
	m := typeErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: "), Err: err}
	}
	line, _ := strconv.Atoi(m[1])
	p, ok := ps.onLine(line)
	if !ok || stripIndices(p) != m[2] {
		p = m[2]
	}
	ce := &ConfigError{File: name, Line: line, Col: valueCol(src, line), Key: p, Err: err}
	ce.Msg = describe(p, looseNames(src)) + fmt.Sprintf("want %s %s, not %s %s", article(m[4]), m[4], article(m[3]), m[3])
	return ce
}

func article(s string) string {
	if strings.ContainsAny(s[:1], "aeiou") {
		return "an"
	}
	return "a"
}

// valueCol returns the column where the value starts on a "key = value" line.
func valueCol(src string, line int) int {
	lines := strings.Split(src, "\n")
	if line < 1 || line > len(lines) {
		return 0
	}
	l := lines[line-1]
	i := strings.Index(l, "=")
	if i < 0 {
		return 0
	}
	j := i + 1
	for j < len(l) && (l[j] == ' ' || l[j] == '\t') {
		j++
	}
	return j + 1
}

// hostNames is filled before messages are built so they can say
// `host "gaming-pc"` rather than `host[1]`.
var hostNamePathRE = regexp.MustCompile(`^host\[(\d+)\]\.?(.*)$`)

// describe renders a key path for a message: `host "gaming-pc": mac: `.
func describe(p string, inv *Inventory) string {
	if m := hostNamePathRE.FindStringSubmatch(p); m != nil {
		i, _ := strconv.Atoi(m[1])
		who := "host[" + m[1] + "]"
		if inv != nil && i < len(inv.Hosts) && inv.Hosts[i].Name != "" {
			who = fmt.Sprintf("host %q", inv.Hosts[i].Name)
		}
		if m[2] == "" {
			return who + ": "
		}
		return who + ": " + m[2] + ": "
	}
	if p == "" {
		return ""
	}
	return p + ": "
}

// tables maps a table's plain path to the struct that decodes it.
var tables = map[string]reflect.Type{
	"":           reflect.TypeOf(Inventory{}),
	"ssh":        reflect.TypeOf(SSH{}),
	"serve":      reflect.TypeOf(Serve{}),
	"host":       reflect.TypeOf(Host{}),
	"host.nixos": reflect.TypeOf(NixOS{}),
	"route":      reflect.TypeOf(Route{}),
}

func keysOf(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("toml")
		if tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

func unknownKey(name string, ps *positions, k toml.Key, inv *Inventory) []*ConfigError {
	plain := k.String()
	table, key := "", plain
	if i := strings.LastIndex(plain, "."); i >= 0 {
		table, key = plain[:i], plain[i+1:]
	}
	msg := fmt.Sprintf("unknown key %q", key)
	if t, ok := tables[table]; ok {
		if s := closest(key, keysOf(t)); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
	} else {
		msg = fmt.Sprintf("unknown key %q", plain)
	}
	var out []*ConfigError
	for _, p := range ps.order {
		if stripIndices(p) != plain {
			continue
		}
		line, col := ps.at(p)
		parent := ""
		if i := strings.LastIndex(p, "."); i >= 0 {
			parent = p[:i]
		}
		out = append(out, &ConfigError{File: name, Line: line, Col: col, Key: p, Msg: describe(parent, inv) + msg})
	}
	if len(out) == 0 {
		out = append(out, &ConfigError{File: name, Key: plain, Msg: msg})
	}
	return out
}

// closest returns the candidate within edit distance 2 of s, if exactly one
// is nearest.
func closest(s string, candidates []string) string {
	best, bestD, ties := "", 3, 0
	for _, c := range candidates {
		d := EditDistance(s, c)
		switch {
		case d < bestD:
			best, bestD, ties = c, d, 0
		case d == bestD:
			ties++
		}
	}
	if ties > 0 || bestD > 2 {
		return ""
	}
	return best
}

// EditDistance is the Levenshtein distance between a and b, for the
// "did you mean" of config errors.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

type validator struct {
	file  string
	src   string
	ps    *positions
	inv   *Inventory
	md    toml.MetaData
	errs  Errors
	notes []*ConfigError
	// names and macs index the hosts checked so far, by name and by MAC.
	names map[string]int
	macs  map[MAC]int
}

// note records something the loader changed or the user should know, at a
// key path; it is not an error.
func (v *validator) note(p, format string, args ...any) {
	line, col := v.ps.at(p)
	if _, exact := v.ps.pos[p]; exact && line > 0 {
		if c := valueCol(v.src, line); c > 0 {
			col = c
		}
	}
	v.notes = append(v.notes, &ConfigError{File: v.file, Line: line, Col: col, Key: p, Msg: describe(p, v.inv) + fmt.Sprintf(format, args...)})
}

// fail records a problem at a key path such as "host[1].mac".
func (v *validator) fail(p, format string, args ...any) {
	line, col := v.ps.at(p)
	if _, exact := v.ps.pos[p]; exact && line > 0 && !strings.HasSuffix(p, "]") {
		if c := valueCol(v.src, line); c > 0 {
			col = c
		}
	}
	v.errs = append(v.errs, &ConfigError{File: v.file, Line: line, Col: col, Key: p,
		Msg: describe(p, v.inv) + fmt.Sprintf(format, args...)})
}

var (
	hostNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	addressRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$`)
	containerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	ifaceRE     = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)
	userRE      = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	driverRE    = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,2}$`)
)

// check validates and completes the inventory, section by section, in the
// order its errors are reported (then sorted by line).
func (v *validator) check(env Env) {
	v.checkSSH(env)
	v.checkHosts()
	v.checkRoutes()
	v.checkServe()
	v.checkDefaultHost()
	sort.SliceStable(v.errs, func(a, b int) bool { return v.errs[a].Line < v.errs[b].Line && v.errs[a].Line > 0 })
}

// checkSSH completes the top level (state_dir) and [ssh].
func (v *validator) checkSSH(env Env) {
	inv := v.inv
	home := env.home()
	if inv.StateDir == "" {
		switch {
		case env.Root:
			inv.StateDir = "/var/lib/gpuctl"
		case env.getenv("XDG_STATE_HOME") != "":
			inv.StateDir = filepath.Join(env.getenv("XDG_STATE_HOME"), "gpuctl")
		default:
			inv.StateDir = filepath.Join(home, ".local", "state", "gpuctl")
		}
	} else {
		inv.StateDir = v.expandPath(inv.StateDir, home)
	}
	if inv.SSH.User == "" {
		inv.SSH.User = "gpuctl"
	} else if !userRE.MatchString(inv.SSH.User) {
		v.fail("ssh.user", "%q is not a valid user name", inv.SSH.User)
	}
	for i, f := range inv.SSH.IdentityFiles {
		inv.SSH.IdentityFiles[i] = v.expandPath(f, home)
	}
	if len(inv.SSH.KnownHosts) == 0 {
		inv.SSH.KnownHosts = []string{filepath.Join(home, ".ssh", "known_hosts")}
	}
	for i, f := range inv.SSH.KnownHosts {
		inv.SSH.KnownHosts[i] = v.expandPath(f, home)
	}
	if inv.SSH.ConnectTimeout == 0 {
		if v.md.IsDefined("ssh", "connect_timeout") {
			v.fail("ssh.connect_timeout", "must be positive")
		}
		inv.SSH.ConnectTimeout = DefaultConnTimeout
	}
	if inv.SSH.CommandTimeout == 0 {
		if v.md.IsDefined("ssh", "command_timeout") {
			v.fail("ssh.command_timeout", "must be positive")
		}
		inv.SSH.CommandTimeout = DefaultCommandTimeout
	} else if inv.SSH.CommandTimeout < 0 {
		v.fail("ssh.command_timeout", "must be positive")
	}
	if inv.SSH.Config != "" && inv.SSH.Config != "none" {
		inv.SSH.Config = v.expandPath(inv.SSH.Config, home)
	}
}

// checkHosts checks every [[host]], filling v.names and v.macs for the
// checks of duplicates and of references to hosts.
func (v *validator) checkHosts() {
	if len(v.inv.Hosts) == 0 {
		v.errs = append(v.errs, &ConfigError{File: v.file, Key: "host",
			Msg: "no [[host]] tables: declare at least one host"})
	}
	v.names = map[string]int{}
	v.macs = map[MAC]int{}
	for i := range v.inv.Hosts {
		v.checkHost(i)
	}
}

// checkRoutes checks every [[route]]; it needs v.names.
func (v *validator) checkRoutes() {
	inv := v.inv
	for i := range inv.Routes {
		r := &inv.Routes[i]
		p := fmt.Sprintf("route[%d]", i)
		if len(r.Models) == 0 {
			v.fail(p+".models", "a route needs at least one model name or pattern")
		}
		for _, m := range r.Models {
			if _, err := path.Match(m, ""); err != nil || m == "" {
				v.fail(p+".models", "%q is not a valid pattern", m)
				continue
			}
			if strings.ContainsAny(m, " \t\n'\"`$;&|<>\\") {
				v.fail(p+".models", "%q contains characters no model name has", m)
			}
		}
		if r.Host == "" {
			v.fail(p+".host", "a route needs a host")
		} else if _, ok := v.names[r.Host]; !ok {
			v.fail(p+".host", "%q is not a host in this inventory%s", r.Host, suggest(r.Host, inv.HostNames()))
		}
		if r.Fallback != "" {
			if _, ok := v.names[r.Fallback]; !ok {
				v.fail(p+".fallback", "%q is not a host in this inventory%s", r.Fallback, suggest(r.Fallback, inv.HostNames()))
			} else if r.Fallback == r.Host {
				v.fail(p+".fallback", "%q is the route's own host", r.Fallback)
			}
		}
	}
}

// checkServe completes [serve] and checks its limits and addresses.
func (v *validator) checkServe() {
	s := &v.inv.Serve
	if s.Listen == (HostPort{}) {
		s.Listen, _ = ParseHostPort(DefaultListen)
	}
	if s.MaxBody == 0 {
		s.MaxBody = DefaultMaxBody
	}
	if s.MaxBlob == 0 {
		s.MaxBlob = DefaultMaxBlob
	}
	for i, o := range s.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			v.fail(fmt.Sprintf("serve.allowed_origins[%d]", i), "%v", err)
		}
	}
	switch s.Progress {
	case "":
		s.Progress = "thinking"
	case "thinking", "comments", "off":
	default:
		v.fail("serve.progress", "%q: want \"thinking\" (progress in the thinking/reasoning_content field), \"comments\" (SSE comments only) or \"off\"", s.Progress)
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = DefaultMaxInFlight
	} else if s.MaxInFlight < 0 {
		v.fail("serve.max_in_flight", "must be positive")
	}
	if !v.md.IsDefined("serve", "header_timeout") {
		s.HeaderTimeout = DefaultHeaderTimeout
	} else if s.HeaderTimeout <= 0 {
		v.fail("serve.header_timeout", "must be positive (the default is %s: a cold model load can take minutes)", DefaultHeaderTimeout)
	}
	if d := s.DebugListen; d != (HostPort{}) {
		if !isLoopback(d.Host) {
			v.fail("serve.debug_listen", "%q is not a loopback address: the profiling endpoint has no authentication; use 127.0.0.1:PORT or [::1]:PORT (and an SSH tunnel from elsewhere)", d.String())
		} else if d == s.Listen {
			v.fail("serve.debug_listen", "%q is serve.listen's address; pick another port", d.String())
		}
	}
}

// checkDefaultHost checks serve.default_host, or picks the one always-on
// host; it needs v.names.
func (v *validator) checkDefaultHost() {
	inv := v.inv
	if inv.Serve.DefaultHost == "" {
		var always []string
		for _, h := range inv.Hosts {
			if !h.OnDemand {
				always = append(always, h.Name)
			}
		}
		if len(always) == 1 {
			inv.Serve.DefaultHost = always[0]
		}
	} else if i, ok := v.names[inv.Serve.DefaultHost]; !ok {
		v.fail("serve.default_host", "%q is not a host in this inventory%s", inv.Serve.DefaultHost, suggest(inv.Serve.DefaultHost, inv.HostNames()))
	} else if inv.Hosts[i].OnDemand {
		v.fail("serve.default_host", "%q is an on-demand host; the default host must be always on", inv.Serve.DefaultHost)
	}
}

func suggest(s string, cands []string) string {
	if c := closest(s, cands); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}

func (v *validator) expandPath(p, home string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	if !filepath.IsAbs(p) {
		return filepath.Join(filepath.Dir(v.file), p)
	}
	return p
}

// duration applies a default and rejects an explicit zero.
func (v *validator) duration(p string, _ []string, d *Duration, def Duration) {
	if *d != 0 {
		return
	}
	if _, ok := v.ps.pos[p]; ok {
		v.fail(p, "must be positive")
	}
	*d = def
}

// checkOrigin applies the rules Ollama's CORS middleware (gin-contrib/cors)
// puts on OLLAMA_ORIGINS: an origin has at most one "*", and one without
// "*" starts with http://, https:// or a browser extension's scheme.
func checkOrigin(o string) error {
	o = strings.TrimSpace(o)
	switch {
	case o == "":
		return errors.New("empty origin")
	case strings.Count(o, "*") > 1:
		return fmt.Errorf("%q has more than one \"*\"", o)
	case strings.Contains(o, "*"):
		return nil
	}
	for _, scheme := range []string{"http://", "https://", "chrome-extension://", "safari-extension://", "moz-extension://", "ms-browser-extension://"} {
		if strings.HasPrefix(strings.ToLower(o), scheme) {
			return nil
		}
	}
	return fmt.Errorf("%q is not an origin: write scheme://host[:port] (such as \"https://webui.example\"), or use \"*\"", o)
}

// isLoopback reports whether host (an IP or "localhost") is a loopback
// address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
