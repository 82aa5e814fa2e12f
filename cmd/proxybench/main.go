// Command proxybench measures gpuctl serve's overhead (P1) and memory (P4)
// on loopback, against two baselines measured in the same run: the
// streaming backend itself (direct) and nginx with proxy_buffering off.
//
//	go build -o /tmp/gpuctl ./cmd/gpuctl
//	go run ./cmd/proxybench -gpuctl /tmp/gpuctl
//
// For each of the three columns it measures: latency of small non-streamed
// requests (p50/p99), latency of each streamed NDJSON chunk from the moment
// the backend wrote it (p50/p99), and chunk throughput with 1 and 64
// concurrent streams. It prints added latency vs direct and throughput
// ratios vs direct and vs nginx, and gpuctl serve's RSS idle and at 64
// streams. The backend runs in its own process; everything is bounded in
// time (about 30 s in all). Then the soak (soak.go): a fresh gpuctl serve's
// RSS, goroutines and open fds idle, after 100k requests and 2,000 idle
// keep-alive connections, and after 5 minutes idle again (-soak-idle).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	backend := flag.Bool("backend", false, "run as the streaming backend (internal)")
	gpuctl := flag.String("gpuctl", "", "the built gpuctl binary to measure (required)")
	nginx := flag.String("nginx", "nginx", "the nginx binary for the baseline column (\"\" skips it)")
	phase := flag.Duration("phase", 1500*time.Millisecond, "how long each throughput and latency phase runs")
	streams := flag.Int("streams", 64, "concurrent streams for the many-streams throughput")
	jsonOut := flag.String("json", "", "also write the figures as JSON to `FILE`")
	var so soakOptions
	flag.IntVar(&so.requests, "soak-requests", 100000, "soak: small requests sent through a fresh gpuctl serve (0 skips the soak)")
	flag.IntVar(&so.conns, "soak-conns", 2000, "soak: idle keep-alive connections held open after the requests")
	flag.IntVar(&so.workers, "soak-workers", 64, "soak: concurrent clients sending the requests")
	flag.DurationVar(&so.idle, "soak-idle", 5*time.Minute, "soak: how long serve stays idle before its resources are read again")
	soakOnly := flag.Bool("soak-only", false, "run only the soak")
	flag.Parse()
	if *backend {
		runBackend()
		return
	}
	if *gpuctl == "" {
		fmt.Fprintln(os.Stderr, "proxybench: -gpuctl PATH is required (go build -o /tmp/gpuctl ./cmd/gpuctl)")
		os.Exit(2)
	}
	if err := run(*gpuctl, *nginx, *phase, *streams, *jsonOut, so, *soakOnly); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

// ---- backend ----

// runBackend serves a fake Ollama: POST /api/generate answers one small
// JSON object, or with ?n=N a stream of N NDJSON chunks (?gap=DUR between
// them), each carrying the wall-clock nanosecond it was written.
func runBackend() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		if n == 0 {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Content-Length", "60")
			_, _ = io.WriteString(w, `{"model":"tiny","response":"ok","done":true,"pad":"xxxxxxx"}`[:59]+"\n")
			return
		}
		gap, _ := time.ParseDuration(q.Get("gap"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		buf := make([]byte, 0, 128)
		for i := 0; i < n; i++ {
			if gap > 0 {
				time.Sleep(gap)
			}
			buf = buf[:0]
			buf = append(buf, `{"model":"tiny","t":`...)
			buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
			buf = append(buf, `,"response":" token","done":false}`+"\n"...)
			if _, err := w.Write(buf); err != nil {
				return
			}
			fl.Flush()
		}
		_, _ = io.WriteString(w, `{"model":"tiny","t":0,"done":true}`+"\n")
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	_ = srv.Serve(ln)
}

// ---- harness ----

type column struct {
	Name       string  `json:"name"`
	ReqP50     float64 `json:"request_p50_ms"`
	ReqP99     float64 `json:"request_p99_ms"`
	ChunkP50   float64 `json:"chunk_p50_ms"`
	ChunkP99   float64 `json:"chunk_p99_ms"`
	Thr1       float64 `json:"chunks_per_s_1_stream"`
	ThrN       float64 `json:"chunks_per_s_n_streams"`
	Requests   int     `json:"requests"`
	Chunks     int     `json:"latency_chunks"`
	Errors     int64   `json:"errors"`
	ServerRSS  float64 `json:"-"`
	skipped    string
	base       string
	peakRSSMiB float64
}

type results struct {
	Columns    []column `json:"columns"`
	Streams    int      `json:"streams"`
	RSSIdleMiB float64  `json:"gpuctl_rss_idle_mib"`
	RSSPeakMiB float64  `json:"gpuctl_rss_n_streams_mib"`
	CPUs       int      `json:"cpus"`
	// Soak is gpuctl serve's RSS, goroutines and fds idle, loaded and
	// idle again (absent with -soak-requests 0).
	Soak *soakFigures `json:"soak,omitempty"`
}

func run(gpuctl, nginx string, phase time.Duration, streams int, jsonOut string, so soakOptions, soakOnly bool) error {
	tmp, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	limit := 2 * time.Minute
	if so.requests > 0 {
		// The soak: load (a minute or so) plus the idle wait.
		limit += so.idle + 5*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()

	be, backendAddr, err := startBackend(ctx)
	if err != nil {
		return err
	}
	defer stop(be)
	if soakOnly {
		return runSoakOnly(ctx, gpuctl, backendAddr, tmp, jsonOut, so)
	}
	gs, gURL, err := startBenchServe(ctx, gpuctl, backendAddr, tmp)
	if err != nil {
		return err
	}
	defer stop(gs)
	ngx, ngxCmd, err := nginxColumn(ctx, nginx, tmp, backendAddr)
	if err != nil {
		return err
	}
	if ngxCmd != nil {
		defer stop(ngxCmd)
	}
	cols := []column{{Name: "direct", base: "http://" + backendAddr}, ngx, {Name: "gpuctl serve", base: gURL}}

	res := results{Streams: streams, CPUs: numCPU()}
	time.Sleep(300 * time.Millisecond)
	res.RSSIdleMiB = rssMiB(gs.Process.Pid)
	if err := measureColumns(ctx, &res, cols, phase, streams, gs.Process.Pid); err != nil {
		return err
	}
	report(os.Stdout, res)
	stop(gs)
	if so.requests > 0 {
		f, err := soak(ctx, gpuctl, backendAddr, tmp, so)
		if err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		reportSoak(os.Stdout, f)
		res.Soak = &f
	}
	return writeJSON(jsonOut, res)
}

// startBackend starts this program as the backend (-backend) and reads the
// address it listens on.
func startBackend(ctx context.Context) (*exec.Cmd, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	be := exec.CommandContext(ctx, self, "-backend")
	be.Stderr = os.Stderr
	out, _ := be.StdoutPipe()
	if err := be.Start(); err != nil {
		return nil, "", fmt.Errorf("start backend: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop(be)
		return nil, "", fmt.Errorf("backend did not report its address: %w", err)
	}
	return be, strings.TrimSpace(line), nil
}

func runSoakOnly(ctx context.Context, gpuctl, backendAddr, tmp, jsonOut string, so soakOptions) error {
	if so.requests <= 0 {
		return errors.New("-soak-only with -soak-requests 0: nothing to run")
	}
	f, err := soak(ctx, gpuctl, backendAddr, tmp, so)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	reportSoak(os.Stdout, f)
	return writeJSON(jsonOut, results{Soak: &f})
}

// startBenchServe starts gpuctl serve, with a one-host inventory pointing at
// the backend, and returns it with its base URL.
func startBenchServe(ctx context.Context, gpuctl, backendAddr, tmp string) (*exec.Cmd, string, error) {
	gport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	inv := fmt.Sprintf("state_dir = %q\n[serve]\nlisten = \"127.0.0.1:%d\"\nmax_in_flight = 1024\n"+
		"[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\nollama_url = \"http://%s\"\n", filepath.Join(tmp, "state"), gport, backendAddr)
	gURL := fmt.Sprintf("http://127.0.0.1:%d", gport)
	gs, err := startServe(ctx, gpuctl, tmp, inv, gURL)
	return gs, gURL, err
}

// startServe writes inv as dir/gpuctl.toml, starts gpuctl serve on it (its
// state in dir/state, logging warnings only) and waits until base answers
// /healthz.
func startServe(ctx context.Context, gpuctl, dir, inv, base string) (*exec.Cmd, error) {
	cfg := filepath.Join(dir, "gpuctl.toml")
	if err := os.WriteFile(cfg, []byte(inv), 0o600); err != nil {
		return nil, err
	}
	gs := exec.CommandContext(ctx, gpuctl, "--config", cfg, "serve")
	gs.Env = append(os.Environ(), "GPUCTL_LOG=warn", "GPUCTL_STATE_DIR="+filepath.Join(dir, "state"))
	gs.Stderr = os.Stderr
	if err := gs.Start(); err != nil {
		return nil, fmt.Errorf("start gpuctl serve: %w", err)
	}
	if err := waitHTTP(ctx, base+"/healthz"); err != nil {
		stop(gs)
		return nil, fmt.Errorf("gpuctl serve did not come up: %w", err)
	}
	return gs, nil
}

// nginxColumn is the nginx baseline column: nginx started in front of the
// backend (its command returned, to stop), or the reason it is skipped.
func nginxColumn(ctx context.Context, nginx, tmp, backendAddr string) (column, *exec.Cmd, error) {
	ngx := column{Name: "nginx"}
	if nginx == "" {
		ngx.skipped = "skipped (-nginx \"\")"
		return ngx, nil, nil
	}
	path, err := exec.LookPath(nginx)
	if err != nil {
		ngx.skipped = "nginx not installed (apt-get install nginx-light)"
		return ngx, nil, nil
	}
	nport, err := freePort()
	if err != nil {
		return ngx, nil, err
	}
	cmd, err := startNginx(ctx, path, tmp, backendAddr, nport)
	if err != nil {
		ngx.skipped = err.Error()
		return ngx, nil, nil
	}
	ngx.base = fmt.Sprintf("http://127.0.0.1:%d", nport)
	if err := waitHTTP(ctx, ngx.base+"/api/generate"); err != nil {
		ngx.skipped = "nginx did not come up: " + err.Error()
	}
	return ngx, cmd, nil
}

// measureColumns measures every column not skipped, sampling gpuctl
// serve's (servePid's) RSS during its many-streams phase, and stores them
// in res.
func measureColumns(ctx context.Context, res *results, cols []column, phase time.Duration, streams, servePid int) error {
	for i := range cols {
		c := &cols[i]
		if c.skipped != "" {
			continue
		}
		var sampler func() float64
		if c.Name == "gpuctl serve" {
			sampler = func() float64 { return rssMiB(servePid) }
		}
		if err := measure(ctx, c, phase, streams, sampler); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		if c.Name == "gpuctl serve" {
			res.RSSPeakMiB = c.peakRSSMiB
		}
	}
	res.Columns = cols
	return nil
}

func writeJSON(path string, res results) error {
	if path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func measure(ctx context.Context, c *column, phase time.Duration, streams int, rss func() float64) error {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	p := prober{ctx: ctx, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: c.base}
	// Warm up connections and code paths.
	if err := p.warmUp(200); err != nil {
		return err
	}

	lat, err := p.requestLatency(phase)
	if err != nil {
		return err
	}
	c.Requests = len(lat)
	c.ReqP50, c.ReqP99 = pct(lat, 50), pct(lat, 99)

	clat, err := p.chunkLatency(phase)
	if err != nil {
		return err
	}
	c.Chunks = len(clat)
	c.ChunkP50, c.ChunkP99 = pct(clat, 50), pct(clat, 99)

	var errs atomic.Int64
	c.Thr1 = p.throughput(phase, 1, &errs)
	peak := samplePeak(rss)
	c.ThrN = p.throughput(phase, streams, &errs)
	c.peakRSSMiB = peak()
	c.Errors = errs.Load()
	return nil
}

// prober sends the measured requests to one column.
type prober struct {
	ctx    context.Context
	client *http.Client
	base   string
}

var probeBody = []byte(`{"model":"tiny","prompt":"hello","stream":true}`)

// do posts the probe to base/api/generate with the query q.
func (p prober) do(q string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.base+"/api/generate"+q, bytes.NewReader(probeBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return p.client.Do(req)
}

// warmUp sends n small requests.
func (p prober) warmUp(n int) error {
	for range n {
		res, err := p.do("")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	return nil
}

// requestLatency times sequential small requests on a kept-alive conn for
// phase.
func (p prober) requestLatency(phase time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	end := time.Now().Add(phase)
	for time.Now().Before(end) {
		t0 := time.Now()
		res, err := p.do("")
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return nil, fmt.Errorf("HTTP %s", res.Status)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// chunkLatency reads paced streams for phase, each chunk timed from its
// write.
func (p prober) chunkLatency(phase time.Duration) ([]time.Duration, error) {
	var clat []time.Duration
	end := time.Now().Add(phase)
	for time.Now().Before(end) {
		res, err := p.do("?n=50&gap=2ms")
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			now := time.Now().UnixNano()
			var v struct{ T int64 }
			if json.Unmarshal(sc.Bytes(), &v) == nil && v.T > 0 {
				clat = append(clat, time.Duration(now-v.T))
			}
		}
		res.Body.Close()
	}
	return clat, nil
}

// throughput reads unpaced streams of 2000 chunks, back to back, on n
// concurrent streams for phase, and returns the chunks read per second;
// failures count in errs.
func (p prober) throughput(phase time.Duration, n int, errs *atomic.Int64) float64 {
	var chunks atomic.Int64
	var wg sync.WaitGroup
	stopAt := time.Now().Add(phase)
	start := time.Now()
	for range n {
		wg.Go(func() {
			for time.Now().Before(stopAt) {
				res, err := p.do("?n=2000")
				if err != nil {
					errs.Add(1)
					return
				}
				k := countLines(res.Body, errs)
				res.Body.Close()
				chunks.Add(k)
			}
		})
	}
	wg.Wait()
	return float64(chunks.Load()) / time.Since(start).Seconds()
}

// countLines reads r to its end and returns the complete lines it held; a
// read error other than EOF counts in errs.
func countLines(r io.Reader, errs *atomic.Int64) int64 {
	br := bufio.NewReaderSize(r, 64<<10)
	var k int64
	for {
		l, err := br.ReadSlice('\n')
		if len(l) > 0 && l[len(l)-1] == '\n' {
			k++
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				errs.Add(1)
			}
			return k
		}
	}
}

// samplePeak samples rss every 50 ms until the returned func is called,
// which returns the highest sample (0 when rss is nil).
func samplePeak(rss func() float64) func() float64 {
	var peak float64
	done := make(chan struct{})
	var sw sync.WaitGroup
	if rss != nil {
		sw.Go(func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					peak = max(peak, rss())
				}
			}
		})
	}
	return func() float64 {
		close(done)
		sw.Wait()
		return peak
	}
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return float64(s[i]) / float64(time.Millisecond)
}

func report(w io.Writer, r results) {
	direct, ngx, g := r.Columns[0], r.Columns[1], r.Columns[2]
	fmt.Fprintf(w, "P1 proxy overhead on loopback (%d CPUs; backend, client and proxy share them)\n", r.CPUs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	ms := func(v float64) string { return fmt.Sprintf("%.3f", v) }
	add := func(v, base float64) string { return fmt.Sprintf("%+.3f", v-base) }
	na := ngx.skipped != ""
	ncol := func(f func(column) string) string {
		if na {
			return "n/a"
		}
		return f(ngx)
	}
	fmt.Fprintln(tw, "metric\tdirect\tnginx\tgpuctl\tnginx added\tgpuctl added\t")
	row := func(name string, get func(column) float64) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", name, ms(get(direct)),
			ncol(func(c column) string { return ms(get(c)) }), ms(get(g)),
			ncol(func(c column) string { return add(get(c), get(direct)) }), add(get(g), get(direct)))
	}
	row("request p50 (ms)", func(c column) float64 { return c.ReqP50 })
	row("request p99 (ms)", func(c column) float64 { return c.ReqP99 })
	row("chunk p50 (ms)", func(c column) float64 { return c.ChunkP50 })
	row("chunk p99 (ms)", func(c column) float64 { return c.ChunkP99 })
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "throughput (chunks/s)\tdirect\tnginx\tgpuctl\tgpuctl/direct\tgpuctl/nginx\tnginx/direct\t")
	trow := func(name string, get func(column) float64) {
		ratio := func(a, b float64) string { return fmt.Sprintf("%.2fx", a/b) }
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.0f\t%s\t%s\t%s\t\n", name, get(direct),
			ncol(func(c column) string { return fmt.Sprintf("%.0f", get(c)) }), get(g), ratio(get(g), get(direct)),
			ncol(func(c column) string { return ratio(get(g), get(c)) }),
			ncol(func(c column) string { return ratio(get(c), get(direct)) }))
	}
	trow("1 stream", func(c column) float64 { return c.Thr1 })
	trow(fmt.Sprintf("%d streams", r.Streams), func(c column) float64 { return c.ThrN })
	tw.Flush()
	if na {
		fmt.Fprintf(w, "nginx column: %s\n", ngx.skipped)
	}
	fmt.Fprintf(w, "samples: %d/%d/%d requests, %d/%d/%d chunks timed; errors %d/%d/%d\n",
		direct.Requests, ngx.Requests, g.Requests, direct.Chunks, ngx.Chunks, g.Chunks, direct.Errors, ngx.Errors, g.Errors)
	fmt.Fprintf(w, "targets: added p50 <= 0.3 ms, p99 <= 1 ms, throughput >= 1.0x nginx\n")
	fmt.Fprintf(w, "P4 gpuctl serve RSS: idle %.1f MiB, at %d streams %.1f MiB (targets <= 25 MB, <= 40 MB)\n", r.RSSIdleMiB, r.Streams, r.RSSPeakMiB)
}

func startNginx(ctx context.Context, bin, tmp, backend string, port int) (*exec.Cmd, error) {
	dir := filepath.Join(tmp, "nginx")
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o777); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[2]s; keepalive 256; }
  server {
    listen 127.0.0.1:%[3]d;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`, dir, backend, port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", path, "-g", "daemon off;")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() {
		// Surface a start failure (bad config, port taken) in the report.
		_ = cmd.Wait()
		if s := strings.TrimSpace(stderr.String()); s != "" {
			fmt.Fprintln(os.Stderr, "nginx:", s)
		}
	}()
	return cmd, nil
}

func stop(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = c.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.Process.Kill()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"model":"tiny"}`))
		if strings.HasSuffix(url, "/healthz") {
			req.Method = http.MethodGet
		}
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("HTTP %s", res.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rssMiB reads VmRSS of pid from /proc (0 when unreadable).
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}
