package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
	"github.com/ollamalive/gpuctl/wake"
)

const simGPULine = "0, NVIDIA GeForce RTX 4080 SUPER, GPU-00000000-0000-0000-0000-000000000000, 595.71.05, 16376, 596, 0, 43, P8\n"

// simPC is an in-process gaming PC: it listens for magic packets on a
// loopback UDP port and, a moment after one for its MAC arrives, starts an
// sshtest server on its reserved address answering the check commands with
// fixture outputs. Its Ollama API is an httptest server.
type simPC struct {
	t        *testing.T
	dir      string
	config   string
	mac      inventory.MAC
	sshAddr  string
	hostKey  ssh.Signer
	client   ed25519.PublicKey
	ollama   *httptest.Server
	gpuOut   []byte
	gpuExit  int
	neverUp  bool
	bootWait time.Duration
	// bootKey, when set, is the host key the PC presents once booted
	// instead of the one pinned in the inventory (a reinstalled host, or
	// someone in the middle); authKey replaces the client key its sshd
	// accepts (a refused login).
	bootKey ssh.Signer
	authKey ssh.PublicKey

	mu       sync.Mutex
	packets  int
	powerOns int // POSTs to the smart-plug endpoint (plugPath)
	srv      *sshtest.Server
}

// plugPath is the simulated PC's smart-plug endpoint: a POST boots it, as a
// wake command (curl to Home Assistant, say) would.
const plugPath = "/test-plug/on"

func newSimPC(t *testing.T) *simPC {
	t.Helper()
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "id_ed25519"), pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	hk, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshAddr := ln.Addr().String()
	ln.Close() // reserved: nothing listens until the PC boots
	mac, _ := inventory.ParseMAC("02:00:5e:10:00:01")
	pc := &simPC{t: t, dir: dir, mac: mac, sshAddr: sshAddr, hostKey: hk, client: pub,
		gpuOut: []byte(simGPULine), bootWait: 300 * time.Millisecond}
	pc.ollama = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/version":
			w.Write(fixtures.Must("ollama_api_version_docs-example.json"))
		case "/api/tags":
			w.Write(fixtures.Must("ollama_api_tags_docs-example.json"))
		case plugPath:
			pc.mu.Lock()
			pc.powerOns++
			first := pc.powerOns == 1 && pc.packets == 0 && !pc.neverUp
			pc.mu.Unlock()
			if first {
				time.AfterFunc(pc.bootWait, pc.boot)
			}
			w.Write([]byte(`{"state":"on"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(pc.ollama.Close)

	l, err := wake.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Serve(ctx, func(s wake.Seen) {
			if !s.Matches(mac, nil) {
				return
			}
			pc.mu.Lock()
			pc.packets++
			first := pc.packets == 1 && !pc.neverUp
			pc.mu.Unlock()
			if first {
				time.AfterFunc(pc.bootWait, pc.boot)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		l.Close()
		<-done
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if pc.srv != nil {
			pc.srv.Close()
		}
	})

	_, sshPort, _ := net.SplitHostPort(sshAddr)
	hostKeyLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk.PublicKey())))
	pc.config = filepath.Join(dir, "gpuctl.toml")
	inv := fmt.Sprintf(`state_dir = %q

[ssh]
user = "gpuctl"
identity_files = [%q]
known_hosts = [%q]
config = "none"

[[host]]
name = "gaming-pc"
on_demand = true
mac = %q
address = "127.0.0.1"
ssh_port = %s
host_key = %q
ollama_url = %q
wol_to = [%q]
boot_timeout = "30s"
models = ["llama3.2"]
min_free = "100MiB"
`, filepath.Join(dir, "state"), filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts"),
		mac.String(), sshPort, hostKeyLine, pc.ollama.URL, l.Addr().String())
	if err := os.WriteFile(pc.config, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	return pc
}

func (pc *simPC) boot() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	cpub, err := ssh.NewPublicKey(pc.client)
	if err != nil {
		pc.t.Error(err)
		return
	}
	if pc.authKey != nil {
		cpub = pc.authKey
	}
	hk := pc.hostKey
	if pc.bootKey != nil {
		hk = pc.bootKey
	}
	srv, err := sshtest.Start(sshtest.Options{Addr: pc.sshAddr, HostKeys: []ssh.Signer{hk}, AuthorizedKeys: []ssh.PublicKey{cpub}})
	if err != nil {
		pc.t.Errorf("boot: %v", err)
		return
	}
	srv.HandleArgv("nvidia-smi", sshtest.Reply{Stdout: string(pc.gpuOut), Exit: pc.gpuExit})
	// The controller's templates (sudo -n docker ...), whatever the container.
	tmpl := func(t []string) func(string, []string) bool {
		return func(_ string, argv []string) bool {
			return len(argv) == len(t) && slices.Equal(argv[:4], t[:4])
		}
	}
	srv.HandleMatch(tmpl(hostcmd.InspectArgs("c")),
		sshtest.Reply{Stdout: string(must(ollamatest.ContainerInspect(fixtures.Must("docker_inspect_running_nginx_20.10.5.json"), "/mnt/models/ollama")))})
	srv.HandleMatch(tmpl(hostcmd.ContainerGPUArgs("c")),
		sshtest.Reply{Stdout: string(fixtures.Must("nvidia-smi_L_rtx4080super.txt"))})
	srv.HandleArgv("findmnt", sshtest.Reply{Stdout: string(fixtures.Must("findmnt_json_ntfs-3g_fuseblk_LOCAL.json"))})
	srv.HandleArgv("df", sshtest.Reply{Stdout: string(fixtures.Must("df_B1_output_ntfs-3g_LOCAL.txt"))})
	srv.HandleArgv("sh", sshtest.Reply{})
	pc.srv = srv
}

func (pc *simPC) packetCount() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.packets
}

func (pc *simPC) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "HOME" {
			return pc.dir
		}
		return ""
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = Run(ctx, env, append([]string{"gpuctl", "--config", pc.config}, args...))
	return code, out.String(), errb.String()
}

func TestWakeCLIEndToEnd(t *testing.T) {
	pc := newSimPC(t)

	code, out, errs := pc.run(t, "status", "--timeout", "300ms")
	if code != ExitOff && code != ExitUnreachable {
		t.Fatalf("status of a sleeping PC: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "gaming-pc") || strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("status table: %q", out)
	}

	start := time.Now()
	code, out, errs = pc.run(t, "wake", "gaming-pc")
	took := time.Since(start)
	if code != ExitOK {
		t.Fatalf("wake: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if pc.packetCount() == 0 {
		t.Error("no magic packet arrived")
	}
	for _, want := range []string{"probe:", "boot:", "checks:", "done:"} {
		if !strings.Contains(errs, want) {
			t.Errorf("progress lacks %q:\n%s", want, errs)
		}
	}
	if strings.ContainsAny(errs+out, "\x1b\r") {
		t.Errorf("control characters in non-TTY output: %q", errs+out)
	}
	if !strings.Contains(out, "ready") {
		t.Errorf("wake output: %s", out)
	}
	t.Logf("wake took %v (boot delay %v)\nstderr:\n%s\nstdout:\n%s", took, pc.bootWait, errs, out)

	// Ready now: wake returns at once and sends nothing.
	before := pc.packetCount()
	code, _, errs = pc.run(t, "wake", "gaming-pc")
	if code != ExitOK || pc.packetCount() != before || strings.Contains(errs, "boot:") {
		t.Errorf("second wake: exit %d, packets %d→%d\n%s", code, before, pc.packetCount(), errs)
	}

	conns := pc.srv.Connections()
	code, out, errs = pc.run(t, "status", "--json")
	if got := pc.srv.Connections() - conns; got != 1 {
		t.Errorf("status opened %d SSH connections, want 1 (the probe's TCP connection reused)", got)
	}
	if code != ExitOK {
		t.Fatalf("status: exit %d\n%s%s", code, out, errs)
	}
	var sts []controller.HostStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 || sts[0].State != controller.StateReady || sts[0].BootETA == nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	cmds := pc.srv.Commands()
	for _, c := range cmds {
		if c.ArgvErr != nil {
			t.Errorf("command %q does not split as argv: %v", c.Raw, c.ArgvErr)
		}
	}
}

func TestWakeCLIDegradedDriverNotLoaded(t *testing.T) {
	pc := newSimPC(t)
	noDriver := fixtures.Read(t, "nvidia-smi_error_driver-not-loaded.txt")
	pc.mu.Lock()
	pc.gpuOut, pc.gpuExit = noDriver, 9
	pc.mu.Unlock()
	code, out, errs := pc.run(t, "wake", "gaming-pc")
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errs)
	if code != ExitDegraded || !strings.Contains(errs, "failing checks: gpu") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, "driver not loaded") {
		t.Errorf("output does not say why:\n%s", out)
	}
}

func TestWakeCLINeverBoots(t *testing.T) {
	pc := newSimPC(t)
	pc.mu.Lock()
	pc.neverUp = true
	pc.mu.Unlock()
	start := time.Now()
	code, out, errs := pc.run(t, "wake", "--timeout", "1s", "--json", "gaming-pc")
	if code != ExitUnreachable {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v with --timeout 1s", el)
	}
	var res controller.WakeResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status.State == controller.StateReady || !res.Record.Woke {
		t.Errorf("--json: %v\n%s", err, out)
	}
	if pc.packetCount() < 2 {
		t.Errorf("%d packets: the burst should send several", pc.packetCount())
	}
}

func TestWakeStatusUsage(t *testing.T) {
	pc := newSimPC(t)
	for _, args := range [][]string{{"wake"}, {"wake", "a", "b"}, {"wake", "nope"}, {"status", "nope"}, {"status", "--timeout", "0s"}, {"wake", "gaming-pc", "--bogus"}} {
		if code, _, errs := pc.run(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}
