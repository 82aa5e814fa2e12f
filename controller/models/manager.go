package models

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Manager manages the models of one host.
type Manager struct {
	// Client talks to the host's Ollama (inventory ollama_url).
	Client *api.Client
	// Runner runs the drive checks (df, stat, cat) on the host.
	Runner sshexec.Runner
	// Host is the inventory entry: name, models_dir, declared models,
	// min_free.
	Host *inventory.Host
	// Logger gets debug logs; nil discards them.
	Logger *slog.Logger
	// Manifests looks up sizes before pulling; nil means sizes are unknown
	// and pulls proceed without a space check (said in an EventCheck).
	Manifests ManifestSource
	// Insecure pulls over plain HTTP from the registry (Ollama's insecure).
	Insecure bool
	// Concurrency is how many models pull at once; default 1.
	Concurrency int
	// APITimeout bounds each non-streaming Ollama call; default 30s.
	APITimeout time.Duration
	// StallTimeout abandons a pull (as interrupted) that reports no
	// progress for this long; default 5m.
	StallTimeout time.Duration
	// Now is the clock for events; default time.Now.
	Now func() time.Time
	// Store, when set, is where the host's Ollama keeps its models. Unset,
	// the Manager asks the container once (docker inspect over Runner) and
	// falls back to hostcmd.DefaultStore, models_dir mounted at /root/.ollama.
	Store *hostcmd.Store

	storeMu sync.Mutex
}

// store returns where the host's Ollama keeps its models, reading it from
// the container the first time.
func (m *Manager) store(ctx context.Context) hostcmd.Store {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	if m.Store == nil {
		s, err := hostcmd.ReadStore(ctx, m.Runner, m.Host.Container, m.Host.ModelsDir)
		if err != nil {
			m.log().Debug("where the container keeps its models is unknown; using the default", "err", err, "dir", s.Dir)
		}
		m.Store = &s
	}
	return *m.Store
}

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger.With("host", m.Host.Name)
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) apiCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cmp.Or(m.APITimeout, 30*time.Second))
}

// UnreachableError reports that the host's Ollama API did not answer.
type UnreachableError struct {
	Host string
	URL  string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("ollama on %s (%s) did not answer: %v; is the host awake and the container running? (gpuctl status %s)",
		e.Host, e.URL, e.Err, e.Host)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// apiError wraps an Ollama client error, marking transport failures as
// UnreachableError.
func (m *Manager) apiError(what string, err error) error {
	var se api.StatusError
	if errors.As(err, &se) {
		return fmt.Errorf("%s on %s: ollama answered %w", what, m.Host.Name, &OllamaError{StatusCode: se.StatusCode, Msg: se.Error()})
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &UnreachableError{Host: m.Host.Name, URL: m.Host.OllamaURL.String(), Err: err}
}

// list returns /api/tags.
func (m *Manager) list(ctx context.Context) ([]api.ListModelResponse, error) {
	ctx, cancel := m.apiCtx(ctx)
	defer cancel()
	resp, err := m.Client.List(ctx)
	if err != nil {
		return nil, m.apiError("listing models", err)
	}
	return resp.Models, nil
}

func findListed(list []api.ListModelResponse, r Ref) (api.ListModelResponse, bool) {
	for _, l := range list {
		if lr, err := ParseRef(cmp.Or(l.Model, l.Name)); err == nil && lr.Equal(r) {
			return l, true
		}
	}
	return api.ListModelResponse{}, false
}

// Declared returns the host's declared models, resolved.
func (m *Manager) Declared() ([]Ref, error) {
	var out []Ref
	for _, n := range m.Host.Models {
		r, err := ParseRef(string(n))
		if err != nil {
			return nil, fmt.Errorf("host %s: models: %w", m.Host.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Missing returns the declared models that Ollama does not list.
func (m *Manager) Missing(ctx context.Context) ([]inventory.ModelName, error) {
	decl, err := m.Declared()
	if err != nil {
		return nil, err
	}
	list, err := m.list(ctx)
	if err != nil {
		return nil, err
	}
	var out []inventory.ModelName
	for i, r := range decl {
		if _, ok := findListed(list, r); !ok {
			out = append(out, m.Host.Models[i])
		}
	}
	return out, nil
}

// ModelState is one row of `gpuctl models`.
type ModelState struct {
	// Name is the model as declared, or as Ollama lists it.
	Name       string     `json:"name"`
	Declared   bool       `json:"declared"`
	Present    bool       `json:"present"`
	Size       int64      `json:"size,omitempty"`
	Digest     string     `json:"digest,omitempty"`
	ModifiedAt *time.Time `json:"modified_at,omitempty"`
	Loaded     bool       `json:"loaded"`
	// VRAM is the part of the loaded model in GPU memory (size_vram).
	VRAM int64 `json:"vram,omitempty"`
	// LoadedSize is the loaded model's total memory (size in /api/ps).
	LoadedSize int64      `json:"loaded_size,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// Report is the state of a host's models.
type Report struct {
	Host   string       `json:"host"`
	Models []ModelState `json:"models"`
}

// Missing lists the declared models that are not present.
func (r *Report) Missing() []string {
	var out []string
	for _, s := range r.Models {
		if s.Declared && !s.Present {
			out = append(out, s.Name)
		}
	}
	return out
}

// List reports declared, present, missing and loaded models: the declared
// ones first in inventory order, then the others Ollama has, by name.
func (m *Manager) List(ctx context.Context) (*Report, error) {
	decl, err := m.Declared()
	if err != nil {
		return nil, err
	}
	list, err := m.list(ctx)
	if err != nil {
		return nil, err
	}
	pctx, cancel := m.apiCtx(ctx)
	defer cancel()
	ps, err := m.Client.ListRunning(pctx)
	if err != nil {
		return nil, m.apiError("listing loaded models", err)
	}
	rep := &Report{Host: m.Host.Name, Models: []ModelState{}}
	seen := make([]bool, len(list))
	add := func(name string, r Ref, declared bool) {
		st := ModelState{Name: name, Declared: declared}
		for i, l := range list {
			if lr, err := ParseRef(cmp.Or(l.Model, l.Name)); err == nil && lr.Equal(r) {
				seen[i] = true
				st.Present, st.Size, st.Digest = true, l.Size, l.Digest
				t := l.ModifiedAt
				st.ModifiedAt = &t
			}
		}
		for _, p := range ps.Models {
			if pr, err := ParseRef(cmp.Or(p.Model, p.Name)); err == nil && pr.Equal(r) {
				st.Loaded, st.VRAM, st.LoadedSize = true, p.SizeVRAM, p.Size
				t := p.ExpiresAt
				st.ExpiresAt = &t
			}
		}
		rep.Models = append(rep.Models, st)
	}
	for i, r := range decl {
		add(string(m.Host.Models[i]), r, true)
	}
	var extra []api.ListModelResponse
	for i, l := range list {
		if !seen[i] {
			extra = append(extra, l)
		}
	}
	slices.SortFunc(extra, func(a, b api.ListModelResponse) int { return strings.Compare(a.Name, b.Name) })
	for _, l := range extra {
		r, err := ParseRef(cmp.Or(l.Model, l.Name))
		if err != nil {
			m.log().Debug("skipping a model name gpuctl cannot parse", "name", l.Name, "err", err)
			continue
		}
		add(l.Name, r, false)
	}
	return rep, nil
}

// Unload asks Ollama to unload each model now (generate with keep_alive 0)
// and returns the names Ollama confirmed ("done_reason":"unload").
func (m *Manager) Unload(ctx context.Context, names []inventory.ModelName) ([]string, error) {
	var done []string
	var errs []error
	for _, n := range names {
		r, err := ParseRef(string(n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.unloadOne(ctx, r.Short()); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, r.Short())
	}
	return done, errors.Join(errs...)
}

// UnloadAll unloads every model /api/ps lists.
func (m *Manager) UnloadAll(ctx context.Context) ([]string, error) {
	pctx, cancel := m.apiCtx(ctx)
	ps, err := m.Client.ListRunning(pctx)
	cancel()
	if err != nil {
		return nil, m.apiError("listing loaded models", err)
	}
	var done []string
	var errs []error
	for _, p := range ps.Models {
		name := cmp.Or(p.Model, p.Name)
		if err := m.unloadOne(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, name)
	}
	return done, errors.Join(errs...)
}

func (m *Manager) unloadOne(ctx context.Context, name string) error {
	ctx, cancel := m.apiCtx(ctx)
	defer cancel()
	var reason string
	err := m.Client.Generate(ctx, &api.GenerateRequest{Model: name, KeepAlive: &api.Duration{Duration: 0}},
		func(g api.GenerateResponse) error { reason = g.DoneReason; return nil })
	if err != nil {
		return m.apiError("unloading "+name, err)
	}
	if reason != "unload" {
		return fmt.Errorf("unloading %s on %s: ollama answered done_reason %q, not \"unload\"", name, m.Host.Name, reason)
	}
	m.log().Debug("unloaded", "model", name)
	return nil
}

// Verification is the proof that a model is on the host's models drive.
type Verification struct {
	Model        string `json:"model"`
	ManifestPath string `json:"manifest_path"`
	// Digest is the sha256 of the manifest, equal to what /api/tags lists.
	Digest string `json:"digest"`
	Blobs  []Blob `json:"blobs"`
	Size   int64  `json:"size"`
}

// VerifyError reports a model Ollama lists that is not (all) on the drive.
type VerifyError struct {
	Host, Model, ModelsDir string
	Problems               []string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%s on %s is not on the models drive at %s: %s; Ollama wrote it somewhere else: check that the container's OLLAMA_MODELS is on the bind mount of models_dir, then pull again",
		e.Model, e.Host, e.ModelsDir, strings.Join(e.Problems, "; "))
}

// Verify proves name is on the drive: Ollama lists it, the manifest under
// models_dir has the digest Ollama reports, and every blob it names is
// there with its size. Checked over SSH with cat and stat.
func (m *Manager) Verify(ctx context.Context, name inventory.ModelName) (*Verification, error) {
	r, err := ParseRef(string(name))
	if err != nil {
		return nil, err
	}
	list, err := m.list(ctx)
	if err != nil {
		return nil, err
	}
	listed, ok := findListed(list, r)
	if !ok {
		return nil, fmt.Errorf("%s is not in the model list of ollama on %s (/api/tags); pull it with: gpuctl pull %s %s",
			r.Short(), m.Host.Name, m.Host.Name, name)
	}
	if m.Runner == nil {
		return nil, fmt.Errorf("verifying %s on %s: no SSH runner to check the drive", r.Short(), m.Host.Name)
	}
	st := m.store(ctx)
	dir := st.Dir
	verr := &VerifyError{Host: m.Host.Name, Model: r.Short(), ModelsDir: m.Host.ModelsDir}
	if st.Problem != "" {
		verr.Problems = append(verr.Problems, st.Problem)
		return nil, verr
	}
	mp := r.ManifestPath(dir)
	cmd := hostcmd.CatCmd(mp)
	res, err := m.Runner.Run(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("reading %s on %s over SSH: %w", mp, m.Host.Name, err)
	}
	if res.ExitStatus != 0 {
		verr.Problems = append(verr.Problems, "no manifest "+mp+" ("+strings.TrimSpace(string(res.Stderr))+")")
		return nil, verr
	}
	sum := sha256.Sum256(res.Stdout)
	digest := hex.EncodeToString(sum[:])
	if listed.Digest != "" && !strings.EqualFold(strings.TrimPrefix(listed.Digest, "sha256:"), digest) {
		verr.Problems = append(verr.Problems, fmt.Sprintf("the manifest %s has digest %.12s, ollama lists %.12s", mp, digest, listed.Digest))
		return nil, verr
	}
	man, err := ParseManifest(res.Stdout)
	if err != nil {
		verr.Problems = append(verr.Problems, "manifest "+mp+": "+err.Error())
		return nil, verr
	}
	blobs := man.Blobs()
	paths := make([]string, len(blobs))
	for i, b := range blobs {
		paths[i] = BlobPath(dir, b.Digest)
	}
	cmd = hostcmd.StatCmd(paths...)
	res, err = m.Runner.Run(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("checking the blobs of %s on %s over SSH: %w", r.Short(), m.Host.Name, err)
	}
	sizes := hostcmd.ParseStat(res.Stdout)
	for i, b := range blobs {
		got, ok := sizes[paths[i]]
		switch {
		case !ok:
			verr.Problems = append(verr.Problems, "missing blob "+paths[i])
		case got != b.Size:
			verr.Problems = append(verr.Problems, fmt.Sprintf("blob %s is %d bytes, want %d", paths[i], got, b.Size))
		}
	}
	if len(verr.Problems) > 0 {
		return nil, verr
	}
	if listed.Size > 0 && listed.Size != man.TotalSize() {
		m.log().Warn("ollama lists a different size than the manifest on the drive", "model", r.Short(),
			"listed", listed.Size, "manifest", man.TotalSize())
	}
	return &Verification{Model: r.Short(), ManifestPath: mp, Digest: digest, Blobs: blobs, Size: man.TotalSize()}, nil
}
