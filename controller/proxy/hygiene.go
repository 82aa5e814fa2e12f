package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
)

// allowedMethods are the methods Ollama's and OpenAI's APIs use; serve
// answers any other (TRACE, CONNECT, PUT, WebDAV verbs…) with 405 itself.
const allowedMethods = "GET, HEAD, POST, DELETE, OPTIONS"

func methodAllowed(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// hasDotSegment reports whether a URL path has a "." or ".." segment.
func hasDotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// refuseRequest answers, before any routing, a request serve never
// forwards: a method Ollama's API does not use (405), or a path with dot
// segments (400: it is neither cleaned, nor redirected, nor passed on for
// a backend to resolve). It reports whether it answered.
func (p *Proxy) refuseRequest(w http.ResponseWriter, r *http.Request) bool {
	openai := strings.HasPrefix(r.URL.Path, "/v1/")
	switch {
	case !methodAllowed(r.Method):
		w.Header().Set("Allow", allowedMethods)
		p.log.Info("refused request", "method", r.Method, "status", http.StatusMethodNotAllowed)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("gpuctl: method %s is not allowed; Ollama's API uses %s", r.Method, allowedMethods), nil, openai)
		return true
	case hasDotSegment(r.URL.Path):
		p.log.Info("refused request", "method", r.Method, "status", http.StatusBadRequest, "reason", "dot segments in path")
		writeError(w, http.StatusBadRequest, "gpuctl: the path has dot segments (\".\" or \"..\"); send the path as it is meant", nil, openai)
		return true
	}
	return false
}

// bodyError answers a request whose body could not be read: 408 when it
// did not arrive within the body-read timeout, 400 when its framing is
// malformed (a bad chunk size, say), both closing the connection since its
// framing can no longer be trusted; a client that went away is only
// logged (499).
func (p *Proxy) bodyError(w *respWriter, r *http.Request, err error) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		p.fail(w, r, http.StatusRequestTimeout, fmt.Sprintf("the request body did not arrive within %s; send it whole", bodyReadTimeout), nil)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), r.Context().Err() != nil:
		w.status = 499
	case slices.Contains(r.TransferEncoding, "chunked"):
		w.Header().Set("Connection", "close")
		p.fail(w, r, http.StatusBadRequest, fmt.Sprintf("malformed chunked request body: %v", err), nil)
	default:
		w.Header().Set("Connection", "close")
		p.fail(w, r, http.StatusBadRequest, fmt.Sprintf("malformed request body: %v", err), nil)
	}
}
