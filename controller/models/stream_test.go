package models

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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
			err := decodeStream(bytes.NewReader(in), func(p api.ProgressResponse) error {
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

// maxLine matches the Ollama client's stream buffer.
const maxLine = 8 << 20

// decodeStream (tests only) reads an NDJSON pull stream (the body of POST /api/pull) and
// calls fn for every progress line. It is stricter than the Ollama client,
// which treats a truncated stream as success: an {"error":…} line returns
// *OllamaError, a line that is not JSON returns an error naming its line
// number, and a stream that ends without a "success" line returns an error
// wrapping ErrIncomplete. Blank lines are skipped.
func decodeStream(r io.Reader, fn func(api.ProgressResponse) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	success := false
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v struct {
			api.ProgressResponse
			Error *string `json:"error"`
		}
		if err := json.Unmarshal(line, &v); err != nil {
			return fmt.Errorf("pull stream line %d is not a progress object: %w", n, err)
		}
		if v.Error != nil {
			return &OllamaError{Msg: *v.Error}
		}
		if v.Status == "success" {
			success = true
		}
		if err := fn(v.ProgressResponse); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrIncomplete, err)
	}
	if !success {
		return ErrIncomplete
	}
	return nil
}
