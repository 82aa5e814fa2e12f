package realollama

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollamalive/gpuctl/controller/testlog"
)

// Options configure a real Ollama server. The zero value is usable.
type Options struct {
	// Binary defaults to Binary().
	Binary string
	// ModelsDir is OLLAMA_MODELS. StartServer defaults it to
	// <Home>/.ollama/models, where Ollama itself puts it.
	ModelsDir string
	// Home is the server's HOME (its key pair lives in $HOME/.ollama).
	// Start defaults it to a t.TempDir(); StartServer requires it.
	Home string
	// Listen is OLLAMA_HOST; default "127.0.0.1:0" (a free port, read
	// back from the server's log).
	Listen string
	// Registry, when set, is trusted by the server (SSL_CERT_FILE) and is
	// its registry.ollama.ai (HTTPS_PROXY=Registry.ProxyURL).
	Registry *Registry
	// Env is added to the server's environment (OLLAMA_* knobs).
	Env []string
	// Wrap, when set, turns the server's argv into the one to run (for
	// example ["ip", "netns", "exec", ns, ...argv] to start it in a network
	// namespace).
	Wrap func(argv []string) []string
	// Log, when set, also receives the server's log.
	Log io.Writer
	// StartTimeout bounds the wait for "Listening on"; default 60 s.
	StartTimeout time.Duration
}

// Server is a running real Ollama server.
type Server struct {
	// Addr is "127.0.0.1:<port>" (the address it listens on).
	Addr string
	// URL is "http://<Addr>".
	URL *url.URL
	// ModelsDir and Home are the server's OLLAMA_MODELS and HOME.
	ModelsDir, Home string
	// Client is the official client, pointed at the server.
	Client *api.Client

	cmd  *exec.Cmd
	log  *testlog.Buffer
	done chan struct{}
	once sync.Once
	err  error
}

// Start starts a real Ollama server for the test (skipping it, or failing it
// under CI=true, when the binary is missing) and stops it at the end; on
// failure the test log gets the server's log.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Binary == "" {
		opts.Binary = Require(tb)
	}
	if opts.Home == "" {
		opts.Home = tb.TempDir()
	}
	s, err := StartServer(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stop ollama: %v", err)
		}
		if tb.Failed() {
			tb.Logf("ollama server log (%s):\n%s", s.Addr, s.Log())
		}
	})
	return s
}

var listening = regexp.MustCompile(`Listening on (\S+) \(version ([^)]*)\)`)

// StartServer starts a real Ollama server and waits until it listens; ctx
// bounds only the start. Stop it with Stop.
func StartServer(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{opts.Home, opts.ModelsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	cmd := opts.command()
	s := &Server{ModelsDir: opts.ModelsDir, Home: opts.Home, cmd: cmd, log: &testlog.Buffer{}, done: make(chan struct{})}
	addr, err := s.start(opts)
	if err != nil {
		return nil, err
	}
	if err := s.waitListening(ctx, opts, addr); err != nil {
		return nil, err
	}
	s.URL = &url.URL{Scheme: "http", Host: s.Addr}
	s.Client = api.NewClient(s.URL, &http.Client{})
	return s, nil
}

// withDefaults fills in the defaults the Options fields document.
func (opts Options) withDefaults() (Options, error) {
	if opts.Binary == "" {
		b, err := Binary()
		if err != nil {
			return opts, err
		}
		opts.Binary = b
	}
	if opts.Home == "" {
		return opts, errors.New("realollama: Options.Home is required")
	}
	if opts.ModelsDir == "" {
		opts.ModelsDir = filepath.Join(opts.Home, ".ollama", "models")
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	return opts, nil
}

// command is `ollama serve` (wrapped by opts.Wrap) with the server's
// environment, in its own process group.
func (opts Options) command() *exec.Cmd {
	argv := []string{opts.Binary, "serve"}
	if opts.Wrap != nil {
		argv = opts.Wrap(argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	env := []string{
		"HOME=" + opts.Home,
		"PATH=" + os.Getenv("PATH"),
		"OLLAMA_HOST=" + opts.Listen,
		"OLLAMA_MODELS=" + opts.ModelsDir,
		"OLLAMA_NOPRUNE=1",
		"OLLAMA_NUM_PARALLEL=1",
		"OLLAMA_MAX_LOADED_MODELS=2",
	}
	if opts.Registry != nil {
		env = append(env, "SSL_CERT_FILE="+opts.Registry.CAFile, "HTTPS_PROXY="+opts.Registry.ProxyURL, "NO_PROXY=")
	}
	cmd.Env = append(env, opts.Env...)
	cmd.Dir = opts.Home
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start starts s.cmd with its output going to s.log (and opts.Log), closes
// s.done once it exits, and returns a channel that receives the address and
// version of the first "Listening on" line of its log.
func (s *Server) start(opts Options) (<-chan [2]string, error) {
	pr, pw := io.Pipe()
	var sink io.Writer = s.log
	if opts.Log != nil {
		sink = io.MultiWriter(s.log, opts.Log)
	}
	s.cmd.Stdout = io.MultiWriter(sink, pw)
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", opts.Binary, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				addr <- [2]string{m[1], m[2]}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	return addr, nil
}

// waitListening waits for the server's address on addr and sets s.Addr,
// stopping the server when it reports the wrong version, does not listen
// within opts.StartTimeout or ctx ends first.
func (s *Server) waitListening(ctx context.Context, opts Options, addr <-chan [2]string) error {
	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	select {
	case a := <-addr:
		if a[1] != Version {
			s.Stop()
			return fmt.Errorf("%s reports version %q, want %s (rebuild with `make ollama`)", opts.Binary, a[1], Version)
		}
		s.Addr = a[0]
		return nil
	case <-s.done:
		return fmt.Errorf("ollama serve exited before listening (%v); log:\n%s", s.err, s.Log())
	case <-timer.C:
		s.Stop()
		return fmt.Errorf("ollama serve not listening after %s; log:\n%s", opts.StartTimeout, s.Log())
	case <-ctx.Done():
		s.Stop()
		return ctx.Err()
	}
}

// Log returns the server's log so far.
func (s *Server) Log() string { return s.log.String() }

// Done is closed once the server process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop stops the server and its runners (SIGTERM to its process group, then
// SIGKILL after 10 s) and waits for it.
func (s *Server) Stop() error {
	s.once.Do(func() {
		pid := s.cmd.Process.Pid
		syscall.Kill(-pid, syscall.SIGTERM)
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			syscall.Kill(-pid, syscall.SIGKILL)
			<-s.done
		}
		// The runner it started may outlive it; the group goes with it.
		syscall.Kill(-pid, syscall.SIGKILL)
	})
	return nil
}

// Pull pulls name (a full name from Registry.Name) with the official client
// and returns the last status line.
func (s *Server) Pull(ctx context.Context, name string) error {
	var last string
	err := s.Client.Pull(ctx, &api.PullRequest{Model: name}, func(p api.ProgressResponse) error {
		last = p.Status
		return nil
	})
	if err != nil {
		return fmt.Errorf("pull %s from %s: %w", name, s.Addr, err)
	}
	if last != "success" {
		return fmt.Errorf("pull %s from %s: last status %q", name, s.Addr, last)
	}
	return nil
}

// Create creates name on the server from spec's GGUF the way `ollama create`
// does: the blob uploaded with HEAD/POST /api/blobs/<digest>, then
// POST /api/create naming it, with the test template and parameters.
func (s *Server) Create(ctx context.Context, name string, spec ModelSpec) error {
	path, err := GGUF(spec)
	if err != nil {
		return err
	}
	digest, err := fileDigest(path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.Client.CreateBlob(ctx, digest, f); err != nil {
		return fmt.Errorf("upload %s to %s: %w", path, s.Addr, err)
	}
	req := &api.CreateRequest{
		Model:      name,
		Files:      map[string]string{filepath.Base(path): digest},
		Template:   Template,
		Parameters: map[string]any{"num_predict": spec.NumPredict, "stop": []string{"</s>"}},
	}
	var last string
	if err := s.Client.Create(ctx, req, func(p api.ProgressResponse) error { last = p.Status; return nil }); err != nil {
		return fmt.Errorf("create %s on %s: %w", name, s.Addr, err)
	}
	if last != "success" {
		return fmt.Errorf("create %s on %s: last status %q", name, s.Addr, last)
	}
	return nil
}

// Chat sends one user message with the official client, streaming, and
// returns the reply and the number of streamed chunks that carried text.
func (s *Server) Chat(ctx context.Context, model, prompt string) (string, int, error) {
	return Chat(ctx, s.Client, model, prompt)
}

// Chat is Server.Chat against any Ollama API (serve, for example).
func Chat(ctx context.Context, c *api.Client, model, prompt string) (string, int, error) {
	var out strings.Builder
	chunks := 0
	err := c.Chat(ctx, &api.ChatRequest{
		Model:    model,
		Messages: []api.Message{{Role: "user", Content: prompt}},
		Options:  map[string]any{"seed": 42, "temperature": 0},
	}, func(r api.ChatResponse) error {
		if r.Message.Content != "" {
			chunks++
			out.WriteString(r.Message.Content)
		}
		return nil
	})
	return out.String(), chunks, err
}

func fileDigest(p string) (string, error) {
	r := &Registry{blobs: map[string]string{}}
	l, err := r.addFile(p, MediaTypeModel)
	return l.Digest, err
}
