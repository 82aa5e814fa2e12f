package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
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

// realProxy forwards the PC's Ollama port to the real server, streaming
// (no buffering), the request's Host kept as the client sent it.
func realProxy(u *url.URL) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			http.Error(w, "the simulated PC's Ollama is not answering: "+err.Error(), http.StatusBadGateway)
		},
	}
	return rp
}
