package models

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	return fixtures.Read(t, name)
}

func TestDecodeStreamFixtures(t *testing.T) {
	for _, tc := range []struct {
		file      string
		statuses  []string
		layers    int
		done      int64
		total     int64
		wantErr   error
		errText   string
		resumedAt []int64
	}{
		{
			file:     "ollama_api_pull_stream_real_local-registry_v0.17.4.ndjson",
			statuses: []string{"pulling manifest", "pulling 7730f1e6ff08", "pulling cd99dc83c844", "verifying sha256 digest", "writing manifest", "success"},
			layers:   2, done: 2097152 + 155, total: 2097152 + 155, resumedAt: []int64{2097152, 155},
		},
		{
			file:     "ollama_api_pull_stream_real_missing-model_v0.17.4.ndjson",
			statuses: []string{"pulling manifest"},
			errText:  "pull model manifest: file does not exist",
		},
		{
			// Starts mid-stream; the first line of each layer has no completed.
			file:     "ollama_api_pull_stream_real-tail_trimmed.ndjson",
			statuses: []string{"pulling 832dd9e00a68", "pulling 377ac4d7aeef", "verifying sha256 digest", "writing manifest", "success"},
			layers:   2, done: 11343 + 487, total: 11343 + 487, resumedAt: []int64{0, 0},
		},
		{
			// A capture cut off after the first layer: no success.
			file:     "cut",
			statuses: []string{"pulling manifest", "pulling 7730f1e6ff08"},
			layers:   1, done: 2097152, total: 2097152, wantErr: ErrIncomplete,
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var in []byte
			if tc.file == "cut" {
				full := readFixture(t, "ollama_api_pull_stream_real_local-registry_v0.17.4.ndjson")
				in = bytes.Join(bytes.SplitAfter(full, []byte("\n"))[:2], nil)
			} else {
				in = readFixture(t, tc.file)
			}
			var tr Tracker
			var statuses []string
			err := DecodeStream(bytes.NewReader(in), func(p api.ProgressResponse) error {
				if tr.Apply(p) {
					statuses = append(statuses, p.Status)
				}
				return nil
			})
			switch {
			case tc.errText != "":
				var oe *OllamaError
				if !errors.As(err, &oe) || oe.Msg != tc.errText {
					t.Errorf("err %v, want OllamaError %q", err, tc.errText)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("err %v", err)
			}
			if !slices.Equal(statuses, tc.statuses) {
				t.Errorf("statuses %q, want %q", statuses, tc.statuses)
			}
			done, total := tr.Progress()
			if len(tr.Layers) != tc.layers || done != tc.done || total != tc.total {
				t.Errorf("layers %d progress %d/%d", len(tr.Layers), done, total)
			}
			for i, r := range tc.resumedAt {
				if tr.Layers[i].Resumed != r {
					t.Errorf("layer %d resumed %d, want %d", i, tr.Layers[i].Resumed, r)
				}
			}
			if tr.Success != (err == nil) {
				t.Errorf("success %v with err %v", tr.Success, err)
			}
		})
	}
}

func TestDecodeStreamRejectsNonStreams(t *testing.T) {
	// The docs example is pretty-printed JSON, not NDJSON.
	in := "{\n  \"status\": \"pulling manifest\"\n}\n"
	if err := DecodeStream(strings.NewReader(in), func(api.ProgressResponse) error { return nil }); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("err %v", err)
	}
	// A non-stream capture ("BODY\nHTTP 200"): the status line is not JSON.
	in = string(readFixture(t, "ollama_api_pull_nostream_real_v0.17.4.txt"))
	if err := DecodeStream(strings.NewReader(in), func(api.ProgressResponse) error { return nil }); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err %v", err)
	}
}

func FuzzDecodeStream(f *testing.F) {
	for _, n := range []string{
		"ollama_api_pull_stream_real_local-registry_v0.17.4.ndjson",
		"ollama_api_pull_stream_real_missing-model_v0.17.4.ndjson",
		"ollama_api_pull_stream_real-tail_trimmed.ndjson",
	} {
		f.Add(readFixture(f, n))
	}
	f.Add([]byte(`{"status":"pulling x","digest":"sha256:1","total":-5,"completed":99}` + "\n"))
	f.Add([]byte(`{"error":null}` + "\n" + `{"status":"success"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var tr Tracker
		var sawSuccess bool
		err := DecodeStream(bytes.NewReader(b), func(p api.ProgressResponse) error {
			tr.Apply(p)
			sawSuccess = sawSuccess || p.Status == "success"
			return nil
		})
		if err == nil && !tr.Success {
			t.Fatalf("nil error without success")
		}
		if err != nil && !errors.Is(err, ErrIncomplete) && tr.Success && !sawSuccess {
			t.Fatalf("success state without a success line")
		}
		done, total := tr.Progress()
		if done < 0 || done > total {
			t.Fatalf("progress %d/%d", done, total)
		}
		for _, l := range tr.Layers {
			if l.Resumed < 0 || l.Resumed > l.Total && l.Total > 0 {
				t.Fatalf("layer %+v", l)
			}
		}
		e := Event{Model: "m", Kind: EventStatus, Status: tr.Status, Total: total, Completed: done}
		if s := Sanitize(Describe(e)); strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("control character in %q", s)
		}
	})
}
