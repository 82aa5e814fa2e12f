package ollamatest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/ollama/ollama/types/model"
)

// Media types as Ollama's registry uses them.
const (
	MediaTypeManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeModel    = "application/vnd.ollama.image.model"
	MediaTypeTemplate = "application/vnd.ollama.image.template"
	MediaTypeParams   = "application/vnd.ollama.image.params"
	MediaTypeLicense  = "application/vnd.ollama.image.license"
)

// Layer is one blob of a catalogue model. Its bytes are generated from the
// model name and the layer's position unless Data is set, so large layers
// cost no memory.
type Layer struct {
	// MediaType defaults to MediaTypeModel.
	MediaType string
	// Size in bytes; ignored when Data is set.
	Size int64
	// Data, when set, is the layer's exact content.
	Data []byte
}

// Model is one model the fake registry can serve.
type Model struct {
	// Name as a user writes it: "tiny", "tiny:1b", "ns/tiny",
	// "127.0.0.1:5000/library/tiny:latest". It is normalised as Ollama does.
	Name string
	// Layers default to one 64 KiB model layer and a small template layer.
	Layers []Layer
	// Details reported by /api/tags, /api/show and /api/ps.
	Family            string // default "llama"
	ParameterSize     string // default "1B"
	QuantizationLevel string // default "Q4_0"
	// VRAM is size_vram in /api/ps once loaded; 0 means the model's size.
	VRAM int64
	// Reply is the generated text, one element per streamed chunk; nil
	// means {"Hello", " from ", <model name>}.
	Reply []string
}

// DefaultModelLayerSize is the size of the model layer of a catalogue entry
// that gives no layers.
const DefaultModelLayerSize = 64 << 10

// blob is a resolved layer: digest, size and a way to read its bytes.
type blob struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`

	data []byte // exact content, or nil for generated content
	seed [32]byte
}

// ReadAt fills p with the blob's bytes from off.
func (b *blob) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.Size {
		return 0, io.EOF
	}
	n := int64(len(p))
	if off+n > b.Size {
		n = b.Size - off
	}
	if b.data != nil {
		copy(p, b.data[off:off+n])
	} else {
		for i := int64(0); i < n; i++ {
			o := off + i
			p[i] = b.seed[o%32] ^ byte(o/32) ^ byte(o/8192)
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (b *blob) hash() string {
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for off := int64(0); off < b.Size; {
		n, _ := b.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// resolved is a catalogue model with its blobs and manifest bytes.
type resolved struct {
	spec     Model
	name     model.Name
	layers   []*blob // layers, then config last (the order Ollama pulls in)
	manifest []byte
	size     int64
}

func (r *resolved) short() string { return r.name.DisplayShortest() }

// parseName parses a model name as Ollama does and fills in the defaults.
func parseName(s string) (model.Name, bool) {
	n := model.ParseName(s)
	return n, n.IsValid()
}

func resolveModel(m Model) (*resolved, error) {
	n, ok := parseName(m.Name)
	if !ok {
		return nil, fmt.Errorf("ollamatest: catalogue model name %q is not valid", m.Name)
	}
	if m.Family == "" {
		m.Family = "llama"
	}
	if m.ParameterSize == "" {
		m.ParameterSize = "1B"
	}
	if m.QuantizationLevel == "" {
		m.QuantizationLevel = "Q4_0"
	}
	layers := m.Layers
	if layers == nil {
		layers = []Layer{
			{MediaType: MediaTypeModel, Size: DefaultModelLayerSize},
			{MediaType: MediaTypeTemplate, Data: []byte("{{ .Prompt }}")},
		}
	}
	r := &resolved{spec: m, name: n}
	var diffIDs []string
	for i, l := range layers {
		b := &blob{MediaType: l.MediaType, Size: l.Size, data: l.Data}
		if b.MediaType == "" {
			b.MediaType = MediaTypeModel
		}
		if l.Data != nil {
			b.Size = int64(len(l.Data))
		}
		if b.Size < 0 {
			return nil, fmt.Errorf("ollamatest: model %q layer %d has a negative size", m.Name, i)
		}
		b.seed = sha256.Sum256([]byte(fmt.Sprintf("%s#%d", n.String(), i)))
		b.Digest = b.hash()
		r.layers = append(r.layers, b)
		r.size += b.Size
		diffIDs = append(diffIDs, b.Digest)
	}
	cfg, _ := json.Marshal(map[string]any{
		"model_format":   "gguf",
		"model_family":   m.Family,
		"model_families": []string{m.Family},
		"model_type":     m.ParameterSize,
		"file_type":      m.QuantizationLevel,
		"architecture":   "amd64",
		"os":             "linux",
		"rootfs":         map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	c := &blob{MediaType: MediaTypeConfig, Size: int64(len(cfg)), data: cfg}
	c.Digest = c.hash()
	r.size += c.Size
	r.manifest, _ = json.Marshal(struct {
		SchemaVersion int     `json:"schemaVersion"`
		MediaType     string  `json:"mediaType"`
		Config        *blob   `json:"config"`
		Layers        []*blob `json:"layers"`
	}{2, MediaTypeManifest, c, r.layers})
	r.layers = append(r.layers, c)
	return r, nil
}

// manifestFile is the part of a stored manifest the fake reads back.
type manifestFile struct {
	Config struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	} `json:"config"`
	Layers []struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	} `json:"layers"`
}

// blobFileName is the file name Ollama stores a digest under.
func blobFileName(digest string) string { return strings.ReplaceAll(digest, ":", "-") }
