package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// The guard is Ollama's own (server/routes.go: the gin-contrib/cors
// middleware configured as GenerateRoutes does, then allowedHostsMiddleware),
// so serve refuses what the Ollama it stands in for refuses:
//
//   - A request with an Origin that is not allowed gets 403 with an empty
//     body. Allowed are Ollama's defaults (envconfig.AllowedOrigins: http(s)
//     on localhost, 127.0.0.1 and 0.0.0.0 with any port, app://, file://,
//     tauri://, vscode-webview://, vscode-file://) plus [serve]
//     allowed_origins. An allowed origin is echoed in
//     Access-Control-Allow-Origin (with Vary: Origin), and a preflight
//     (OPTIONS) is answered 204 with the allowed methods and headers.
//   - On a loopback listener, a Host that is neither an IP address that is
//     loopback, private, unspecified or this machine's, nor localhost, this
//     machine's hostname or a name under .localhost, .local or .internal,
//     gets 403: a web page cannot reach serve through DNS rebinding.
//
// The Origin header is not forwarded: serve has judged it, and the host's
// Ollama (whose OLLAMA_ORIGINS serve cannot know) must not judge it again.

// corsAllowHeaders are the request headers Ollama allows in a preflight,
// as gin-contrib/cors writes them (canonical, joined by ",").
var corsAllowHeaders = func() string {
	hs := []string{
		"Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
		"OpenAI-Beta", "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval",
		"x-stainless-helper-method", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
		"x-stainless-poll-helper", "x-stainless-retry-count", "x-stainless-runtime",
		"x-stainless-runtime-version", "x-stainless-timeout",
	}
	for i, h := range hs {
		hs[i] = http.CanonicalHeaderKey(strings.ToLower(h))
	}
	return strings.Join(hs, ",")
}()

const (
	corsAllowMethods = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
	corsMaxAge       = 12 * time.Hour
)

// ollamaDefaultOrigins is envconfig.AllowedOrigins without OLLAMA_ORIGINS.
func ollamaDefaultOrigins() []string {
	var out []string
	for _, o := range []string{"localhost", "127.0.0.1", "0.0.0.0"} {
		out = append(out, "http://"+o, "https://"+o,
			"http://"+net.JoinHostPort(o, "*"), "https://"+net.JoinHostPort(o, "*"))
	}
	return append(out, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
}

// originPolicy is gin-contrib/cors's origin check with Ollama's settings
// (AllowWildcard, AllowBrowserExtensions).
type originPolicy struct {
	all       bool
	exact     map[string]bool
	wildcards [][2]string
}

func newOriginPolicy(extra []string) *originPolicy {
	p := &originPolicy{exact: map[string]bool{}}
	for _, o := range append(extra, ollamaDefaultOrigins()...) {
		o = strings.ToLower(strings.TrimSpace(o))
		switch {
		case o == "*":
			p.all = true
		case strings.Count(o, "*") == 1:
			i := strings.Index(o, "*")
			switch {
			case i == 0:
				p.wildcards = append(p.wildcards, [2]string{"*", o[1:]})
			case i == len(o)-1:
				p.wildcards = append(p.wildcards, [2]string{o[:i], "*"})
			default:
				p.wildcards = append(p.wildcards, [2]string{o[:i], o[i+1:]})
			}
			p.exact[o] = true
		case o != "":
			p.exact[o] = true
		}
	}
	return p
}

// allowed is validateOrigin. Like gin-contrib/cors it compares the origin
// as sent with the lower-cased list.
func (p *originPolicy) allowed(origin string) bool {
	if p.all || p.exact[origin] {
		return true
	}
	for _, w := range p.wildcards {
		switch {
		case w[0] == "*" && strings.HasSuffix(origin, w[1]),
			w[1] == "*" && strings.HasPrefix(origin, w[0]),
			strings.HasPrefix(origin, w[0]) && strings.HasSuffix(origin, w[1]):
			return true
		}
	}
	return false
}

// guard applies Ollama's CORS and Host checks. It reports true when it
// answered the request itself (403, or a preflight's 204).
func (p *Proxy) guard(w http.ResponseWriter, r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" && origin != "http://"+r.Host && origin != "https://"+r.Host {
		if !p.origins.allowed(origin) {
			p.met.refused.WithLabelValues("origin").Inc()
			p.log.Warn("refused a request from a browser origin that is not allowed; add it to [serve] allowed_origins if it is yours",
				"origin", origin, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusForbidden)
			return true
		}
		h := w.Header()
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", strconv.FormatInt(int64(corsMaxAge/time.Second), 10))
			if p.origins.all {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Add("Vary", "Origin")
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
				h.Set("Access-Control-Allow-Origin", origin)
			}
			w.WriteHeader(http.StatusNoContent)
			return true
		}
		if p.origins.all {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Vary", "Origin")
			h.Set("Access-Control-Allow-Origin", origin)
		}
	}
	if !p.loopbackListener(r) {
		return false
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || isLocalIP(a) {
			return false
		}
	}
	if allowedHostName(host) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return true
		}
		return false
	}
	p.met.refused.WithLabelValues("host").Inc()
	p.log.Warn("refused a request whose Host is not a local name (DNS rebinding guard, as Ollama's)", "host_header", r.Host, "method", r.Method, "path", r.URL.Path)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusForbidden)
	return true
}

// loopbackListener reports whether the request came in on a loopback
// listener: the address Run serves on, else (a Proxy served by another
// http.Server) the connection's local address. Addresses that are not IP
// (in-memory test networks) are not loopback.
func (p *Proxy) loopbackListener(r *http.Request) bool {
	addr := p.listenAddr.Load()
	if addr == nil {
		a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !ok {
			return false
		}
		addr = &a
	}
	ap, err := netip.ParseAddrPort((*addr).String())
	return err == nil && ap.Addr().IsLoopback()
}

// allowedHostName is Ollama's allowedHost.
func allowedHostName(host string) bool {
	host = strings.ToLower(host)
	if host == "" || host == "localhost" {
		return true
	}
	if hn, err := os.Hostname(); err == nil && host == strings.ToLower(hn) {
		return true
	}
	for _, tld := range []string{"localhost", "local", "internal"} {
		if strings.HasSuffix(host, "."+tld) {
			return true
		}
	}
	return false
}

// isLocalIP is Ollama's: ip is an address of one of this machine's
// interfaces.
func isLocalIP(ip netip.Addr) bool {
	ifaces, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, iface := range ifaces {
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if parsed, _, err := net.ParseCIDR(a.String()); err == nil && parsed.String() == ip.String() {
				return true
			}
		}
	}
	return false
}
