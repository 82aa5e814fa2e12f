package realollama

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Media types of an Ollama model manifest, as registry.ollama.ai serves them.
const (
	MediaTypeManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeModel    = "application/vnd.ollama.image.model"
	MediaTypeTemplate = "application/vnd.ollama.image.template"
	MediaTypeParams   = "application/vnd.ollama.image.params"
)

// Layer is one blob of a manifest.
type Layer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Manifest is the OCI-style manifest Ollama pulls and writes under
// manifests/<registry>/<namespace>/<model>/<tag>.
type Manifest struct {
	SchemaVersion int     `json:"schemaVersion"`
	MediaType     string  `json:"mediaType"`
	Config        Layer   `json:"config"`
	Layers        []Layer `json:"layers"`
}

// Registry is a test OCI registry over TLS on 127.0.0.1, speaking the part
// of the Docker registry v2 protocol Ollama's pull uses:
//
//	GET/HEAD /v2/<namespace>/<model>/manifests/<tag>  the manifest, or 404 MANIFEST_UNKNOWN
//	GET      /v2/<namespace>/<model>/blobs/<digest>   307 to https://localhost:<port>/direct/<digest>
//	GET/HEAD /direct/<digest>                         the bytes, with Range (Ollama downloads in parts)
//
// The redirect goes to another host name, as registry.ollama.ai's does to
// its CDN, so Ollama's blob download takes the same path as in the field.
// Its certificate (for 127.0.0.1, ::1, localhost, registry.ollama.ai and
// BlobHost) is self-signed; a client trusts it through CAFile
// (SSL_CERT_FILE for the Ollama server) or Client.
//
// ProxyURL is an HTTP CONNECT proxy that tunnels registry.ollama.ai:443 and
// BlobHost:443 to this registry and refuses every other destination: an
// Ollama server started with HTTPS_PROXY set to it (Options.Registry does
// that) pulls plain names ("tiny") from this registry, exactly as a user's
// Ollama pulls from registry.ollama.ai, and never reaches the internet.
type Registry struct {
	// Host is "127.0.0.1:<port>": the registry part of the names it serves.
	Host string
	// CAFile is the PEM of the registry's certificate.
	CAFile string
	// URL is "https://127.0.0.1:<port>".
	URL string
	// ProxyURL is "http://127.0.0.1:<port>" of the CONNECT proxy.
	ProxyURL string

	srv     *httptest.Server
	proxy   *httptest.Server
	tunnels *tunnelListener
	pool    *x509.CertPool
	dir     string
	mu      sync.Mutex
	man     map[string][]byte // "<namespace>/<model>:<tag>" → manifest bytes
	blobs   map[string]string // digest → file
	reqs    []string
}

// StartRegistry starts a registry closed at the end of the test.
func StartRegistry(tb testing.TB) *Registry {
	tb.Helper()
	r, err := NewRegistry(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.Close)
	return r
}

// NewRegistry starts a registry on 127.0.0.1, keeping its small blobs and
// certificate in dir (which must exist); Close stops it.
func NewRegistry(dir string) (*Registry, error) {
	return NewRegistryOn(dir, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
}

// NewRegistryOn is NewRegistry with the registry's and the proxy's
// listeners made by listen (for example inside a network namespace, where
// the Ollama server that pulls from it runs). The proxy hands its tunnels
// to the registry in-process: it dials nothing.
func NewRegistryOn(dir string, listen func() (net.Listener, error)) (*Registry, error) {
	cert, pemBytes, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("registry certificate: %w", err)
	}
	r := &Registry{dir: dir, man: map[string][]byte{}, blobs: map[string]string{}, pool: x509.NewCertPool()}
	r.pool.AppendCertsFromPEM(pemBytes)
	r.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(r.CAFile, pemBytes, 0o644); err != nil {
		return nil, err
	}
	rl, err := listen()
	if err != nil {
		return nil, err
	}
	pl, err := listen()
	if err != nil {
		rl.Close()
		return nil, err
	}
	r.tunnels = &tunnelListener{Listener: rl, conns: make(chan net.Conn), done: make(chan struct{})}
	go r.tunnels.run()
	r.srv = &httptest.Server{Listener: r.tunnels, Config: &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}}
	r.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	r.srv.StartTLS()
	r.URL = r.srv.URL
	r.Host = strings.TrimPrefix(r.srv.URL, "https://")
	r.proxy = &httptest.Server{Listener: pl, Config: &http.Server{Handler: http.HandlerFunc(r.connect), ReadHeaderTimeout: 10 * time.Second}}
	r.proxy.Start()
	r.ProxyURL = r.proxy.URL
	return r, nil
}

// Close stops the registry and its proxy.
func (r *Registry) Close() {
	r.proxy.CloseClientConnections()
	r.proxy.Close()
	r.tunnels.stop()
	r.srv.CloseClientConnections()
	r.srv.Close()
}

// tunnelListener accepts the registry's own connections and the proxy's
// tunnels.
type tunnelListener struct {
	net.Listener
	conns    chan net.Conn
	done     chan struct{}
	stopOnce sync.Once
}

// run moves the real listener's connections onto l.conns until it closes.
func (l *tunnelListener) run() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.stop()
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

func (l *tunnelListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tunnelListener) stop() { l.stopOnce.Do(func() { close(l.done) }) }

func (l *tunnelListener) Close() error {
	l.stop()
	return l.Listener.Close()
}

// DefaultRegistry is the registry a plain name pulls from; BlobHost is the
// host name its blob redirects point at (through the proxy).
const (
	DefaultRegistry = "registry.ollama.ai"
	BlobHost        = "blobs.registry.test"
)

// connect tunnels CONNECT registry.ollama.ai:443 and BlobHost:443 to the
// registry.
func (r *Registry) connect(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, "PROXY "+req.Method+" "+req.Host)
	r.mu.Unlock()
	if req.Method != http.MethodConnect || (req.Host != DefaultRegistry+":443" && req.Host != BlobHost+":443") {
		http.Error(w, "the test registry's proxy tunnels only to "+DefaultRegistry+" and "+BlobHost, http.StatusForbidden)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := rw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil || rw.Flush() != nil {
		conn.Close()
		return
	}
	c := net.Conn(conn)
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		c = &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)}
	}
	select {
	case r.tunnels.conns <- c:
	case <-r.tunnels.done:
		conn.Close()
	}
}

func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gpuctl test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost", DefaultRegistry, BlobHost},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Client is an HTTP client that trusts the registry.
func (r *Registry) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.pool}}}
}

// Name is the full name under which the registry serves short on its own
// address ("tiny" → "127.0.0.1:<port>/library/tiny:latest"). Through
// ProxyURL the plain name ("tiny") pulls the same model.
func (r *Registry) Name(short string) string {
	ns, m := "library", short
	if i := strings.LastIndex(short, "/"); i >= 0 {
		ns, m = short[:i], short[i+1:]
	}
	if !strings.Contains(m, ":") {
		m += ":latest"
	}
	return r.Host + "/" + ns + "/" + m
}

// Requests returns "METHOD path" of every request served so far.
func (r *Registry) Requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...)
}

// AddModel serves spec under <namespace>/<model>:<tag> (short as in Name;
// "tiny" means library/tiny:latest): the GGUF (written once per process by
// GGUF), the template and a params layer, and a config. It returns the
// manifest, whose bytes are exactly what Ollama writes to disk.
func (r *Registry) AddModel(short string, spec ModelSpec) (Manifest, error) {
	gguf, err := GGUF(spec)
	if err != nil {
		return Manifest{}, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	model, err := r.addFile(gguf, MediaTypeModel)
	if err != nil {
		return Manifest{}, err
	}
	params, _ := json.Marshal(map[string]any{"num_predict": spec.NumPredict, "stop": []string{"</s>"}})
	tmpl, err := r.addBytes([]byte(Template), MediaTypeTemplate)
	if err != nil {
		return Manifest{}, err
	}
	par, err := r.addBytes(params, MediaTypeParams)
	if err != nil {
		return Manifest{}, err
	}
	layers := []Layer{model, tmpl, par}
	diffIDs := make([]string, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.Digest
	}
	cfg, _ := json.Marshal(map[string]any{
		"model_format": "gguf", "model_family": "llama", "model_families": []string{"llama"},
		"model_type": spec.ParameterSize(), "file_type": "F32",
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	config, err := r.addBytes(cfg, MediaTypeConfig)
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: config, Layers: layers}
	b, _ := json.Marshal(m)
	ns, rest, _ := strings.Cut(strings.TrimPrefix(r.Name(short), r.Host+"/"), "/")
	r.mu.Lock()
	r.man[ns+"/"+rest] = b
	r.mu.Unlock()
	return m, nil
}

// ManifestBytes returns the manifest served for short, as Ollama will
// write it to disk.
func (r *Registry) ManifestBytes(short string) ([]byte, bool) {
	ns, rest, _ := strings.Cut(strings.TrimPrefix(r.Name(short), r.Host+"/"), "/")
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.man[ns+"/"+rest]
	return b, ok
}

func (r *Registry) addBytes(b []byte, mediaType string) (Layer, error) {
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	p := filepath.Join(r.dir, "sha256-"+hex.EncodeToString(sum[:]))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return Layer{}, err
	}
	r.mu.Lock()
	r.blobs[d] = p
	r.mu.Unlock()
	return Layer{MediaType: mediaType, Digest: d, Size: int64(len(b))}, nil
}

func (r *Registry) addFile(p, mediaType string) (Layer, error) {
	f, err := os.Open(p)
	if err != nil {
		return Layer{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Layer{}, err
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	r.mu.Lock()
	r.blobs[d] = p
	r.mu.Unlock()
	return Layer{MediaType: mediaType, Digest: d, Size: n}, nil
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if d, ok := strings.CutPrefix(req.URL.Path, "/direct/"); ok {
		r.mu.Lock()
		p, ok := r.blobs[d]
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		f, err := os.Open(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, req, "", time.Time{}, f)
		return
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 {
		http.NotFound(w, req)
		return
	}
	switch parts[2] {
	case "manifests":
		r.mu.Lock()
		b, ok := r.man[parts[0]+"/"+parts[1]+":"+parts[3]]
		r.mu.Unlock()
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`+"\n")
			return
		}
		sum := sha256.Sum256(b)
		w.Header().Set("Content-Type", MediaTypeManifest)
		w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if req.Method == http.MethodGet {
			w.Write(b)
		}
	case "blobs":
		r.mu.Lock()
		_, ok := r.blobs[parts[3]]
		r.mu.Unlock()
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`+"\n")
			return
		}
		target := "https://" + BlobHost + "/direct/" + parts[3]
		if req.Host == r.Host {
			_, port, _ := net.SplitHostPort(r.Host)
			target = "https://localhost:" + port + "/direct/" + parts[3]
		}
		http.Redirect(w, req, target, http.StatusTemporaryRedirect)
	default:
		http.NotFound(w, req)
	}
}

// Install writes short's manifest and blobs into an Ollama models
// directory (OLLAMA_MODELS) exactly where a pull of the plain name from
// registry.ollama.ai puts them: a model already on the drive, without a
// server.
func (r *Registry) Install(modelsDir, short string) error {
	b, ok := r.ManifestBytes(short)
	if !ok {
		return fmt.Errorf("install %s: not in the test registry", short)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, l := range append([]Layer{m.Config}, m.Layers...) {
		r.mu.Lock()
		src := r.blobs[l.Digest]
		r.mu.Unlock()
		dst := filepath.Join(modelsDir, "blobs", strings.Replace(l.Digest, ":", "-", 1))
		if err := copyFile(src, dst); err != nil {
			return fmt.Errorf("install %s: %w", short, err)
		}
	}
	ns, rest, _ := strings.Cut(strings.TrimPrefix(r.Name(short), r.Host+"/"), "/")
	model, tag, _ := strings.Cut(rest, ":")
	mp := filepath.Join(modelsDir, "manifests", DefaultRegistry, ns, model, tag)
	if err := os.MkdirAll(filepath.Dir(mp), 0o755); err != nil {
		return err
	}
	return os.WriteFile(mp, b, 0o644)
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
