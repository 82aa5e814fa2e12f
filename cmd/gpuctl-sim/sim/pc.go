package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// State is where a simulated PC stands.
type State string

// Power states.
const (
	// Off: its ports drop every packet (connections time out), as a
	// powered-off PC's address does; only magic packets are heard.
	Off State = "off"
	// Booting: a magic packet arrived; first the ports still drop
	// packets (firmware, boot loader), then refuse (the OS is up, sshd
	// not yet).
	Booting State = "booting"
	// Up: SSH and Ollama answer.
	Up State = "up"
	// Stopping: poweroff ran; the ports refuse until the PC is off.
	Stopping State = "stopping"
)

// PCConfig describes one simulated gaming PC.
type PCConfig struct {
	Name string
	MAC  inventory.MAC
	// Dir holds the PC's models directory (Dir/models).
	Dir string
	// BootDelay is the time from the magic packet to SSH and Ollama
	// answering; LinkDelay (default BootDelay/2) the time after which its
	// ports refuse instead of dropping packets.
	BootDelay time.Duration
	LinkDelay time.Duration
	// StopDelay is how long after poweroff its ports refuse before the PC
	// is off (default 1s).
	StopDelay time.Duration
	Faults    Faults
	// HostKey is the SSH host key the inventory pins; ClientKey the only
	// key it accepts.
	HostKey   ssh.Signer
	ClientKey ssh.PublicKey
	// Catalogue is what its Ollama can pull; PullRate slows pulls down
	// (bytes per second, 0 = unlimited).
	Catalogue []ollamatest.Model
	PullRate  int64
	// ChunkSize is how many bytes a pull writes between progress lines
	// (default 256 KiB).
	ChunkSize int
	// Installed models are on its drive from the start.
	Installed []string
	// CommandDelay is how long each remote command takes on the box
	// (real nvidia-smi and docker take tens of milliseconds); 0 = none.
	CommandDelay time.Duration
	// Container is the Ollama container's name (default "ollama").
	Container string
	// Real, when set, makes the PC's Ollama the real server (started at
	// each boot, stopped at poweroff) instead of the in-process fake; its
	// Catalogue, PullRate and ChunkSize are then unused: the registry
	// holds the models.
	Real *RealOllama
	// Logf, when set, receives one line per event (packets, boots,
	// poweroffs).
	Logf func(format string, args ...any)
}

// PC is one simulated gaming PC on loopback: an SSH port and an Ollama
// port that behave as a real PC's would through its power states, and the
// MAC its magic packets must carry.
type PC struct {
	cfg       PCConfig
	modelsDir string
	sshPort   int
	olPort    int

	mu       sync.Mutex
	state    State
	changed  chan struct{}
	booted   time.Time
	upAt     time.Time
	sshBH    *blackHole
	olBH     *blackHole
	sshSrv   *sshtest.Server
	httpSrv  *http.Server
	ollama   *ollamatest.Server
	real     *realollama.Server
	fwd      *forward
	reqs     map[string]int
	conns    map[net.Conn]bool
	timers   []*time.Timer
	boots    int
	packets  int
	poweroff int
	closed   bool
	wg       sync.WaitGroup
}

// NewPC creates a PC, powered off, with its ports reserved.
func NewPC(cfg PCConfig) (*PC, error) {
	if cfg.HostKey == nil || cfg.ClientKey == nil {
		return nil, errors.New("gpuctl-sim: a PC needs a host key and a client key")
	}
	cfg.Container = cmp.Or(cfg.Container, "ollama")
	cfg.StopDelay = cmp.Or(cfg.StopDelay, time.Second)
	if cfg.LinkDelay <= 0 || cfg.LinkDelay > cfg.BootDelay {
		cfg.LinkDelay = cfg.BootDelay / 2
	}
	p := &PC{cfg: cfg, modelsDir: filepath.Join(cfg.Dir, "models"), state: Off,
		changed: make(chan struct{}), conns: map[net.Conn]bool{}, reqs: map[string]int{}}
	if err := os.MkdirAll(p.modelsDir, 0o755); err != nil {
		return nil, fmt.Errorf("gpuctl-sim: %s: %w", cfg.Name, err)
	}
	var err error
	if p.sshBH, err = newBlackHole(0); err != nil {
		return nil, err
	}
	if p.olBH, err = newBlackHole(0); err != nil {
		p.sshBH.Close()
		return nil, err
	}
	p.sshPort, p.olPort = p.sshBH.port, p.olBH.port
	if len(cfg.Installed) > 0 {
		install := func(m string) error { return p.newOllama().Install(m) }
		if cfg.Real != nil {
			install = func(m string) error { return cfg.Real.Registry.Install(p.ollamaModels(), m) }
		}
		for _, m := range cfg.Installed {
			if err := install(m); err != nil {
				p.Close()
				return nil, fmt.Errorf("gpuctl-sim: %s: installing %s: %w", cfg.Name, m, err)
			}
		}
	}
	return p, nil
}

func (p *PC) logf(format string, args ...any) {
	if p.cfg.Logf != nil {
		p.cfg.Logf("%s: "+format, append([]any{p.cfg.Name}, args...)...)
	}
}

// Name is the PC's inventory name.
func (p *PC) Name() string { return p.cfg.Name }

// MAC is the address its magic packets must carry.
func (p *PC) MAC() inventory.MAC { return p.cfg.MAC }

// SSHAddr and OllamaURL are where the PC answers once up.
func (p *PC) SSHAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.sshPort)) }
func (p *PC) SSHPort() int    { return p.sshPort }
func (p *PC) OllamaURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.olPort))
}

// ModelsDir is the PC's model directory (a real directory): models_dir,
// mounted in the Ollama container as /root/.ollama.
func (p *PC) ModelsDir() string { return p.modelsDir }

// ollamaModels is where the PC's Ollama keeps its models: the container's
// $HOME/.ollama/models, i.e. <models_dir>/models.
func (p *PC) ollamaModels() string { return filepath.Join(p.modelsDir, "models") }

// Requests counts the requests its Ollama port answered, by "METHOD path",
// real or fake Ollama alike.
func (p *PC) Requests(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reqs[key]
}

// RealOllama reports whether the PC's Ollama is the real server.
func (p *PC) RealOllama() bool { return p.cfg.Real != nil }

// HostKey is the host key the inventory pins.
func (p *PC) HostKey() ssh.PublicKey { return p.cfg.HostKey.PublicKey() }

// State is where the PC stands now.
func (p *PC) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// UpSince is when SSH and Ollama last started answering (zero unless up).
func (p *PC) UpSince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Up {
		return time.Time{}
	}
	return p.upAt
}

// Counts: magic packets heard, boots, poweroffs.
func (p *PC) Counts() (packets, boots, poweroffs int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.packets, p.boots, p.poweroff
}

// SSHConnections is how many SSH connections the PC's server accepted
// since it last booted (0 while it is down).
func (p *PC) SSHConnections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sshSrv == nil {
		return 0
	}
	return p.sshSrv.Connections()
}

// Ollama is the PC's fake Ollama while it is up (nil otherwise, and with
// the real server).
func (p *PC) Ollama() *ollamatest.Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ollama
}

// WaitState waits until the PC is in state s.
func (p *PC) WaitState(ctx context.Context, s State) error {
	for {
		p.mu.Lock()
		st, ch := p.state, p.changed
		p.mu.Unlock()
		if st == s {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%s: still %s, waiting for %s: %w", p.cfg.Name, st, s, ctx.Err())
		}
	}
}

// setState: p.mu held.
func (p *PC) setState(s State) {
	if p.state == s {
		return
	}
	p.state = s
	close(p.changed)
	p.changed = make(chan struct{})
	p.logf("%s", s)
}

func (p *PC) after(d time.Duration, f func()) {
	p.timers = append(p.timers, time.AfterFunc(d, f))
}

// MagicPacket is what the PC's NIC does with a magic packet for its MAC:
// an off PC starts booting (unless it never boots).
func (p *PC) MagicPacket() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.packets++
	if p.state != Off || p.closed {
		return
	}
	if p.cfg.Faults.NeverBoots {
		if p.packets == 1 {
			p.logf("magic packet received, but this PC never boots (fault never-boots)")
		}
		return
	}
	p.setState(Booting)
	p.after(p.cfg.LinkDelay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.state == Booting && !p.closed {
			p.sshBH.Close()
			p.olBH.Close()
		}
	})
	p.after(p.cfg.BootDelay, p.bringUp)
}

// PowerOn brings the PC up at once (a PC that is already running).
func (p *PC) PowerOn() error {
	p.mu.Lock()
	if p.state != Off {
		p.mu.Unlock()
		return nil
	}
	p.setState(Booting)
	p.mu.Unlock()
	p.bringUp()
	if p.State() != Up {
		return fmt.Errorf("%s did not come up", p.cfg.Name)
	}
	return nil
}

func (p *PC) newOllama() *ollamatest.Server {
	return ollamatest.New(ollamatest.Config{Dir: p.ollamaModels(), Catalogue: p.cfg.Catalogue, BytesPerSecond: p.cfg.PullRate,
		ChunkSize: cmp.Or(p.cfg.ChunkSize, 256<<10)})
}

func (p *PC) bringUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Booting || p.closed {
		return
	}
	p.sshBH.Close()
	p.olBH.Close()
	now := time.Now()
	srv, err := p.startSSH(p.newBox(now))
	if err != nil {
		p.bootFailed("cannot start SSH: %v", err)
		return
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.olPort)))
	if err != nil {
		srv.Close()
		p.bootFailed("cannot start Ollama: %v", err)
		return
	}
	if p.cfg.Real != nil {
		if err := p.startRealOllama(ln); err != nil {
			ln.Close()
			srv.Close()
			p.bootFailed("cannot start Ollama: %v", err)
			return
		}
	} else {
		p.startFakeOllama(ln)
	}
	p.sshSrv = srv
	p.booted, p.upAt = now, time.Now()
	p.boots++
	p.setState(Up)
}

// bootFailed logs why the boot failed and powers the PC off again. p.mu is
// held.
func (p *PC) bootFailed(format string, args ...any) {
	p.logf(format, args...)
	p.setState(Off)
	p.reBlackHole()
}

// newBox is the box this boot's commands run on, booted at now. p.mu is
// held.
func (p *PC) newBox(now time.Time) *Box {
	box := &Box{Name: p.cfg.Name, ModelsDir: p.modelsDir, Container: p.cfg.Container, Booted: now,
		Faults: p.cfg.Faults, Interface: "enp40s0", Address: "127.0.0.1",
		sshConn: fmt.Sprintf("127.0.0.1 %d 127.0.0.1 %d", 40000+p.boots, p.sshPort)}
	box.conns = p.connsTo
	box.powerOff = p.poweroffRequested
	return box
}

// startSSH starts the PC's SSH server, running commands on box, with the
// pinned host key (or a new one under the fault host-key-rotated).
func (p *PC) startSSH(box *Box) (*sshtest.Server, error) {
	hostKey := p.cfg.HostKey
	if p.cfg.Faults.HostKeyRotated {
		k, err := sshtest.NewEd25519Signer()
		if err == nil {
			hostKey = k
		}
	}
	return sshtest.Start(sshtest.Options{
		HostKeys:       []ssh.Signer{hostKey},
		AuthorizedKeys: []ssh.PublicKey{p.cfg.ClientKey},
		// Recent commands only: a simulator may run for days.
		MaxRecorded: 256,
		Addr:        p.SSHAddr(),
		Handler: func(cmd string, _ io.Reader, stdout, stderr io.Writer) int {
			if d := p.cfg.CommandDelay; d > 0 {
				time.Sleep(d) // the box's own time to run the command
			}
			r := box.Exec(cmd)
			io.WriteString(stdout, r.Stdout)
			io.WriteString(stderr, r.Stderr)
			return r.Exit
		},
		Logf: func(string, ...any) {},
	})
}

// startRealOllama starts the real Ollama server and forwards the Ollama
// port ln to it, counting requests and connections. p.mu is held.
func (p *PC) startRealOllama(ln net.Listener) error {
	real, err := p.cfg.Real.start(p.cfg.Name, filepath.Join(p.cfg.Dir, "home"), p.ollamaModels())
	if err != nil {
		return err
	}
	p.fwd = newForward(ln, real.Addr, func(method, path string) {
		p.mu.Lock()
		p.reqs[method+" "+path]++
		p.mu.Unlock()
	}, func(c net.Conn, open bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if open {
			p.conns[c] = true
		} else {
			delete(p.conns, c)
		}
	})
	p.real = real
	return nil
}

// startFakeOllama serves the in-process fake Ollama on ln, counting
// requests and connections. p.mu is held.
func (p *PC) startFakeOllama(ln net.Listener) {
	ol := p.newOllama()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs[r.Method+" "+r.URL.Path]++
		p.mu.Unlock()
		ol.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			p.mu.Lock()
			defer p.mu.Unlock()
			switch s {
			case http.StateNew:
				p.conns[c] = true
			case http.StateClosed, http.StateHijacked:
				delete(p.conns, c)
			}
		}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		hs.Serve(ln)
	}()
	p.httpSrv, p.ollama = hs, ol
}

// connsTo lists established connections to the Ollama port (for ss).
func (p *PC) connsTo(port int) [][2]string {
	if port != p.olPort {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][2]string
	for c := range p.conns {
		out = append(out, [2]string{c.LocalAddr().String(), c.RemoteAddr().String()})
	}
	return out
}

// poweroffRequested runs inside an SSH command: the PC goes down a moment
// later, after the command's reply has left.
func (p *PC) poweroffRequested() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.poweroff++
	p.logf("poweroff requested")
	p.after(100*time.Millisecond, p.goDown)
}

func (p *PC) goDown() {
	p.mu.Lock()
	if p.state != Up {
		p.mu.Unlock()
		return
	}
	srv, hs, fwd, real := p.sshSrv, p.httpSrv, p.fwd, p.real
	p.sshSrv, p.httpSrv, p.ollama, p.fwd, p.real = nil, nil, nil, nil, nil
	p.setState(Stopping)
	p.mu.Unlock()
	stopServers(srv, hs, fwd, real)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.after(p.cfg.StopDelay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.state == Stopping && !p.closed {
			p.reBlackHole()
			p.setState(Off)
		}
	})
}

func stopServers(srv *sshtest.Server, hs *http.Server, fwd *forward, real *realollama.Server) {
	if srv != nil {
		srv.Close()
	}
	if hs != nil {
		hs.Close()
	}
	if fwd != nil {
		fwd.Close()
	}
	if real != nil {
		real.Stop()
	}
}

// reBlackHole makes the ports drop packets again; p.mu held.
func (p *PC) reBlackHole() {
	if bh, err := newBlackHole(p.sshPort); err == nil {
		p.sshBH = bh
	} else {
		p.logf("SSH port %d: %v (it will refuse instead of time out)", p.sshPort, err)
	}
	if bh, err := newBlackHole(p.olPort); err == nil {
		p.olBH = bh
	} else {
		p.logf("Ollama port %d: %v (it will refuse instead of time out)", p.olPort, err)
	}
}

// Close stops the PC and frees its ports.
func (p *PC) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, t := range p.timers {
		t.Stop()
	}
	srv, hs, fwd, real := p.sshSrv, p.httpSrv, p.fwd, p.real
	p.sshSrv, p.httpSrv, p.ollama, p.fwd, p.real = nil, nil, nil, nil, nil
	p.sshBH.Close()
	p.olBH.Close()
	p.mu.Unlock()
	stopServers(srv, hs, fwd, real)
	p.wg.Wait()
}

// blackHole holds a TCP port so that connections to it time out, as to a
// powered-off machine, without privileges: a listening socket with a
// backlog of 0 whose one accept-queue slot is taken by a connection of its
// own and that never accepts; Linux then drops further SYNs.
type blackHole struct {
	port   int
	fd     int
	filler net.Conn
	once   sync.Once
}

func newBlackHole(port int) (*blackHole, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("gpuctl-sim: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("gpuctl-sim: bind 127.0.0.1:%d: %w", port, err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	bh := &blackHole{port: sa.(*unix.SockaddrInet4).Port, fd: fd}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(bh.port)))
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("gpuctl-sim: filling the accept queue of port %d: %w", bh.port, err)
	}
	bh.filler = c
	return bh, nil
}

// Close frees the port (further connections are refused).
func (b *blackHole) Close() {
	if b == nil {
		return
	}
	b.once.Do(func() {
		unix.Close(b.fd)
		b.filler.Close()
	})
}
