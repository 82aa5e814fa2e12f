package models

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
)

func names(s ...string) []inventory.ModelName {
	var out []inventory.ModelName
	for _, x := range s {
		out = append(out, inventory.ModelName(x))
	}
	return out
}

func TestPullSuccessWithProgress(t *testing.T) {
	e := newEnv(t, ollamatest.Config{ChunkSize: 16 << 10,
		Catalogue: []ollamatest.Model{{Name: "tiny", Layers: []ollamatest.Layer{{Size: 100 << 10}, {MediaType: ollamatest.MediaTypeTemplate, Size: 20}}}}},
		"tiny", "other:7b")
	e.srv.AddModel(ollamatest.Model{Name: "other:7b"})
	e.mgr.Manifests = fixedManifests{"tiny:latest": manifestOf(t, e.srv, "tiny")}
	ctx := context.Background()

	missing, err := e.mgr.Missing(ctx)
	if err != nil || !slices.Equal(missing, names("tiny", "other:7b")) {
		t.Fatalf("missing %v %v", missing, err)
	}
	if err := e.mgr.Pull(ctx, missing, e.rec); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.kinds("tiny:latest"); !slices.Equal(got, []EventKind{EventCheck, EventStatus, EventVerified}) {
		t.Errorf("events %v", got)
	}
	chk, _ := e.rec.find(EventCheck)
	man := manifestOf(t, e.srv, "tiny")
	if chk.NeedBytes != man.TotalSize() || chk.AvailBytes != 1<<40 {
		t.Errorf("check %+v", chk)
	}
	// other:7b had no manifest source: size unknown, said so, pulled anyway.
	var unknown bool
	var layerLines, maxCompleted int64
	var statuses []string
	for _, ev := range e.rec.events {
		if ev.Model == "other:7b" && ev.Kind == EventCheck && strings.Contains(ev.Message, "size unknown") {
			unknown = true
		}
		if ev.Model == "tiny:latest" && ev.Kind == EventStatus {
			if len(statuses) == 0 || statuses[len(statuses)-1] != ev.Status {
				statuses = append(statuses, ev.Status)
			}
			if ev.Digest == man.Layers[0].Digest {
				layerLines++
				maxCompleted = max(maxCompleted, ev.Completed)
			}
		}
	}
	if !unknown {
		t.Error("no size-unknown message for other:7b")
	}
	if layerLines < 7 || maxCompleted != 100<<10 {
		t.Errorf("layer progress: %d lines, completed %d", layerLines, maxCompleted)
	}
	want := []string{"pulling manifest", "pulling " + man.Layers[0].Digest[7:19], "pulling " + man.Layers[1].Digest[7:19],
		"pulling " + man.Config.Digest[7:19], "verifying sha256 digest", "writing manifest", "success"}
	if !slices.Equal(statuses, want) {
		t.Errorf("statuses %q\nwant %q", statuses, want)
	}
	if missing, _ := e.mgr.Missing(ctx); len(missing) != 0 {
		t.Errorf("still missing %v", missing)
	}
	v, err := e.mgr.Verify(ctx, "tiny")
	if err != nil || v.Size != man.TotalSize() || len(v.Blobs) != 3 || v.ManifestPath != remoteDir+"/models/manifests/registry.ollama.ai/library/tiny/latest" {
		t.Errorf("verify %+v %v", v, err)
	}
	// The drive checks used the fixed templates, paths as argv.
	for _, c := range e.drive.Commands() {
		switch c[0] {
		case "df":
			if !slices.Equal(c, hostcmd.DFArgs(remoteDir)) {
				t.Errorf("df argv %q", c)
			}
		case "stat", "cat":
			for _, p := range c[len(c)-1:] {
				if !strings.HasPrefix(p, remoteDir+"/") {
					t.Errorf("path outside models_dir: %q", c)
				}
			}
		default:
			t.Errorf("unexpected command %q", c)
		}
	}
}

func TestPullMissingModelErrorInStream(t *testing.T) {
	e := newEnv(t, ollamatest.Config{})
	err := e.mgr.Pull(context.Background(), names("nope"), e.rec)
	var oe *OllamaError
	if !errors.As(err, &oe) || oe.StatusCode != 0 || oe.Msg != "pull model manifest: file does not exist" {
		t.Fatalf("err %v (%T)", err, err)
	}
	if !strings.Contains(err.Error(), "pulling nope:latest on gpu1: pull model manifest: file does not exist") {
		t.Errorf("message %q", err)
	}
	if got := e.rec.kinds("nope:latest"); !slices.Equal(got, []EventKind{EventCheck, EventStatus, EventFailed}) {
		t.Errorf("events %v", got)
	}
}

func TestPullHTTP500WithoutStreaming(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	e.srv.SetFault("tiny", ollamatest.PullFault{BeforeStream: true, Error: "pull model manifest: file does not exist"})
	err := e.mgr.Pull(context.Background(), names("tiny"), e.rec)
	var oe *OllamaError
	if !errors.As(err, &oe) || oe.StatusCode != 500 || oe.Msg != "pull model manifest: file does not exist" {
		t.Fatalf("err %v", err)
	}
}

func TestPullMidStreamError(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	e.srv.SetFault("tiny", ollamatest.PullFault{AfterBytes: 1000, Error: "write /root/.ollama/models/blobs/sha256-x-partial: no space left on device"})
	err := e.mgr.Pull(context.Background(), names("tiny"), e.rec)
	var oe *OllamaError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("err %v", err)
	}
	var ie *InterruptedError
	if errors.As(err, &ie) {
		t.Error("an Ollama error is not an interruption")
	}
}

func TestPullRefusedWhenItCannotFit(t *testing.T) {
	e := newEnv(t, ollamatest.Config{})
	reg := e.srv.StartRegistry(t)
	big := reg + "/library/big:latest"
	e.srv.AddModel(ollamatest.Model{Name: big, Layers: []ollamatest.Layer{{Size: 1 << 20}}})
	e.mgr.Manifests = &Registry{Insecure: true, HTTP: e.srv.HTTPClient()}
	e.drive.SetAvail(512 << 10)
	err := e.mgr.Pull(context.Background(), names(big), e.rec)
	var se *SpaceError
	if !errors.As(err, &se) {
		t.Fatalf("err %v", err)
	}
	size := manifestOf(t, e.srv, big).TotalSize()
	if se.Need != size || se.Avail != 512<<10 {
		t.Errorf("space error %+v", se)
	}
	for _, want := range []string{"needs 1.0 MiB (" + itoa(size) + " bytes)", "has 512.0 KiB (524288 bytes) free"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if n := e.srv.Requests("POST /api/pull"); n != 0 {
		t.Errorf("the fake saw %d pull requests", n)
	}
	if e.srv.Requests("REGISTRY GET /v2/library/big/manifests/latest") != 1 {
		t.Error("registry manifest was not fetched")
	}
	if _, err := os.Stat(e.srv.Dir() + "/blobs"); !os.IsNotExist(err) {
		t.Errorf("blobs dir exists: %v", err)
	}

	// It would fit, but not while keeping min_free.
	e.drive.SetAvail(3 << 20)
	e.host.MinFree = 2 << 20
	err = e.mgr.Pull(context.Background(), names(big), e.rec)
	if !errors.As(err, &se) || se.MinFree != 2<<20 || e.srv.Requests("POST /api/pull") != 0 {
		t.Fatalf("min_free: %v", err)
	}
	// Room enough: pulls.
	e.host.MinFree = 1 << 20
	if err := e.mgr.Pull(context.Background(), names(big), e.rec); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestPullSpaceCountsEarlierModelsAndPresentBlobs(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{
		{Name: "a", Layers: []ollamatest.Layer{{Size: 600 << 10}}},
		{Name: "b", Layers: []ollamatest.Layer{{Size: 600 << 10}}},
	}})
	e.mgr.Manifests = fixedManifests{"a:latest": manifestOf(t, e.srv, "a"), "b:latest": manifestOf(t, e.srv, "b")}
	e.drive.SetAvail(1 << 20)
	err := e.mgr.Pull(context.Background(), names("a", "b"), e.rec)
	var se *SpaceError
	if !errors.As(err, &se) || se.Model != "b:latest" {
		t.Fatalf("err %v", err)
	}
	if reqs := e.srv.PullRequests(); len(reqs) != 1 || reqs[0].Model != "a:latest" {
		t.Errorf("pulls %+v", reqs)
	}
	// a is on the drive now: pulling it again needs nothing.
	e.drive.SetAvail(0)
	if err := e.mgr.Pull(context.Background(), names("a"), e.rec); err != nil {
		t.Errorf("re-pull of a present model: %v", err)
	}
}

func TestPullInterruptedThenResumed(t *testing.T) {
	e := newEnv(t, ollamatest.Config{ChunkSize: 1000, Catalogue: []ollamatest.Model{{Name: "tiny", Layers: []ollamatest.Layer{{Size: 10000}}}}})
	e.srv.SetFault("tiny", ollamatest.PullFault{AfterBytes: 4000, Times: 1}) // connection drops
	ctx := context.Background()
	err := e.mgr.Pull(ctx, names("tiny"), e.rec)
	var ie *InterruptedError
	if !errors.As(err, &ie) || ie.Completed != 4000 || ie.Total != 10000 {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"interrupted at 3.9 KiB of 9.8 KiB", "run `gpuctl pull gpu1 tiny:latest` again to resume", "partial"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if _, ok := e.rec.find(EventInterrupted); !ok {
		t.Error("no interrupted event")
	}
	man := manifestOf(t, e.srv, "tiny")
	if fi, err := os.Stat(ollamatest.BlobPath(e.srv.Dir(), man.Layers[0].Digest) + "-partial"); err != nil || fi.Size() != 4000 {
		t.Fatalf("partial %v", err)
	}
	e.rec = &recorder{}
	if err := e.mgr.Pull(ctx, names("tiny"), e.rec); err != nil {
		t.Fatal(err)
	}
	for _, ev := range e.rec.events {
		if ev.Kind == EventStatus && ev.Digest == man.Layers[0].Digest {
			if ev.Completed != 4000 {
				t.Errorf("resumed pull started at %d, want 4000", ev.Completed)
			}
			break
		}
	}
	if _, ok := e.rec.find(EventVerified); !ok {
		t.Error("not verified after resume")
	}
}

func TestPullCtrlC(t *testing.T) {
	e := newEnv(t, ollamatest.Config{ChunkSize: 1000, Catalogue: []ollamatest.Model{{Name: "tiny", Layers: []ollamatest.Layer{{Size: 10000}}}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.rec.hook = func(ev Event) {
		if ev.Kind == EventStatus && ev.Completed >= 3000 {
			cancel()
		}
	}
	err := e.mgr.Pull(ctx, names("tiny"), e.rec)
	var ie *InterruptedError
	if !errors.As(err, &ie) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "again to resume") {
		t.Fatalf("err %v", err)
	}
}

func TestPullStalled(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	e := newEnv(t, ollamatest.Config{BytesPerSecond: 1, Catalogue: []ollamatest.Model{{Name: "tiny"}},
		Sleep: func(ctx context.Context, d time.Duration) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-block:
				return nil
			}
		}})
	e.mgr.StallTimeout = 50 * time.Millisecond
	err := e.mgr.Pull(context.Background(), names("tiny"), e.rec)
	var ie *InterruptedError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "no progress from ollama for 50ms") {
		t.Fatalf("err %v", err)
	}
}

func TestVerifyCatchesModelLandedElsewhere(t *testing.T) {
	// The container writes to its own filesystem, not the bind-mounted drive.
	e := newEnv(t, ollamatest.Config{WriteDir: t.TempDir(), Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	err := e.mgr.Pull(context.Background(), names("tiny"), e.rec)
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "no manifest "+remoteDir+"/models/manifests/registry.ollama.ai/library/tiny/latest") ||
		!strings.Contains(err.Error(), "OLLAMA_MODELS") {
		t.Fatalf("err %v", err)
	}
	if got := e.rec.kinds("tiny:latest"); got[len(got)-1] != EventFailed {
		t.Errorf("events %v", got)
	}
}

func TestVerifyCatchesBadBlobsAndStaleManifest(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}, {Name: "t2"}}})
	for _, n := range []string{"tiny", "t2"} {
		if err := e.srv.Install(n); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	man := manifestOf(t, e.srv, "tiny")
	os.Truncate(ollamatest.BlobPath(e.srv.Dir(), man.Layers[0].Digest), 10)
	os.Remove(ollamatest.BlobPath(e.srv.Dir(), man.Config.Digest))
	_, err := e.mgr.Verify(ctx, "tiny")
	var ve *VerifyError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 || !strings.Contains(ve.Problems[0], "is 10 bytes, want 65536") ||
		!strings.HasPrefix(ve.Problems[1], "missing blob "+remoteDir+"/models/blobs/sha256-") {
		t.Fatalf("err %v", err)
	}
	// A stale manifest on the drive (Ollama serves another one).
	e2 := newEnv(t, ollamatest.Config{WriteDir: t.TempDir(), Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	e2.srv.Install("tiny")
	os.MkdirAll(e2.srv.Dir()+"/manifests/registry.ollama.ai/library/tiny", 0o755)
	old := bytes.Replace(manifestOf(t, e2.srv, "tiny").raw(t), []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2 `), 1)
	os.WriteFile(ollamatest.ManifestPath(e2.srv.Dir(), "tiny"), old, 0o644)
	if _, err := e2.mgr.Verify(ctx, "tiny"); !errors.As(err, &ve) || !strings.Contains(err.Error(), "has digest") {
		t.Errorf("stale: %v", err)
	}
	if _, err := e.mgr.Verify(ctx, "absent"); err == nil || !strings.Contains(err.Error(), "not in the model list") {
		t.Errorf("absent: %v", err)
	}
}

func (m *Manifest) raw(t *testing.T) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inproc serves an http.Handler without a network, so a synctest bubble
// can see every goroutine block.
type inproc struct {
	h    http.Handler
	hold func(*http.Request)
}

func (t inproc) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.hold != nil {
		t.hold(r)
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestPullConcurrencyLimit(t *testing.T) {
	for _, conc := range []int{0, 1, 2, 3} {
		synctest.Test(t, func(t *testing.T) {
			root := t.TempDir()
			srv := ollamatest.New(ollamatest.Config{Dir: filepath.Join(root, "models"),
				Catalogue: []ollamatest.Model{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}}})
			var mu sync.Mutex
			arrived := 0
			release := make(chan struct{})
			u, _ := url.Parse("http://ollama.invalid")
			client := api.NewClient(u, &http.Client{Transport: inproc{srv, func(r *http.Request) {
				if r.URL.Path == "/api/pull" {
					mu.Lock()
					arrived++
					mu.Unlock()
					<-release
				}
			}}})
			h := &inventory.Host{Name: "gpu1", ModelsDir: remoteDir}
			m := &Manager{Client: client, Host: h, Concurrency: conc,
				Runner: &ollamatest.DriveRunner{Remote: remoteDir, Local: root, Avail: 1 << 40}}
			done := make(chan error, 1)
			go func() { done <- m.Pull(context.Background(), names("a", "b", "c", "d"), nil) }()
			synctest.Wait()
			mu.Lock()
			got := arrived
			mu.Unlock()
			if want := max(conc, 1); got != want {
				t.Errorf("concurrency %d: %d pulls in flight, want %d", conc, got, want)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if arrived != 4 {
				t.Errorf("%d pulls", arrived)
			}
		})
	}
}

func TestDriveCheckErrors(t *testing.T) {
	e := newEnv(t, fakeCfg())
	e.drive.Remote = "/elsewhere" // models_dir does not exist on the host
	err := e.mgr.Pull(context.Background(), names("tiny"), nil)
	if err == nil || !strings.Contains(err.Error(), "df on gpu1 exited 1: df: /mnt/models/ollama: No such file or directory") ||
		!strings.Contains(err.Error(), "is the models drive mounted?") {
		t.Errorf("err %v", err)
	}
	e.drive.Err = errors.New("ssh: handshake failed")
	err = e.mgr.Pull(context.Background(), names("tiny"), nil)
	if err == nil || !strings.Contains(err.Error(), "checking free space on gpu1 over SSH: ssh: handshake failed") {
		t.Errorf("err %v", err)
	}
	if e.srv.Requests("POST /api/pull") != 0 {
		t.Error("pulled without a space check")
	}
}
