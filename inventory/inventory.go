// Package inventory loads and validates gpuctl's TOML inventory: the hosts it
// manages, how to reach them, and how model requests are routed between them.
//
// Every problem is reported with the file, line and column or the key path it
// concerns, before anything is sent on the network.
package inventory

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
)

// Defaults applied to keys left out of the inventory.
const (
	DefaultListen       = "127.0.0.1:11435"
	DefaultMaxBlob      = ByteSize(64 << 30)
	DefaultContainer    = "ollama"
	DefaultModelsDir    = "/mnt/models/ollama"
	DefaultSSHPort      = 22
	DefaultWOLPort      = 9
	DefaultOllamaPort   = 11434
	DefaultBootTimeout  = Duration(180 * time.Second)
	DefaultIdleAfter    = Duration(30 * time.Minute)
	DefaultMinUptime    = Duration(10 * time.Minute)
	DefaultConnTimeout  = Duration(5 * time.Second)
	DefaultGPUBusy      = 10
	MinBootTimeout      = Duration(30 * time.Second)
	DefaultMaxBody      = ByteSize(64 << 20)
	DefaultMaxInFlight  = 256
	DefaultMinFreeSpace = ByteSize(1 << 30)
	// DefaultHeaderTimeout is how long serve waits for a backend's
	// response headers: a cold load of a 40 GB model from an NTFS drive
	// can take minutes.
	DefaultHeaderTimeout = Duration(10 * time.Minute)
)

// Inventory is a whole gpuctl configuration file.
type Inventory struct {
	// Path is the file the inventory was read from.
	Path string `toml:"-"`

	StateDir string  `toml:"state_dir"`
	SSH      SSH     `toml:"ssh"`
	Serve    Serve   `toml:"serve"`
	Hosts    []Host  `toml:"host"`
	Routes   []Route `toml:"route"`

	// Notes are what loading changed or wants known without failing (a
	// normalized value), located like errors; `gpuctl config check` and
	// `gpuctl nixos generate` print them.
	Notes []*ConfigError `toml:"-"`
}

// SSH holds defaults for every host's SSH connection.
type SSH struct {
	User           string   `toml:"user"`
	IdentityFiles  []string `toml:"identity_files"`
	KnownHosts     []string `toml:"known_hosts"`
	ConnectTimeout Duration `toml:"connect_timeout"`
	// CommandTimeout bounds one round of readiness checks and each idle
	// shutdown probe once SSH answers.
	CommandTimeout Duration `toml:"command_timeout"`
	// Config is an ssh_config(5) file to read HostName, Port, User,
	// IdentityFile and ProxyJump from; "" means ~/.ssh/config when it exists,
	// "none" turns it off.
	Config string `toml:"config"`
}

// Serve configures the routing proxy (`gpuctl serve`).
type Serve struct {
	Listen      HostPort `toml:"listen"`
	DefaultHost string   `toml:"default_host"`
	// MaxBody caps request bodies; larger ones get 413 and wake nothing.
	MaxBody ByteSize `toml:"max_body"`
	// MaxInFlight caps concurrent proxied requests; past it clients get 429.
	MaxInFlight int `toml:"max_in_flight"`
	// Progress is how streaming requests held for a wake or a pull are shown
	// what they wait for: "thinking" (the default), "comments" or "off".
	Progress string `toml:"progress"`
	// PageActions offers a "wake" button on the status page (/gpuctl/).
	PageActions bool `toml:"page_actions"`
	// AllowedOrigins are browser origins allowed besides Ollama's own
	// defaults (OLLAMA_ORIGINS's syntax: "https://webui.example",
	// "http://*.lan", "*" for any); others get 403.
	AllowedOrigins []string `toml:"allowed_origins"`
	// MaxBlob caps one model blob uploaded through serve (POST
	// /api/blobs/<digest>, as `ollama create` does); free disk in the state
	// directory bounds it too.
	MaxBlob ByteSize `toml:"max_blob"`
	// HeaderTimeout bounds how long a backend may take to start answering
	// (a cold model load); past it the client gets 504.
	HeaderTimeout Duration `toml:"header_timeout"`
	// DebugListen, when set, serves net/http/pprof there; loopback only.
	DebugListen HostPort `toml:"debug_listen"`
}

// Host is one machine with an Ollama server: the always-on box or an
// on-demand gaming PC that gpuctl wakes and powers off.
type Host struct {
	Name     string `toml:"name"`
	OnDemand bool   `toml:"on_demand"`
	MAC      MAC    `toml:"mac"`
	Address  string `toml:"address"`
	// Wake is how gpuctl wakes the host, tried in order (default ["wol"]).
	Wake WakeActions `toml:"wake"`
	// WakeTimeout bounds each wake command (default 30 s).
	WakeTimeout  Duration   `toml:"wake_timeout"`
	WOLTo        []HostPort `toml:"wol_to"`
	WOLInterface string     `toml:"wol_interface"`
	// WOLPassword is an optional SecureOn password (4 or 6 bytes).
	WOLPassword Secret      `toml:"wol_password"`
	SSHPort     int         `toml:"ssh_port"`
	SSHUser     string      `toml:"ssh_user"`
	HostKey     string      `toml:"host_key"`
	OllamaURL   URL         `toml:"ollama_url"`
	Container   string      `toml:"container"`
	ModelsDir   string      `toml:"models_dir"`
	VRAM        ByteSize    `toml:"vram"`
	Models      []ModelName `toml:"models"`
	BootTimeout Duration    `toml:"boot_timeout"`
	IdleAfter   Duration    `toml:"idle_after"`
	MinUptime   Duration    `toml:"min_uptime"`
	// OtherOSProbe is a TCP port (such as 3389, RDP) that answers only while
	// the PC runs its other OS; gpuctl then never wakes or powers it off.
	OtherOSProbe int `toml:"other_os_probe"`
	// MinDriver is the lowest acceptable NVIDIA driver version ("550.54").
	MinDriver string `toml:"min_driver"`
	// MinFree is the free space the model drive must keep.
	MinFree ByteSize `toml:"min_free"`
	// GPUBusyPercent is the utilisation above which the GPU counts as busy
	// for idle shutdown.
	GPUBusyPercent int `toml:"gpu_busy_percent"`
	// Checks are the readiness checks that apply to the host (CheckNames;
	// default: all). A host checked by "ollama" alone is never reached over
	// SSH, as suits the always-on server gpuctl itself runs on.
	Checks []string `toml:"checks"`

	NixOS *NixOS `toml:"nixos"`

	// index is the host's position among the [[host]] tables.
	index int
	// wolPasswordEnv is set when WOLPassword came from the environment
	// (WOLPasswordEnv), not from the file.
	wolPasswordEnv bool
}

// CheckNames are the readiness checks a host may select with `checks`, in
// the order they are reported. All but "ollama" run over SSH; "ollama" also
// reports which declared models are missing.
var CheckNames = []string{"gpu", "container", "container_gpu", "mount", "free_space", "write_probe", "ollama"}

// HasCheck reports whether the named readiness check applies to h.
func (h *Host) HasCheck(name string) bool {
	if len(h.Checks) == 0 {
		return true
	}
	for _, c := range h.Checks {
		if c == name {
			return true
		}
	}
	return false
}

// Route sends requests for matching models to a host.
type Route struct {
	Models   []string `toml:"models"`
	Host     string   `toml:"host"`
	Fallback string   `toml:"fallback"`
}

// ConfigError is a problem in the inventory, located in its file.
type ConfigError struct {
	File string
	Line int // 0 when unknown
	Col  int
	// Key is the dotted key path ("host[1].mac"), when known.
	Key string
	Msg string
	Err error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// Errors is every problem found in one inventory.
type Errors []*ConfigError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes each problem to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// ErrNotFound is returned by Find when no inventory file exists.
var ErrNotFound = errors.New("no inventory file found")

// Lookup is how the search order reads the environment.
type Lookup struct {
	Getenv   func(string) string
	Exists   func(string) bool
	Home     string
	Explicit string // --config
}

// Find returns the inventory file to use and why: --config, $GPUCTL_CONFIG,
// $XDG_CONFIG_HOME/gpuctl/gpuctl.toml (~/.config/gpuctl/gpuctl.toml), then
// /etc/gpuctl/gpuctl.toml.
func Find(l Lookup) (file, source string, err error) {
	if l.Explicit != "" {
		return l.Explicit, "--config", nil
	}
	getenv := l.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	exists := l.Exists
	if exists == nil {
		exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	if p := getenv("GPUCTL_CONFIG"); p != "" {
		return p, "$GPUCTL_CONFIG", nil
	}
	var tried []string
	xdg := getenv("XDG_CONFIG_HOME")
	if xdg != "" {
		p := filepath.Join(xdg, "gpuctl", "gpuctl.toml")
		if exists(p) {
			return p, "$XDG_CONFIG_HOME", nil
		}
		tried = append(tried, p)
	}
	if l.Home != "" {
		p := filepath.Join(l.Home, ".config", "gpuctl", "gpuctl.toml")
		if xdg == "" || p != filepath.Join(xdg, "gpuctl", "gpuctl.toml") {
			if exists(p) {
				return p, "~/.config", nil
			}
			tried = append(tried, p)
		}
	}
	const etc = "/etc/gpuctl/gpuctl.toml"
	if exists(etc) {
		return etc, "/etc", nil
	}
	tried = append(tried, etc)
	return "", "", fmt.Errorf("%w (looked for --config, $GPUCTL_CONFIG, %s); write one from examples/gpuctl.toml",
		ErrNotFound, strings.Join(tried, ", "))
}

// Host returns the host with the given name.
func (inv *Inventory) Host(name string) (*Host, bool) {
	for i := range inv.Hosts {
		if inv.Hosts[i].Name == name {
			return &inv.Hosts[i], true
		}
	}
	return nil, false
}

// HostNames lists the hosts in inventory order.
func (inv *Inventory) HostNames() []string {
	out := make([]string, len(inv.Hosts))
	for i, h := range inv.Hosts {
		out[i] = h.Name
	}
	return out
}

// KnownHostsFile is gpuctl's own known_hosts, where `gpuctl trust` enrolls keys.
func (inv *Inventory) KnownHostsFile() string {
	return statedir.KnownHosts(inv.StateDir)
}

// SSHAddr is the host:port gpuctl dials for SSH.
func (h *Host) SSHAddr() string {
	return HostPort{Host: h.Address, Port: uint16(h.SSHPort)}.String()
}

// MatchRoute returns the first route whose patterns match the model, or nil.
// Patterns are path.Match globs ("llama3.3:*", "*:70b") compared as Ollama
// compares names: case-insensitively, against the name as given and its
// normal form (ModelName.Normalize), so "Heavy", "library/heavy" and
// "registry.ollama.ai/library/heavy:latest" all match the pattern "heavy".
// A pattern without a tag also matches the model's ":latest" form.
func (inv *Inventory) MatchRoute(model string) *Route {
	norm := NormalModel(model)
	cands := []string{strings.ToLower(strings.TrimSpace(model)), norm}
	for i := range inv.Routes {
		for _, p := range inv.Routes[i].Models {
			p = strings.ToLower(p)
			pats := []string{p}
			if !strings.ContainsAny(p, "*?[\\") {
				// A plain name: compare normal forms.
				if NormalModel(p) == norm {
					return &inv.Routes[i]
				}
				continue
			}
			if last := p[strings.LastIndex(p, "/")+1:]; !strings.Contains(last, ":") {
				pats = append(pats, p+":latest")
			}
			for _, pat := range pats {
				for _, c := range cands {
					if ok, _ := path.Match(pat, c); ok {
						return &inv.Routes[i]
					}
				}
			}
		}
	}
	return nil
}
