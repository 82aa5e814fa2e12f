package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
)

// fakeHost wires the model verbs to a fake Ollama and a fake drive.
func fakeHost(t *testing.T, cfg ollamatest.Config, declared string) (cfgPath string, srv *ollamatest.Server, drive *ollamatest.DriveRunner) {
	t.Helper()
	srv = ollamatest.Start(t, cfg)
	drive = &ollamatest.DriveRunner{Remote: "/mnt/models/ollama", Local: filepath.Dir(srv.Dir()), Avail: 1 << 40}
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "gpuctl.toml")
	toml := `state_dir = "` + dir + `"
[[host]]
name = "gpu1"
address = "127.0.0.1"
ollama_url = "` + srv.URL + `"
models = [` + declared + `]
`
	if err := os.WriteFile(cfgPath, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	old := modelsManager
	t.Cleanup(func() { modelsManager = old })
	modelsManager = func(env *Env, inv *loadedInventory, h *inventory.Host, insecure bool) (*models.Manager, func(), error) {
		return &models.Manager{Client: srv.Client(), Runner: drive, Host: h, Insecure: insecure, Now: env.Now}, func() {}, nil
	}
	return cfgPath, srv, drive
}

func runEnv(t *testing.T, tty bool, now time.Time, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, StdoutTTY: tty}
	if !now.IsZero() {
		e.Now = func() time.Time { return now }
	}
	code := Run(context.Background(), e, append([]string{"gpuctl"}, args...))
	return code, out.String(), errb.String()
}

func TestPullDeclaredMissingPlainOutput(t *testing.T) {
	cfg, srv, _ := fakeHost(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}, {Name: "other:7b"}}}, `"tiny", "other:7b"`)
	srv.Install("other:7b")
	code, out, errOut := runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gpu1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && unicode.IsControl(r) }) {
		t.Errorf("control characters in %q", out)
	}
	for _, want := range []string{"tiny:latest: pulling manifest\n", "tiny:latest: success\n", "tiny:latest: verified on the drive: manifest and 3 blobs"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "other:7b") || len(srv.PullRequests()) != 1 {
		t.Errorf("pulled a present model:\n%s", out)
	}
	// Nothing left to pull.
	code, out, errOut = runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gpu1")
	if code != 0 || out != "" || !strings.Contains(errOut, "all 2 declared models are present") {
		t.Errorf("second run: %d %q %q", code, out, errOut)
	}
}

func TestPullJSONAndErrors(t *testing.T) {
	cfg, srv, _ := fakeHost(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}}, `"tiny"`)
	code, out, errOut := runEnv(t, false, time.Time{}, "--config", cfg, "pull", "--json", "gpu1", "nope")
	if code != ExitFailure || !strings.Contains(errOut, "gpuctl: pulling nope:latest on gpu1: pull model manifest: file does not exist") {
		t.Errorf("missing: exit %d, stderr %q", code, errOut)
	}
	var last models.Event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("not NDJSON: %q", l)
		}
	}
	if last.Kind != models.EventFailed || last.Model != "nope:latest" {
		t.Errorf("last event %+v", last)
	}
	// Interrupted: exit 1 and the resume hint.
	srv.SetFault("tiny", ollamatest.PullFault{AfterBytes: 100, Times: 1})
	code, _, errOut = runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gpu1")
	if code != ExitFailure || !strings.Contains(errOut, "run `gpuctl pull gpu1 tiny:latest` again to resume") {
		t.Errorf("interrupted: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gpu1")
	if code != 0 {
		t.Errorf("resume: exit %d, stderr %q", code, errOut)
	}
	for _, a := range [][]string{{"pull"}, {"pull", "--concurrency", "0", "gpu1"}, {"pull", "gpu1", "../x"}, {"pull", "nohost"}} {
		if code, _, errOut := runEnv(t, false, time.Time{}, append([]string{"--config", cfg}, a...)...); code != ExitUsage {
			t.Errorf("%v: exit %d %q", a, code, errOut)
		}
	}
}

func TestPullBarsOnTTY(t *testing.T) {
	cfg, _, _ := fakeHost(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}}, `"tiny"`)
	code, out, errOut := runEnv(t, true, time.Time{}, "--config", cfg, "pull", "gpu1")
	if code != 0 || !strings.Contains(out, "[") || !strings.Contains(out, "KiB") {
		t.Errorf("exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestModelsAndUnload(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg, srv, _ := fakeHost(t, ollamatest.Config{Now: func() time.Time { return now },
		Catalogue: []ollamatest.Model{{Name: "tiny", VRAM: 3 << 30}, {Name: "b"}}}, `"tiny", "absent:7b"`)
	srv.Install("tiny")
	srv.Install("b")
	srv.Load("tiny", 4*time.Minute+30*time.Second)
	srv.Load("b", time.Hour)
	code, out, errOut := runEnv(t, false, now, "--config", cfg, "models", "gpu1")
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "MODEL") ||
		strings.Join(strings.Fields(lines[1]), " ") != "tiny yes present 64.3 KiB 64.3 KiB 3.0 GiB in 4m30s" ||
		strings.Join(strings.Fields(lines[2]), " ") != "absent:7b yes missing - - - -" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[3]), " "), "b:latest no present") {
		t.Errorf("table:\n%s", out)
	}
	if !strings.Contains(errOut, "1 declared model(s) missing on gpu1") {
		t.Errorf("stderr %q", errOut)
	}
	code, out, _ = runEnv(t, false, now, "--config", cfg, "models", "--json", "gpu1")
	var rep models.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Models) != 3 || rep.Models[0].VRAM != 3<<30 {
		t.Errorf("json %d %s", code, out)
	}

	code, _, errOut = runEnv(t, false, now, "--config", cfg, "unload", "gpu1", "tiny")
	if code != 0 || !strings.Contains(errOut, "gpu1: unloaded tiny:latest") || strings.Join(srv.Loaded(), ",") != "b:latest" {
		t.Errorf("unload one: %d %q %v", code, errOut, srv.Loaded())
	}
	code, _, errOut = runEnv(t, false, now, "--config", cfg, "unload", "--all", "gpu1")
	if code != 0 || !strings.Contains(errOut, "gpu1: unloaded b:latest") || len(srv.Loaded()) != 0 {
		t.Errorf("unload all: %d %q %v", code, errOut, srv.Loaded())
	}
	code, _, errOut = runEnv(t, false, now, "--config", cfg, "unload", "--all", "gpu1")
	if code != 0 || !strings.Contains(errOut, "no model was loaded") {
		t.Errorf("unload all again: %d %q", code, errOut)
	}
	for _, a := range [][]string{{"unload", "gpu1"}, {"unload", "--all", "gpu1", "tiny"}} {
		if code, _, _ := runEnv(t, false, now, append([]string{"--config", cfg}, a...)...); code != ExitUsage {
			t.Errorf("%v: exit %d", a, code)
		}
	}
	if code, _, errOut := runEnv(t, false, now, "--config", cfg, "unload", "gpu1", "nope"); code != ExitFailure || !strings.Contains(errOut, "not found") {
		t.Errorf("unload missing: %d %q", code, errOut)
	}
}
