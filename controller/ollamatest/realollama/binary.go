package realollama

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ollama/ollama/format"
)

// Version is the Ollama release the tier runs (the one go.mod pins).
const Version = "0.17.4"

// CacheDir is where .ci/ollama puts the binary and where the test models
// are cached: $GPUCTL_OLLAMA_CACHE, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/gpuctl/ollama-v0.17.4. It is outside the
// repository and survives between runs.
func CacheDir() string {
	if d := os.Getenv("GPUCTL_OLLAMA_CACHE"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "gpuctl", "ollama-v"+Version)
}

// Binary returns the real Ollama server binary: $GPUCTL_OLLAMA when set,
// else the one .ci/ollama (`make ollama`) built into CacheDir.
func Binary() (string, error) {
	if p := os.Getenv("GPUCTL_OLLAMA"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("GPUCTL_OLLAMA=%s: %w", p, err)
		}
		return p, nil
	}
	p := filepath.Join(CacheDir(), "ollama")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no ollama v%s at %s: run `make ollama` (or set GPUCTL_OLLAMA): %w", Version, p, err)
	}
	return p, nil
}

// InCI reports whether the tests run in CI (CI=true), where no tier may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require returns the binary, or skips the test (fails it under CI=true)
// when there is none. -short skips this tier outside CI.
func Require(tb testing.TB) string {
	tb.Helper()
	if testing.Short() && !InCI() {
		tb.Skip("real-Ollama tier skipped with -short")
	}
	p, err := Binary()
	if err != nil {
		if InCI() {
			tb.Fatalf("CI=true but the real-Ollama tier's binary is missing: %v", err)
		}
		tb.Skipf("real-Ollama tier: %v", err)
	}
	return p
}

var ggufMu sync.Mutex

// GGUF returns the path of spec's model file, written once into
// CacheDir()/models (its name carries a hash of the spec, so a changed spec
// is a new file) and reused by later tests and runs.
func GGUF(spec ModelSpec) (string, error) {
	ggufMu.Lock()
	defer ggufMu.Unlock()
	b, _ := json.Marshal(struct {
		ModelSpec
		Format int
	}{spec, 1})
	sum := sha256.Sum256(b)
	dir := filepath.Join(CacheDir(), "models")
	p := filepath.Join(dir, spec.Name+"-"+hex.EncodeToString(sum[:6])+".gguf")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, spec.Name+"-*.partial")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := spec.WriteGGUF(tmp.Name()); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	return p, os.Rename(tmp.Name(), p)
}

// Params is the spec's parameter count.
func (s ModelSpec) Params() uint64 {
	nv := uint64(len(vocabTokens()))
	e, ff := uint64(s.Embedding), uint64(s.FeedFwd)
	perLayer := 2*e + 4*e*e + 3*e*ff
	return 2*e*nv + e + uint64(s.Layers)*perLayer
}

// ParameterSize is the parameter count as Ollama shows it ("171.04K").
func (s ModelSpec) ParameterSize() string {
	return cmp.Or(format.HumanNumber(s.Params()), "0")
}

func vocabTokens() []string {
	t, _, _ := vocab()
	return t
}
