package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
)

// DemoOptions tune the demo.
type DemoOptions struct {
	// Gpuctl is a built gpuctl binary; empty means build ./cmd/gpuctl of
	// the module in the current directory.
	Gpuctl string
	// Keep leaves the working directory in place.
	Keep bool
	// Out receives the demo's narration and the commands' output.
	Out io.Writer
	// Ollama chooses the PC's Ollama (default auto: the real server when
	// its binary is there, else the fake, said so).
	Ollama OllamaMode
}

func demoMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gpuctl-sim demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o DemoOptions
	fs.StringVar(&o.Gpuctl, "gpuctl", "", "use this gpuctl binary instead of building ./cmd/gpuctl")
	fs.BoolVar(&o.Keep, "keep", false, "keep the working directory (inventory, state_dir, models) afterwards")
	fs.StringVar((*string)(&o.Ollama), "ollama", string(OllamaAuto), "the PC's Ollama: `real` (the real server v0.17.4: make ollama, or GPUCTL_OLLAMA), fake (in-process), or auto (real when built)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	o.Out = stdout
	start := time.Now()
	if err := Demo(ctx, o); err != nil {
		fmt.Fprintf(stdout, "\nDEMO FAILED after %.1fs: %v\n", time.Since(start).Seconds(), err)
		return 1
	}
	fmt.Fprintf(stdout, "\nDemo passed in %.1fs: off → woken → ready → chat routed to the gaming PC → idle → powered off.\n", time.Since(start).Seconds())
	return 0
}

// demo is one run of the demo.
type demo struct {
	o      DemoOptions
	out    *lockedWriter
	gpuctl string
	inv    string
	env    []string
	sim    *Sim
	step   int
	// stopServing stops gpuctl serve once step 4 started it.
	stopServing func()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) printf(format string, args ...any) {
	fmt.Fprintf(l, format, args...)
}

// prefixWriter indents every line written to it.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
	mu     sync.Mutex
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexAny(p.buf, "\n\r")
		if i < 0 {
			break
		}
		line := p.buf[:i]
		p.buf = p.buf[i+1:]
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, line)
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(bytes.TrimSpace(p.buf)) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf)
	}
	p.buf = nil
}

// Demo builds gpuctl (unless given), starts one simulated gaming PC and the
// server's Ollama, and runs the chain with the real gpuctl binary:
// status (off) → wake → status (ready) → a chat through gpuctl serve,
// routed to the PC → shutdown --if-idle until it powers off → status (off).
// It fails when any step does not do what it should.
func Demo(ctx context.Context, o DemoOptions) (err error) {
	d := &demo{o: o, out: &lockedWriter{w: o.Out}}
	dir, err := os.MkdirTemp("", "gpuctl-demo-")
	if err != nil {
		return err
	}
	if o.Keep {
		defer d.out.printf("\n(kept %s)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := d.buildGpuctl(ctx, dir); err != nil {
		return err
	}
	bin, err := d.startSim(dir)
	if err != nil {
		return err
	}
	defer d.sim.Close()
	if err := d.introduce(dir, bin); err != nil {
		return err
	}
	// Stops gpuctl serve (started by step 4) before the simulation.
	defer d.stopServe()
	pc := d.sim.PCs()[0]
	for _, step := range []struct {
		title string
		run   func(context.Context, *PC) error
	}{
		{"gpuctl status: the gaming PC is off", d.statusOff},
		{"gpuctl wake: magic packet, boot, checks over SSH, model pull", d.wake},
		{"gpuctl status: ready", d.statusReady},
		{"gpuctl serve + a chat request for " + DefaultModel, d.serveAndChat},
		// As cron would run it.
		{"gpuctl shutdown --if-idle (cron, here every second; idle_after and min_uptime are 2s in this demo)", d.shutdownWhenIdle},
		{"gpuctl status: off again", d.statusOffAgain},
	} {
		d.section(step.title)
		if err := step.run(ctx, pc); err != nil {
			return err
		}
	}
	return nil
}

// buildGpuctl builds ./cmd/gpuctl into dir unless the options name a
// binary.
func (d *demo) buildGpuctl(ctx context.Context, dir string) error {
	d.gpuctl = d.o.Gpuctl
	if d.gpuctl != "" {
		return nil
	}
	d.gpuctl = filepath.Join(dir, "bin", "gpuctl")
	d.out.printf("==> building gpuctl\n")
	t := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", d.gpuctl, "./cmd/gpuctl")
	cmd.Stdout, cmd.Stderr = d.o.Out, d.o.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/gpuctl (run the demo from the repository root): %w", err)
	}
	d.out.printf("    built in %.1fs\n", time.Since(t).Seconds())
	return nil
}

// startSim starts one simulated gaming PC and the server's Ollama, with
// the demo's short delays; it returns the real Ollama binary the PC runs
// ("" for the fake).
func (d *demo) startSim(dir string) (string, error) {
	bin, why, err := ResolveOllama(d.o.Ollama)
	if err != nil {
		return "", fmt.Errorf("--ollama %s: %w", d.o.Ollama, err)
	}
	if why != "" {
		d.out.printf("==> the real Ollama server is not available (%s);\n    the gaming PC runs the in-process fake Ollama instead (placeholder weights, canned replies)\n", why)
	}
	simLog := &prefixWriter{w: d.out, prefix: "    [simulated PC] "}
	d.sim, err = Start(Config{
		RealOllama: bin,
		Dir:        filepath.Join(dir, "sim"), Hosts: 1,
		BootDelay: 2 * time.Second, LinkDelay: time.Second, StopDelay: 500 * time.Millisecond,
		Models: []string{DefaultModel}, ModelSize: 16 << 20, PullRate: 12 << 20,
		Server: true, LightModels: []string{"llama3.2:3b"},
		IdleAfter: 2 * time.Second, MinUptime: 2 * time.Second,
		Logf: func(format string, args ...any) { fmt.Fprintf(simLog, format+"\n", args...) },
	})
	return bin, err
}

// introduce writes the demo's inventory and says what the simulated PC is.
func (d *demo) introduce(dir, bin string) error {
	pc := d.sim.PCs()[0]
	d.inv = filepath.Join(dir, "gpuctl.toml")
	if err := d.sim.WriteInventory(d.inv); err != nil {
		return err
	}
	d.env = childEnv()
	d.out.printf("==> simulated gaming PC %q (MAC %s): off; SSH %s, Ollama %s, magic packets to %s\n",
		pc.Name(), pc.MAC(), pc.SSHAddr(), pc.OllamaURL(), d.sim.WOLAddr())
	d.out.printf("    its NVIDIA, Docker, findmnt and df outputs are real captures (an RTX 4080 SUPER: no RTX 3090 CSV capture exists);\n")
	if bin != "" {
		d.out.printf("    its Ollama is the real server v%s (%s), pulling from a test registry that answers as registry.ollama.ai:\n", realollama.Version, bin)
		d.out.printf("    %s there is a tiny llama with random weights: real pulls, real tokens (gibberish). Inventory: %s\n", DefaultModel, d.inv)
	} else {
		d.out.printf("    the model %s is %d MiB of placeholder bytes. Inventory: %s\n", DefaultModel, 16, d.inv)
	}
	return nil
}

// statusOff is step 1: status says off (exit 5) and wakes nothing.
func (d *demo) statusOff(ctx context.Context, pc *PC) error {
	if code, _ := d.run(ctx, nil, "status", pc.Name()); code != 5 {
		return fmt.Errorf("gpuctl status exited %d, want 5 (off)", code)
	}
	if pc.State() != Off {
		return fmt.Errorf("the simulated PC is %s after status; status must never wake anything", pc.State())
	}
	return nil
}

// wake is step 2: wake brings the PC up and pulls the declared model onto
// its drive.
func (d *demo) wake(ctx context.Context, pc *PC) error {
	t := time.Now()
	if code, _ := d.run(ctx, nil, "wake", pc.Name()); code != 0 {
		return fmt.Errorf("gpuctl wake exited %d, want 0 (ready)", code)
	}
	if pc.State() != Up {
		return fmt.Errorf("gpuctl wake succeeded but the simulated PC is %s", pc.State())
	}
	// Where the container keeps them: models_dir is its /root/.ollama.
	if _, err := os.Stat(filepath.Join(pc.ModelsDir(), "models", "manifests", "registry.ollama.ai", "library", "llama3.3", "70b-instruct-q3_K_M")); err != nil {
		return fmt.Errorf("wake did not pull %s onto the PC's drive: %w", DefaultModel, err)
	}
	d.out.printf("    (woken, checked and pulled in %.1fs)\n", time.Since(t).Seconds())
	return nil
}

// statusReady is step 3: status says ready (exit 0).
func (d *demo) statusReady(ctx context.Context, pc *PC) error {
	if code, _ := d.run(ctx, nil, "status", pc.Name()); code != 0 {
		return fmt.Errorf("gpuctl status exited %d, want 0 (ready)", code)
	}
	return nil
}

// serveAndChat is step 4: gpuctl serve runs until the demo ends (see
// stopServe) and routes one chat to the gaming PC.
func (d *demo) serveAndChat(ctx context.Context, pc *PC) error {
	stop, err := d.serve(ctx)
	if err != nil {
		return err
	}
	d.stopServing = stop
	return d.chat(ctx, pc)
}

// stopServe stops gpuctl serve if step 4 started it.
func (d *demo) stopServe() {
	if d.stopServing != nil {
		d.stopServing()
	}
}

// shutdownWhenIdle is step 5: a dry run, then shutdown --if-idle every
// second, as cron would run it, until the PC powers off once.
func (d *demo) shutdownWhenIdle(ctx context.Context, pc *PC) error {
	if code, _ := d.run(ctx, nil, "shutdown", pc.Name(), "--if-idle", "--dry-run"); code != 0 {
		return fmt.Errorf("gpuctl shutdown --if-idle --dry-run exited %d, want 0", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for pc.State() == Up {
		if time.Now().After(deadline) {
			return errors.New("the gaming PC was not powered off within 30s of idling")
		}
		code, _ := d.run(ctx, []string{"GPUCTL_LOG=info"}, "shutdown", pc.Name(), "--if-idle")
		if code != 0 {
			return fmt.Errorf("gpuctl shutdown --if-idle exited %d, want 0", code)
		}
		if pc.State() == Up {
			select {
			case <-time.After(time.Second): // the next cron run
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if _, _, n := pc.Counts(); n != 1 {
		return fmt.Errorf("the PC saw %d poweroff commands, want exactly 1", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pc.WaitState(wctx, Off)
}

// statusOffAgain is step 6: status says off again (exit 5).
func (d *demo) statusOffAgain(ctx context.Context, pc *PC) error {
	if code, _ := d.run(ctx, nil, "status", pc.Name()); code != 5 {
		return fmt.Errorf("gpuctl status exited %d after the shutdown, want 5 (off)", code)
	}
	return nil
}

// childEnv is this environment without what would make gpuctl use another
// inventory, state directory or the user's SSH agent.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GPUCTL_CONFIG", "GPUCTL_STATE_DIR", "GPUCTL_LOG", "SSH_AUTH_SOCK":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (d *demo) section(title string) {
	d.step++
	d.out.printf("\n==> %d. %s\n", d.step, title)
}

// run runs gpuctl with args against the demo inventory, printing the
// command and its output, and returns its exit code and stdout.
func (d *demo) run(ctx context.Context, extraEnv []string, args ...string) (int, string) {
	d.out.printf("$ gpuctl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.gpuctl, append([]string{"--config", d.inv}, args...)...)
	cmd.Env = append(append([]string{}, d.env...), extraEnv...)
	var stdout bytes.Buffer
	pw := &prefixWriter{w: d.out, prefix: "    "}
	cmd.Stdout = io.MultiWriter(&stdout, pw)
	cmd.Stderr = pw
	err := cmd.Run()
	pw.flush()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		d.out.printf("    (could not run gpuctl: %v)\n", err)
		code = -1
	}
	d.out.printf("    (exit %d)\n", code)
	return code, stdout.String()
}

// serve starts gpuctl serve and waits until it listens.
func (d *demo) serve(ctx context.Context) (stop func(), err error) {
	d.out.printf("$ gpuctl serve &\n")
	cmd := exec.Command(d.gpuctl, "--config", d.inv, "serve")
	cmd.Env = d.env
	pr, pw := io.Pipe()
	cmd.Stdout = &prefixWriter{w: d.out, prefix: "    [serve] "}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	listening := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			d.out.printf("    [serve] %s\n", sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { done <- cmd.Wait(); pw.Close() }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	select {
	case <-listening:
		return stop, nil
	case err := <-done:
		return nil, fmt.Errorf("gpuctl serve exited before listening: %v", err)
	case <-time.After(15 * time.Second):
		stop()
		return nil, errors.New("gpuctl serve did not listen within 15s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// chat sends one streamed /api/chat through the proxy and checks that the
// gaming PC's Ollama answered it.
func (d *demo) chat(ctx context.Context, pc *PC) error {
	before := pc.Requests("POST /api/chat")
	url := "http://" + d.sim.ServeAddr() + "/api/chat"
	body := `{"model":"` + DefaultModel + `","messages":[{"role":"user","content":"Say hello."}]}`
	d.out.printf("$ curl -s %s -d '%s'\n", url, body)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("chat through gpuctl serve: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("chat through gpuctl serve: HTTP %s: %s", resp.Status, b)
	}
	var reply strings.Builder
	sc := bufio.NewScanner(resp.Body)
	lines := 0
	for sc.Scan() {
		var m struct {
			Message struct{ Content string } `json:"message"`
			Done    bool                     `json:"done"`
			Error   string                   `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("chat stream line %q: %w", sc.Text(), err)
		}
		if m.Error != "" {
			return fmt.Errorf("chat stream error: %s", m.Error)
		}
		lines++
		reply.WriteString(m.Message.Content)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the chat stream: %w", err)
	}
	d.out.printf("    %d NDJSON lines; the reply: %q\n", lines, reply.String())
	if pc.Requests("POST /api/chat") != before+1 {
		return errors.New("the chat was not answered by the gaming PC's Ollama")
	}
	if pc.RealOllama() && (lines < 3 || reply.Len() == 0) {
		return fmt.Errorf("the real Ollama answered %d lines, %q: want generated tokens", lines, reply.String())
	}
	if s := d.sim.Server(); s != nil && s.Requests("POST /api/chat") != 0 {
		return errors.New("the chat went to the server's Ollama, not the gaming PC")
	}
	what := "the gaming PC's Ollama"
	if pc.RealOllama() {
		what = "the gaming PC's real Ollama server, tokens generated on CPU from random weights,"
	}
	d.out.printf("    (answered by %s at %s)\n", what, pc.OllamaURL())
	return nil
}
