// Package models keeps a host's declared Ollama models present on its model
// drive: it lists what is declared, present and loaded, pulls what is
// missing through the Ollama API after checking the drive has room, proves
// each pull landed on the drive (over SSH), and unloads models.
//
// Every Ollama call goes through github.com/ollama/ollama/api; every remote
// command is a fixed argv template run by an sshexec.Runner.
package models

import (
	"fmt"
	"path"
	"strings"

	"github.com/ollama/ollama/types/model"

	"github.com/ollamalive/gpuctl/inventory"
)

// DefaultRegistry is the registry a name without a host pulls from.
const DefaultRegistry = "registry.ollama.ai"

// Ref is a model name resolved as Ollama resolves it: host, namespace,
// model and tag, with Ollama's defaults filled in.
type Ref struct{ n model.Name }

// ParseRef resolves a model name ("llama3", "ns/m:tag",
// "127.0.0.1:5000/library/tiny:latest").
func ParseRef(s string) (Ref, error) {
	if _, err := inventory.ParseModelName(s); err != nil {
		return Ref{}, err
	}
	n := model.ParseName(s)
	if !n.IsValid() {
		return Ref{}, fmt.Errorf("model name %q is not one Ollama accepts", s)
	}
	return Ref{n}, nil
}

func (r Ref) Host() string      { return r.n.Host }
func (r Ref) Namespace() string { return r.n.Namespace }
func (r Ref) Model() string     { return r.n.Model }
func (r Ref) Tag() string       { return r.n.Tag }

// String is the fully qualified name: host/namespace/model:tag.
func (r Ref) String() string { return r.n.String() }

// Short is the name as /api/tags and /api/ps show it ("llama3:latest",
// "ns/m:tag", "127.0.0.1:5000/library/tiny:latest").
func (r Ref) Short() string { return r.n.DisplayShortest() }

// Equal compares names as Ollama does (case-insensitively), by their normal
// form (inventory.NormalModel).
func (r Ref) Equal(o Ref) bool { return r.Key() == o.Key() }

// Key is the name's normal form (inventory.NormalModel), the key every
// comparison of model names in gpuctl uses.
func (r Ref) Key() string { return inventory.NormalModel(r.n.String()) }

// IsZero reports an unset Ref.
func (r Ref) IsZero() bool { return r.n.Model == "" }

// DefaultRegistry reports whether the name pulls from registry.ollama.ai.
func (r Ref) DefaultRegistry() bool { return strings.EqualFold(r.n.Host, DefaultRegistry) }

// ManifestPath is where Ollama stores the name's manifest under modelsDir:
// manifests/<host>/<namespace>/<model>/<tag>.
func (r Ref) ManifestPath(modelsDir string) string {
	return path.Join(modelsDir, "manifests", r.n.Host, r.n.Namespace, r.n.Model, r.n.Tag)
}

// BlobPath is where Ollama stores a blob "sha256:<hex>" under modelsDir:
// blobs/sha256-<hex>.
func BlobPath(modelsDir, digest string) string {
	return path.Join(modelsDir, "blobs", strings.Replace(digest, ":", "-", 1))
}
