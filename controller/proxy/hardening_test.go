package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// rawRequest sends raw bytes to the bubble's proxy on a fresh in-memory
// connection and returns the connection and a reader on it.
func rawRequest(t *testing.T, b *bubble, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := b.net.Dial(t.Context(), "tcp", "proxy:80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() { _, _ = io.WriteString(c, req) }()
	return c, bufio.NewReader(c)
}

// readResponse reads one response, failing the test if none comes within
// limit (fake time).
func readResponse(t *testing.T, br *bufio.Reader, limit time.Duration) (*http.Response, string) {
	t.Helper()
	type got struct {
		res  *http.Response
		body string
		err  error
	}
	ch := make(chan got, 1)
	go func() {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			ch <- got{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ch <- got{res: res, body: string(b)}
	}()
	select {
	case g := <-ch:
		if g.err != nil {
			t.Fatalf("no response: %v", g.err)
		}
		return g.res, g.body
	case <-time.After(limit):
		t.Fatalf("no response within %v", limit)
	}
	return nil, ""
}

// expectClosed checks that the proxy closed the connection after its
// answer (within limit, fake time).
func expectClosed(t *testing.T, br *bufio.Reader, limit time.Duration) {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		_, err := br.ReadByte()
		ch <- err
	}()
	select {
	case err := <-ch:
		if err == nil {
			t.Error("the connection carried more bytes after the answer; want it closed")
		}
	case <-time.After(limit):
		t.Errorf("the connection is still open %v after the answer", limit)
	}
}

// Item 7: only the methods Ollama's API uses are forwarded; the others get
// 405 from serve itself and never reach a backend.
func TestMethodsNotForwarded(t *testing.T) {
	for _, m := range []string{"TRACE", "CONNECT", "PUT", "PATCH", "PROPFIND", "FOO"} {
		t.Run(m, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				server := &fakeOllama{name: "server"}
				b := newBubble(t, server, nil, newFakeBackends(), nil)
				defer b.close()
				target := "/api/chat"
				if m == "CONNECT" {
					target = "server:11434"
				}
				_, br := rawRequest(t, b, m+" "+target+" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
				res, body := readResponse(t, br, time.Minute)
				if res.StatusCode != http.StatusMethodNotAllowed {
					t.Errorf("%s: status %d (%s), want 405", m, res.StatusCode, body)
				}
				if a := res.Header.Get("Allow"); a != "GET, HEAD, POST, DELETE, OPTIONS" {
					t.Errorf("%s: Allow %q", m, a)
				}
				if n := server.hits.Load(); n != 0 {
					t.Errorf("%s forwarded to the backend (%d hits)", m, n)
				}
			})
		})
	}
	// The allowed ones still are.
	synctest.Test(t, func(t *testing.T) {
		server := &fakeOllama{name: "server"}
		b := newBubble(t, server, nil, newFakeBackends(), nil)
		defer b.close()
		for _, m := range []string{"GET", "HEAD", "POST", "DELETE", "OPTIONS"} {
			req, _ := http.NewRequestWithContext(t.Context(), m, "http://proxy:80/api/delete", strings.NewReader(`{"model":"tiny"}`))
			res, err := b.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, res)
			if res.StatusCode != 200 {
				t.Errorf("%s: %d, want 200 from the backend", m, res.StatusCode)
			}
		}
		if n := server.hits.Load(); n != 5 {
			t.Errorf("backend hits %d, want 5", n)
		}
	})
}

// Item 7: a path with dot segments is refused as it is, never cleaned into
// a redirect nor forwarded.
func TestDotSegmentsRefused(t *testing.T) {
	for _, path := range []string{"/api/../x", "/api/%2e%2e/metrics", "/v1/./models", "/api/tags/..", "/api/x/../../healthz"} {
		t.Run(path, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				server := &fakeOllama{name: "server"}
				b := newBubble(t, server, nil, newFakeBackends(), nil)
				defer b.close()
				_, br := rawRequest(t, b, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
				res, body := readResponse(t, br, time.Minute)
				if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
					t.Errorf("status %d Location %q (%s), want 400 and no redirect", res.StatusCode, res.Header.Get("Location"), body)
				}
				if !strings.Contains(body, "dot segments") {
					t.Errorf("body %s does not say why", body)
				}
				if n := server.hits.Load(); n != 0 {
					t.Errorf("forwarded to the backend (%d hits)", n)
				}
			})
		})
	}
}

// Item 4: malformed chunked framing is a 400 (and the connection closes),
// not a 200 with an empty body; nothing reaches a backend.
func TestMalformedChunkedIs400(t *testing.T) {
	for name, chunk := range map[string]string{
		"bad size": "zz\r\n{}\r\n0\r\n\r\n",
		"overflow": "fffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
		"negative": "-1\r\n{}\r\n0\r\n\r\n",
		"no crlf":  "2\r\n{}XX0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				server := &fakeOllama{name: "server"}
				b := newBubble(t, server, nil, newFakeBackends(), nil)
				defer b.close()
				_, br := rawRequest(t, b, "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk)
				res, body := readResponse(t, br, time.Minute)
				if res.StatusCode != http.StatusBadRequest {
					t.Errorf("status %d (%q), want 400", res.StatusCode, body)
				}
				if !strings.Contains(body, "chunked") {
					t.Errorf("body %q does not say what was wrong", body)
				}
				expectClosed(t, br, time.Minute)
				if n := server.hits.Load(); n != 0 {
					t.Errorf("forwarded to the backend (%d hits)", n)
				}
			})
		})
	}
}

// Item 2: a body trickled past the body-read timeout is answered 408 and
// the connection closed, instead of nothing and a connection left open.
func TestTrickledBodyGets408(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		server := &fakeOllama{name: "server"}
		b := newBubble(t, server, nil, newFakeBackends(), nil)
		defer b.close()
		_, br := rawRequest(t, b, "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
		start := time.Now()
		res, body := readResponse(t, br, bodyReadTimeout+time.Minute)
		if res.StatusCode != http.StatusRequestTimeout {
			t.Errorf("status %d (%s), want 408", res.StatusCode, body)
		}
		if d := time.Since(start); d < bodyReadTimeout {
			t.Errorf("answered after %v, before the %v body-read timeout", d, bodyReadTimeout)
		}
		if !strings.Contains(body, "request body") {
			t.Errorf("body %s does not say what timed out", body)
		}
		expectClosed(t, br, time.Minute)
		if n := server.hits.Load(); n != 0 {
			t.Errorf("forwarded to the backend (%d hits)", n)
		}
	})
}

// Item 1: a client that sends a request for a long stream, reads the
// headers and then never reads again loses its stream once writes make no
// progress for WriteStall: its in-flight slot, its backend request and the
// in-flight count come back, so with max_in_flight = 1 the next request is
// served. Real loopback TCP with a small receive buffer (in a synctest
// bubble ReverseProxy's flush timer waits on a mutex, which stops fake
// time); the stall limit is shortened, and the test waits for events, not
// for time.
func TestClientThatNeverReadsLosesItsSlot(t *testing.T) {
	canceled := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/api/generate" {
			writeJSON(w, 200, map[string]bool{"done": true})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		line := `{"message":{"content":"` + strings.Repeat("x", 32<<10) + `"}}` + "\n"
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, line); err != nil {
				break
			}
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
		close(canceled)
	}))
	defer backend.Close()
	inv := testInventory(t, backend.URL, "http://127.0.0.1:1")
	inv.Serve.MaxInFlight = 1
	finished := make(chan int, 4)
	p := newProxy(t, Options{Inventory: inv, Backends: newFakeBackends(), WriteStall: 300 * time.Millisecond})
	p.finishHook = func(status int) { finished <- status }
	ts := serveProxy(t, p)

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.DialContext(t.Context(), "tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"model":"tiny","messages":[{"role":"user","content":"write a long story"}]}`
	fmt.Fprintf(c, "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	// The client now stops reading: the socket buffers fill, and writes
	// to it stop making progress.
	select {
	case <-canceled:
	case <-time.After(30 * time.Second):
		t.Fatal("the backend request was not cancelled 30 s after the client stopped reading (stall limit 300 ms)")
	}
	select {
	case st := <-finished:
		if st != 200 {
			t.Logf("logged status %d", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled request never finished")
	}
	if n := p.Tracker().InFlight("server"); n != 0 {
		t.Errorf("in flight after the client stopped reading = %d, want 0", n)
	}
	if n := len(p.sem); n != 0 {
		t.Errorf("%d in-flight slots still held", n)
	}
	res2, err := post(t.Context(), testClient(t), ts.URL+"/api/generate", `{"model":"tiny"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, res2); res2.StatusCode != 200 {
		t.Errorf("next request: %d %s, want 200", res2.StatusCode, got)
	}
}

// Item 5: a stream still running when the drain timeout passes ends with
// an error record in its own format (as a backend death does), and a
// clean end of the response, instead of a truncated body.
func TestDrainCutEndsStreamWithError(t *testing.T) {
	for _, kind := range []string{"ndjson", "sse"} {
		t.Run(kind, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := newMemNet()
				server := &fakeOllama{name: "server", handle: func(w http.ResponseWriter, r *http.Request) {
					if kind == "sse" {
						w.Header().Set("Content-Type", "text/event-stream")
					} else {
						w.Header().Set("Content-Type", "application/x-ndjson")
					}
					for i := range 100 {
						if kind == "sse" {
							fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
						} else {
							fmt.Fprintf(w, "{\"i\":%d}\n", i)
						}
						w.(http.Flusher).Flush()
						select {
						case <-time.After(time.Second):
						case <-r.Context().Done():
							return
						}
					}
				}}
				stopServer := mn.serve("server:11434", &http.Server{Handler: server})
				defer stopServer()
				p, err := New(Options{
					Inventory: testInventory(t, "http://server:11434", "http://pc:11434"),
					Backends:  newFakeBackends(), Dial: mn.Dial, Logger: testLogger(t), DrainTimeout: 3 * time.Second,
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
				path := "/api/chat"
				if kind == "sse" {
					path = "/v1/chat/completions"
				}
				res, err := post(t.Context(), client, "http://proxy:80"+path, `{"model":"tiny","stream":true}`)
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(1500 * time.Millisecond)
				cancel() // shutdown begins mid-stream; the stream outlasts the drain
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					t.Fatalf("stream cut without a clean end: %v (got %q)", err, body)
				}
				want := `{"error":"gpuctl: gpuctl serve is shutting down: the request was cut after the 3s drain; send it again"}` + "\n"
				if kind == "sse" {
					want = `data: {"error":{"message":"gpuctl: gpuctl serve is shutting down: the request was cut after the 3s drain; send it again","type":"server_error"}}` + "\n\n"
				}
				if !strings.HasSuffix(string(body), want) {
					t.Errorf("stream ends\n%q\nwant it to end with\n%q", body[max(0, len(body)-200):], want)
				}
				if err := <-runErr; err != nil {
					t.Fatalf("Run: %v", err)
				}
				if n := p.Tracker().InFlight("server"); n != 0 {
					t.Errorf("in flight = %d after shutdown", n)
				}
			})
		})
	}
}

// Item 5: a request still waiting for its backend's headers when the
// drain timeout passes gets 503 saying why, not a dropped connection.
func TestDrainCutAnswersWaitingRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		server := &fakeOllama{name: "server", handle: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // a cold load that outlasts the drain
		}}
		stopServer := mn.serve("server:11434", &http.Server{Handler: server})
		defer stopServer()
		p, err := New(Options{
			Inventory: testInventory(t, "http://server:11434", "http://pc:11434"),
			Backends:  newFakeBackends(), Dial: mn.Dial, Logger: testLogger(t), DrainTimeout: 3 * time.Second,
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
		type result struct {
			res *http.Response
			err error
		}
		rc := make(chan result, 1)
		go func() {
			res, err := post(t.Context(), client, "http://proxy:80/api/generate", `{"model":"tiny"}`)
			rc <- result{res, err}
		}()
		time.Sleep(time.Second)
		cancel()
		r := <-rc
		if r.err != nil {
			t.Fatalf("no answer: %v", r.err)
		}
		body := readAll(t, r.res)
		if r.res.StatusCode != 503 || r.res.Header.Get("Retry-After") == "" || !strings.Contains(body, "shutting down") {
			t.Errorf("got %d Retry-After %q %s; want 503 saying serve is shutting down", r.res.StatusCode, r.res.Header.Get("Retry-After"), body)
		}
		if err := <-runErr; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

// Item 6: /metrics carries the standard Go and process collectors' series,
// so goroutine, memory and fd leaks can be watched.
func TestMetricsGoAndProcess(t *testing.T) {
	p := newProxy(t, Options{Inventory: testInventory(t, "http://127.0.0.1:1", "http://127.0.0.1:2"), Backends: newFakeBackends()})
	ts := serveProxy(t, p)
	res, err := testClient(t).Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := readAll(t, res)
	for _, want := range []string{"\ngo_goroutines ", "\ngo_memstats_heap_inuse_bytes ", "\ngo_memstats_sys_bytes ", "\ngo_gc_duration_seconds{",
		"\nprocess_resident_memory_bytes ", "\nprocess_open_fds ", "\nprocess_max_fds ", "\nprocess_cpu_seconds_total ", "\ngpuctl_proxy_in_flight{"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", strings.TrimSpace(want))
		}
	}
}

// The debug handler serves the profiles a leak hunt needs.
func TestDebugHandler(t *testing.T) {
	ts := httptest.NewServer(DebugHandler())
	defer ts.Close()
	c := testClient(t)
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/cmdline":           "",
	} {
		res, err := c.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %.200s", path, res.StatusCode, body)
		}
	}
}

// Item 6: once serve has been quiet for a whole TrimInterval after work,
// it gives memory back once (idle backend connections closed, free pages
// returned); not again until something happens.
func TestTrimAfterQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		stopServer := mn.serve("server:11434", &http.Server{Handler: &fakeOllama{name: "server"}})
		defer stopServer()
		p, err := New(Options{
			Inventory: testInventory(t, "http://server:11434", "http://pc:11434"),
			Backends:  newFakeBackends(), Dial: mn.Dial, Logger: testLogger(t), TrimInterval: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		var trims atomic.Int32
		p.freeMemory = func() { trims.Add(1) }
		ctx, cancel := context.WithCancel(t.Context())
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx, mn.listen("proxy:80")) }()
		client := mn.client()
		request := func() {
			res, err := post(t.Context(), client, "http://proxy:80/api/generate", `{"model":"tiny"}`)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, res)
			client.CloseIdleConnections()
		}
		time.Sleep(5 * time.Minute)
		if n := trims.Load(); n != 0 {
			t.Errorf("%d trims before any work", n)
		}
		request()
		time.Sleep(30 * time.Second)
		request() // busy in the first interval
		time.Sleep(2 * time.Minute)
		if n := trims.Load(); n != 1 {
			t.Errorf("%d trims after a quiet interval, want 1", n)
		}
		time.Sleep(10 * time.Minute)
		if n := trims.Load(); n != 1 {
			t.Errorf("%d trims after more quiet, want still 1", n)
		}
		request()
		time.Sleep(3 * time.Minute)
		if n := trims.Load(); n != 2 {
			t.Errorf("%d trims after new work and quiet, want 2", n)
		}
		cancel()
		if err := <-runErr; err != nil {
			t.Fatal(err)
		}
	})
}
