package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ollamalive/gpuctl/inventory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeBackends is a controller stand-in: hosts are up or asleep, and Wake
// takes wakeTime (on the bubble's fake clock inside synctest).
type fakeBackends struct {
	mu       sync.Mutex
	up       map[string]bool
	wakeTime time.Duration
	wakeErr  error
	// blockWake makes Wake wait for its context (a box that never boots).
	blockWake bool
	wakes     atomic.Int32
	upCalls   atomic.Int32
}

func newFakeBackends(up ...string) *fakeBackends {
	f := &fakeBackends{up: map[string]bool{}}
	for _, h := range up {
		f.up[h] = true
	}
	return f
}

func (f *fakeBackends) Up(ctx context.Context, host string) (bool, error) {
	f.upCalls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up[host], nil
}

func (f *fakeBackends) Wake(ctx context.Context, host string) error {
	f.wakes.Add(1)
	if f.blockWake {
		<-ctx.Done()
		return errors.New("no answer on port 22")
	}
	t := time.NewTimer(f.wakeTime)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.wakeErr != nil {
		return f.wakeErr
	}
	f.mu.Lock()
	f.up[host] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeBackends) setUp(host string, up bool) {
	f.mu.Lock()
	f.up[host] = up
	f.mu.Unlock()
}

func mustURL(t testing.TB, s string) inventory.URL {
	t.Helper()
	u, err := inventory.ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testInventory has an always-on "server" (16 GiB) and an on-demand "pc"
// (24 GiB). Routes: big* → pc (no fallback); fb* → pc, fallback server.
func testInventory(t testing.TB, serverURL, pcURL string) *inventory.Inventory {
	return &inventory.Inventory{
		Path: "test.toml",
		Serve: inventory.Serve{
			DefaultHost: "server",
			MaxBody:     1 << 20,
			MaxInFlight: 256,
		},
		Hosts: []inventory.Host{
			{Name: "server", OllamaURL: mustURL(t, serverURL), VRAM: 16 << 30},
			{Name: "pc", OnDemand: true, OllamaURL: mustURL(t, pcURL), VRAM: 24 << 30, BootTimeout: inventory.Duration(180 * time.Second)},
		},
		Routes: []inventory.Route{
			{Models: []string{"big", "big:*"}, Host: "pc"},
			{Models: []string{"fb", "fb:*"}, Host: "pc", Fallback: "server"},
		},
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newProxy builds a proxy and closes it at the end of the test.
func newProxy(t testing.TB, o Options) *Proxy {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// serveProxy serves p on loopback with the proxy's own http.Server
// settings, closed at the end of the test.
func serveProxy(t testing.TB, p *Proxy) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(p)
	cfg := p.Server()
	ts.Config.ReadHeaderTimeout = cfg.ReadHeaderTimeout
	ts.Config.WriteTimeout = cfg.WriteTimeout
	ts.Config.IdleTimeout = cfg.IdleTimeout
	ts.Config.MaxHeaderBytes = cfg.MaxHeaderBytes
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func testClient(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// memNet is an in-memory network of net.Pipe connections, for tests inside
// a testing/synctest bubble (where fake time needs goroutines blocked on
// channels, not on sockets).
type memNet struct {
	mu sync.Mutex
	ls map[string]*memListener
}

func newMemNet() *memNet { return &memNet{ls: map[string]*memListener{}} }

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memListener struct {
	addr  string
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (n *memNet) listen(addr string) *memListener {
	l := &memListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
	n.mu.Lock()
	n.ls[addr] = l
	n.mu.Unlock()
	return l
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr(l.addr) }

func (n *memNet) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.ls[addr]
	n.mu.Unlock()
	refused := &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	if l == nil {
		return nil, refused
	}
	c1, c2 := net.Pipe()
	select {
	case l.conns <- c2:
		return c1, nil
	case <-l.done:
		return nil, refused
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// serveMem serves h on the in-memory address and returns a func that
// closes the server and its connections.
func (n *memNet) serve(addr string, srv *http.Server) func() {
	l := n.listen(addr)
	go func() { _ = srv.Serve(l) }()
	return func() { _ = srv.Close() }
}

// memClient is an HTTP client that dials the in-memory network.
func (n *memNet) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.Dial, DisableCompression: true, MaxIdleConnsPerHost: 100}}
}

// bubble is a proxy between two in-memory backends ("server" at
// server:11434, "pc" at pc:11434), served at proxy:80, for synctest tests.
type bubble struct {
	net     *memNet
	p       *Proxy
	fb      *fakeBackends
	client  *http.Client
	closers []func()
}

func newBubble(t *testing.T, server, pc http.Handler, fb *fakeBackends, tweak func(*Options)) *bubble {
	b := &bubble{net: newMemNet(), fb: fb}
	inv := testInventory(t, "http://server:11434", "http://pc:11434")
	o := Options{Inventory: inv, Backends: fb, Dial: b.net.Dial, Logger: testLogger(t)}
	if tweak != nil {
		tweak(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	b.p = p
	if server != nil {
		b.closers = append(b.closers, b.net.serve("server:11434", &http.Server{Handler: server}))
	}
	if pc != nil {
		b.closers = append(b.closers, b.net.serve("pc:11434", &http.Server{Handler: pc}))
	}
	b.closers = append(b.closers, b.net.serve("proxy:80", p.Server()))
	b.client = b.net.client()
	return b
}

// close shuts everything down so the bubble's goroutines can exit.
func (b *bubble) close() {
	b.client.CloseIdleConnections()
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.p.Close()
}
