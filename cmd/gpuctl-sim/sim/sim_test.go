package sim

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every capture the simulator prints exists in controller/fixtures, the one
// copy the parsers are tested on (no second copy that could drift).
func TestFixturesExist(t *testing.T) {
	have := map[string]bool{}
	for _, n := range fixtures.Names() {
		have[n] = true
	}
	for _, n := range []string{fxGPUAllFields, fxGPUList, fxNoDriver, fxDockerInspect, fxFindmntRW, fxFindmntRO,
		fxDF, fxTouchRO, fxEthtoolMagic, fxRouteLocal, fxRouteOnLink, fxSSEstablished, fxProcUptime} {
		if !have[n] {
			t.Errorf("the simulator prints %s, which controller/fixtures does not hold", n)
		}
	}
}

func testBox(t *testing.T) *Box {
	dir := t.TempDir()
	return &Box{Name: "pc", ModelsDir: "/mnt/models/ollama", LocalDir: dir, Container: "ollama",
		Booted: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), Interface: "enp40s0", Address: "192.0.2.20",
		sshConn: "192.0.2.10 50000 192.0.2.20 22",
		now:     func() time.Time { return time.Date(2025, 6, 1, 10, 10, 0, 0, time.UTC) }}
}

func argvLine(a []string) string {
	var q []string
	for _, s := range a {
		q = append(q, "'"+strings.ReplaceAll(s, "'", `'\''`)+"'")
	}
	return strings.Join(q, " ")
}

// Every command template gpuctl sends gets output its own parsers accept.
func TestTemplatesParse(t *testing.T) {
	b := testBox(t)
	run := func(args []string) Result {
		t.Helper()
		r := b.Exec(argvLine(args))
		if r.Exit != 0 {
			t.Fatalf("%q: exit %d: %s%s", args, r.Exit, r.Stdout, r.Stderr)
		}
		return r
	}
	r := run(hostcmd.GPUQueryArgs())
	gpus, prob := hostcmd.ClassifyNvidiaSMI([]byte(r.Stdout), nil, 0, "550")
	if prob != nil || len(gpus) != 1 || gpus[0].Name != "NVIDIA GeForce RTX 4080 SUPER" || *gpus[0].MemoryTotalMiB != 16376 {
		t.Fatalf("gpu: %+v %v from %q", gpus, prob, r.Stdout)
	}
	if want := "0, NVIDIA GeForce RTX 4080 SUPER, GPU-00000000-0000-0000-0000-000000000000, 595.71.05, 16376, 596, 0, 43, P8\n"; r.Stdout != want {
		t.Errorf("gpu row %q, want %q", r.Stdout, want)
	}
	r = run(hostcmd.InspectArgs("ollama"))
	ct, err := hostcmd.ParseDockerInspect([]byte(r.Stdout))
	if err != nil || !ct.Running || !ct.StartedAt.Equal(b.Booted) || ct.Name != "ollama" {
		t.Fatalf("inspect: %+v %v", ct, err)
	}
	r = run(hostcmd.ContainerGPUArgs("ollama"))
	if l, err := hostcmd.ParseNvidiaSMIList([]byte(r.Stdout)); err != nil || len(l) != 1 {
		t.Fatalf("nvidia-smi -L: %v %v", l, err)
	}
	r = run(hostcmd.FindmntArgs(b.ModelsDir))
	m, err := hostcmd.ParseFindmnt([]byte(r.Stdout))
	if err != nil || m.Target != b.ModelsDir || m.FSType != "fuseblk" || m.ReadOnly {
		t.Fatalf("findmnt: %+v %v", m, err)
	}
	r = run(hostcmd.DFArgs(b.ModelsDir))
	row, err := hostcmd.ParseDF([]byte(r.Stdout))
	if err != nil || row.Target != b.ModelsDir || row.Size <= 0 || row.FSType != "fuseblk" {
		t.Fatalf("df: %+v %v", row, err)
	}
	run(hostcmd.WriteProbeArgs(b.ModelsDir))
	if ents, _ := os.ReadDir(b.LocalDir); len(ents) != 0 {
		t.Errorf("the write probe left %v behind", ents)
	}
	r = run(hostcmd.DFCmd(b.ModelsDir).Args)
	if df, err := hostcmd.ParseDF([]byte(r.Stdout)); err != nil || df.Avail <= 0 {
		t.Fatalf("df avail: %q %v", r.Stdout, err)
	}
	os.WriteFile(filepath.Join(b.LocalDir, "m"), []byte("abc"), 0o644)
	r = run(hostcmd.StatCmd(b.ModelsDir + "/m").Args)
	if r.Stdout != "3 /mnt/models/ollama/m\n" {
		t.Errorf("stat: %q", r.Stdout)
	}
	if r = b.Exec(argvLine(hostcmd.CatCmd("/etc/passwd").Args)); r.Exit == 0 {
		t.Errorf("cat outside the models dir succeeded: %q", r.Stdout)
	}
	if r = b.Exec(argvLine([]string{"sudo", "-n", "systemctl", "poweroff"})); r.Exit == 0 {
		t.Error("sudo allowed a command other than the poweroff rule")
	}
	powered := 0
	b.powerOff = func() { powered++ }
	run([]string{"sudo", "-n", hostcmd.PoweroffCommand})
	if powered != 1 {
		t.Errorf("poweroff ran %d times", powered)
	}
	if r := b.Exec("rm -rf /"); r.Exit != 127 {
		t.Errorf("an unknown command exited %d", r.Exit)
	}
}

func TestDFMatchesCapture(t *testing.T) {
	want := string(Fixture(fxDF))
	got, err := renderDF(strings.Split("source,fstype,size,used,avail,target", ","),
		dfRow{Source: "/dev/loop0", FSType: "fuseblk", Size: 268431360, Used: 1855488, Avail: 266575872, Target: "/tmp/ntfsmnt"})
	if err != nil || got != want {
		t.Fatalf("renderDF:\n%q\nwant\n%q (%v)", got, want, err)
	}
}

func TestFaults(t *testing.T) {
	b := testBox(t)
	b.Faults = Faults{DriverNotLoaded: true, ReadOnlyDrive: true}
	r := b.Exec(argvLine(hostcmd.GPUQueryArgs()))
	if _, p := hostcmd.ClassifyNvidiaSMI([]byte(r.Stdout), []byte(r.Stderr), r.Exit, ""); p == nil || p.Kind != "driver-not-loaded" {
		t.Errorf("driver fault: %+v", p)
	}
	r = b.Exec(argvLine(hostcmd.WriteProbeArgs(b.ModelsDir)))
	if r.Exit == 0 || !strings.Contains(hostcmd.WriteProbeProblem(b.ModelsDir, nil, []byte(r.Stderr), r.Exit), "read-only") {
		t.Errorf("read-only probe: %+v", r)
	}
	m, _ := hostcmd.ParseFindmnt([]byte(b.Exec(argvLine(hostcmd.FindmntArgs(b.ModelsDir))).Stdout))
	if !m.ReadOnly {
		t.Error("findmnt does not show the read-only mount")
	}
}

// The idle script's sections all parse, through the idle package's own
// evaluation (over the in-process SSH server).
func TestIdleScript(t *testing.T) {
	b := testBox(t)
	out := b.idleScript("run now date +%s\nrun conn printenv SSH_CONNECTION\nrun clients timeout 5 ss -Htn state established \"( sport = :$port )\"\nrun wol wol\nrun bogus frobnicate\n",
		"@@m", b.ModelsDir, "11434")
	want := "@@m begin now\n1748772600\n\n@@m end now 0\n@@m begin conn\n192.0.2.10 50000 192.0.2.20 22\n\n@@m end conn 0\n" +
		"@@m begin clients\n\n@@m end clients 0\n@@m begin wol\ninterface enp40s0\n\tSupports Wake-on: pumbg\n\tWake-on: g\n\n@@m end wol 0\n" +
		"@@m begin bogus\nsh: 1: frobnicate: not found\n\n@@m end bogus 127\n"
	if out.Stdout != want {
		t.Errorf("idle script:\n%s\nwant\n%s", out.Stdout, want)
	}
}

// A PC goes off → booting → up on a magic packet, answers SSH with the
// pinned key, and goes back to off on poweroff; off means connections time
// out, not refused.
func TestPCPowerCycle(t *testing.T) {
	s, err := Start(Config{Dir: t.TempDir(), BootDelay: 200 * time.Millisecond, StopDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc := s.PCs()[0]
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = d.DialContext(ctx, "tcp", pc.SSHAddr())
	cancel()
	if sshexec.ClassifyDialError(err) != sshexec.ProbeTimeout {
		t.Fatalf("an off PC's SSH port: %v, want a timeout", err)
	}
	inv, err := inventory.Parse(filepath.Join(t.TempDir(), "gpuctl.toml"), []byte(s.Inventory()), inventory.Env{})
	if err != nil {
		t.Fatalf("the written inventory does not load: %v\n%s", err, s.Inventory())
	}
	if len(inv.Hosts) != 1 || inv.Hosts[0].SSHPort != pc.SSHPort() {
		t.Fatalf("inventory hosts: %+v", inv.Hosts)
	}
	pc.MagicPacket()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pc.WaitState(ctx, Up); err != nil {
		t.Fatal(err)
	}
	cl, err := ssh.Dial("tcp", pc.SSHAddr(), &ssh.ClientConfig{User: "gpuctl", Auth: []ssh.AuthMethod{ssh.PublicKeys(s.Client())},
		HostKeyCallback: ssh.FixedHostKey(pc.HostKey()), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("ssh to the up PC with the pinned key: %v", err)
	}
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(argvLine(hostcmd.GPUQueryArgs()))
	cl.Close()
	if err != nil || !strings.Contains(string(out), "RTX 4080 SUPER") {
		t.Fatalf("gpu query over SSH: %q %v", out, err)
	}
	if pc.Ollama() == nil {
		t.Fatal("no Ollama while up")
	}
	pc.poweroffRequested()
	if err := pc.WaitState(ctx, Off); err != nil {
		t.Fatal(err)
	}
	if p, b, o := pc.Counts(); p != 1 || b != 1 || o != 1 {
		t.Errorf("counts %d packets %d boots %d poweroffs", p, b, o)
	}
}

// The partial-blob listing has GNU find's own -printf '%s %b %T@ %p\n'
// shape: %T@ with ten fractional digits (find prints the nanoseconds and
// a trailing 0), as in the idle package's parser's example.
func TestPartialsFindFormat(t *testing.T) {
	b := testBox(t)
	blobs := filepath.Join(b.LocalDir, "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobs, "sha256-abc-partial-0"), []byte("1234"), 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2025, 6, 1, 10, 5, 0, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(blobs, "sha256-abc-partial-0"), mt, mt); err != nil {
		t.Fatal(err)
	}
	r := b.partials(b.ModelsDir)
	want := regexp.MustCompile(`^4 \d+ ` + strconv.FormatInt(mt.Unix(), 10) + `\.1234567890 /mnt/models/ollama/blobs/sha256-abc-partial-0\n$`)
	if r.Exit != 0 || !want.MatchString(r.Stdout) {
		t.Errorf("partials: exit %d, %q; want a line matching %s", r.Exit, r.Stdout, want)
	}
}

// With the real server as the PC's Ollama: it answers on the PC's port only
// while the PC is up, pulls a declared model from the test registry (as
// registry.ollama.ai) into <models_dir>/models, generates real tokens, and
// goes with the poweroff.
func TestPCRealOllama(t *testing.T) {
	bin := realollama.Require(t)
	s, err := Start(Config{Dir: t.TempDir(), BootDelay: 100 * time.Millisecond, StopDelay: 100 * time.Millisecond,
		Models: []string{DefaultModel}, Installed: []string{"preinstalled:1b"}, RealOllama: bin, Server: false})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc := s.PCs()[0]
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(pc.ModelsDir()), "ollama.log"))
			t.Logf("the PC's ollama log:\n%s", b)
		}
	})
	if !pc.RealOllama() {
		t.Fatal("the PC does not run the real Ollama")
	}
	pc.MagicPacket()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pc.WaitState(ctx, Up); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(pc.OllamaURL())
	cl := api.NewClient(u, &http.Client{})
	if v, err := cl.Version(ctx); err != nil || v != realollama.Version {
		t.Fatalf("version %q, %v", v, err)
	}
	list, err := cl.List(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "preinstalled:1b" {
		t.Fatalf("installed models: %+v, %v", list, err)
	}
	if err := cl.Pull(ctx, &api.PullRequest{Model: DefaultModel}, func(api.ProgressResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pc.ModelsDir(), "models", "manifests", "registry.ollama.ai", "library", "llama3.3", "70b-instruct-q3_K_M")); err != nil {
		var files []string
		filepath.Walk(pc.ModelsDir(), func(p string, _ os.FileInfo, _ error) error { files = append(files, p); return nil })
		t.Fatalf("the pull did not land where the container keeps its models: %v\n%s", err, strings.Join(files, "\n"))
	}
	reply, chunks, err := realollama.Chat(ctx, cl, DefaultModel, "hello")
	if err != nil || chunks < 2 {
		t.Fatalf("chat: %q in %d chunks, %v", reply, chunks, err)
	}
	if n := pc.Requests("POST /api/chat"); n != 1 {
		t.Errorf("%d chats counted on the PC's port, want 1", n)
	}
	pc.poweroffRequested()
	if err := pc.WaitState(ctx, Off); err != nil {
		t.Fatal(err)
	}
	c2 := api.NewClient(u, &http.Client{Timeout: 500 * time.Millisecond})
	if _, err := c2.Version(ctx); err == nil {
		t.Fatal("the PC's Ollama answers after the poweroff")
	}
}
