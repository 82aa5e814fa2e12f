package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// soakFigures are gpuctl serve's resources idle, under load and idle again.
type soakFigures struct {
	RSSIdleMiB      float64 `json:"rss_idle_mib"`
	RSSLoadedMiB    float64 `json:"rss_loaded_mib"`
	RSSAfterMiB     float64 `json:"rss_after_idle_mib"`
	GoroutinesIdle  int     `json:"goroutines_idle"`
	GoroutinesLoad  int     `json:"goroutines_loaded"`
	GoroutinesAfter int     `json:"goroutines_after_idle"`
	FDsIdle         int     `json:"fds_idle"`
	FDsLoaded       int     `json:"fds_loaded"`
	FDsAfter        int     `json:"fds_after_idle"`
	HeapInuseLoaded float64 `json:"heap_inuse_loaded_mib"`
	HeapInuseAfter  float64 `json:"heap_inuse_after_idle_mib"`
	HeapReleased    float64 `json:"heap_released_after_idle_mib"`
	Requests        int64   `json:"requests"`
	Errors          int64   `json:"errors"`
	IdleConns       int     `json:"idle_conns"`
	LoadSeconds     float64 `json:"load_s"`
	IdleWait        string  `json:"idle_wait"`
}

type soakOptions struct {
	requests int
	conns    int
	idle     time.Duration
	workers  int
}

// soak starts a fresh gpuctl serve in front of backendAddr, reads its RSS
// (from /proc), goroutines and open fds (from its /metrics) idle; sends
// opts.requests small requests from opts.workers kept-alive clients and
// then holds opts.conns idle keep-alive connections open, and reads them
// again (loaded); closes everything, waits opts.idle and reads them a
// third time, with the heap figures that explain what RSS still holds.
// All load is on loopback, bounded in count and time.
func soak(ctx context.Context, gpuctl, backendAddr, tmp string, o soakOptions) (soakFigures, error) {
	f := soakFigures{IdleWait: o.idle.String()}
	gs, base, gport, err := startSoakServe(ctx, gpuctl, backendAddr, tmp)
	if err != nil {
		return f, err
	}
	defer stop(gs)
	pid := gs.Process.Pid
	settle(ctx, 2*time.Second)
	r, err := readSoak(ctx, base, pid)
	if err != nil {
		return f, err
	}
	f.RSSIdleMiB, f.GoroutinesIdle, f.FDsIdle = r.rss, r.goroutines, r.fds

	// Load: small non-streamed requests from kept-alive clients.
	tr := &http.Transport{MaxIdleConnsPerHost: o.workers, DisableCompression: true}
	var errs atomic.Int64
	f.Requests, f.LoadSeconds = soakLoad(ctx, &http.Client{Transport: tr, Timeout: 30 * time.Second}, base, o, &errs)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	conns = holdIdleConns(ctx, fmt.Sprintf("127.0.0.1:%d", gport), o.conns, &errs)
	f.IdleConns = len(conns)
	f.Errors = errs.Load()
	settle(ctx, time.Second)
	if r, err = readSoak(ctx, base, pid); err != nil {
		return f, err
	}
	f.RSSLoadedMiB, f.GoroutinesLoad, f.FDsLoaded = r.rss, r.goroutines, r.fds
	f.HeapInuseLoaded = r.m["go_memstats_heap_inuse_bytes"] / (1 << 20)

	// Idle again: every client connection closed.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	tr.CloseIdleConnections()
	fmt.Fprintf(os.Stderr, "proxybench: soak: %d requests and %d idle connections done; waiting %s idle\n", f.Requests, f.IdleConns, o.idle)
	settle(ctx, o.idle)
	if ctx.Err() != nil {
		return f, ctx.Err()
	}
	if r, err = readSoak(ctx, base, pid); err != nil {
		return f, err
	}
	f.RSSAfterMiB, f.GoroutinesAfter, f.FDsAfter = r.rss, r.goroutines, r.fds
	f.HeapInuseAfter = r.m["go_memstats_heap_inuse_bytes"] / (1 << 20)
	f.HeapReleased = r.m["go_memstats_heap_released_bytes"] / (1 << 20)
	return f, nil
}

// startSoakServe starts a fresh gpuctl serve in front of backendAddr, with
// its /metrics on a debug listener, and returns it with its base URL and
// port.
func startSoakServe(ctx context.Context, gpuctl, backendAddr, tmp string) (*exec.Cmd, string, int, error) {
	gport, err := freePort()
	if err != nil {
		return nil, "", 0, err
	}
	dport, err := freePort()
	if err != nil {
		return nil, "", 0, err
	}
	dir := filepath.Join(tmp, "soak")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", 0, err
	}
	inv := fmt.Sprintf("state_dir = %q\n[serve]\nlisten = \"127.0.0.1:%d\"\ndebug_listen = \"127.0.0.1:%d\"\nmax_in_flight = 1024\n"+
		"[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\nollama_url = \"http://%s\"\n", filepath.Join(dir, "state"), gport, dport, backendAddr)
	base := fmt.Sprintf("http://127.0.0.1:%d", gport)
	gs, err := startServe(ctx, gpuctl, dir, inv, base)
	return gs, base, gport, err
}

// soakReading is one reading of serve's resources: RSS from /proc, the
// rest from its /metrics.
type soakReading struct {
	rss             float64
	goroutines, fds int
	m               map[string]float64
}

func readSoak(ctx context.Context, base string, pid int) (soakReading, error) {
	m, err := scrapeMetrics(ctx, base+"/metrics")
	if err != nil {
		return soakReading{}, err
	}
	return soakReading{rss: rssMiB(pid), goroutines: int(m["go_goroutines"]), fds: int(m["process_open_fds"]), m: m}, nil
}

// soakLoad sends o.requests small non-streamed requests to base from
// o.workers concurrent clients and returns how many it sent and how long
// it took; failures count in errs.
func soakLoad(ctx context.Context, client *http.Client, base string, o soakOptions, errs *atomic.Int64) (int64, float64) {
	body := []byte(`{"model":"tiny","prompt":"hello","stream":false}`)
	var sent atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() {
			for sent.Add(1) <= int64(o.requests) && ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/generate", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	loadSeconds := time.Since(start).Seconds()
	return min(sent.Load(), int64(o.requests)), loadSeconds
}

// holdIdleConns opens up to n idle keep-alive connections to addr: each
// sends one request, reads the answer and stays open. Failures count in
// errs; a failed dial ends it.
func holdIdleConns(ctx context.Context, addr string, n int, errs *atomic.Int64) []net.Conn {
	var conns []net.Conn
	d := net.Dialer{Timeout: 5 * time.Second}
	for range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			errs.Add(1)
			break
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			errs.Add(1)
			continue
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			errs.Add(1)
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		_ = c.SetDeadline(time.Time{})
	}
	return conns
}

// settle waits d, or until ctx ends.
func settle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// scrapeMetrics reads the unlabelled series of a Prometheus text page
// (scraping on a fresh connection, closed after).
func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return nil, fmt.Errorf("scrape %s: HTTP %s", url, res.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || strings.Contains(l, "{") {
			continue
		}
		name, v, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = x
		}
	}
	if _, ok := out["go_goroutines"]; !ok {
		return nil, errors.New("scrape: /metrics has no go_goroutines")
	}
	return out, sc.Err()
}

func reportSoak(w io.Writer, f soakFigures) {
	fmt.Fprintf(w, "SOAK gpuctl serve: %d requests in %.1f s (%d errors), then %d idle keep-alive connections; then all closed and %s idle\n",
		f.Requests, f.LoadSeconds, f.Errors, f.IdleConns, f.IdleWait)
	fmt.Fprintf(w, "  RSS        idle %.1f MiB, loaded %.1f MiB, idle again %.1f MiB (%.2fx idle; target <= 1.50x)\n",
		f.RSSIdleMiB, f.RSSLoadedMiB, f.RSSAfterMiB, f.RSSAfterMiB/f.RSSIdleMiB)
	fmt.Fprintf(w, "  goroutines idle %d, loaded %d, idle again %d (target: back to %d)\n", f.GoroutinesIdle, f.GoroutinesLoad, f.GoroutinesAfter, f.GoroutinesIdle)
	fmt.Fprintf(w, "  open fds   idle %d, loaded %d, idle again %d\n", f.FDsIdle, f.FDsLoaded, f.FDsAfter)
	fmt.Fprintf(w, "  Go heap in use loaded %.1f MiB, idle again %.1f MiB; released to the OS %.1f MiB\n", f.HeapInuseLoaded, f.HeapInuseAfter, f.HeapReleased)
}
