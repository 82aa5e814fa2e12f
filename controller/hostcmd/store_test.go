package hostcmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
)

// inspectJSON is `docker inspect` output reduced to the fields StoreFromInspect
// reads, shaped as Docker prints them (Config.Env, Mounts[].Type/Source/
// Destination), for the ollama/ollama image's environment.
func inspectJSON(t *testing.T, env []string, mounts ...[3]string) []byte {
	t.Helper()
	type mount struct{ Type, Source, Destination, Mode, Propagation string }
	ms := []mount{}
	for _, m := range mounts {
		ms = append(ms, mount{Type: m[0], Source: m[1], Destination: m[2], Propagation: "rprivate"})
	}
	b, err := json.Marshal([]map[string]any{{
		"Name":   "/ollama",
		"Config": map[string]any{"Env": append([]string{"PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NVIDIA_VISIBLE_DEVICES=all", "OLLAMA_HOST=0.0.0.0:11434"}, env...)},
		"Mounts": ms,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStoreFromInspect(t *testing.T) {
	const md = "/mnt/models/ollama"
	for _, tc := range []struct {
		name    string
		env     []string
		mounts  [][3]string
		dir     string
		problem string
	}{
		{"stick layout", nil, [][3]string{{"bind", md, "/root/.ollama"}}, md + "/models", ""},
		{"OLLAMA_MODELS on the mount", []string{"OLLAMA_MODELS=/root/.ollama/m2"}, [][3]string{{"bind", md, "/root/.ollama"}}, md + "/m2", ""},
		{"OLLAMA_MODELS is the mount", []string{"OLLAMA_MODELS=/models"}, [][3]string{{"bind", md + "/blobs-here", "/models"}}, md + "/blobs-here", ""},
		{"other HOME", []string{"HOME=/home/ol"}, [][3]string{{"bind", md, "/home/ol/.ollama"}}, md + "/models", ""},
		{"longest mount wins", nil, [][3]string{{"bind", "/srv", "/root"}, {"bind", md, "/root/.ollama"}}, md + "/models", ""},
		{"no mount", nil, nil, "", "on no mount"},
		{"mount elsewhere", []string{"OLLAMA_MODELS=/data"}, [][3]string{{"bind", md, "/root/.ollama"}, {"bind", "/var/tmp/x", "/data"}}, "/var/tmp/x", "not under models_dir"},
		{"named volume", nil, [][3]string{{"volume", "/var/lib/docker/volumes/ollama/_data", "/root/.ollama"}}, "/var/lib/docker/volumes/ollama/_data/models", "volume mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := StoreFromInspect(inspectJSON(t, tc.env, tc.mounts...), "ollama", md)
			if err != nil {
				t.Fatal(err)
			}
			if s.Dir != tc.dir || (tc.problem == "") != (s.Problem == "") || !strings.Contains(s.Problem, tc.problem) {
				t.Fatalf("got %+v, want dir %q problem ~%q", s, tc.dir, tc.problem)
			}
		})
	}
	if _, err := StoreFromInspect([]byte("[]"), "ollama", md); err == nil {
		t.Fatal("an empty inspect array gave a store")
	}
}

// A host whose docker cannot be asked gets the documented default, and the
// reason.
func TestReadStoreFallback(t *testing.T) {
	d := &ollamatest.DriveRunner{Remote: "/mnt/models/ollama", Local: t.TempDir()}
	s, err := ReadStore(context.Background(), d, "ollama", "/mnt/models/ollama")
	if err == nil || s != DefaultStore("/mnt/models/ollama") || s.Dir != "/mnt/models/ollama"+"/models" {
		t.Fatalf("got %+v, %v", s, err)
	}
}
