package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ollamalive/gpuctl/controller/ollamatest/realollama"
)

// RealOllama runs the real Ollama server (v0.17.4) as a simulated PC's
// Ollama, pulling from a test registry that stands in for
// registry.ollama.ai and holds a runnable random-weight model under every
// declared name.
type RealOllama struct {
	// Binary is the ollama executable.
	Binary string
	// Registry is the test registry every pull goes to.
	Registry *realollama.Registry
	// Log receives the servers' logs (nil: each PC's <dir>/ollama.log).
	Log io.Writer
}

// OllamaMode chooses the simulated PCs' Ollama.
type OllamaMode string

// Modes: Auto is the real server when its binary is there, else the fake.
const (
	OllamaAuto OllamaMode = "auto"
	OllamaReal OllamaMode = "real"
	OllamaFake OllamaMode = "fake"
)

// ResolveOllama finds the real server's binary for mode: "" for the fake
// (with the reason when auto fell back to it), an error when real was asked
// for and there is none.
func ResolveOllama(mode OllamaMode) (binary, why string, err error) {
	switch mode {
	case OllamaFake:
		return "", "", nil
	case OllamaReal, OllamaAuto, "":
		b, err := realollama.Binary()
		if err == nil {
			return b, "", nil
		}
		if mode == OllamaReal {
			return "", "", err
		}
		return "", err.Error(), nil
	}
	return "", "", fmt.Errorf("unknown Ollama mode %q (auto, real or fake)", mode)
}

func (r *RealOllama) start(name, home, models string) (started *realollama.Server, err error) {
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	log := r.Log
	if log == nil {
		f, err := os.OpenFile(filepath.Join(filepath.Dir(home), "ollama.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		log = f
		defer func() {
			if s := started; s != nil {
				go func() { <-s.Done(); f.Close() }()
			} else {
				f.Close()
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started, err = realollama.StartServer(ctx, realollama.Options{Binary: r.Binary, Home: home, ModelsDir: models,
		Registry: r.Registry, Log: log})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return started, nil
}

// forward is the PC's Ollama port in front of the real server: a plain TCP
// relay (the bytes are the server's own), which counts the HTTP requests
// it relays and lists its connections for ss.
type forward struct {
	ln       net.Listener
	upstream string
	count    func(method, path string)
	track    func(c net.Conn, open bool)

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func newForward(ln net.Listener, upstream string, count func(method, path string), track func(net.Conn, bool)) *forward {
	f := &forward{ln: ln, upstream: upstream, count: count, track: track, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	return f
}

func (f *forward) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.relay(c)
		}()
	}
}

func (f *forward) add(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = true
	return true
}

func (f *forward) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", f.upstream, 10*time.Second)
	if err != nil || !f.add(c) || !f.add(up) {
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	f.track(c, true)
	done := make(chan struct{})
	go func() {
		// Client to server, sniffing request lines.
		f.copyRequests(up, c)
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	up.Close()
	<-done
	f.track(c, false)
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// copyRequests copies src to dst as the bytes arrive and counts each
// request line ("METHOD /path HTTP/1.x" ending a line: after a body
// without a trailing newline, the next request's line follows it on the
// same line).
func (f *forward) copyRequests(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				if m := reqLine.FindSubmatch(pending[:i+1]); m != nil {
					path, _, _ := strings.Cut(string(m[2]), "?")
					f.count(string(m[1]), path)
				}
				pending = pending[i+1:]
			}
			if len(pending) > 8<<10 { // a long body line: keep its tail only
				pending = append([]byte(nil), pending[len(pending)-1024:]...)
			}
		}
		if err != nil {
			return
		}
	}
}

var reqLine = regexp.MustCompile(`(?:^|[^A-Z])(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/\S*) HTTP/1\.[01]\r?\n$`)

// Close stops the relay and drops its connections.
func (f *forward) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	return err
}
