package models

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ollamalive/gpuctl/inventory"
)

// EventKind names what an Event reports.
type EventKind string

const (
	// EventCheck: the space check before a pull (NeedBytes, AvailBytes, or
	// Message when the size is unknown).
	EventCheck EventKind = "check"
	// EventRefused: the pull was refused before it started (Error).
	EventRefused EventKind = "refused"
	// EventStatus: one of Ollama's progress lines (Status, Digest, Total,
	// Completed).
	EventStatus EventKind = "status"
	// EventVerified: the model is listed by Ollama and its manifest and blobs
	// are on the drive with the right sizes (Message, Total).
	EventVerified EventKind = "verified"
	// EventFailed: the pull or the check after it failed (Error).
	EventFailed EventKind = "failed"
	// EventInterrupted: the pull was cut off and will resume on the next
	// run (Error, Completed, Total).
	EventInterrupted EventKind = "interrupted"
)

// Event is one step of one model's pull. With --json each is one NDJSON
// line on stdout.
type Event struct {
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Model      string    `json:"model"`
	Kind       EventKind `json:"event"`
	Status     string    `json:"status,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	Total      int64     `json:"total,omitempty"`
	Completed  int64     `json:"completed,omitempty"`
	NeedBytes  int64     `json:"need_bytes,omitempty"`
	AvailBytes int64     `json:"avail_bytes,omitempty"`
	Message    string    `json:"message,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// ProgressSink receives pull events. Implementations must be safe for
// concurrent use: pulls of several models report at the same time.
type ProgressSink interface {
	Event(Event)
}

// SinkFunc adapts a function to ProgressSink.
type SinkFunc func(Event)

func (f SinkFunc) Event(e Event) { f(e) }

// Discard is a sink that drops every event.
var Discard ProgressSink = SinkFunc(func(Event) {})

// Renderer is a ProgressSink that draws to a terminal or stream. Close
// flushes it; call it once, after the last event.
type Renderer interface {
	ProgressSink
	Close() error
}

// RenderMode picks a Renderer.
type RenderMode int

const (
	// RenderLines prints one line per status change, without control
	// characters (pipes, files, logs).
	RenderLines RenderMode = iota
	// RenderBars draws multi-line progress bars (a terminal).
	RenderBars
	// RenderJSON prints each event as one JSON line.
	RenderJSON
)

// NewRenderer returns the renderer for mode, writing to w.
func NewRenderer(w io.Writer, mode RenderMode) Renderer {
	switch mode {
	case RenderBars:
		return NewBars(w)
	case RenderJSON:
		return NewJSONLines(w)
	default:
		return NewLines(w)
	}
}

// JSONLines writes every event as one JSON object per line.
type JSONLines struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSONLines returns a JSONLines renderer.
func NewJSONLines(w io.Writer) *JSONLines { return &JSONLines{enc: json.NewEncoder(w)} }

func (j *JSONLines) Event(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.enc.Encode(e)
}

func (j *JSONLines) Close() error { return nil }

// Lines prints one line per status change of each model. Text that came
// from the network is stripped of control characters.
type Lines struct {
	mu   sync.Mutex
	w    io.Writer
	last map[string]string
}

// NewLines returns a Lines renderer.
func NewLines(w io.Writer) *Lines { return &Lines{w: w, last: map[string]string{}} }

func (l *Lines) Event(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Kind == EventStatus {
		if l.last[e.Model] == e.Status {
			return
		}
		l.last[e.Model] = e.Status
	}
	if s := Describe(e); s != "" {
		fmt.Fprintln(l.w, Sanitize(s))
	}
}

func (l *Lines) Close() error { return nil }

// Describe is the one-line text of an event ("MODEL: what happened"),
// shared by Lines, Bars and gpuctl wake's progress. It may hold text from
// the network: Sanitize it before printing.
func Describe(e Event) string {
	p := e.Model + ": "
	switch e.Kind {
	case EventCheck:
		if e.Message != "" {
			return p + e.Message
		}
		return p + fmt.Sprintf("needs %s, the drive has %s free", size(e.NeedBytes), size(e.AvailBytes))
	case EventRefused:
		return p + "refused: " + e.Error
	case EventStatus:
		if e.Digest == "" || e.Total == 0 {
			return p + e.Status
		}
		switch {
		case e.Completed >= e.Total:
			return p + fmt.Sprintf("%s (%s, already there)", e.Status, size(e.Total))
		case e.Completed > 0:
			return p + fmt.Sprintf("%s (%s, resuming at %s)", e.Status, size(e.Total), size(e.Completed))
		default:
			return p + fmt.Sprintf("%s (%s)", e.Status, size(e.Total))
		}
	case EventVerified:
		return p + e.Message
	case EventFailed:
		return p + "failed: " + e.Error
	case EventInterrupted:
		return p + "interrupted: " + e.Error
	}
	return ""
}

func size(n int64) string { return inventory.ByteSize(max(n, 0)).String() }

// Sanitize replaces control characters (C0, DEL, C1, and the Unicode
// bidi/line controls) with spaces, so text from a server cannot move the
// cursor or forge lines.
func Sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f,
			r >= 0x200e && r <= 0x200f, r >= 0x2028 && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return ' '
		}
		return r
	}, s)
}

// Bars draws one progress bar per layer (bytes, rate, ETA) with
// github.com/vbauerster/mpb, and other events as lines among the bars, in
// the order they happened. Lines longer than the terminal are cut; the
// command prints the full error at the end.
type Bars struct {
	mu   sync.Mutex
	p    *mpb.Progress
	bars map[string]*bar // by model + " " + digest
	done bool
}

type bar struct {
	b     *mpb.Bar
	model string
	last  time.Time
}

// NewBars returns a Bars renderer drawing on w (a terminal).
func NewBars(w io.Writer) *Bars {
	return &Bars{
		p:    mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh()),
		bars: map[string]*bar{},
	}
}

func (b *Bars) Event(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	if e.Kind == EventStatus && e.Digest != "" && e.Total > 0 {
		k := e.Model + " " + e.Digest
		br, ok := b.bars[k]
		now := time.Now()
		if !ok {
			short := strings.TrimPrefix(e.Digest, "sha256:")
			if len(short) > 12 {
				short = short[:12]
			}
			name := Sanitize(e.Model + " " + short)
			br = &bar{model: e.Model, last: now, b: b.p.AddBar(e.Total, mpb.BarWidth(30),
				mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(
					decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WCSyncSpace),
					decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace),
					decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30, decor.WCSyncSpace), "done"),
				))}
			b.bars[k] = br
			br.b.SetCurrent(e.Completed)
			return
		}
		br.b.EwmaSetCurrent(e.Completed, now.Sub(br.last))
		br.last = now
		return
	}
	if e.Kind == EventFailed || e.Kind == EventInterrupted || e.Kind == EventRefused {
		for _, br := range b.bars {
			if br.model == e.Model && !br.b.Completed() {
				br.b.Abort(false)
			}
		}
	}
	if s := Describe(e); s != "" && !(e.Kind == EventStatus && e.Digest != "") {
		// A message is a bar with no filler that completes at once: it
		// keeps its place among the bars and is drawn before Close returns.
		text := Sanitize(s)
		mb := b.p.New(0, mpb.NopStyle(), mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return text })))
		mb.SetTotal(-1, true)
	}
}

// Close stops every bar still running and waits for the last frame.
func (b *Bars) Close() error {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return nil
	}
	b.done = true
	for _, br := range b.bars {
		if !br.b.Completed() {
			br.b.Abort(false)
		}
	}
	b.mu.Unlock()
	b.p.Wait()
	return nil
}
