package cli

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
)

// The progress lines of a wake's pull: a percentage only for a layer that
// downloads, the space check and the verification in words, nothing after
// the verification and no line twice in a row.
func TestWakePullProgressLines(t *testing.T) {
	srv := ollamatest.Start(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	drive := &ollamatest.DriveRunner{Remote: "/mnt/models/ollama", Local: filepath.Dir(srv.Dir()), Avail: 1 << 40}
	h := &inventory.Host{Name: "gpu1", Address: "127.0.0.1", SSHPort: 22, OnDemand: true,
		OllamaURL: must(inventory.ParseURL(srv.URL)), ModelsDir: "/mnt/models/ollama"}
	p := modelsPuller{stateDir: t.TempDir(), client: func(*inventory.Host) *api.Client { return srv.Client() }}
	var lines []string
	if err := p.Pull(t.Context(), h, drive, []inventory.ModelName{"tiny"}, func(l string) { lines = append(lines, l) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("lines:\n%s", strings.Join(lines, "\n"))
	if len(lines) < 3 {
		t.Fatalf("%d lines", len(lines))
	}
	pct := regexp.MustCompile(`\d+%$`)
	for i, l := range lines {
		if pct.MatchString(l) && !strings.Contains(l, ": pulling ") {
			t.Errorf("line %q has a percentage but is no layer download", l)
		}
		if i > 0 && l == lines[i-1] {
			t.Errorf("line %q twice in a row", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "tiny:latest: verified on the drive: manifest and 3 blobs, ") ||
		!strings.HasSuffix(last, " under /mnt/models/ollama") {
		t.Errorf("last line %q, want the verification", last)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "tiny:latest: success\n") {
		t.Error("no success line before the verification")
	}
}

func TestPullLineVerified(t *testing.T) {
	got := pullLine(models.Event{Model: "m:latest", Kind: models.EventVerified, Total: 3 << 30,
		Message: "verified on the drive: manifest and 2 blobs, 3.0 GiB under /d"})
	if got != "m:latest: verified on the drive: manifest and 2 blobs, 3.0 GiB under /d" {
		t.Errorf("got %q", got)
	}
	got = pullLine(models.Event{Model: "m:latest", Kind: models.EventCheck, NeedBytes: 1 << 30, AvailBytes: 4 << 30})
	if strings.Contains(got, "%") || !strings.Contains(got, "needs 1.0 GiB") {
		t.Errorf("check line %q", got)
	}
}
