package models

import (
	"context"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
)

func TestParseManifestFixture(t *testing.T) {
	m, err := ParseManifest(readFixture(t, "ollama_registry_manifest_llama3-latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.TotalSize(), int64(485+4661211424+12403+254+110); got != want {
		t.Errorf("total %d, want %d", got, want)
	}
	if b := m.Blobs(); len(b) != 5 || b[4].Digest != m.Config.Digest {
		t.Errorf("blobs %+v", b)
	}
	for _, bad := range []string{`{`, `{"layers":[]}`, `{"layers":[{"digest":"sha256:xyz","size":1}]}`,
		`{"layers":[{"digest":"sha256:` + strings.Repeat("a", 64) + `","size":-1}]}`} {
		if _, err := ParseManifest([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestRegistryManifest(t *testing.T) {
	srv := ollamatest.Start(t, ollamatest.Config{})
	host := srv.StartRegistry(t)
	srv.AddModel(ollamatest.Model{Name: host + "/library/tiny:latest"})
	r := &Registry{Insecure: true, HTTP: srv.HTTPClient()}
	m, err := r.Manifest(context.Background(), MustRef(host+"/library/tiny"))
	want, _ := srv.ManifestOf(host + "/library/tiny")
	if err != nil || m.TotalSize() != want.Size {
		t.Fatalf("%v %v", m, err)
	}
	_, err = r.Manifest(context.Background(), MustRef(host+"/library/nope:1b"))
	if err == nil || !strings.Contains(err.Error(), "has no manifest for "+host+"/library/nope:1b (404)") {
		t.Errorf("missing: %v", err)
	}
	_, err = (&Registry{SkipDefault: true}).Manifest(context.Background(), MustRef("llama3"))
	if err == nil || !strings.Contains(err.Error(), "size unknown") {
		t.Errorf("default: %v", err)
	}
}

func TestRefPaths(t *testing.T) {
	for _, tc := range []struct{ in, short, path string }{
		{"llama3", "llama3:latest", "/m/manifests/registry.ollama.ai/library/llama3/latest"},
		{"ns/m:7b", "ns/m:7b", "/m/manifests/registry.ollama.ai/ns/m/7b"},
		{"127.0.0.1:15000/library/tiny:latest", "127.0.0.1:15000/library/tiny:latest", "/m/manifests/127.0.0.1:15000/library/tiny/latest"},
	} {
		r := MustRef(tc.in)
		if r.Short() != tc.short || r.ManifestPath("/m") != tc.path {
			t.Errorf("%s: %s %s", tc.in, r.Short(), r.ManifestPath("/m"))
		}
	}
	if BlobPath("/m", "sha256:ab") != "/m/blobs/sha256-ab" {
		t.Error(BlobPath("/m", "sha256:ab"))
	}
	if _, err := ParseRef("../etc"); err == nil {
		t.Error("accepted ../etc")
	}
}

// MustRef is ParseRef for names known to be valid; it panics otherwise.
func MustRef(s string) Ref {
	r, err := ParseRef(s)
	if err != nil {
		panic(err)
	}
	return r
}
