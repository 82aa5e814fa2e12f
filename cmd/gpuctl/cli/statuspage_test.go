package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/cmd/gpuctl-sim/sim"
	"github.com/ollamalive/gpuctl/cmd/gpuctl/dashboard"
	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/wake/waketest"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the ready-state screenshot of TestStatusPageInChromium to docs/status-page.png")

// TestStatusPageInChromium drives the status page in headless Chromium, as
// a user behind Open WebUI's usual reverse proxy sees it: gpuctl serve runs
// against a simulated gaming PC, and the page is loaded through a proxy that
// serves it under a path prefix and strips that prefix. With the PC off the
// card says off, and nothing reached the PC (no magic packet, no boot, in the
// simulator's counters and log); a cross-origin POST is refused; the page's
// own wake button, clicked in the browser (DevTools protocol over a pipe),
// wakes the PC and the card follows it to ready with every check. Screenshots
// of each state (desktop light and dark, phone) go to the test's output
// ($GPUCTL_TEST_OUT/status-page, else a temporary directory).
func TestStatusPageInChromium(t *testing.T) {
	if testing.Short() && !waketest.InCI() {
		t.Skip("the browser tier is skipped with -short")
	}
	waketest.RequireProgram(t, "chromium")
	out := os.Getenv("GPUCTL_TEST_OUT")
	if out == "" {
		out = t.TempDir()
	} else {
		out = filepath.Join(out, "status-page")
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var logMu sync.Mutex
	var simLog []string
	s, err := sim.Start(sim.Config{Dir: t.TempDir(), Server: true, LightModels: []string{"llama3.2:3b"},
		Models: []string{sim.DefaultModel}, Installed: []string{sim.DefaultModel},
		BootDelay: 1500 * time.Millisecond, IdleAfter: 30 * time.Minute, MinUptime: 10 * time.Minute,
		Logf: func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			simLog = append(simLog, fmt.Sprintf(format, args...))
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc := s.PC("gaming-pc")
	cfg := filepath.Join(t.TempDir(), "gpuctl.toml")
	text := strings.Replace(s.Inventory(), "[serve]\n", "[serve]\npage_actions = true\n", 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(cfg, inventory.Env{Getenv: func(string) string { return "" }, Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Stdout: io.Discard, Stderr: io.Discard}
	env.fill()
	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, env, serveOptions{inv: &loadedInventory{Inventory: inv}, listen: "127.0.0.1:0",
			drain: time.Second, ready: func(a string) { addr <- a }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	serveURL, _ := url.Parse("http://" + <-addr)

	// Open WebUI's usual setup: a reverse proxy serving gpuctl under a
	// path prefix, stripped before the request reaches gpuctl serve.
	const prefix = "/gpu"
	rp := httputil.NewSingleHostReverseProxy(serveURL)
	front := httptest.NewServer(http.StripPrefix(prefix, rp))
	defer front.Close()
	pageURL := front.URL + prefix + "/gpuctl/"
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	// Off: the card says so, and the page's polling reached nothing.
	// Without the trailing slash: the relative redirect keeps the prefix.
	dom := chromium(t, strings.TrimSuffix(pageURL, "/"), "--dump-dom")
	screenshots(t, pageURL, out, "off")
	if !strings.Contains(dom, `data-host="gaming-pc" data-state="off"`) {
		t.Fatalf("with the PC off the page shows no off card for gaming-pc:\n%s", dom)
	}
	if !strings.Contains(dom, `data-host="server" data-state="ready"`) {
		t.Errorf("the always-on server is not ready on the page:\n%s", dom)
	}
	if !strings.Contains(dom, `data-wake="gaming-pc"`) {
		t.Errorf("page_actions = true but no wake button for the sleeping PC:\n%s", dom)
	}
	packets, boots, _ := pc.Counts()
	logMu.Lock()
	seen := strings.Join(simLog, "\n")
	logMu.Unlock()
	if packets != 0 || boots != 0 || pc.State() != sim.Off || strings.Contains(seen, "gaming-pc: booting") {
		t.Fatalf("the status page reached the sleeping PC: %d magic packets, %d boots, state %s; simulator log:\n%s",
			packets, boots, pc.State(), seen)
	}

	// A POST from another origin is refused and wakes nothing.
	if code := postWake(t, client, front.URL+prefix+"/gpuctl/api/wake/gaming-pc", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("cross-origin wake: HTTP %d, want 403", code)
	}
	if packets, _, _ := pc.Counts(); packets != 0 {
		t.Fatalf("a cross-origin POST sent %d magic packets", packets)
	}
	// The page's own button (a same-origin POST from the browser, through
	// the prefix) wakes the PC, and the card follows it to ready.
	wctx, wcancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer wcancel()
	br := startBrowser(t)
	br.open(wctx, pageURL)
	br.waitFor(wctx, "the wake button", `!!document.querySelector('[data-wake="gaming-pc"]')`)
	if _, err := br.eval(wctx, `document.querySelector('[data-wake="gaming-pc"]').click()`); err != nil {
		t.Fatal(err)
	}
	if err := pc.WaitState(wctx, sim.Up); err != nil {
		t.Fatal(err)
	}
	br.waitFor(wctx, "the card to say ready", `!!document.querySelector('[data-host="gaming-pc"][data-state="ready"] [data-check="gpu"]')`)
	statusURL := front.URL + prefix + "/gpuctl/api/status"
	waitPage(t, wctx, client, statusURL, func(p dashboard.Page) bool {
		h := pageHost(p, "gaming-pc")
		return h != nil && h.PageWake != nil && h.PageWake.Finished != nil
	})
	// Something loaded on the PC, and one idle-shutdown check (too soon
	// after boot to power off), for a full card.
	if err := pc.Ollama().Load(sim.DefaultModel, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := run(t, nil, "--config", cfg, "shutdown", "gaming-pc", "--if-idle", "--json"); code != ExitOK || pc.State() != sim.Up {
		t.Fatalf("gpuctl shutdown --if-idle: exit %d, PC %s: %s%s", code, pc.State(), stdout, stderr)
	}
	waitPage(t, wctx, client, statusURL, func(p dashboard.Page) bool {
		h := pageHost(p, "gaming-pc")
		return h != nil && h.State == "ready" && len(h.Loaded) > 0 && h.IdleView != nil && len(h.Wakes) > 0
	})
	dom = chromium(t, pageURL, "--dump-dom")
	screenshots(t, pageURL, out, "ready")
	if !strings.Contains(dom, `data-host="gaming-pc" data-state="ready"`) {
		t.Fatalf("after the wake the page shows no ready card for gaming-pc:\n%s", dom)
	}
	for _, c := range []string{"gpu", "container", "container_gpu", "mount", "free_space", "write_probe", "ollama", "models"} {
		if !strings.Contains(dom, `data-check="`+c+`"`) {
			t.Errorf("the ready card does not list the %s check", c)
		}
	}
	if !strings.Contains(dom, `data-model="`+sim.DefaultModel+`"`) {
		t.Errorf("the ready card does not list the loaded model %s", sim.DefaultModel)
	}
	if *updateScreenshot {
		b, err := os.ReadFile(filepath.Join(out, "ready.png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../../../docs/status-page.png", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", out)
}

func pageHost(p dashboard.Page, name string) *dashboard.Host {
	for i := range p.Hosts {
		if p.Hosts[i].Name == name {
			return &p.Hosts[i]
		}
	}
	return nil
}

func postWake(t *testing.T, client *http.Client, u, origin string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// waitPage polls the page's JSON until ok holds for it.
func waitPage(t *testing.T, ctx context.Context, client *http.Client, u string, ok func(dashboard.Page) bool) {
	t.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last []byte
	for {
		res, err := client.Get(u)
		if err == nil {
			last, _ = io.ReadAll(res.Body)
			res.Body.Close()
			var p dashboard.Page
			if json.Unmarshal(last, &p) == nil && ok(p) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the page's status never got there; last answer:\n%s", last)
		case <-tick.C:
		}
	}
}

// chromium loads u in headless Chromium (a fresh profile each time), lets
// its scripts run and its requests finish, and returns what the mode flag
// asks for on stdout (--dump-dom: the DOM as the page's script left it).
func chromium(t *testing.T, u string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-crash-reporter", "--user-data-dir=" + chromeProfile(t), "--hide-scrollbars", "--virtual-time-budget=4000"}
	cmd := exec.CommandContext(ctx, "chromium", append(append(args, extra...), u)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	inOwnGroup(cmd)
	b, err := cmd.Output()
	stopGroup(cmd)
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, stderr.String())
	}
	return string(b)
}

// chromeProfile is a fresh, empty Chromium profile directory. It is removed
// at the end of the test, retrying briefly: Chromium's helper processes
// (zygote, renderers) can still be closing files in it when the browser
// itself has exited, and t.TempDir would fail the test for that.
func chromeProfile(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpuctl-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(dir)
			if err == nil || i == 40 {
				if err != nil {
					t.Logf("leaving Chromium profile %s: %v", dir, err)
				}
				return
			}
			time.Sleep(50 * time.Millisecond) // a helper process closing its files
		}
	})
	return dir
}

// inOwnGroup starts cmd in a process group of its own, so that stopGroup
// ends Chromium's helper processes with it.
func inOwnGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// stopGroup kills what is left of cmd's process group.
func stopGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// screenshots saves the page as a desktop (light and dark) and a phone
// sees it: NAME.png, NAME-dark.png, NAME-phone.png under dir.
func screenshots(t *testing.T, u, dir, name string) {
	t.Helper()
	for _, s := range []struct{ suffix, size, scheme string }{
		{"", "1280,1400", "1"}, {"-dark", "1280,1400", "0"}, {"-phone", "400,2000", "0"},
	} {
		png := filepath.Join(dir, name+s.suffix+".png")
		chromium(t, u, "--window-size="+s.size, "--blink-settings=preferredColorScheme="+s.scheme, "--screenshot="+png)
		if _, err := os.Stat(png); err != nil {
			t.Fatalf("chromium wrote no screenshot: %v", err)
		}
	}
}

// TestStatusPageEveryState renders a card for every state and every
// optional part (checks failing and transient, busy and unreadable idle
// signals, a failed /api/ps, a wake in progress and a failed one, partial
// GPU offload) in headless Chromium: one script error would leave the page
// empty.
func TestStatusPageEveryState(t *testing.T) {
	if testing.Short() && !waketest.InCI() {
		t.Skip("the browser tier is skipped with -short")
	}
	waketest.RequireProgram(t, "chromium")
	stateDir := t.TempDir()
	now := time.Now()
	var hosts []inventory.Host
	states := []controller.State{controller.StateReady, controller.StateDegraded, controller.StateBooting,
		controller.StateOff, controller.StateOtherOS, controller.StateUnknown}
	for _, s := range states {
		u, _ := inventory.ParseURL("http://127.0.0.1:1")
		hosts = append(hosts, inventory.Host{Name: "pc-" + string(s), OnDemand: true, OllamaURL: u,
			IdleAfter: inventory.Duration(30 * time.Minute), MinUptime: inventory.Duration(10 * time.Minute)})
	}
	since := now.Add(-3 * time.Minute)
	for _, st := range []idle.State{
		{Host: "pc-ready", IdleSince: &since, LastCheck: now, Phase: idle.PhaseReady, Since: map[string]time.Time{idle.SigProxy: since}},
		{Host: "pc-degraded", LastCheck: now, Phase: idle.PhaseReady, BusyReasons: []string{"proxy: 1 request(s) in flight", "gpu: 87% busy"},
			Failed: []string{idle.SigLogins}, LastError: "wake-on-lan is not armed"},
		{Host: "pc-off", Phase: idle.PhaseOff, LastPoweroff: &since, LastCheck: since},
	} {
		if err := idle.SaveState(stateDir, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(statedir.IdleFile(stateDir, "pc-unknown"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	mib := func(v int64) *int64 { return &v }
	inv := &inventory.Inventory{Serve: inventory.Serve{PageActions: true}, Hosts: hosts}
	release := make(chan struct{})
	d, err := dashboard.New(dashboard.Options{Inventory: inv, StateDir: stateDir, Tracker: activity.NewTracker(nil),
		Status: func(ctx context.Context, hs []*inventory.Host) []controller.HostStatus {
			var out []controller.HostStatus
			for i, h := range hs {
				st := controller.HostStatus{Name: h.Name, State: states[i], Reason: "because " + string(states[i]),
					Since: now.Add(-time.Duration(i) * time.Hour), Checks: []controller.Check{}, GPU: []hostcmd.GPU{}}
				if i < 2 {
					st.Checks = []controller.Check{{Name: "gpu", OK: true, Detail: "RTX 3090"},
						{Name: "container", OK: i == 0, Transient: true, Detail: "starting"},
						{Name: "mount", OK: i == 0, Detail: "read-only <b>NTFS</b>"}}
					st.GPU = []hostcmd.GPU{{Name: "NVIDIA GeForce RTX 3090", MemoryTotalMiB: mib(24576), MemoryUsedMiB: mib(20000),
						UtilizationPct: mib(42)}}
				}
				out = append(out, st)
			}
			return out
		},
		History: func(host string) ([]controller.WakeRecord, error) {
			return []controller.WakeRecord{ // oldest first
				{Host: host, Started: now.Add(-2 * time.Hour), State: controller.StateOff, Woke: true, Reason: "never answered",
					Phases: []controller.PhaseTiming{{Name: "lock", DurationMS: 100}, {Name: "boot", StartMS: 100, DurationMS: 180000}}},
				{Host: host, Started: now.Add(-time.Hour), State: controller.StateReady, Woke: true, ReadyAfterMS: 90000,
					Phases: []controller.PhaseTiming{{Name: "probe", DurationMS: 500}, {Name: "boot", StartMS: 500, DurationMS: 70000},
						{Name: "checks", StartMS: 70500, DurationMS: 19500}, {Name: "pull", StartMS: 90000, DurationMS: 30000}}},
			}, nil
		},
		Wake: func(ctx context.Context, host string) error {
			if host == "pc-off" {
				return errors.New("no magic packet answered")
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer close(release)
	srv := httptest.NewServer(d)
	defer srv.Close()
	for _, h := range []string{"pc-off", "pc-unknown"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/gpuctl/api/wake/"+h, nil)
		req.Header.Set("Origin", srv.URL)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	dom := chromium(t, srv.URL+"/gpuctl/", "--dump-dom")
	for _, s := range states {
		if !strings.Contains(dom, `data-host="pc-`+string(s)+`" data-state="`+string(s)+`"`) {
			t.Errorf("no card for state %s", s)
		}
	}
	if strings.Contains(dom, "<b>NTFS</b>") || !strings.Contains(dom, "read-only &lt;b&gt;NTFS&lt;/b&gt;") {
		t.Error("text from a host was not escaped")
	}
	for _, want := range []string{"Waking…", "Last wake failed: no magic packet answered", "gpu: 87% busy", "logins: unreadable",
		"powered off by gpuctl", "idle state unreadable", "ready in 1 min 30 s", "Booting for"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if out := os.Getenv("GPUCTL_TEST_OUT"); out != "" {
		dir := filepath.Join(out, "status-page")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		screenshots(t, srv.URL+"/gpuctl/", dir, "every-state")
	}
}
