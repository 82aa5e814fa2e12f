package models

import (
	"errors"

	"github.com/ollama/ollama/api"
)

// LayerState is the progress of one blob of a pull.
type LayerState struct {
	// Digest is "sha256:<hex>".
	Digest string
	// Total and Completed are bytes, as Ollama last reported them
	// (Completed is clamped to [0, Total]).
	Total, Completed int64
	// Resumed is what was already there when the layer first showed up
	// (a partial download from an earlier run, or a cached blob).
	Resumed int64
}

// Tracker folds Ollama's pull progress lines into per-layer state.
// The zero value is ready to use; it is not safe for concurrent use.
type Tracker struct {
	// Status is the last status line ("pulling manifest", "pulling
	// 7730f1e6ff08", "verifying sha256 digest", "success").
	Status string
	// Layers in the order they first appeared.
	Layers []*LayerState
	// Success is set once the "success" line arrived.
	Success bool
	// Lines counts the progress lines applied.
	Lines int

	byDigest map[string]*LayerState
}

// Apply folds one progress line in and reports whether the status text
// changed (a new line for a line-per-status display).
func (t *Tracker) Apply(p api.ProgressResponse) bool {
	t.Lines++
	changed := p.Status != t.Status
	t.Status = p.Status
	if p.Status == "success" {
		t.Success = true
	}
	if p.Digest == "" {
		return changed
	}
	if t.byDigest == nil {
		t.byDigest = map[string]*LayerState{}
	}
	total := max(p.Total, 0)
	done := min(max(p.Completed, 0), total)
	l, ok := t.byDigest[p.Digest]
	if !ok {
		l = &LayerState{Digest: p.Digest, Resumed: done}
		t.byDigest[p.Digest] = l
		t.Layers = append(t.Layers, l)
	}
	l.Total, l.Completed = total, done
	return changed
}

// Progress sums the layers seen so far: bytes on disk and bytes in total.
func (t *Tracker) Progress() (completed, total int64) {
	for _, l := range t.Layers {
		completed += l.Completed
		total += l.Total
	}
	return completed, total
}

// OllamaError is an error Ollama reported for a pull: an {"error":…} line
// inside the 200 stream, or an HTTP error status before the stream began.
type OllamaError struct {
	// StatusCode is the HTTP status when Ollama answered with an error
	// status, 0 for an error line inside a 200 stream.
	StatusCode int
	Msg        string
}

func (e *OllamaError) Error() string { return e.Msg }

// ErrIncomplete reports a pull stream that ended without "success" or an
// error: the connection was cut.
var ErrIncomplete = errors.New("the pull stream ended before \"success\"")
