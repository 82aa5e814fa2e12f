// Package ollamatest is an in-process fake of the Ollama HTTP API (v0.17.4)
// for what the real server cannot be made to do on demand: a pull that
// stalls or whose connection drops after N bytes, a server that dies
// mid-stream, odd status codes (a 500 before streaming), slow generation on
// an injected clock, and request counting. Everything else is tested against
// the real Ollama server (package realollama beside this one: the real
// binary, a runnable random-weight model and a test registry); the fake's
// answers follow captures of that server (testdata/).
//
// It serves pulls that stream progress exactly as the real server does and
// write blobs and manifests into a real directory, the model list, loaded
// models, unloading, a tiny generation stream for /api/generate, /api/chat
// and the OpenAI-compatible /v1/chat/completions, and a registry handler for
// manifest lookups.
//
// Start one with Start (an httptest server closed at the end of the test) or
// build a handler with New and serve it yourself:
//
//	srv := ollamatest.Start(t, ollamatest.Config{
//		Catalogue: []ollamatest.Model{{Name: "tiny"}},
//	})
//	client := srv.Client() // *api.Client
//
// What it reproduces, from the captures in controller/fixtures (testdata/SOURCES.md §2,
// §7) and ollama/ollama's server/routes.go:
//
//   - POST /api/pull answers application/x-ndjson lines: "pulling manifest",
//     one or more "pulling <digest[7:19]>" lines per layer (digest, total,
//     completed; completed omitted while 0), "verifying sha256 digest",
//     "writing manifest", "success". A model the registry lacks gets
//     {"error":"pull model manifest: file does not exist"} after the first
//     line, inside the HTTP 200. With "stream": false the reply is one JSON
//     object: the last progress line, or HTTP 500 {"error":…}.
//   - Blobs land in <dir>/blobs/sha256-<hex>, written as
//     sha256-<hex>-partial while downloading (the fake keeps the bytes received
//     so far there and resumes from them), and the manifest in
//     <dir>/manifests/<host>/<namespace>/<model>/<tag>.
//   - GET /api/tags lists what is on disk (size = layers + config, digest =
//     sha256 of the manifest file), as the real server does.
//
// Knobs: the catalogue (names, layers and sizes), Config.BytesPerSecond for
// slow pulls, SetFault for pulls that fail (an error line), break (the
// connection drops after N bytes) or are refused before streaming (HTTP 500),
// Config.WriteDir to make pulls land somewhere other than the models drive,
// Config.ChunkDelay for generation, Config.OnRequest and Requests to count
// requests. Every delay goes through Config.Sleep, which tests may replace;
// delays are 0 unless set.
package ollamatest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// Config configures a fake server. The zero value is usable: an empty
// catalogue and a directory that New creates under os.TempDir.
type Config struct {
	// Dir is the models directory (OLLAMA_MODELS): blobs/ and manifests/
	// live under it. Start defaults it to <t.TempDir()>/models (its parent
	// plays models_dir, the container's /root/.ollama).
	Dir string
	// WriteDir, when set, is where pulls write and what /api/tags reads
	// instead of Dir, as an Ollama container whose OLLAMA_MODELS is not the
	// bind-mounted drive would. Dir stays what Server.Dir reports.
	WriteDir string
	// Catalogue is what the fake registry holds.
	Catalogue []Model
	// Version is what /api/version reports; default "0.17.4".
	Version string
	// ChunkSize is how many bytes a pull writes between progress lines;
	// default 16 KiB.
	ChunkSize int
	// BytesPerSecond slows pulls down (a Sleep per chunk); 0 = no delay.
	BytesPerSecond int64
	// ChunkDelay is the pause before each generated chunk; 0 = none.
	ChunkDelay time.Duration
	// KeepAlive is how long a model stays loaded after a request; default 5m.
	KeepAlive time.Duration
	// Sleep waits d or until ctx is done; default a timer (works inside a
	// testing/synctest bubble).
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for created_at, modified_at and expires_at;
	// default time.Now.
	Now func() time.Time
	// OnRequest is called at the start of every request, before routing.
	OnRequest func(*http.Request)
}

// PullFault makes pulls of one model go wrong.
type PullFault struct {
	// AfterBytes is how many layer bytes the pull writes (in that request)
	// before the fault fires; the partial blob keeps them.
	AfterBytes int64
	// Error is the message. In a stream it is sent as {"error":Error} inside
	// the HTTP 200; with an empty Error the connection is dropped instead
	// (an interrupted pull: no error line, no "success").
	Error string
	// BeforeStream answers HTTP 500 {"error":Error} before any stream line,
	// as the real server does for errors raised before it writes anything.
	BeforeStream bool
	// Times is how many pulls the fault affects; 0 means every pull.
	Times int
}

// Server is the fake. It is an http.Handler.
type Server struct {
	// URL is the base URL once started with Start ("http://127.0.0.1:port").
	URL string

	cfg       Config
	writeDir  string
	transport *http.Transport
	mux       *http.ServeMux

	mu        sync.Mutex
	catalogue map[string]*resolved
	faults    map[string]*PullFault
	loaded    map[string]*loadedModel
	counts    map[string]int
	pulls     []api.PullRequest
	blobLocks map[string]*sync.Mutex
}

type loadedModel struct {
	r       *resolved
	expires time.Time
}

// New builds a fake server. It panics on an invalid catalogue (a test bug).
func New(cfg Config) *Server {
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "ollamatest-")
		if err != nil {
			panic(err)
		}
		cfg.Dir = d
	}
	cfg.Version = cmp.Or(cfg.Version, "0.17.4")
	cfg.ChunkSize = cmp.Or(cfg.ChunkSize, 16<<10)
	cfg.KeepAlive = cmp.Or(cfg.KeepAlive, 5*time.Minute)
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:       cfg,
		writeDir:  cmp.Or(cfg.WriteDir, cfg.Dir),
		catalogue: map[string]*resolved{},
		faults:    map[string]*PullFault{},
		loaded:    map[string]*loadedModel{},
		counts:    map[string]int{},
	}
	for _, m := range cfg.Catalogue {
		if err := s.AddModel(m); err != nil {
			panic(err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.root)
	mux.HandleFunc("HEAD /{$}", s.root)
	mux.HandleFunc("GET /api/version", s.version)
	mux.HandleFunc("POST /api/pull", s.pull)
	mux.HandleFunc("GET /api/tags", s.tags)
	mux.HandleFunc("GET /api/ps", s.ps)
	mux.HandleFunc("POST /api/show", s.show)
	mux.HandleFunc("DELETE /api/delete", s.delete)
	mux.HandleFunc("POST /api/generate", s.generate)
	mux.HandleFunc("POST /api/chat", s.chat)
	mux.HandleFunc("POST /v1/chat/completions", s.openaiChat)
	mux.HandleFunc("GET /v1/models", s.openaiModels)
	s.mux = mux
	return s
}

// Start serves a new fake on a loopback httptest server, closed when the
// test ends. Config.Dir defaults to tb.TempDir().
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.Dir == "" {
		// As the stick's container keeps them: models_dir is its
		// /root/.ollama, the models are in models_dir/models.
		cfg.Dir = filepath.Join(tb.TempDir(), "models")
	}
	s := New(cfg)
	hs := httptest.NewServer(s)
	s.transport = &http.Transport{}
	tb.Cleanup(func() {
		hs.Close()
		s.transport.CloseIdleConnections()
	})
	s.URL = hs.URL
	return s
}

// Client returns an Ollama API client for a started server.
func (s *Server) Client() *api.Client {
	u, err := url.Parse(s.URL)
	if err != nil || s.URL == "" {
		panic("ollamatest: Client needs a server started with Start")
	}
	return api.NewClient(u, s.HTTPClient())
}

// HTTPClient returns a plain HTTP client for a started server whose idle
// connections are closed when the test ends.
func (s *Server) HTTPClient() *http.Client {
	if s.transport == nil {
		panic("ollamatest: HTTPClient needs a server started with Start")
	}
	return &http.Client{Transport: s.transport}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts[r.Method+" "+r.URL.Path]++
	s.mu.Unlock()
	if s.cfg.OnRequest != nil {
		s.cfg.OnRequest(r)
	}
	s.mux.ServeHTTP(w, r)
}

// Dir is the models directory the fake was configured with.
func (s *Server) Dir() string { return s.cfg.Dir }

// WriteDir is where pulls write (Config.WriteDir, else Dir).
func (s *Server) WriteDir() string { return s.writeDir }

// AddModel adds a model to the catalogue (replacing one of the same name).
func (s *Server) AddModel(m Model) error {
	r, err := resolveModel(m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catalogue[key(r.name)] = r
	return nil
}

// RemoveModel takes a model out of the catalogue; what is on disk stays.
func (s *Server) RemoveModel(name string) {
	n, _ := parseName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.catalogue, key(n))
}

// SetFault makes the next pulls of a model go wrong (see PullFault); a
// zero PullFault clears it.
func (s *Server) SetFault(name string, f PullFault) {
	n, _ := parseName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == (PullFault{}) {
		delete(s.faults, key(n))
		return
	}
	s.faults[key(n)] = &f
}

// Requests counts requests by "METHOD /path" ("POST /api/pull").
func (s *Server) Requests(methodPath string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[methodPath]
}

// PullRequests returns the bodies of every pull request received so far.
func (s *Server) PullRequests() []api.PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pulls)
}

// Manifest is a catalogue model's layers and config as the registry serves
// them.
type Manifest struct {
	// Name is the fully qualified name (host/namespace/model:tag).
	Name string
	// Short is the name as /api/tags shows it.
	Short string
	// Raw is the manifest JSON, byte for byte as stored on disk.
	Raw []byte
	// Digest is the sha256 of Raw, as /api/tags reports it (hex, no prefix).
	Digest string
	// Size is the total of all blobs, config included.
	Size int64
	// Blobs lists the layers then the config: digest "sha256:<hex>" and size.
	Blobs []BlobInfo
}

// BlobInfo is one blob of a manifest.
type BlobInfo struct {
	MediaType string
	Digest    string
	Size      int64
}

// ManifestOf describes a catalogue model, or false when there is none.
func (s *Server) ManifestOf(name string) (Manifest, bool) {
	r, ok := s.lookup(name)
	if !ok {
		return Manifest{}, false
	}
	sum := sha256.Sum256(r.manifest)
	m := Manifest{
		Name: r.name.String(), Short: r.short(), Raw: slices.Clone(r.manifest),
		Digest: hex.EncodeToString(sum[:]), Size: r.size,
	}
	for _, b := range r.layers {
		m.Blobs = append(m.Blobs, BlobInfo{b.MediaType, b.Digest, b.Size})
	}
	return m, true
}

// ManifestPath is where the manifest of name is stored under dir.
func ManifestPath(dir, name string) string {
	n, _ := parseName(name)
	return filepath.Join(dir, "manifests", n.Host, n.Namespace, n.Model, n.Tag)
}

// BlobPath is where a blob "sha256:<hex>" is stored under dir.
func BlobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", blobFileName(digest))
}

// Install writes a catalogue model to the write directory as a finished
// pull would, without a request.
func (s *Server) Install(name string) error {
	r, ok := s.lookup(name)
	if !ok {
		return fmt.Errorf("ollamatest: %q is not in the catalogue", name)
	}
	for _, b := range r.layers {
		p := BlobPath(s.writeDir, b.Digest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		buf := make([]byte, b.Size)
		b.ReadAt(buf, 0)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return err
		}
	}
	return s.writeManifest(r)
}

// Load marks a model as loaded (as a generate request would), for /api/ps.
func (s *Server) Load(name string, keepAlive time.Duration) error {
	r, ok := s.installed(name)
	if !ok {
		return fmt.Errorf("ollamatest: %q is not installed", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loaded[key(r.name)] = &loadedModel{r: r, expires: s.cfg.Now().Add(keepAlive)}
	return nil
}

// Loaded lists the short names of the loaded models, sorted.
func (s *Server) Loaded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	now := s.cfg.Now()
	for _, l := range s.loaded {
		if l.expires.After(now) {
			out = append(out, l.r.short())
		}
	}
	slices.Sort(out)
	return out
}

func key(n model.Name) string { return strings.ToLower(n.String()) }

func (s *Server) lookup(name string) (*resolved, bool) {
	n, ok := parseName(name)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.catalogue[key(n)]
	return r, ok
}

// installed reports whether name's manifest is on disk; it returns the
// catalogue entry when there is one, else an entry rebuilt from disk.
func (s *Server) installed(name string) (*resolved, bool) {
	n, ok := parseName(name)
	if !ok {
		return nil, false
	}
	p := ManifestPath(s.writeDir, n.String())
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	if r, ok := s.lookup(name); ok && string(r.manifest) == string(raw) {
		return r, true
	}
	var mf manifestFile
	if json.Unmarshal(raw, &mf) != nil {
		return nil, false
	}
	r := &resolved{spec: Model{Name: n.String(), Family: "llama"}, name: n, manifest: raw}
	for _, l := range mf.Layers {
		r.size += l.Size
		r.layers = append(r.layers, &blob{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
	}
	r.size += mf.Config.Size
	return r, true
}

func (s *Server) writeManifest(r *resolved) error {
	p := ManifestPath(s.writeDir, r.name.String())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, r.manifest, 0o644)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// decode reads a JSON body as the real server does ("missing request body"
// for an empty one).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(r.Body).Decode(v)
	switch {
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "missing request body")
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "Ollama is running")
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version})
}

func (s *Server) details(r *resolved) api.ModelDetails {
	fam := cmp.Or(r.spec.Family, "llama")
	return api.ModelDetails{
		Format: "gguf", Family: fam, Families: []string{fam},
		ParameterSize: r.spec.ParameterSize, QuantizationLevel: r.spec.QuantizationLevel,
	}
}

// list reads the manifests on disk.
func (s *Server) list() []api.ListModelResponse {
	root := filepath.Join(s.writeDir, "manifests")
	out := []api.ListModelResponse{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 4 {
			return nil
		}
		n := model.Name{Host: parts[0], Namespace: parts[1], Model: parts[2], Tag: parts[3]}
		r, ok := s.installed(n.String())
		if !ok {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		sum := sha256.Sum256(r.manifest)
		out = append(out, api.ListModelResponse{
			Name: n.DisplayShortest(), Model: n.DisplayShortest(),
			ModifiedAt: info.ModTime(), Size: r.size, Digest: hex.EncodeToString(sum[:]),
			Details: s.details(r),
		})
		return nil
	})
	slices.SortStableFunc(out, func(a, b api.ListModelResponse) int {
		return cmp.Compare(b.ModifiedAt.UnixNano(), a.ModifiedAt.UnixNano())
	})
	return out
}

func (s *Server) tags(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ListResponse{Models: s.list()})
}

func (s *Server) ps(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	now := s.cfg.Now()
	out := []api.ProcessModelResponse{}
	for k, l := range s.loaded {
		if !l.expires.After(now) {
			delete(s.loaded, k)
			continue
		}
		sum := sha256.Sum256(l.r.manifest)
		out = append(out, api.ProcessModelResponse{
			Name: l.r.short(), Model: l.r.short(), Size: l.r.size,
			Digest: hex.EncodeToString(sum[:]), Details: s.details(l.r),
			ExpiresAt: l.expires, SizeVRAM: cmp.Or(l.r.spec.VRAM, l.r.size), ContextLength: 4096,
		})
	}
	s.mu.Unlock()
	slices.SortStableFunc(out, func(a, b api.ProcessModelResponse) int {
		return cmp.Compare(b.ExpiresAt.UnixNano(), a.ExpiresAt.UnixNano())
	})
	writeJSON(w, http.StatusOK, api.ProcessResponse{Models: out})
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	var req api.ShowRequest
	if !decode(w, r, &req) {
		return
	}
	//lint:ignore SA1019 old clients still send the deprecated "name" field; Ollama honours it too.
	name := cmp.Or(req.Model, req.Name)
	m, ok := s.installed(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	var mod time.Time
	if info, err := os.Stat(ManifestPath(s.writeDir, m.name.String())); err == nil {
		mod = info.ModTime()
	}
	writeJSON(w, http.StatusOK, api.ShowResponse{
		Modelfile:    "# Modelfile generated by \"ollama show\"\nFROM " + m.short() + "\n",
		Template:     "{{ .Prompt }}",
		Details:      s.details(m),
		ModelInfo:    map[string]any{"general.architecture": m.spec.Family, "general.parameter_count": m.size},
		ModifiedAt:   mod,
		Capabilities: []model.Capability{model.CapabilityCompletion},
	})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	var req api.DeleteRequest
	if !decode(w, r, &req) {
		return
	}
	//lint:ignore SA1019 old clients still send the deprecated "name" field; Ollama honours it too.
	name := cmp.Or(req.Model, req.Name)
	m, ok := s.installed(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	os.Remove(ManifestPath(s.writeDir, m.name.String()))
	w.WriteHeader(http.StatusOK)
}
