package models

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/ollamalive/gpuctl/controller/hosthttp"
)

// Blob is one entry of a registry manifest.
type Blob struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Manifest is a registry (and on-disk) model manifest.
type Manifest struct {
	SchemaVersion int    `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
	Config        Blob   `json:"config"`
	Layers        []Blob `json:"layers"`
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ParseManifest parses and checks a manifest: every digest is
// sha256:<64 hex> and every size is non-negative.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest is not JSON: %w", err)
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("manifest has no layers")
	}
	for _, bl := range m.Blobs() {
		if !digestRE.MatchString(bl.Digest) {
			return nil, fmt.Errorf("manifest digest %q is not sha256:<64 hex>", bl.Digest)
		}
		if bl.Size < 0 {
			return nil, fmt.Errorf("manifest blob %s has a negative size", bl.Digest)
		}
	}
	return &m, nil
}

// Blobs lists the layers, then the config when it has a digest.
func (m *Manifest) Blobs() []Blob {
	out := append([]Blob(nil), m.Layers...)
	if m.Config.Digest != "" {
		out = append(out, m.Config)
	}
	return out
}

// TotalSize is what /api/tags reports as the model's size.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, b := range m.Blobs() {
		n += b.Size
	}
	return n
}

// ManifestSource looks up a model's manifest before it is pulled, so the
// drive's free space can be checked against its size.
type ManifestSource interface {
	Manifest(ctx context.Context, ref Ref) (*Manifest, error)
}

// Registry fetches manifests from the registry a name points at, as Ollama
// does: GET {scheme}://{host}/v2/{namespace}/{model}/manifests/{tag} with
// the Docker manifest v2 Accept header.
type Registry struct {
	// HTTP is the client; nil means a default client.
	HTTP *http.Client
	// Insecure speaks plain HTTP to the registry (Ollama's "insecure").
	Insecure bool
	// Timeout bounds one lookup; default 10s.
	Timeout time.Duration
	// SkipDefault leaves names on registry.ollama.ai unlooked-up (size
	// unknown), for machines without internet access.
	SkipDefault bool
}

// ErrSizeUnknown is wrapped by lookups that were not attempted.
var ErrSizeUnknown = fmt.Errorf("size unknown")

// Manifest implements ManifestSource.
func (r *Registry) Manifest(ctx context.Context, ref Ref) (*Manifest, error) {
	if r.SkipDefault && ref.DefaultRegistry() {
		return nil, fmt.Errorf("%w: not asking %s", ErrSizeUnknown, DefaultRegistry)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	scheme := "https"
	if r.Insecure {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: ref.Host(),
		Path: "/v2/" + ref.Namespace() + "/" + ref.Model() + "/manifests/" + ref.Tag()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	hc := r.HTTP
	if hc == nil {
		hc = hosthttp.NewClient(hosthttp.Options{})
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", ref.Host(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("registry %s: reading the manifest of %s: %w", ref.Host(), ref.Short(), err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("registry %s has no manifest for %s (404)", ref.Host(), ref.Short())
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("registry %s answered %s for the manifest of %s", ref.Host(), resp.Status, ref.Short())
	}
	m, err := ParseManifest(body)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %s: %w", ref.Host(), ref.Short(), err)
	}
	return m, nil
}
