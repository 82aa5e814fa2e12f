package ollamatest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ollama/ollama/types/model"
)

// RegistryHandler serves the registry side of the catalogue:
// GET/HEAD /v2/<namespace>/<model>/manifests/<tag>, answered for the
// catalogue model named <request host>/<namespace>/<model>:<tag> with the
// exact manifest bytes the fake writes to disk, and 404 otherwise. Requests
// are counted under "REGISTRY <method> <path>". Blobs are not served: the fake
// Ollama never downloads from it.
func (s *Server) RegistryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts["REGISTRY "+r.Method+" "+r.URL.Path]++
		s.mu.Unlock()
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || !strings.HasPrefix(r.URL.Path, "/v2/") ||
			len(parts) != 4 || parts[2] != "manifests" {
			http.NotFound(w, r)
			return
		}
		n := model.Name{Host: r.Host, Namespace: parts[0], Model: parts[1], Tag: parts[3]}
		s.mu.Lock()
		m, ok := s.catalogue[key(n)]
		s.mu.Unlock()
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}` + "\n"))
			return
		}
		w.Header().Set("Content-Type", MediaTypeManifest)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(m.manifest)
		}
	})
}

// StartRegistry serves RegistryHandler on a loopback httptest server closed
// at the end of the test and returns its "127.0.0.1:port", the host part of
// the catalogue names it answers for.
func (s *Server) StartRegistry(tb testing.TB) string {
	tb.Helper()
	hs := httptest.NewServer(s.RegistryHandler())
	tb.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}
