package sim

// make bench: P2 (wake readiness latency against a naive ssh polling loop)
// and P3 (status of 32 hosts against 1), each measured against its
// baseline in the same run and printed as a ratio. Run with -benchtime 1x:
// one iteration is one full measurement.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/wake/waketest"
)

var (
	benchBuildOnce sync.Once
	benchGpuctl    string
	benchBuildErr  error
)

// builtGpuctl builds ./cmd/gpuctl once per run.
func builtGpuctl(b *testing.B) string {
	b.Helper()
	benchBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpuctl-bench-")
		if err != nil {
			benchBuildErr = err
			return
		}
		benchGpuctl = filepath.Join(dir, "gpuctl")
		if out, err := exec.Command("go", "build", "-o", benchGpuctl, "../../gpuctl").CombinedOutput(); err != nil {
			benchBuildErr = fmt.Errorf("go build ./cmd/gpuctl: %v\n%s", err, out)
		}
	})
	if benchBuildErr != nil {
		b.Fatal(benchBuildErr)
	}
	return benchGpuctl
}

func benchEnv() []string {
	return append(os.Environ(), "SSH_AUTH_SOCK=", "GPUCTL_CONFIG=", "GPUCTL_STATE_DIR=", "GPUCTL_LOG=")
}

// p2Boot is the boot profile of both P2 runs: the ports refuse from 0.2s
// (the OS is up), SSH answers from 3.5s. The naive loop's first attempt
// fails at about 1s, its next comes 5s later, so it waits about 2.5s: the
// mean wait of a 5-second polling loop.
func p2Boot(dir string) Config {
	return Config{Dir: dir, BootDelay: 3500 * time.Millisecond, LinkDelay: 200 * time.Millisecond}
}

// wakeToReady starts a fresh off PC, runs gpuctl wake and returns the time
// from the PC's SSH and Ollama answering to wake printing "ready".
func wakeToReady(b *testing.B, gpuctl string) time.Duration {
	b.Helper()
	s, err := Start(p2Boot(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	inv := filepath.Join(b.TempDir(), "gpuctl.toml")
	if err := s.WriteInventory(inv); err != nil {
		b.Fatal(err)
	}
	pc := s.PCs()[0]
	// No declared models: P2 is readiness, not pulls.
	cmd := exec.Command(gpuctl, "--config", inv, "wake", "--no-pull", pc.Name())
	cmd.Env = benchEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var printed time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 1 && f[0] == pc.Name() && f[1] == "ready" && printed.IsZero() {
			printed = time.Now()
		}
	}
	if err := cmd.Wait(); err != nil || printed.IsZero() {
		b.Fatalf("gpuctl wake: %v (printed ready: %v)\n%s", err, !printed.IsZero(), stderr.String())
	}
	up := pc.UpSince()
	if up.IsZero() {
		b.Fatal("the PC is not up after the wake")
	}
	return printed.Sub(up)
}

// naiveToReady is what people script without gpuctl, with the real OpenSSH
// client: `until ssh box true; do sleep 5; done`, then one ssh per check.
// It returns the time from the PC answering to the last check's end.
func naiveToReady(b *testing.B) time.Duration {
	b.Helper()
	s, err := Start(p2Boot(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pc := s.PCs()[0]
	dir := b.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", pc.SSHPort(), ssh.MarshalAuthorizedKey(pc.HostKey()))
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		b.Fatal(err)
	}
	sshCmd := fmt.Sprintf("ssh -F none -o BatchMode=yes -o ConnectTimeout=5 -o IdentitiesOnly=yes -o UserKnownHostsFile=%s -i %s -p %d gpuctl@127.0.0.1",
		kh, s.KeyFile(), pc.SSHPort())
	var script strings.Builder
	fmt.Fprintf(&script, "until %s true 2>/dev/null; do sleep 5; done\n", sshCmd)
	for _, args := range [][]string{controller.GPUQueryArgs(), controller.InspectArgs("ollama"), controller.ContainerGPUArgs("ollama"),
		controller.FindmntArgs(pc.ModelsDir()), controller.DFArgs(pc.ModelsDir()), controller.WriteProbeArgs(pc.ModelsDir())} {
		fmt.Fprintf(&script, "%s %s >/dev/null || exit 1\n", sshCmd, shellQuote(argvLine(args)))
	}
	pc.MagicPacket() // the naive script's wakeonlan
	cmd := exec.Command("sh", "-c", script.String())
	cmd.Env = benchEnv()
	out, err := cmd.CombinedOutput()
	end := time.Now()
	if err != nil {
		b.Fatalf("naive loop: %v\n%s", err, out)
	}
	return end.Sub(pc.UpSince())
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// BenchmarkP2WakeReady: time from the simulated PC's services answering to
// `gpuctl wake` printing ready (target ≤300 ms), beside the naive loop.
func BenchmarkP2WakeReady(b *testing.B) {
	waketest.RequireProgram(b, "ssh")
	gpuctl := builtGpuctl(b)
	var wakes, naives []time.Duration
	for b.Loop() {
		wakes = append(wakes, wakeToReady(b, gpuctl))
		naives = append(naives, naiveToReady(b))
	}
	w, n := median(wakes), median(naives)
	b.ReportMetric(float64(w.Milliseconds()), "wake-ms")
	b.ReportMetric(float64(n.Milliseconds()), "naive-ms")
	b.ReportMetric(float64(n)/float64(w), "naive/wake")
	verdict := "MET"
	if w > 300*time.Millisecond {
		verdict = "MISSED"
	}
	fmt.Printf("P2 services up → ready: gpuctl wake %d ms, naive ssh loop %d ms: gpuctl is %.1fx faster (target ≤300 ms: %s; median of %d)\n",
		w.Milliseconds(), n.Milliseconds(), float64(n)/float64(w), verdict, len(wakes))
}

// BenchmarkP3Status32vs1: `gpuctl status` of 32 simulated PCs (all up, all
// checks run) against 1 (target ≤1.5x). The PCs run on this machine, so
// their SSH servers share its CPU with gpuctl: "cpu-bound" is that, raw;
// "box-50ms" gives every remote command 50 ms of the box's own time, as
// real nvidia-smi and docker take, which is what a LAN of real PCs looks
// like to gpuctl.
func BenchmarkP3Status32vs1(b *testing.B) {
	for _, d := range []time.Duration{0, 50 * time.Millisecond} {
		name := "cpu-bound"
		if d > 0 {
			name = fmt.Sprintf("box-%dms", d.Milliseconds())
		}
		b.Run(name, func(b *testing.B) { benchStatus(b, d) })
	}
}

func benchStatus(b *testing.B, cmdDelay time.Duration) {
	gpuctl := builtGpuctl(b)
	s, err := Start(Config{Dir: b.TempDir(), Hosts: 32, Up: true, CommandDelay: cmdDelay})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	inv := filepath.Join(b.TempDir(), "gpuctl.toml")
	if err := s.WriteInventory(inv); err != nil {
		b.Fatal(err)
	}
	var all []string
	for _, pc := range s.PCs() {
		all = append(all, pc.Name())
	}
	status := func(names []string) time.Duration {
		cmd := exec.Command(gpuctl, append([]string{"--config", inv, "status"}, names...)...)
		cmd.Env = benchEnv()
		t := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t)
		if err != nil {
			b.Fatalf("gpuctl status (%d hosts): %v\n%s", len(names), err, out)
		}
		return d
	}
	status(all) // warm up: page cache, first connections' state files
	var ones, many []time.Duration
	for b.Loop() {
		for range 5 {
			ones = append(ones, status(all[:1]))
			many = append(many, status(all))
		}
	}
	o, m := median(ones), median(many)
	ratio := float64(m) / float64(o)
	b.ReportMetric(float64(o.Milliseconds()), "1host-ms")
	b.ReportMetric(float64(m.Milliseconds()), "32hosts-ms")
	b.ReportMetric(ratio, "32/1")
	verdict := "MET"
	if ratio > 1.5 {
		verdict = "MISSED"
	}
	fmt.Printf("P3 gpuctl status (%s): 1 host %d ms, 32 hosts %d ms: %.2fx (target ≤1.5x: %s; median of %d each)\n",
		b.Name(), o.Milliseconds(), m.Milliseconds(), ratio, verdict, len(ones))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
