// Package sim is gpuctl-sim: simulated gaming PCs for gpuctl's demo,
// end-to-end tests and benchmarks.
//
// A simulated PC listens for magic packets for its MAC, boots after a delay
// (its ports first drop packets like a powered-off machine, then refuse like
// a booting one), then answers SSH (in-process, sshexec/sshtest) and the
// Ollama API, and honours `sudo -n /run/current-system/sw/bin/poweroff` by
// going back to off. Its Ollama is the real server v0.17.4 when its binary
// is built (Config.RealOllama; controller/ollamatest/realollama), started at
// each boot with OLLAMA_MODELS=<models_dir>/models as the stick's container
// keeps them and pulling from a test registry standing in for
// registry.ollama.ai; else the in-process fake (controller/ollamatest) with
// the same layout. Remote commands are emulated by argv and print real captured outputs
// (see fixtures.go and box.go). Faults: driver not loaded, read-only drive,
// never boots, host key rotated; slow boot is a longer boot delay.
//
// The same binary is also the box's stand-in commands for the end-to-end
// tier, where a real OpenSSH sshd runs them: invoked as nvidia-smi, docker,
// findmnt, df, sudo, who or ethtool (a symlink), it answers from the Box
// described by $GPUCTL_SIM_BOX (see StandIn).
package sim

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
	"github.com/ollamalive/gpuctl/wake"
)

// Config describes a simulation.
type Config struct {
	// Dir holds everything: keys, state_dir, each PC's models directory.
	Dir string
	// Hosts is how many gaming PCs (default 1), named "gaming-pc",
	// "gaming-pc-2", …
	Hosts int
	// BootDelay, LinkDelay and StopDelay: see PCConfig.
	BootDelay, LinkDelay, StopDelay time.Duration
	// CommandDelay: see PCConfig.
	CommandDelay time.Duration
	// Faults apply to every PC; HostFaults to the named one.
	Faults     Faults
	HostFaults map[string]Faults
	// Models are declared for every PC; the PCs' Ollama can pull them.
	// ModelSize is the model layer's size in bytes (default 8 MiB);
	// PullRate slows pulls (bytes per second, 0 = unlimited).
	Models    []string
	ModelSize int64
	PullRate  int64
	// Installed models are on every PC's drive from the start.
	Installed []string
	// RealOllama, when set, is the real Ollama server's binary: every PC
	// runs it (models under <models_dir>/models, as the container keeps
	// them), pulling from a test registry that answers as
	// registry.ollama.ai with a runnable random-weight model under each
	// name in Models and Installed (ModelSize and PullRate are then
	// unused). Empty: the in-process fake (controller/ollamatest).
	RealOllama string
	// Server adds the always-on server's own Ollama (host "server"),
	// holding LightModels, as the routing proxy's default host.
	Server      bool
	LightModels []string
	// Up starts the PCs powered on.
	Up bool
	// Inventory timings (defaults: boot_timeout 60s, idle_after 2s,
	// min_uptime 2s).
	BootTimeout, IdleAfter, MinUptime time.Duration
	// Logf receives one line per event.
	Logf func(format string, args ...any)
}

// Sim is a running simulation.
type Sim struct {
	cfg       Config
	client    ssh.Signer
	keyFile   string
	stateDir  string
	wol       *wake.Listener
	wolAddr   string
	pcs       []*PC
	server    *ollamatest.Server
	registry  *realollama.Registry
	serverURL string
	serverHS  *http.Server
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	serve     string
}

// DefaultModel is the declared model of the demo's gaming PC.
const DefaultModel = "llama3.3:70b-instruct-q3_K_M"

// Start starts the simulation: every PC off (or up with Config.Up), one
// UDP port on 127.0.0.1 hearing magic packets for all of them.
func Start(cfg Config) (*Sim, error) {
	if cfg.Dir == "" {
		return nil, errors.New("gpuctl-sim: no directory")
	}
	cfg.Hosts = max(cfg.Hosts, 1)
	cfg.ModelSize = cmp.Or(cfg.ModelSize, 8<<20)
	cfg.BootTimeout = cmp.Or(cfg.BootTimeout, 60*time.Second)
	cfg.IdleAfter = cmp.Or(cfg.IdleAfter, 2*time.Second)
	cfg.MinUptime = cmp.Or(cfg.MinUptime, 2*time.Second)
	s := &Sim{cfg: cfg, stateDir: filepath.Join(cfg.Dir, "state")}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if s.client, s.keyFile, err = writeClientKey(s.stateDir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	real, err := s.startRegistry()
	if err != nil {
		return nil, err
	}
	if err := s.addPCs(real); err != nil {
		return nil, err
	}
	if cfg.Server {
		if err := s.startServer(); err != nil {
			return nil, err
		}
	}
	if err := s.listenWOL(); err != nil {
		return nil, err
	}
	if cfg.Up {
		for _, pc := range s.pcs {
			if err := pc.PowerOn(); err != nil {
				return nil, err
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.serve = ln.Addr().String()
	ln.Close()
	ok = true
	return s, nil
}

// declared is every model the PCs know: the declared ones, then the
// installed ones.
func (s *Sim) declared() []string {
	return append(append([]string{}, s.cfg.Models...), s.cfg.Installed...)
}

// startRegistry starts the test registry with a runnable model under each
// declared name when the PCs run the real Ollama; nil when they run the
// fake.
func (s *Sim) startRegistry() (*RealOllama, error) {
	if s.cfg.RealOllama == "" {
		return nil, nil
	}
	rdir := filepath.Join(s.cfg.Dir, "registry")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if s.registry, err = realollama.NewRegistry(rdir); err != nil {
		return nil, err
	}
	for _, m := range s.declared() {
		if _, err := s.registry.AddModel(m, realollama.Tiny); err != nil {
			return nil, err
		}
	}
	return &RealOllama{Binary: s.cfg.RealOllama, Registry: s.registry}, nil
}

// addPCs creates the PCs, powered off: "gaming-pc", "gaming-pc-2", …, each
// with its own host key and MAC, its faults, and the fake Ollama's
// catalogue (or real, when set).
func (s *Sim) addPCs(real *RealOllama) error {
	cfg := s.cfg
	var cat []ollamatest.Model
	for _, m := range s.declared() {
		cat = append(cat, ollamatest.Model{Name: m, ParameterSize: "70.6B", QuantizationLevel: "Q3_K_M",
			Layers: []ollamatest.Layer{{Size: cfg.ModelSize}, {MediaType: ollamatest.MediaTypeTemplate, Size: 1 << 10}},
			Reply:  []string{"Hello", " from", " the", " gaming", " PC", "!"}})
	}
	for i := 0; i < cfg.Hosts; i++ {
		name := "gaming-pc"
		if i > 0 {
			name = fmt.Sprintf("gaming-pc-%d", i+1)
		}
		hk, err := sshtest.NewEd25519Signer()
		if err != nil {
			return err
		}
		f := cfg.Faults
		if hf, ok := cfg.HostFaults[name]; ok {
			f = mergeFaults(f, hf)
		}
		mac, _ := inventory.ParseMAC(fmt.Sprintf("02:67:70:75:%02x:%02x", (i+1)>>8, (i+1)&0xff))
		pc, err := NewPC(PCConfig{Name: name, MAC: mac, Dir: filepath.Join(cfg.Dir, name),
			BootDelay: cfg.BootDelay, LinkDelay: cfg.LinkDelay, StopDelay: cfg.StopDelay, Faults: f,
			HostKey: hk, ClientKey: s.client.PublicKey(), Catalogue: cat, PullRate: cfg.PullRate,
			ChunkSize: int(max(256<<10, cfg.ModelSize/8)), Installed: cfg.Installed, CommandDelay: cfg.CommandDelay, Logf: cfg.Logf, Real: real})
		if err != nil {
			return err
		}
		s.pcs = append(s.pcs, pc)
	}
	return nil
}

// listenWOL opens the one UDP port on 127.0.0.1 that hears magic packets
// for every PC, and hands each packet to the PCs whose MAC it carries.
func (s *Sim) listenWOL() error {
	var err error
	if s.wol, err = wake.ListenUDP("127.0.0.1:0"); err != nil {
		return err
	}
	s.wolAddr = s.wol.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.wol.Serve(ctx, func(seen wake.Seen) {
			for _, pc := range s.pcs {
				if seen.Matches(pc.MAC(), nil) {
					pc.MagicPacket()
				}
			}
		})
	}()
	return nil
}

func mergeFaults(a, b Faults) Faults {
	return Faults{DriverNotLoaded: a.DriverNotLoaded || b.DriverNotLoaded, ReadOnlyDrive: a.ReadOnlyDrive || b.ReadOnlyDrive,
		NeverBoots: a.NeverBoots || b.NeverBoots, HostKeyRotated: a.HostKeyRotated || b.HostKeyRotated}
}

func (s *Sim) startServer() error {
	dir := filepath.Join(s.cfg.Dir, "server", "models")
	var cat []ollamatest.Model
	for _, m := range s.cfg.LightModels {
		cat = append(cat, ollamatest.Model{Name: m, Reply: []string{"Hello", " from", " the", " server", "."}})
	}
	s.server = ollamatest.New(ollamatest.Config{Dir: dir, Catalogue: cat})
	for _, m := range s.cfg.LightModels {
		if err := s.server.Install(m); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.serverURL = "http://" + ln.Addr().String()
	s.serverHS = &http.Server{Handler: s.server, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serverHS.Serve(ln)
	}()
	return nil
}

// writeClientKey writes gpuctl's SSH identity (the only key the PCs
// accept) as an OpenSSH private key, mode 0600.
func writeClientKey(dir string) (ssh.Signer, string, error) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, "", err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "gpuctl-sim client")
	if err != nil {
		return nil, "", err
	}
	f := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(f, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(f+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, "", err
	}
	return signer, f, nil
}

// PCs are the simulated gaming PCs.
func (s *Sim) PCs() []*PC { return s.pcs }

// PC returns the named PC.
func (s *Sim) PC(name string) *PC {
	for _, pc := range s.pcs {
		if pc.Name() == name {
			return pc
		}
	}
	return nil
}

// Server is the always-on server's Ollama (nil without Config.Server).
func (s *Sim) Server() *ollamatest.Server { return s.server }

// WOLAddr is where the PCs hear magic packets.
func (s *Sim) WOLAddr() string { return s.wolAddr }

// ServeAddr is the [serve] listen address the inventory names.
func (s *Sim) ServeAddr() string { return s.serve }

// KeyFile is gpuctl's identity file.
func (s *Sim) KeyFile() string { return s.keyFile }

// Client is gpuctl's SSH identity.
func (s *Sim) Client() ssh.Signer { return s.client }

// Inventory renders a ready-to-use gpuctl inventory for the simulation:
// every PC with its pinned host key, wol_to, ssh_port and ollama_url; the
// generated identity; state_dir in the simulation's directory.
func (s *Sim) Inventory() string {
	var b strings.Builder
	q := strconv.Quote
	fmt.Fprintf(&b, "# Written by gpuctl-sim: %d simulated gaming PC(s) on 127.0.0.1.\n", len(s.pcs))
	fmt.Fprintf(&b, "state_dir = %s\n\n[ssh]\nuser = \"gpuctl\"\nidentity_files = [%s]\nconfig = \"none\"\nconnect_timeout = \"5s\"\n\n",
		q(s.stateDir), q(s.keyFile))
	if s.server != nil {
		fmt.Fprintf(&b, "[serve]\nlisten = %s\ndefault_host = \"server\"\n\n", q(s.serve))
		fmt.Fprintf(&b, "# The always-on server's own Ollama (light models).\n[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\nchecks = [\"ollama\"]\nollama_url = %s\nvram = \"16GiB\"\n",
			q(s.serverURL))
		if len(s.cfg.LightModels) > 0 {
			fmt.Fprintf(&b, "models = [%s]\n", quoteList(s.cfg.LightModels))
		}
		b.WriteString("\n")
	}
	for _, pc := range s.pcs {
		fmt.Fprintf(&b, "[[host]]\nname = %s\non_demand = true\nmac = %s\naddress = \"127.0.0.1\"\nwol_to = [%s]\nssh_port = %d\n",
			q(pc.Name()), q(pc.MAC().String()), q(s.wolAddr), pc.SSHPort())
		fmt.Fprintf(&b, "host_key = %s\nollama_url = %s\nmodels_dir = %s\nvram = \"24GiB\"\n",
			q(strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pc.HostKey())))), q(pc.OllamaURL()), q(pc.ModelsDir()))
		if len(s.cfg.Models) > 0 {
			fmt.Fprintf(&b, "models = [%s]\n", quoteList(s.cfg.Models))
		}
		fmt.Fprintf(&b, "boot_timeout = %s\nidle_after = %s\nmin_uptime = %s\n\n",
			q(s.cfg.BootTimeout.String()), q(s.cfg.IdleAfter.String()), q(s.cfg.MinUptime.String()))
	}
	if s.server != nil && len(s.cfg.Models) > 0 {
		fmt.Fprintf(&b, "[[route]]\nmodels = [%s]\nhost = %s\nfallback = \"server\"\n", quoteList(s.cfg.Models), q(s.pcs[0].Name()))
	}
	return b.String()
}

func quoteList(l []string) string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = strconv.Quote(s)
	}
	return strings.Join(out, ", ")
}

// WriteInventory writes Inventory to file (mode 0600).
func (s *Sim) WriteInventory(file string) error {
	return os.WriteFile(file, []byte(s.Inventory()), 0o600)
}

// Close stops everything.
func (s *Sim) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.wol != nil {
		s.wol.Close()
	}
	for _, pc := range s.pcs {
		pc.Close()
	}
	if s.serverHS != nil {
		s.serverHS.Close()
	}
	if s.registry != nil {
		s.registry.Close()
	}
	s.wg.Wait()
}
