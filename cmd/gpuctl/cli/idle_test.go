package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// deadRunner is an SSH session whose commands all fail: the evaluation's
// remote signals fail (busy), which leaves the pull markers, read locally,
// as what the test looks at.
type deadRunner struct{}

func (deadRunner) Run(context.Context, sshexec.Cmd) (sshexec.Result, error) {
	return sshexec.Result{}, errors.New("no SSH in this test")
}

// pullSignal runs idle shutdown's evaluation of h against stateDir and
// returns its pulls signal.
func pullSignal(t *testing.T, stateDir string, h *inventory.Host) idle.Signal {
	t.Helper()
	d := &idle.Deps{
		StateDir: stateDir,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c1, c2 := net.Pipe()
			c2.Close()
			return c1, nil
		},
		Connect: func(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
			conn.Close()
			return deadRunner{}, io.NopCloser(nil), nil
		},
		HTTP:         &http.Client{Timeout: 5 * time.Second},
		CheckTimeout: 5 * time.Second,
	}
	out, err := idle.Run(t.Context(), d, h, idle.Options{IfIdle: true, DryRun: true})
	if err != nil && !errors.Is(err, idle.ErrRefused) {
		t.Fatal(err)
	}
	rep := out.Report
	if !rep.Busy {
		t.Error("evaluation not busy (its remote checks all failed)")
	}
	for _, s := range rep.Signals {
		if s.Name == idle.SigPulls {
			return s
		}
	}
	t.Fatalf("no pulls signal in %+v", rep.Signals)
	return idle.Signal{}
}

// `gpuctl pull` marks its pull for idle shutdown: an evaluation made while
// the pull runs reports it as busy; one after it does not.
func TestPullMarkedForIdleShutdown(t *testing.T) {
	var (
		mu     sync.Mutex
		during []idle.Signal
		h      *inventory.Host
		state  string
	)
	cfg := ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}}
	cfg.OnRequest = func(r *http.Request) {
		if r.URL.Path != "/api/pull" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		during = append(during, pullSignal(t, state, h))
	}
	cfgPath, srv, _ := fakeHost(t, cfg, `"tiny"`)
	state = filepath.Dir(cfgPath) // fakeHost's state_dir
	h = &inventory.Host{Name: "gpu1", Address: "127.0.0.1", SSHPort: 22, OnDemand: true,
		OllamaURL: must(inventory.ParseURL(srv.URL))}

	code, _, errOut := runEnv(t, false, time.Time{}, "--config", cfgPath, "pull", "gpu1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(during) != 1 {
		t.Fatalf("%d evaluations during the pull, want 1", len(during))
	}
	if s := during[0]; !s.Busy || !strings.Contains(s.Value, "gpuctl is pulling tiny") {
		t.Errorf("during the pull: %+v", s)
	}
	if s := pullSignal(t, state, h); strings.Contains(s.Value, "gpuctl is pulling") {
		t.Errorf("after the pull: %+v", s)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "pulls", "gpu1")); len(ents) != 0 {
		t.Errorf("markers left: %v", ents)
	}
}

// The pull of missing models during a wake is marked the same way.
func TestWakePullMarkedForIdleShutdown(t *testing.T) {
	state := t.TempDir()
	var (
		mu     sync.Mutex
		during []idle.Signal
		h      *inventory.Host
	)
	cfg := ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}}
	cfg.OnRequest = func(r *http.Request) {
		if r.URL.Path == "/api/pull" {
			mu.Lock()
			defer mu.Unlock()
			during = append(during, pullSignal(t, state, h))
		}
	}
	srv := ollamatest.Start(t, cfg)
	drive := &ollamatest.DriveRunner{Remote: "/mnt/models/ollama", Local: filepath.Dir(srv.Dir()), Avail: 1 << 40}
	h = &inventory.Host{Name: "gpu1", Address: "127.0.0.1", SSHPort: 22, OnDemand: true,
		OllamaURL: must(inventory.ParseURL(srv.URL)), ModelsDir: "/mnt/models/ollama"}
	p := modelsPuller{stateDir: state, client: func(*inventory.Host) *api.Client { return srv.Client() }}
	if err := p.Pull(t.Context(), h, drive, []inventory.ModelName{"tiny"}, func(string) {}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(during) != 1 || !during[0].Busy || !strings.Contains(during[0].Value, "gpuctl is pulling tiny") {
		t.Errorf("during the wake's pull: %+v", during)
	}
	if s := pullSignal(t, state, h); strings.Contains(s.Value, "gpuctl is pulling") {
		t.Errorf("after the pull: %+v", s)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// `gpuctl status` shows idle shutdown's last view of on-demand hosts: a
// table line and the JSON idle object, from STATE_DIR/idle/HOST.json.
func TestStatusShowsIdleState(t *testing.T) {
	pc := newSimPC(t) // asleep: status answers off within the timeout
	stateDir := filepath.Join(pc.dir, "state")
	now := time.Now()
	since := now.Add(-12*time.Minute - 20*time.Second)
	checked := now.Add(-3 * time.Minute)
	st := idle.State{Host: "gaming-pc", IdleSince: &since, LastCheck: checked, Phase: idle.PhaseReady,
		LastError: "host \"gaming-pc\": shutdown refused: Wake-on-LAN is not armed"}
	if err := idle.SaveState(stateDir, st); err != nil {
		t.Fatal(err)
	}
	code, out, errs := pc.run(t, "status", "--timeout", "300ms")
	if code != ExitOff && code != ExitUnreachable {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	lines := strings.Split(out, "\n")
	hdr, row := -1, -1
	for i, l := range lines {
		if strings.HasPrefix(l, "HOST") && strings.Contains(l, "IDLE SHUTDOWN") {
			hdr = i
		}
		if hdr >= 0 && i > hdr && strings.HasPrefix(l, "gaming-pc") {
			row = i
			break
		}
	}
	if hdr < 0 || row < 0 {
		t.Fatalf("no idle table:\n%s", out)
	}
	want := "idle 12m (since " + since.Local().Format("15:04") + ")"
	if since.Local().YearDay() != now.Local().YearDay() {
		want = "idle 12m (since " + since.Local().Format("2006-01-02 15:04") + ")"
	}
	if !strings.Contains(lines[row], want) || !strings.HasSuffix(lines[row], "3m ago") {
		t.Errorf("idle row %q, want %q and checked 3m ago", lines[row], want)
	}
	if strings.Index(lines[hdr], "IDLE SHUTDOWN") != strings.Index(lines[row], "idle 12m") ||
		strings.Index(lines[hdr], "CHECKED") != strings.Index(lines[row], "3m ago") {
		t.Errorf("columns not aligned:\n%s\n%s", lines[hdr], lines[row])
	}
	if strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("control characters: %q", out)
	}

	// Busy, in JSON.
	st.IdleSince = nil
	st.BusyReasons = []string{"proxy: 1 request(s) in flight", "gpu: GPU0 90% (busy above 10%)"}
	if err := idle.SaveState(stateDir, st); err != nil {
		t.Fatal(err)
	}
	code, out, errs = pc.run(t, "status", "--json", "--timeout", "300ms")
	if code != ExitOff && code != ExitUnreachable {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	var sts []struct {
		Name string          `json:"name"`
		Idle json.RawMessage `json:"idle"`
	}
	if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 1 {
		t.Fatalf("%v\n%s", err, out)
	}
	var got map[string]any
	if err := json.Unmarshal(sts[0].Idle, &got); err != nil {
		t.Fatalf("idle %s: %v", sts[0].Idle, err)
	}
	if v, ok := got["idle_since"]; !ok || v != nil {
		t.Errorf("idle_since = %v (present %v), want null", v, ok)
	}
	if r, _ := got["busy_reasons"].([]any); len(r) != 2 || r[0] != "proxy: 1 request(s) in flight" {
		t.Errorf("busy_reasons = %v", got["busy_reasons"])
	}
	if got["phase"] != "ready" || got["last_check"] != checked.Format(time.RFC3339Nano) || !strings.Contains(got["last_error"].(string), "not armed") {
		t.Errorf("idle object %s", sts[0].Idle)
	}
	code, out, _ = pc.run(t, "status", "--timeout", "300ms")
	if !strings.Contains(out, "busy: proxy: 1 request(s) in flight (+1 more)") {
		t.Errorf("busy row missing (exit %d):\n%s", code, out)
	}

	// A host that was never checked: no idle object, "not checked yet".
	if err := os.Remove(statedir.IdleFile(stateDir, "gaming-pc")); err != nil {
		t.Fatal(err)
	}
	_, out, _ = pc.run(t, "status", "--json", "--timeout", "300ms")
	if strings.Contains(out, `"idle"`) {
		t.Errorf("idle object for a host never checked:\n%s", out)
	}
	_, out, _ = pc.run(t, "status", "--timeout", "300ms")
	if !strings.Contains(out, "not checked yet") {
		t.Errorf("no 'not checked yet':\n%s", out)
	}
}
