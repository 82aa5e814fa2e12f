package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
)

// Blob uploads (`ollama create`): the CLI POSTs each file to
// /api/blobs/<digest>, then POSTs /api/create naming the digests. The host
// the create goes to is only known then, and may be asleep, so serve keeps
// the upload itself: it streams it to STATE_DIR/blobs (never whole in
// memory), checking the digest as Ollama does, and bounded by
// [serve] max_blob and the free disk there, not max_body. The create that
// names the digest then hands the blob to its host (after waking it) just
// before it is forwarded; a blob handed off and used by a successful create
// is deleted. Spooled blobs nobody used are deleted after blobTTL.

// blobTTL is how long a spooled blob nobody created from is kept.
const blobTTL = 24 * time.Hour

// blobReserve is the free disk a blob upload leaves in the spool's file
// system.
const blobReserve = 256 << 20

var digestRE = regexp.MustCompile(`^sha256[:-][0-9a-fA-F]{64}$`)

// blobDir is the spool: STATE_DIR/blobs, or a directory under the system's
// temporary directory without a state directory.
func (p *Proxy) blobDir() (string, error) {
	p.blobOnce.Do(func() {
		if p.o.StateDir != "" {
			p.blobPath = statedir.BlobsDir(p.o.StateDir)
			p.blobErr = os.MkdirAll(p.blobPath, 0o700)
		} else {
			p.blobPath, p.blobErr = os.MkdirTemp("", "gpuctl-serve-blobs-")
			p.blobTemp = p.blobErr == nil
		}
		if p.blobErr == nil {
			p.pruneBlobs()
		}
	})
	return p.blobPath, p.blobErr
}

// pruneBlobs deletes spooled blobs and partial uploads older than blobTTL.
func (p *Proxy) pruneBlobs() {
	ents, err := os.ReadDir(p.blobPath)
	if err != nil {
		return
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && p.o.Now().Sub(fi.ModTime()) > blobTTL {
			_ = os.Remove(filepath.Join(p.blobPath, e.Name()))
		}
	}
}

func blobFile(dir, digest string) string {
	return filepath.Join(dir, strings.Replace(digest, ":", "-", 1))
}

// serveBlob answers HEAD and POST /api/blobs/<digest> as Ollama does.
func (p *Proxy) serveBlob(w *respWriter, r *http.Request, info *reqLog) {
	info.note = "blob spool"
	digest := strings.TrimPrefix(r.URL.Path, "/api/blobs/")
	if r.Method != http.MethodHead && r.Method != http.MethodPost {
		plainText(w, http.StatusMethodNotAllowed, "405 method not allowed")
		return
	}
	if !digestRE.MatchString(digest) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid digest format"})
		return
	}
	dir, err := p.blobDir()
	if err != nil {
		p.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("cannot make the blob spool: %v", err), nil)
		return
	}
	final := blobFile(dir, digest)
	if _, err := os.Stat(final); err == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method == http.MethodHead {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("blob %q not found", digest)})
		return
	}
	max, ok := p.admitBlob(w, r, dir)
	if !ok {
		return
	}
	// An upload of gigabytes takes longer than the server's deadlines.
	rc := http.NewResponseController(w.ResponseWriter)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	p.spoolBlob(w, r, dir, digest, final, max)
}

// admitBlob returns serve.max_blob, or answers an upload that says it is
// over it (413) or does not fit the spool's free disk (507) and reports
// false.
func (p *Proxy) admitBlob(w *respWriter, r *http.Request, dir string) (int64, bool) {
	max := int64(p.inv.Serve.MaxBlob)
	if max <= 0 {
		max = int64(inventory.DefaultMaxBlob)
	}
	if r.ContentLength > max {
		p.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("blob of %d bytes is over serve.max_blob (%d bytes)", r.ContentLength, max), nil)
		return 0, false
	}
	if r.ContentLength > 0 {
		if free, err := freeBytes(dir); err == nil && uint64(r.ContentLength)+blobReserve > free {
			p.fail(w, r, http.StatusInsufficientStorage, fmt.Sprintf("blob of %d bytes does not fit in %s (%d bytes free); free some space there", r.ContentLength, dir, free), nil)
			return 0, false
		}
	}
	return max, true
}

// spoolBlob streams the upload into dir (at most max bytes), checks it
// against digest and moves it to final.
func (p *Proxy) spoolBlob(w *respWriter, r *http.Request, dir, digest, final string, max int64) {
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		p.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("cannot spool the blob: %v", err), nil)
		return
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	h := sha256.New()
	dw := &diskWriter{f: f, dir: dir}
	n, err := io.Copy(io.MultiWriter(dw, h), http.MaxBytesReader(w, r.Body, max))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if p.spoolFailed(w, r, err, dir, n, max) {
		return
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if got != digest {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("digest mismatch, expected %q, got %q", digest, got)})
		return
	}
	if err := os.Rename(tmp, final); err != nil {
		p.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("spooling the blob: %v", err), nil)
		return
	}
	p.log.Info("blob spooled for a create", "digest", digest, "bytes", n)
	w.WriteHeader(http.StatusCreated)
}

// spoolFailed answers an upload whose copy into the spool failed after n
// bytes (err): over max_blob, the spool's disk full, the client gone
// (499) or another error. It reports whether err was one.
func (p *Proxy) spoolFailed(w *respWriter, r *http.Request, err error, dir string, n, max int64) bool {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		p.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("blob is over serve.max_blob (%d bytes)", max), nil)
	case errors.Is(err, errDiskFull):
		p.fail(w, r, http.StatusInsufficientStorage, fmt.Sprintf("the blob spool %s is full after %d bytes; free some space there", dir, n), nil)
	case err != nil:
		if r.Context().Err() != nil {
			w.status = 499
			return true
		}
		p.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("spooling the blob: %v", err), nil)
	default:
		return false
	}
	return true
}

var errDiskFull = errors.New("disk full")

// diskWriter writes the spool file and stops before the file system's
// free space falls under blobReserve (looked at every 64 MiB).
type diskWriter struct {
	f     *os.File
	dir   string
	since int64
}

func (d *diskWriter) Write(b []byte) (int, error) {
	d.since += int64(len(b))
	if d.since >= 64<<20 {
		d.since = 0
		if free, err := freeBytes(d.dir); err == nil && free < blobReserve {
			return 0, errDiskFull
		}
	}
	return d.f.Write(b)
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// handOff gives the host a create goes to the spooled blobs the create
// names, just before the create is forwarded. It reports false when it
// answered the request itself (the host refused a blob).
func (p *Proxy) handOff(w *respWriter, r *http.Request, body []byte, host string) bool {
	if r.URL.Path != "/api/create" {
		return true
	}
	m := parseManage(body)
	var digests []string
	for _, d := range m.Files {
		digests = append(digests, d)
	}
	for _, d := range m.Adapters {
		digests = append(digests, d)
	}
	if len(digests) == 0 {
		return true
	}
	dir, err := p.blobDir()
	if err != nil {
		return true
	}
	for _, d := range digests {
		if !digestRE.MatchString(d) {
			continue
		}
		path := blobFile(dir, d)
		if _, err := os.Stat(path); err != nil {
			continue // not uploaded through serve: the host may have it
		}
		if err := p.sendBlob(r, host, d, path); err != nil {
			p.fail(w, r, http.StatusBadGateway, fmt.Sprintf("handing blob %s to host %q: %v", d, host, err), map[string]string{"host": host, "reason": "blob hand-off"})
			return false
		}
		p.blobsUsed.Store(d, path)
	}
	return true
}

// sendBlob POSTs a spooled blob to host's /api/blobs/<digest>.
func (p *Proxy) sendBlob(r *http.Request, host, digest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	u := p.targetURL(host).JoinPath("/api/blobs/" + digest)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, u.String(), f)
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	start := p.o.Now()
	res, err := p.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("HTTP %s: %s", res.Status, bytes.TrimSpace(b))
	}
	p.log.Info("blob handed to the host", "host", host, "digest", digest, "bytes", fi.Size(), "took", p.o.Now().Sub(start))
	return nil
}
