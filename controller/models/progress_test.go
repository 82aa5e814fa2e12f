package models

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
)

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r != '\n' && (unicode.IsControl(r) || r == '\u202e') })
}

func TestLinesHaveNoControlCharacters(t *testing.T) {
	e := newEnv(t, ollamatest.Config{ChunkSize: 4096,
		Catalogue: []ollamatest.Model{{Name: "tiny"}, {Name: "bad"}}})
	e.srv.SetFault("bad", ollamatest.PullFault{AfterBytes: 5000, Error: "evil\x1b[2J\rforged line\n\u202eok\x07"})
	var buf bytes.Buffer
	r := NewRenderer(&buf, RenderLines)
	e.mgr.Pull(context.Background(), names("tiny", "bad"), r)
	r.Close()
	out := buf.String()
	if hasControl(out) {
		t.Errorf("control characters in %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// One line per status change: manifest, 3 blobs, verify, write, success,
	// plus the check and the verification.
	var tiny []string
	for _, l := range lines {
		if strings.HasPrefix(l, "tiny:latest: ") {
			tiny = append(tiny, l)
		}
	}
	if len(tiny) != 9 || tiny[1] != "tiny:latest: pulling manifest" || !strings.HasPrefix(tiny[2], "tiny:latest: pulling ") ||
		!strings.HasSuffix(tiny[2], "(64.0 KiB)") || !strings.HasPrefix(tiny[8], "tiny:latest: verified on the drive: manifest and 3 blobs") {
		t.Errorf("tiny lines:\n%s", strings.Join(tiny, "\n"))
	}
	if !strings.Contains(out, "bad:latest: failed: pulling bad:latest on gpu1: evil [2J forged line  ok ") {
		t.Errorf("failure line missing:\n%s", out)
	}
}

func TestJSONLinesEvents(t *testing.T) {
	e := newEnv(t, fakeCfg())
	var buf bytes.Buffer
	r := NewRenderer(&buf, RenderJSON)
	if err := e.mgr.Pull(context.Background(), names("tiny"), r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	var kinds []EventKind
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if ev.Host != "gpu1" || ev.Model != "tiny:latest" || ev.Time.IsZero() {
			t.Errorf("event %+v", ev)
		}
		kinds = append(kinds, ev.Kind)
	}
	if kinds[0] != EventCheck || kinds[len(kinds)-1] != EventVerified {
		t.Errorf("kinds %v", kinds)
	}
}

func TestBarsRender(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}, {Name: "gone"}}})
	e.srv.SetFault("gone", ollamatest.PullFault{AfterBytes: 100})
	var buf bytes.Buffer
	r := NewRenderer(&buf, RenderBars)
	e.mgr.Concurrency = 2
	e.mgr.Pull(context.Background(), names("tiny", "gone"), r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.Close() // idempotent
	out := buf.String()
	for _, want := range []string{"tiny:latest pulling manifest", "tiny:latest verified on the drive", "gone:latest interrupted"} {
		if !strings.Contains(strings.ReplaceAll(out, ": ", " "), want) {
			t.Errorf("bars output lacks %q:\n%s", want, out)
		}
	}
	m := manifestOf(t, e.srv, "tiny")
	if !strings.Contains(out, "tiny:latest "+strings.TrimPrefix(m.Layers[0].Digest, "sha256:")[:12]) {
		t.Errorf("no bar for the model layer:\n%s", out)
	}
}
