// Package hosthttp builds every HTTP client gpuctl uses: to a host's Ollama
// API (status checks, the pull inside a wake, `gpuctl pull`, `gpuctl serve`
// forwarding), to model registries, and to the local `gpuctl serve`. One
// constructor, so every path dials, times out, pools connections and honours
// the proxy environment the same way.
//
// Proxies: HTTP_PROXY, HTTPS_PROXY and NO_PROXY (or their lower-case forms)
// apply as for Go's net/http (golang.org/x/net/http/httpproxy): loopback
// addresses and "localhost" are never proxied. Set NO_PROXY to the gaming
// PC's address when a proxy is configured for the internet only.
package hosthttp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Defaults for Options' zero values.
const (
	DefaultDialTimeout   = 10 * time.Second
	DefaultHeaderTimeout = 10 * time.Second
)

// Options tune a transport.
type Options struct {
	// Dial opens connections; nil dials TCP with DefaultDialTimeout and
	// keepalives.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HeaderTimeout bounds the wait for a response's headers after the
	// request was sent (a cold model load can take minutes: serve waits
	// long); DefaultHeaderTimeout when 0. Bodies are bounded by contexts.
	HeaderTimeout time.Duration
	// Getenv reads the proxy environment; os.Getenv when nil.
	Getenv func(string) string
}

// NewTransport returns a transport with bounded dial, TLS and header waits,
// no overall timeout (streams last as long as they last), the proxy
// environment applied, and dial failures marked (IsDialError) so a caller
// knows nothing of the request was sent.
func NewTransport(o Options) *http.Transport {
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	header := o.HeaderTimeout
	if header <= 0 {
		header = DefaultHeaderTimeout
	}
	return &http.Transport{
		Proxy: proxyFunc(o.Getenv),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, &DialError{Addr: addr, Err: err}
			}
			return c, nil
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: header,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		// Large reads let a fast stream's chunks coalesce into fewer
		// writes to the client; each read is still flushed at once.
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
	}
}

// NewClient returns a client over NewTransport(o).
func NewClient(o Options) *http.Client {
	return &http.Client{Transport: NewTransport(o)}
}

// proxyFunc reads the proxy environment once, when the transport is built.
func proxyFunc(getenv func(string) string) func(*http.Request) (*url.URL, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	either := func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return getenv(strings.ToLower(k))
	}
	cfg := &httpproxy.Config{
		HTTPProxy:  either("HTTP_PROXY"),
		HTTPSProxy: either("HTTPS_PROXY"),
		NoProxy:    either("NO_PROXY"),
		CGI:        getenv("REQUEST_METHOD") != "",
	}
	pf := cfg.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return pf(r.URL) }
}

// DialError marks a failed dial: nothing of the request was sent, so it
// may be replayed.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return fmt.Sprintf("dial %s: %v", e.Addr, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }
