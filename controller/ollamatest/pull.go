package ollamatest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ollama/ollama/api"
)

// errDrop asks the handler to drop the connection.
var errDrop = errors.New("ollamatest: drop connection")

func (s *Server) pull(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if !decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	s.pulls = append(s.pulls, req)
	s.mu.Unlock()

	//lint:ignore SA1019 old clients still send the deprecated "name" field; Ollama honours it too.
	name := cmp.Or(req.Model, req.Name)
	n, ok := parseName(name)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid model name")
		return
	}
	fault := s.takeFault(name)
	if fault != nil && fault.BeforeStream {
		writeError(w, http.StatusInternalServerError, cmp.Or(fault.Error, "ollamatest: injected failure"))
		return
	}

	if req.Stream != nil && !*req.Stream {
		var last api.ProgressResponse
		err := s.doPull(r.Context(), n.String(), req.Insecure, fault, func(p api.ProgressResponse) { last = p })
		switch {
		case errors.Is(err, errDrop):
			panic(http.ErrAbortHandler)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusOK, last)
		}
		return
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(v any) {
		enc.Encode(v)
		if fl != nil {
			fl.Flush()
		}
	}
	err := s.doPull(r.Context(), n.String(), req.Insecure, fault, func(p api.ProgressResponse) { send(p) })
	switch {
	case errors.Is(err, errDrop):
		panic(http.ErrAbortHandler)
	case err != nil && r.Context().Err() == nil:
		send(map[string]string{"error": err.Error()})
	}
}

// takeFault returns the fault for name and uses up one of its Times.
func (s *Server) takeFault(name string) *PullFault {
	n, _ := parseName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.faults[key(n)]
	if !ok {
		return nil
	}
	cp := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			delete(s.faults, key(n))
		}
	}
	return &cp
}

// doPull runs one pull, reporting progress through fn. The first line is
// always "pulling manifest", so any error after it belongs in the stream.
func (s *Server) doPull(ctx context.Context, name string, insecure bool, fault *PullFault, fn func(api.ProgressResponse)) error {
	n, _ := parseName(name)
	fn(api.ProgressResponse{Status: "pulling manifest"})
	if n.ProtocolScheme == "http" && !insecure {
		return errors.New("insecure protocol http")
	}
	r, ok := s.lookup(name)
	if !ok {
		return fmt.Errorf("pull model manifest: %w", os.ErrNotExist)
	}
	var written int64
	var fresh []*blob
	for _, b := range r.layers {
		got, err := s.pullBlob(ctx, b, fault, &written, fn)
		if err != nil {
			return err
		}
		if got {
			fresh = append(fresh, b)
		}
	}
	fn(api.ProgressResponse{Status: "verifying sha256 digest"})
	for _, b := range fresh {
		p := BlobPath(s.writeDir, b.Digest)
		if got, err := fileDigest(p); err != nil || got != b.Digest {
			os.Remove(p)
			return fmt.Errorf("digest mismatch, file must be downloaded again: want %s, got %s", b.Digest, got)
		}
	}
	fn(api.ProgressResponse{Status: "writing manifest"})
	if err := s.writeManifest(r); err != nil {
		return err
	}
	fn(api.ProgressResponse{Status: "success"})
	return nil
}

// pullBlob downloads one blob into the write directory, resuming from its
// -partial file. It reports whether bytes were downloaded (not a cache hit).
func (s *Server) pullBlob(ctx context.Context, b *blob, fault *PullFault, written *int64, fn func(api.ProgressResponse)) (bool, error) {
	status := "pulling " + b.Digest[7:19]
	final := BlobPath(s.writeDir, b.Digest)
	// Concurrent pulls share a blob's download, as Ollama's do.
	unlock := s.lockBlob(b.Digest)
	defer unlock()
	if fi, err := os.Stat(final); err == nil && fi.Size() == b.Size {
		fn(api.ProgressResponse{Status: status, Digest: b.Digest, Total: b.Size, Completed: b.Size})
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return false, err
	}
	partial := final + "-partial"
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, err
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, err
	}
	if off > b.Size {
		if err := f.Truncate(0); err != nil {
			return false, err
		}
		off, _ = f.Seek(0, io.SeekStart)
	}
	fn(api.ProgressResponse{Status: status, Digest: b.Digest, Total: b.Size, Completed: off})
	buf := make([]byte, s.cfg.ChunkSize)
	for off < b.Size {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n := min(int64(len(buf)), b.Size-off)
		if fault != nil && !fault.BeforeStream && *written+n > fault.AfterBytes {
			n = max(fault.AfterBytes-*written, 0)
			if n > 0 {
				b.ReadAt(buf[:n], off)
				if _, err := f.Write(buf[:n]); err != nil {
					return false, err
				}
				off += n
				*written += n
				fn(api.ProgressResponse{Status: status, Digest: b.Digest, Total: b.Size, Completed: off})
			}
			f.Sync()
			if fault.Error != "" {
				return false, errors.New(fault.Error)
			}
			return false, errDrop
		}
		if s.cfg.BytesPerSecond > 0 {
			d := time.Duration(float64(n) / float64(s.cfg.BytesPerSecond) * float64(time.Second))
			if err := s.cfg.Sleep(ctx, d); err != nil {
				return false, err
			}
		}
		b.ReadAt(buf[:n], off)
		if _, err := f.Write(buf[:n]); err != nil {
			return false, err
		}
		off += n
		*written += n
		fn(api.ProgressResponse{Status: status, Digest: b.Digest, Total: b.Size, Completed: off})
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	return true, os.Rename(partial, final)
}

func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// lockBlob serialises work on one blob across concurrent pulls.
func (s *Server) lockBlob(digest string) func() {
	s.mu.Lock()
	if s.blobLocks == nil {
		s.blobLocks = map[string]*sync.Mutex{}
	}
	l, ok := s.blobLocks[digest]
	if !ok {
		l = &sync.Mutex{}
		s.blobLocks[digest] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}
