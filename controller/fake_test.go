package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// fakePC simulates a gaming PC for the controller: its network state (off,
// refusing, SSH up, other OS), its remote commands, its Ollama API and its
// boot after a magic packet.
type fakePC struct {
	t *testing.T

	mu       sync.Mutex
	power    bool // answers on the network
	sshUp    bool
	otherOS  bool
	wakes    int // Waker.Wake calls
	wokeAt   time.Time
	bootIn   time.Duration
	sshIn    time.Duration
	never    bool // never boots
	unreach  bool // EHOSTUNREACH instead of silence when off
	replies  map[string]func(n int) sshexec.Result
	calls    map[string]int
	commands []string
	connErr  error
	tags     []string
	conns    int
}

const (
	pcAddr   = "192.0.2.10"
	sshAddr  = "192.0.2.10:22"
	rdpAddr  = "192.0.2.10:3389"
	ollURL   = "http://192.0.2.10:11434"
	gpuLine  = "0, NVIDIA GeForce RTX 4080 SUPER, GPU-00000000-0000-0000-0000-000000000000, 595.71.05, 16376, 596, 0, 43, P8\n"
	testBoot = 120 * time.Second
)

func newFakePC(t *testing.T) *fakePC {
	pc := &fakePC{t: t, bootIn: 40 * time.Second, sshIn: 20 * time.Second, calls: map[string]int{},
		tags: []string{"deepseek-r1:latest", "llama3.2:latest"}}
	pc.replies = map[string]func(int) sshexec.Result{
		CheckGPU: func(int) sshexec.Result { return sshexec.Result{Stdout: []byte(gpuLine)} },
		CheckContainer: func(int) sshexec.Result {
			return sshexec.Result{Stdout: ollamaInspect(t, "/mnt/models/ollama")}
		},
		CheckContainerGPU: func(int) sshexec.Result { return sshexec.Result{Stdout: fx("nvidia-smi_L_rtx4080super.txt")} },
		CheckMount: func(int) sshexec.Result {
			return sshexec.Result{Stdout: fx("findmnt_json_ntfs-3g_fuseblk_LOCAL.json")}
		},
		CheckFreeSpace:  func(int) sshexec.Result { return sshexec.Result{Stdout: fx("df_B1_output_ntfs-3g_LOCAL.txt")} },
		CheckWriteProbe: func(int) sshexec.Result { return sshexec.Result{} },
	}
	return pc
}

// ollamaInspect is the real `docker inspect` capture (an nginx container)
// given the Ollama container's layout as the stick runs it.
func ollamaInspect(t testing.TB, modelsDir string) []byte {
	t.Helper()
	b, err := ollamatest.ContainerInspect(fx("docker_inspect_running_nginx_20.10.5.json"), modelsDir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (pc *fakePC) host() *inventory.Host {
	u, _ := inventory.ParseURL(ollURL)
	mac, _ := inventory.ParseMAC("00:11:22:33:44:55")
	return &inventory.Host{Name: "gaming-pc", OnDemand: true, MAC: mac, Address: pcAddr, SSHPort: 22,
		OllamaURL: u, Container: "ollama", ModelsDir: "/mnt/models/ollama", Models: toModels("llama3.2"),
		BootTimeout: inventory.Duration(testBoot), MinFree: 100 << 20}
}

func (pc *fakePC) set(f func(pc *fakePC)) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	f(pc)
}

func (pc *fakePC) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	pc.mu.Lock()
	power, ssh, other, unreach := pc.power, pc.sshUp, pc.otherOS, pc.unreach
	pc.mu.Unlock()
	opErr := func(e error) error {
		return &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", e)}
	}
	var answers bool
	switch addr {
	case sshAddr:
		answers = power && ssh && !other
	case rdpAddr:
		answers = power && other
	case "192.0.2.10:11434":
		answers = power && ssh
	}
	switch {
	case answers:
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b); b.Close() }()
		return a, nil
	case power:
		return nil, opErr(syscall.ECONNREFUSED)
	case unreach:
		return nil, opErr(syscall.EHOSTUNREACH)
	}
	<-ctx.Done() // an off host never answers
	return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
}

// Wake implements Waker: the first packet starts the boot.
func (pc *fakePC) Wake(ctx context.Context, h *inventory.Host) error {
	pc.mu.Lock()
	pc.wakes++
	first := pc.wakes == 1 && !pc.never
	bootIn, sshIn := pc.bootIn, pc.sshIn
	pc.mu.Unlock()
	if first {
		pc.set(func(pc *fakePC) { pc.wokeAt = time.Now() })
		time.AfterFunc(bootIn, func() { pc.set(func(pc *fakePC) { pc.power = true }) })
		time.AfterFunc(bootIn+sshIn, func() { pc.set(func(pc *fakePC) { pc.sshUp = true }) })
	}
	<-ctx.Done()
	return nil
}

type fakeRunner struct{ pc *fakePC }

func checkOf(args []string) string {
	if a := hostcmd.SudoArgv(args); a != nil && a[0] == hostcmd.DockerCommand {
		args = append([]string{"docker"}, a[1:]...)
	}
	switch {
	case args[0] == "nvidia-smi":
		return CheckGPU
	case len(args) > 1 && args[0] == "docker" && args[1] == "inspect":
		return CheckContainer
	case len(args) > 1 && args[0] == "docker" && args[1] == "exec":
		return CheckContainerGPU
	case args[0] == "findmnt":
		return CheckMount
	case args[0] == "df":
		return CheckFreeSpace
	case args[0] == "sh":
		return CheckWriteProbe
	}
	return ""
}

func (r fakeRunner) Run(ctx context.Context, cmd sshexec.Cmd) (sshexec.Result, error) {
	pc := r.pc
	pc.mu.Lock()
	name := checkOf(cmd.Args)
	pc.calls[name]++
	n := pc.calls[name]
	pc.commands = append(pc.commands, sshexec.Quote(cmd.Args...))
	f := pc.replies[name]
	pc.mu.Unlock()
	if f == nil {
		return sshexec.Result{ExitStatus: 127, Stderr: []byte("sh: " + cmd.Args[0] + ": command not found\n")}, nil
	}
	res := f(n)
	if res.Signal == "STALL" {
		<-ctx.Done()
		return sshexec.Result{}, ctx.Err()
	}
	return res, nil
}

func (pc *fakePC) connect(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
	if conn != nil {
		conn.Close()
	}
	pc.mu.Lock()
	err := pc.connErr
	pc.conns++
	pc.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	return fakeRunner{pc}, io.NopCloser(nil), nil
}

// ollama serves the Ollama API in memory (no sockets, so synctest works).
func (pc *fakePC) ollama() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(fx("ollama_api_version_docs-example.json"))
	})
	mux.HandleFunc("/api/tags", func(w http.ResponseWriter, r *http.Request) {
		pc.mu.Lock()
		tags := pc.tags
		pc.mu.Unlock()
		var parts []string
		for _, t := range tags {
			parts = append(parts, fmt.Sprintf(`{"name":%q,"model":%q,"size":1}`, t, t))
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"models":[%s]}`, strings.Join(parts, ","))
	})
	return mux
}

type handlerTransport struct {
	pc *fakePC
	h  http.Handler
}

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.pc.mu.Lock()
	up := t.pc.power && t.pc.sshUp
	t.pc.mu.Unlock()
	if !up {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func (pc *fakePC) controller(stateDir string) *Controller {
	return &Controller{
		StateDir: stateDir,
		Dial:     pc.dial,
		SSH:      pc.connect,
		Waker:    pc,
		HTTP:     &http.Client{Transport: handlerTransport{pc, pc.ollama()}},
	}
}

func (pc *fakePC) wakeCount() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.wakes
}

func failingNames(st HostStatus) string { return strings.Join(st.Failing(), ",") }
