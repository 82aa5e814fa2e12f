package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestBlobSpool: uploads are spooled in STATE_DIR/blobs under their
// digest, checked as Ollama checks them, bounded by max_blob (not
// max_body), and HEAD answers from the spool; a create naming the digest
// hands the blob to its host first.
func TestBlobSpool(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string // the POSTs pc saw
	)
	pc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			mu.Lock()
			got = append(got, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/blobs/"):
			w.WriteHeader(http.StatusCreated)
		case r.URL.Path == "/api/create":
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Write([]byte(`{"status":"success"}` + "\n"))
		case r.URL.Path == "/api/tags":
			writeJSON(w, 200, map[string]any{"models": []any{}})
		}
	}))
	t.Cleanup(pc.Close)
	server := httptest.NewServer(&fakeOllama{name: "server"})
	t.Cleanup(server.Close)
	inv := testInventory(t, server.URL, pc.URL)
	inv.Serve.MaxBody = 1024
	inv.Serve.MaxBlob = 1 << 20
	dir := t.TempDir()
	p := newProxy(t, Options{Inventory: inv, Backends: newFakeBackends(), StateDir: dir})
	url := serveProxy(t, p).URL

	blob := strings.Repeat("gguf", 1000) // over max_body (1 KiB), under max_blob
	sum := sha256.Sum256([]byte(blob))
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if res, body := do(t, "HEAD", url+"/api/blobs/"+digest, "", "", ""); res.StatusCode != 404 || body != "" {
		t.Errorf("HEAD before the upload: %d %q", res.StatusCode, body)
	}
	if res, body := do(t, "POST", url+"/api/blobs/"+digest, "", "", "not the blob"); res.StatusCode != 400 || !strings.Contains(body, "digest mismatch") {
		t.Errorf("upload with the wrong content: %d %s", res.StatusCode, body)
	}
	if res, body := do(t, "POST", url+"/api/blobs/"+digest, "", "", blob); res.StatusCode != 201 {
		t.Errorf("upload: %d %s", res.StatusCode, body)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "blobs", strings.Replace(digest, ":", "-", 1))); err != nil || string(b) != blob {
		t.Errorf("spooled blob: %v", err)
	}
	if res, _ := do(t, "HEAD", url+"/api/blobs/"+digest, "", "", ""); res.StatusCode != 200 {
		t.Errorf("HEAD after the upload: %d", res.StatusCode)
	}
	big := strings.Repeat("x", 2<<20)
	// Refused before reading when its Content-Length says so, else once
	// the stream passes max_blob.
	if res, body := do(t, "POST", url+"/api/blobs/sha256:"+strings.Repeat("a", 64), "", "", big); res.StatusCode != 413 || !strings.Contains(body, "blob of 2097152 bytes is over serve.max_blob (1048576 bytes)") {
		t.Errorf("upload over max_blob: %d %s", res.StatusCode, body)
	}
	if res, body := postChunked(t, url+"/api/blobs/sha256:"+strings.Repeat("a", 64), big[:1<<20+4096]); res.StatusCode != 413 || !strings.Contains(body, "blob is over serve.max_blob (1048576 bytes)") {
		t.Errorf("chunked upload over max_blob: %d %s", res.StatusCode, body)
	}
	if res, body := do(t, "POST", url+"/api/blobs/sha256:zz", "", "", "x"); res.StatusCode != 400 || body != `{"error":"invalid digest format"}` {
		t.Errorf("bad digest: %d %s", res.StatusCode, body)
	}

	// The create (routed to pc by its name) brings the blob along.
	res, body := do(t, "POST", url+"/api/create", "", "", `{"model":"big:x","files":{"m.gguf":"`+digest+`"}}`)
	if res.StatusCode != 200 || !strings.Contains(body, "success") {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 2 || got[0] != "POST /api/blobs/"+digest || got[1] != "POST /api/create" {
		t.Errorf("pc saw %v; want the blob, then the create", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", strings.Replace(digest, ":", "-", 1))); !os.IsNotExist(err) {
		t.Errorf("the spooled blob is still there after a successful create: %v", err)
	}
}

// postChunked POSTs body without a Content-Length (chunked).
func postChunked(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", url, struct{ io.Reader }{strings.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := testClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res, readAll(t, res)
}
