package models

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const remoteDir = "/mnt/models/ollama"

type env struct {
	srv   *ollamatest.Server
	drive *ollamatest.DriveRunner
	host  *inventory.Host
	mgr   *Manager
	rec   *recorder
}

// newEnv starts a fake Ollama writing to <tmp>/models, a fake SSH runner
// serving <tmp> as the host's models_dir: the container's /root/.ollama,
// with Ollama's models in its models/ (the documented layout, which the
// Manager falls back to: the fake drive has no docker to inspect).
func newEnv(t *testing.T, cfg ollamatest.Config, declared ...string) *env {
	t.Helper()
	root := t.TempDir()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(root, "models")
	}
	srv := ollamatest.Start(t, cfg)
	drive := &ollamatest.DriveRunner{Remote: remoteDir, Local: filepath.Dir(srv.Dir()), Avail: 1 << 40}
	h := &inventory.Host{Name: "gpu1", ModelsDir: remoteDir}
	h.OllamaURL, _ = inventory.ParseURL(srv.URL)
	for _, d := range declared {
		h.Models = append(h.Models, inventory.ModelName(d))
	}
	return &env{srv: srv, drive: drive, host: h, rec: &recorder{},
		mgr: &Manager{Client: srv.Client(), Runner: drive, Host: h}}
}

type recorder struct {
	mu     sync.Mutex
	events []Event
	hook   func(Event)
}

func (r *recorder) Event(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	h := r.hook
	r.mu.Unlock()
	if h != nil {
		h(e)
	}
}

func (r *recorder) kinds(model string) []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EventKind
	for _, e := range r.events {
		if e.Model == model && (len(out) == 0 || out[len(out)-1] != e.Kind) {
			out = append(out, e.Kind)
		}
	}
	return out
}

func (r *recorder) find(kind EventKind) (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind {
			return e, true
		}
	}
	return Event{}, false
}

// fixedManifests is a ManifestSource with canned answers.
type fixedManifests map[string]*Manifest

func (f fixedManifests) Manifest(_ context.Context, r Ref) (*Manifest, error) {
	if m, ok := f[r.Short()]; ok {
		return m, nil
	}
	return nil, errors.New("registry.ollama.ai: dial tcp: lookup registry.ollama.ai: no such host")
}

// manifestOf builds a Manifest from the fake's catalogue.
func manifestOf(t *testing.T, srv *ollamatest.Server, name string) *Manifest {
	t.Helper()
	m, ok := srv.ManifestOf(name)
	if !ok {
		t.Fatalf("%s not in catalogue", name)
	}
	man, err := ParseManifest(m.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if man.TotalSize() != m.Size {
		t.Fatal(fmt.Sprint("size ", man.TotalSize(), m.Size))
	}
	return man
}

func fakeCfg() ollamatest.Config {
	return ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}}
}
