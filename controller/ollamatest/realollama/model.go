package realollama

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"

	"github.com/ollama/ollama/fs/ggml"
)

// ModelSpec is the shape of a random-weight llama model. Every weight is F32
// and drawn from a PCG seeded with Seed, so one spec always gives the same
// bytes (and the same digest).
type ModelSpec struct {
	Name      string // the model's short name in the test registry ("tiny")
	Seed      uint64
	Layers    int // block_count
	Embedding int // embedding_length
	Heads     int // attention.head_count (= head_count_kv)
	FeedFwd   int // feed_forward_length
	Context   int // context_length
	// NumPredict caps a generation (the params layer): random weights
	// rarely produce </s>, and an uncapped generation runs for ever.
	NumPredict int
}

// Tiny is the runnable test model: about 600 KB, loaded by Ollama's CPU
// runner in a fraction of a second and generating over 1,000 tokens/s.
var Tiny = ModelSpec{Name: "tiny", Seed: 1, Layers: 2, Embedding: 64, Heads: 4, FeedFwd: 128, Context: 512, NumPredict: 24}

// Heavy is the same architecture at about 80 MB: more than serve's 64 MiB
// max_body, for `ollama create` through serve and for a pull that takes a
// visible moment.
var Heavy = ModelSpec{Name: "heavy", Seed: 2, Layers: 19, Embedding: 256, Heads: 4, FeedFwd: 1024, Context: 512, NumPredict: 24}

// Template is the Go template of the models' template layer (Ollama's
// format, not the GGUF's Jinja chat template).
const Template = `{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}</s>
{{ end }}<|assistant|>
`

// chatTemplate is the Jinja template stored in the GGUF itself
// (tokenizer.chat_template), as a converted model carries one.
const chatTemplate = `{% for message in messages %}<|{{ message['role'] }}|>
{{ message['content'] }}</s>
{% endfor %}{% if add_generation_prompt %}<|assistant|>
{% endif %}`

// vocab is a SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte
// tokens <0x00>…<0xFF>, then "▁" and printable ASCII pieces so that the
// gibberish the model writes is readable.
func vocab() (tokens []string, scores []float32, types []int32) {
	const (
		normal  = 1
		unknown = 2
		control = 3
		byteTok = 6
	)
	add := func(s string, score float32, typ int32) {
		tokens = append(tokens, s)
		scores = append(scores, score)
		types = append(types, typ)
	}
	add("<unk>", 0, unknown)
	add("<s>", 0, control)
	add("</s>", 0, control)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 0, byteTok)
	}
	add("▁", -1, normal)
	for c := '!'; c <= '~'; c++ {
		add(string(c), -2, normal)
		if c >= 'a' && c <= 'z' {
			add("▁"+string(c), -3, normal)
		}
	}
	return tokens, scores, types
}

// randTensor is an F32 tensor of values uniform in ±scale (or all `fill`
// when scale is 0), generated as it is written.
type randTensor struct {
	n     uint64
	seed  uint64
	scale float32
	fill  float32
}

func (r randTensor) WriteTo(w io.Writer) (int64, error) {
	rng := rand.New(rand.NewPCG(r.seed, r.seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 0, 64<<10)
	var total int64
	for i := uint64(0); i < r.n; i++ {
		v := r.fill
		if r.scale != 0 {
			v = (rng.Float32()*2 - 1) * r.scale
		}
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		if len(buf) == cap(buf) || i == r.n-1 {
			n, err := w.Write(buf)
			total += int64(n)
			if err != nil {
				return total, err
			}
			buf = buf[:0]
		}
	}
	return total, nil
}

// WriteGGUF writes the spec's model to path with Ollama's own
// fs/ggml.WriteGGUF.
func (s ModelSpec) WriteGGUF(path string) error {
	tokens, scores, types := vocab()
	nv := uint64(len(tokens))
	e, ff := uint64(s.Embedding), uint64(s.FeedFwd)
	kv := ggml.KV{
		"general.architecture":                   "llama",
		"general.name":                           s.Name,
		"general.file_type":                      uint32(0), // all F32
		"llama.block_count":                      uint32(s.Layers),
		"llama.context_length":                   uint32(s.Context),
		"llama.embedding_length":                 uint32(s.Embedding),
		"llama.feed_forward_length":              uint32(s.FeedFwd),
		"llama.attention.head_count":             uint32(s.Heads),
		"llama.attention.head_count_kv":          uint32(s.Heads),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.rope.dimension_count":             uint32(s.Embedding / s.Heads),
		"llama.rope.freq_base":                   float32(10000),
		"llama.vocab_size":                       uint32(nv),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.tokens":                  tokens,
		"tokenizer.ggml.scores":                  scores,
		"tokenizer.ggml.token_type":              types,
		"tokenizer.ggml.unknown_token_id":        uint32(0),
		"tokenizer.ggml.bos_token_id":            uint32(1),
		"tokenizer.ggml.eos_token_id":            uint32(2),
		"tokenizer.ggml.add_bos_token":           true,
		"tokenizer.ggml.add_eos_token":           false,
		"tokenizer.chat_template":                chatTemplate,
	}
	seed := s.Seed << 32
	tensor := func(name string, scale, fill float32, shape ...uint64) *ggml.Tensor {
		n := uint64(1)
		for _, d := range shape {
			n *= d
		}
		seed++
		return &ggml.Tensor{Name: name, Kind: uint32(ggml.TensorTypeF32), Shape: shape,
			WriterTo: randTensor{n: n, seed: seed, scale: scale, fill: fill}}
	}
	w := float32(1 / math.Sqrt(float64(s.Embedding)))
	ts := []*ggml.Tensor{
		tensor("token_embd.weight", 1, 0, e, nv),
		tensor("output_norm.weight", 0, 1, e),
		tensor("output.weight", w, 0, e, nv),
	}
	for i := range s.Layers {
		b := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			tensor(b+"attn_norm.weight", 0, 1, e),
			tensor(b+"attn_q.weight", w, 0, e, e),
			tensor(b+"attn_k.weight", w, 0, e, e),
			tensor(b+"attn_v.weight", w, 0, e, e),
			tensor(b+"attn_output.weight", w, 0, e, e),
			tensor(b+"ffn_norm.weight", 0, 1, e),
			tensor(b+"ffn_gate.weight", w, 0, e, ff),
			tensor(b+"ffn_up.weight", w, 0, e, ff),
			tensor(b+"ffn_down.weight", float32(1/math.Sqrt(float64(s.FeedFwd))), 0, ff, e),
		)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := ggml.WriteGGUF(f, kv, ts); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
