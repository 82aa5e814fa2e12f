//go:build linux

package main

// Tier 3: end-to-end tests of the built gpuctl binary against a simulated
// gaming PC in a network namespace, woken by a real magic packet and
// answering a real OpenSSH sshd. See e2eBox.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/cmd/gpuctl-sim/sim"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
	"github.com/ollamalive/gpuctl/sshexec/sshdtest"
	"github.com/ollamalive/gpuctl/wake"
	"github.com/ollamalive/gpuctl/wake/waketest"
)

const (
	e2eServerIP = "10.77.0.1"
	e2ePCIP     = "10.77.0.20"
	e2eModel    = "llama3.3:70b-instruct-q3_K_M"
	// e2eBootDelay is the simulated PC's time from magic packet to sshd.
	e2eBootDelay = 300 * time.Millisecond
)

// e2eBins are the built gpuctl and gpuctl-sim binaries.
type e2eBins struct{ gpuctl, sim string }

// buildE2E builds the real binaries into the test's temporary directory
// (with -race when the tests run with it, which also reuses the test build's
// cache).
func buildE2E(t *testing.T) e2eBins {
	t.Helper()
	dir := t.TempDir()
	bins := e2eBins{gpuctl: filepath.Join(dir, "gpuctl"), sim: filepath.Join(dir, "gpuctl-sim")}
	for pkg, out := range map[string]string{".": bins.gpuctl, "../gpuctl-sim": bins.sim} {
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return bins
}

// e2eBox is a simulated gaming PC in its own network namespace ("pc",
// 10.77.0.20/24 on pc0 once booted), joined by a veth pair to the gpuctl
// server's namespace ("server", 10.77.0.1/24 on srv0). Powered off, it has
// no address and only looks for magic packets for pc0's MAC in every frame
// (gpuctl sends them to the directed broadcast 10.77.0.255:9 it computes
// from srv0). After one arrives
// and e2eBootDelay passes, it starts a real OpenSSH sshd on 10.77.0.20:22,
// whose sessions find gpuctl-sim's stand-in nvidia-smi, docker, findmnt,
// df, sudo, who and ethtool first on PATH (sshd_config SetEnv), and its
// Ollama on 10.77.0.20:11434: the real Ollama server v0.17.4 (tier 4), run in
// the PC's namespace with OLLAMA_MODELS=<models_dir>/models exactly as the
// container sees the drive (models_dir is its /root/.ollama), pulling from a
// test registry in that namespace that answers as registry.ollama.ai; or,
// with e2eOptions.fake, the in-process fake (ollamatest). sudo -n
// …/poweroff takes it down again.
type e2eBox struct {
	t         *testing.T
	bins      e2eBins
	pair      *waketest.Pair
	dir       string
	modelsDir string
	inv       string
	stateDir  string
	mac       string
	faults    sim.Faults
	hostKey   crypto.Signer
	hostPub   ssh.PublicKey
	clientPub ssh.PublicKey
	user      string
	packets   chan wake.Seen
	powerReq  chan struct{}

	sshd     *sshdtest.Server
	ollama   *ollamatest.Server
	ollamaHS *http.Server
	server   *ollamatest.Server

	// The real Ollama (unless fake): its binary, the PC's registry, the
	// server while the PC is up.
	realBin  string
	registry *realollama.Registry
	real     *realollama.Server
}

type e2eOptions struct {
	faults sim.Faults
	// fake runs the in-process fake as the PC's Ollama instead of the
	// real server.
	fake bool
}

func newE2EBox(t *testing.T, bins e2eBins, o e2eOptions) *e2eBox {
	t.Helper()
	waketest.Require(t, "ip", sshdtest.Path, "unshare", "mount")
	b := &e2eBox{t: t, bins: bins, dir: t.TempDir(), faults: o.faults,
		packets: make(chan wake.Seen, 64), powerReq: make(chan struct{}, 4)}
	if !o.fake {
		b.realBin = realollama.Require(t)
	}
	if err := os.Chmod(b.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	b.user = u.Username
	// Powered off, the PC has no address: ARP for 10.77.0.20 goes
	// unanswered and connections time out (off), while its NIC still sees
	// every frame.
	b.pair = waketest.NewPair(t, e2eServerIP+"/24", "")
	b.mac = b.pair.Veth.BMAC.String()
	b.modelsDir = filepath.Join(b.dir, "models")
	b.stateDir = filepath.Join(b.dir, "state")
	for _, d := range []string{b.modelsDir, b.stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.InstallStandIns(filepath.Join(b.dir, "bin"), bins.sim); err != nil {
		t.Fatal(err)
	}

	// Keys: the host key gpuctl pins, and gpuctl's identity.
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	b.hostKey = hk
	b.hostPub, _ = ssh.NewPublicKey(hk.Public())
	_, ck, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(ck, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(b.stateDir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	b.clientPub, _ = ssh.NewPublicKey(ck.Public())

	// The PC's NIC: every frame on pc0, looking for magic packets for its
	// MAC.
	var l *wake.Listener
	if err := b.pair.PC.Do(func() error {
		var err error
		l, err = wake.ListenRaw("pc0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Serve(ctx, func(s wake.Seen) {
			if s.Packet.Target.String() == b.mac && !s.Outgoing {
				select {
				case b.packets <- s:
				default:
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	// sudo -n poweroff reaches the test here.
	sock := filepath.Join(b.dir, "power.sock")
	pl, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	pdone := make(chan struct{})
	go func() {
		defer close(pdone)
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.TrimSpace(line) == "poweroff" {
				b.powerReq <- struct{}{}
			}
		}
	}()
	t.Cleanup(func() { pl.Close(); <-pdone })
	if err := sim.WriteBox(filepath.Join(b.dir, "box.json"), &sim.Box{Name: "gaming-pc", ModelsDir: b.modelsDir,
		Container: "ollama", Booted: time.Now(), Faults: b.faults, Interface: "pc0", Address: e2ePCIP, PowerSocket: sock}); err != nil {
		t.Fatal(err)
	}

	if b.realBin != "" {
		// The registry the PC's Ollama pulls from, inside the PC's
		// namespace (its loopback), with the declared model.
		rdir := filepath.Join(b.dir, "registry")
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			t.Fatal(err)
		}
		reg, err := realollama.NewRegistryOn(rdir, func() (ln net.Listener, err error) {
			err = b.pair.PC.Do(func() error {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
				return err
			})
			return ln, err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(reg.Close)
		if _, err := reg.AddModel(e2eModel, realollama.Tiny); err != nil {
			t.Fatal(err)
		}
		b.registry = reg
	}

	// The server's own Ollama, the proxy's default host, on the server
	// namespace's loopback.
	b.server = ollamatest.New(ollamatest.Config{Dir: filepath.Join(b.dir, "server-models")})
	b.serveOllama(b.pair.Server, "127.0.0.1:11434", b.server)

	b.inv = filepath.Join(b.dir, "gpuctl.toml")
	inv := fmt.Sprintf(`state_dir = %q

[ssh]
user = %q
identity_files = [%q]
config = "none"

[serve]
listen = "127.0.0.1:11435"
default_host = "server"

[[host]]
name = "server"
address = "127.0.0.1"
ollama_url = "http://127.0.0.1:11434"

[[host]]
name = "gaming-pc"
on_demand = true
mac = %q
address = %q
host_key = %q
models_dir = %q
models = [%q]
vram = "24GiB"
boot_timeout = "60s"
idle_after = "1s"
min_uptime = "1s"

[[route]]
models = ["llama3.3:70b*"]
host = "gaming-pc"
`, b.stateDir, b.user, keyFile, b.mac, e2ePCIP, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(b.hostPub))), b.modelsDir, e2eModel)
	if err := os.WriteFile(b.inv, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// serveOllama serves an Ollama fake at addr inside ns until the test ends.
func (b *e2eBox) serveOllama(ns *waketest.NS, addr string, ol *ollamatest.Server) *http.Server {
	b.t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		b.t.Fatal(err)
	}
	hs := &http.Server{Handler: ol, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	b.t.Cleanup(func() { hs.Close(); <-done })
	return hs
}

// awaitPacketAndBoot waits for a magic packet for the PC's MAC, then boots
// it: sshd (with the given host key, or a new one when rotated) and
// Ollama. With never-boots it only waits for the packet.
func (b *e2eBox) awaitPacketAndBoot(readOnly bool) {
	t := b.t
	t.Helper()
	select {
	case s := <-b.packets:
		t.Logf("magic packet: %s", s)
	case <-time.After(30 * time.Second):
		t.Fatal("no magic packet for the PC's MAC arrived within 30s")
	}
	if b.faults.NeverBoots {
		return
	}
	<-time.After(e2eBootDelay) // the simulated hardware's boot time
	b.pair.PC.AddAddr("pc0", e2ePCIP+"/24")
	hostKey := b.hostKey
	if b.faults.HostKeyRotated {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		hostKey = k
	}
	wrap := []string{"ip", "netns", "exec", b.pair.PC.Name}
	if readOnly {
		// The model drive mounted read-only, in sshd's own mount namespace.
		wrap = append(wrap, "unshare", "-m", "--propagation", "private", "sh", "-c",
			`d=$1; shift; mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" && exec "$@"`, "sh", b.modelsDir)
	}
	path := filepath.Join(b.dir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	b.sshd = sshdtest.Start(t, sshdtest.Options{
		HostKeys:       []crypto.Signer{hostKey},
		AuthorizedKeys: []ssh.PublicKey{b.clientPub},
		ListenAddr:     e2ePCIP + ":22",
		Wrap:           wrap,
		ExtraConfig:    fmt.Sprintf("SetEnv PATH=%s %s=%s\n", path, sim.BoxEnv, filepath.Join(b.dir, "box.json")),
	})
	if b.realBin != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		b.real, err = realollama.StartServer(ctx, realollama.Options{Binary: b.realBin,
			Home: filepath.Join(b.dir, "home"), ModelsDir: filepath.Join(b.modelsDir, "models"),
			Listen: e2ePCIP + ":11434", Registry: b.registry,
			Wrap: func(argv []string) []string { return append([]string{"ip", "netns", "exec", b.pair.PC.Name}, argv...) }})
		if err != nil {
			t.Fatal(err)
		}
		srv := b.real
		t.Cleanup(func() {
			srv.Stop()
			if t.Failed() {
				t.Logf("the PC's ollama log:\n%s", srv.Log())
			}
		})
		return
	}
	b.ollama = ollamatest.New(ollamatest.Config{Dir: filepath.Join(b.modelsDir, "models"), Catalogue: []ollamatest.Model{{Name: e2eModel,
		Layers: []ollamatest.Layer{{Size: 256 << 10}}}}})
	b.ollamaHS = b.serveOllama(b.pair.PC, e2ePCIP+":11434", b.ollama)
}

// powerOff takes the PC down as poweroff would: sshd and Ollama stop, and
// its address goes (connections time out: off, not booting).
func (b *e2eBox) powerOff() {
	b.sshd.Stop()
	if b.real != nil {
		b.real.Stop()
	} else {
		b.ollamaHS.Close()
	}
	b.pair.PC.IP("addr", "flush", "dev", "pc0")
}

// gpuctl runs the built gpuctl in the server namespace.
type e2eRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	done           chan error
}

func (b *e2eBox) start(ctx context.Context, args ...string) *e2eRun {
	b.t.Helper()
	r := &e2eRun{done: make(chan error, 1)}
	r.cmd = b.pair.Server.Command(ctx, b.bins.gpuctl, append([]string{"--config", b.inv}, args...)...)
	r.cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=", "GPUCTL_CONFIG=", "GPUCTL_STATE_DIR=")
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	return r
}

// wait returns the exit code.
func (r *e2eRun) wait(t *testing.T) int {
	t.Helper()
	err := <-r.done
	t.Logf("$ %s (%.1fs)\n%s%s", strings.Join(r.cmd.Args[7:], " "), time.Since(r.start).Seconds(), r.stdout.String(), r.stderr.String())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("running gpuctl: %v", err)
	}
	return 0
}

func (b *e2eBox) run(ctx context.Context, args ...string) (int, *e2eRun) {
	b.t.Helper()
	r := b.start(ctx, args...)
	return r.wait(b.t), r
}

func countPrefix(l []string, prefix string) int {
	n := 0
	for _, s := range l {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func TestE2E(t *testing.T) {
	waketest.Require(t, "ip", sshdtest.Path, "unshare", "mount")
	bins := buildE2E(t)

	// The whole chain, as `make demo` runs it: wake (magic packet, real
	// sshd, checks, model pull) → a chat through gpuctl serve routed to the
	// PC → shutdown --if-idle until it powers off → status off.
	t.Run("chain", func(t *testing.T) {
		b := newE2EBox(t, bins, e2eOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if code, r := b.run(ctx, "status", "gaming-pc"); code != 5 || !strings.Contains(r.stdout.String(), "off") {
			t.Fatalf("status before the wake: exit %d, want 5 (off)", code)
		}
		r := b.start(ctx, "wake", "gaming-pc")
		b.awaitPacketAndBoot(false)
		if code := r.wait(t); code != 0 || !strings.Contains(r.stdout.String(), "ready") {
			t.Fatalf("wake: exit %d, want 0 and ready", code)
		}
		// A real pull, from the registry, onto the drive where the
		// container keeps its models.
		if n := countPrefix(b.registry.Requests(), "GET /v2/library/llama3.3/manifests/"); n != 1 {
			t.Errorf("wake pulled the manifest %d times, want once", n)
		}
		if _, err := os.Stat(ollamatest.ManifestPath(filepath.Join(b.modelsDir, "models"), e2eModel)); err != nil {
			t.Errorf("the declared model is not on the drive after the wake: %v", err)
		}
		if code, _ := b.run(ctx, "status", "gaming-pc"); code != 0 {
			t.Fatalf("status after the wake: exit %d, want 0 (ready)", code)
		}

		// gpuctl serve in the server namespace; a chat for the PC's model.
		serve := b.start(ctx, "serve")
		defer func() {
			serve.cmd.Process.Signal(os.Interrupt)
			serve.wait(t)
		}()
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := b.pair.Server.Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
		defer hc.CloseIdleConnections()
		var resp *http.Response
		var err error
		for i := 0; ; i++ { // until serve listens
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:11435/api/chat",
				strings.NewReader(`{"model":"`+e2eModel+`","messages":[{"role":"user","content":"hi"}]}`))
			if resp, err = hc.Do(req); err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-serve.done:
				t.Fatalf("gpuctl serve exited: %s", serve.stderr.String())
			case <-time.After(50 * time.Millisecond): // polling for serve's port
			}
		}
		if err != nil {
			t.Fatalf("chat through gpuctl serve: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"done":true`)) {
			t.Fatalf("chat: HTTP %d %s", resp.StatusCode, body)
		}
		// Real tokens, generated by the PC's Ollama.
		var reply strings.Builder
		chunks := 0
		for _, line := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
			var m struct {
				Message struct{ Content string } `json:"message"`
			}
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("chat line %q: %v", line, err)
			}
			if m.Message.Content != "" {
				chunks++
				reply.WriteString(m.Message.Content)
			}
		}
		t.Logf("chat reply: %d chunks, %q", chunks, reply.String())
		if chunks < 2 || b.server.Requests("POST /api/chat") != 0 {
			t.Fatalf("the chat was not answered with generated tokens by the gaming PC (%d chunks; server %d chats)",
				chunks, b.server.Requests("POST /api/chat"))
		}
		ps, err := api.NewClient(b.real.URL, hc).ListRunning(ctx)
		if err != nil || len(ps.Models) != 1 || ps.Models[0].Name != e2eModel {
			t.Fatalf("the PC's Ollama has not loaded %s after the chat: %+v, %v", e2eModel, ps, err)
		}

		// Cron: the first run starts the idle clock, a later one powers off.
		powered := false
		for i := 0; i < 4 && !powered; i++ {
			r := b.start(ctx, "shutdown", "gaming-pc", "--if-idle", "--idle-after", "1ns")
			select {
			case <-b.powerReq:
				powered = true
				b.powerOff()
			case err := <-r.done:
				r.done <- err
			}
			if code := r.wait(t); code != 0 {
				t.Fatalf("shutdown --if-idle run %d: exit %d, want 0", i+1, code)
			}
			if powered && !strings.Contains(r.stderr.String(), "powered-off") {
				t.Errorf("shutdown --if-idle powered off but did not say so")
			}
		}
		if !powered {
			t.Fatal("shutdown --if-idle never powered the idle PC off")
		}
		select {
		case <-b.powerReq:
			t.Error("a second poweroff command reached the PC")
		default:
		}
		if code, _ := b.run(ctx, "status", "gaming-pc"); code != 5 {
			t.Fatalf("status after the shutdown: exit %d, want 5 (off)", code)
		}
	})

	variant := func(name string, f sim.Faults, readOnly bool, args []string, wantCode int, wantErr string) {
		t.Run(name, func(t *testing.T) {
			b := newE2EBox(t, bins, e2eOptions{faults: f})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			r := b.start(ctx, append([]string{"wake", "gaming-pc", "--no-pull"}, args...)...)
			b.awaitPacketAndBoot(readOnly)
			code := r.wait(t)
			if code != wantCode {
				t.Errorf("wake: exit %d, want %d", code, wantCode)
			}
			if !strings.Contains(r.stderr.String(), wantErr) {
				t.Errorf("wake's error does not name %q", wantErr)
			}
		})
	}
	variant("driver-not-loaded", sim.Faults{DriverNotLoaded: true}, false, nil, 4, "checks: gpu")
	variant("read-only-drive", sim.Faults{}, true, nil, 4, "write_probe")
	variant("never-boots", sim.Faults{NeverBoots: true}, false, []string{"--timeout", "3s"}, 3, "not ready after 3s")
	// Stopped at once, exit 1 (docs/exit-codes.md): waiting cannot fix it.
	variant("host-key-rotated", sim.Faults{HostKeyRotated: true}, false, nil, 1, "wake gaming-pc stopped: host key mismatch at ")
}
