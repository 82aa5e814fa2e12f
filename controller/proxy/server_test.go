package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/testlog"
)

// TestRunDrainsAndPublishes: Run publishes serve.json and activity for idle
// shutdown, serves the live activity on the same listener; on ctx's end it
// stops accepting but lets a running stream finish, then removes
// serve.json and saves the last request's end.
func TestRunDrainsAndPublishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		mn := newMemNet()
		server := &fakeOllama{name: "server", models: []string{"tiny:latest=1"}, handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			for i := range 10 {
				fmt.Fprintf(w, "{\"i\":%d}\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(time.Second)
			}
			fmt.Fprintln(w, `{"done":true}`)
		}}
		stopServer := mn.serve("server:11434", &http.Server{Handler: server})
		defer stopServer()
		p, err := New(Options{
			Inventory: testInventory(t, "http://server:11434", "http://pc:11434"),
			Backends:  newFakeBackends(), Dial: mn.Dial, StateDir: dir, Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		ln := mn.listen("proxy:80")
		ctx, cancel := context.WithCancel(t.Context())
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx, ln) }()
		client := mn.client()
		defer client.CloseIdleConnections()

		res, err := post(t.Context(), client, "http://proxy:80/api/chat", `{"model":"tiny"}`)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(res.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		// The live activity, on the proxy's own listener.
		ares, err := client.Get("http://proxy:80" + activity.Path)
		if err != nil {
			t.Fatal(err)
		}
		var snap activity.Snapshot
		json.NewDecoder(ares.Body).Decode(&snap)
		ares.Body.Close()
		if snap.Hosts["server"].InFlight != 1 {
			t.Errorf("activity during the stream: %+v, want server in flight 1", snap.Hosts)
		}
		time.Sleep(time.Second) // Publish runs its first save
		if _, err := os.Stat(filepath.Join(dir, "serve.json")); err != nil {
			t.Errorf("serve.json not published: %v", err)
		}

		cancel() // shutdown begins mid-stream
		rest := new(bytes.Buffer)
		if _, err := rest.ReadFrom(br); err != nil {
			t.Fatalf("stream cut by shutdown: %v", err)
		}
		res.Body.Close()
		if n := strings.Count(rest.String(), "\n"); n != 10 {
			t.Errorf("after shutdown began the stream delivered %d more lines, want 10", n)
		}
		if err := <-runErr; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "serve.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("serve.json left behind: %v", err)
		}
		rd, err := activity.Read(t.Context(), dir, nil)
		if err != nil || rd.State != activity.Stopped || rd.Snapshot.Hosts["server"].LastEnd.IsZero() {
			t.Errorf("saved activity %+v, %v; want stopped with server's last end", rd, err)
		}
		if _, err := client.Get("http://proxy:80/healthz"); err == nil {
			t.Error("the proxy still accepts after shutdown")
		}
		if _, err := os.Stat(filepath.Join(dir, "catalogue.json")); err != nil {
			t.Errorf("the refresh loop did not save the catalogue: %v", err)
		}
	})
}

// TestMetricsHealthzAndLogs: /metrics carries the request, in-flight, wake
// and backend-state series; /healthz answers; the log line has method,
// path, model, host, status and duration, and never the prompt (S6).
func TestMetricsHealthzAndLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs testlog.Buffer
		fb := newFakeBackends()
		fb.wakeTime = 30 * time.Second
		server := &fakeOllama{name: "server", models: []string{"tiny:latest=1"}}
		b := newBubble(t, server, &fakeOllama{name: "pc"}, fb, func(o *Options) {
			o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
		defer b.close()
		const canary = "CANARY-PROMPT-7f3a"
		if res, err := b.client.Get("http://proxy:80/api/tags"); err == nil {
			readAll(t, res)
		}
		for _, body := range []string{
			`{"model":"tiny","prompt":"` + canary + `"}`,
			`{"model":"big","messages":[{"role":"user","content":"` + canary + `"}]}`,
		} {
			res, err := post(t.Context(), b.client, "http://proxy:80/api/generate", body)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("%v %v", res, err)
			}
			readAll(t, res)
		}
		res, err := b.client.Get("http://proxy:80/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m := readAll(t, res)
		for _, want := range []string{
			`gpuctl_proxy_requests_total{code="200",host="server",model="tiny:latest"} 1`,
			`gpuctl_proxy_requests_total{code="200",host="pc",model="other"} 1`,
			`gpuctl_proxy_in_flight{host="pc"} 0`,
			`gpuctl_proxy_wakes_total{host="pc",result="ok"} 1`,
			`gpuctl_proxy_wake_duration_seconds_sum{host="pc"} 30`,
			`gpuctl_proxy_backend_up{host="pc"} 1`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		res, err = b.client.Get("http://proxy:80/healthz")
		if err != nil {
			t.Fatal(err)
		}
		if h := readAll(t, res); res.StatusCode != 200 || !strings.Contains(h, `"status":"ok"`) {
			t.Errorf("/healthz: %d %s", res.StatusCode, h)
		}
		out := logs.String()
		if strings.Contains(out, canary) {
			t.Errorf("the prompt leaked into the logs:\n%s", out)
		}
		for _, want := range []string{`"method":"POST"`, `"path":"/api/generate"`, `"model":"big"`, `"host":"pc"`, `"status":200`, `"duration":`} {
			if !strings.Contains(out, want) {
				t.Errorf("request log lacks %s:\n%s", want, out)
			}
		}
	})
}
