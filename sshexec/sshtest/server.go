// Package sshtest is an in-process SSH server on 127.0.0.1:0 for tests of
// code that runs commands over SSH: a script table maps exec commands to
// canned output or handlers, every command received is recorded (raw and as
// argv), only the given client keys are accepted, and knobs make it fail the
// ways real hosts and networks do. A simulated host can embed it with Start
// and a Handler.
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Handler runs one exec command: stdin is the session's input, the return
// value its exit status.
type Handler func(cmd string, stdin io.Reader, stdout, stderr io.Writer) int

// Fault is a way a command's reply goes wrong.
type Fault int

const (
	// NoFault replies normally.
	NoFault Fault = iota
	// Stall never replies, but the connection stays alive (keepalives are
	// answered): only a command timeout ends it.
	Stall
	// BlackHole freezes the whole connection: from the command on, nothing
	// is read or written, as when the host loses power or the network drops
	// packets. Only keepalives (or a timeout) notice.
	BlackHole
	// Drop writes the reply's stdout, then closes the TCP connection.
	Drop
	// NoExitStatus writes the reply and closes the channel without an
	// exit-status.
	NoExitStatus
)

// Reply is a canned reply to a command.
type Reply struct {
	Stdout, Stderr string
	Exit           int
	// Signal, when set, is sent as exit-signal ("KILL") instead of Exit.
	Signal string
	Fault  Fault
}

// Exec is one exec request the server received.
type Exec struct {
	// Raw is the command string exactly as sent.
	Raw string
	// Argv is Raw split by SplitWords; ArgvErr is why that failed (an
	// unquoted metacharacter means the client's quoting is broken).
	Argv    []string
	ArgvErr error
	User    string
}

type rule struct {
	match   func(raw string, argv []string) bool
	reply   Reply
	handler Handler
}

// Options configures a Server. The zero value generates an ed25519 host key
// and one client key (Server.ClientSigner).
type Options struct {
	// HostKeys are the server's host keys (default: one new ed25519 key).
	HostKeys []ssh.Signer
	// AuthorizedKeys are the only client keys accepted (default: the
	// public half of ClientSigner).
	AuthorizedKeys []ssh.PublicKey
	// Handler runs commands no rule matches (default: exit 127, "command
	// not found" on stderr).
	Handler Handler
	// Silent accepts TCP connections but never speaks SSH.
	Silent bool
	// Addr is the listen address (default 127.0.0.1:0).
	Addr string
	// Logf, when set, receives server-side errors.
	Logf func(format string, args ...any)
	// MaxRecorded caps how many received commands Commands keeps (the
	// oldest are dropped); 0 keeps them all, as tests want. A long-running
	// simulator sets it so its memory stays bounded.
	MaxRecorded int
}

// Server is a running fake SSH server.
type Server struct {
	addr   string
	ln     net.Listener
	opts   Options
	client ssh.Signer

	mu       sync.Mutex
	hostKeys []ssh.Signer
	rules    []rule
	execs    []Exec
	conns    map[*conn]bool
	accepted int
	closed   bool
	active   int
	maxAct   int

	wg sync.WaitGroup
}

// New starts a server for a test and closes it in t.Cleanup.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("sshtest: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Start starts a server; Close stops it.
func Start(opts Options) (*Server, error) {
	s := &Server{opts: opts, conns: map[*conn]bool{}}
	if len(opts.HostKeys) == 0 {
		k, err := NewEd25519Signer()
		if err != nil {
			return nil, err
		}
		s.hostKeys = []ssh.Signer{k}
	} else {
		s.hostKeys = append(s.hostKeys, opts.HostKeys...)
	}
	if len(opts.AuthorizedKeys) == 0 {
		k, err := NewEd25519Signer()
		if err != nil {
			return nil, err
		}
		s.client = k
		s.opts.AuthorizedKeys = []ssh.PublicKey{k.PublicKey()}
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sshtest: listen: %w", err)
	}
	s.ln = ln
	s.addr = ln.Addr().String()
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// NewEd25519Signer returns a fresh ed25519 key.
func NewEd25519Signer() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// NewRSASigner returns a fresh RSA key of the given size (2048 if 0).
func NewRSASigner(bits int) (ssh.Signer, error) {
	if bits == 0 {
		bits = 2048
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(k)
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// ClientSigner is the generated client key the server accepts (nil when
// Options.AuthorizedKeys was given).
func (s *Server) ClientSigner() ssh.Signer { return s.client }

// HostKey is the server's first host key.
func (s *Server) HostKey() ssh.PublicKey { return s.HostKeys()[0] }

// HostKeys are the server's host keys' public halves.
func (s *Server) HostKeys() []ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ssh.PublicKey, len(s.hostKeys))
	for i, k := range s.hostKeys {
		out[i] = k.PublicKey()
	}
	return out
}

// RotateHostKey replaces the host key of the first key's type with a new one
// for later connections (a reinstalled host, or an impostor) and returns it.
func (s *Server) RotateHostKey() ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	var k ssh.Signer
	var err error
	if s.hostKeys[0].PublicKey().Type() == ssh.KeyAlgoRSA {
		k, err = NewRSASigner(0)
	} else {
		k, err = NewEd25519Signer()
	}
	if err != nil {
		panic(err)
	}
	s.hostKeys[0] = k
	return k.PublicKey()
}

// Handle makes the exact command line raw get reply r.
func (s *Server) Handle(raw string, r Reply) {
	s.addRule(rule{match: func(c string, _ []string) bool { return c == raw }, reply: r})
}

// HandleArgv makes commands whose argv[0] is prog get reply r.
func (s *Server) HandleArgv(prog string, r Reply) {
	s.addRule(rule{match: func(_ string, argv []string) bool { return len(argv) > 0 && argv[0] == prog }, reply: r})
}

// HandleMatch makes commands for which match is true get reply r. argv is
// nil when the command line does not split (see Exec.ArgvErr).
func (s *Server) HandleMatch(match func(raw string, argv []string) bool, r Reply) {
	s.addRule(rule{match: match, reply: r})
}

// HandleFunc runs h for commands for which match is true.
func (s *Server) HandleFunc(match func(raw string, argv []string) bool, h Handler) {
	s.addRule(rule{match: match, handler: h})
}

// Rules added later take precedence.
func (s *Server) addRule(r rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = append([]rule{r}, s.rules...)
}

// Commands returns every exec request received so far, in order.
func (s *Server) Commands() []Exec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Exec(nil), s.execs...)
}

// MaxConcurrent is the most commands that ran at once.
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxAct
}

// Connections is how many SSH connections were accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Close stops the server, closes every connection and waits for its
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("sshtest: "+format, args...)
	}
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := newConn(nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = true
		s.accepted++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			if s.opts.Silent {
				<-c.closed
				return
			}
			s.serve(c)
		}()
	}
}

func (s *Server) serverConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range s.opts.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	s.mu.Lock()
	for _, k := range s.hostKeys {
		cfg.AddHostKey(k)
	}
	s.mu.Unlock()
	return cfg
}

func (s *Server) serve(c *conn) {
	sc, chans, reqs, err := ssh.NewServerConn(c, s.serverConfig())
	if err != nil {
		s.logf("handshake: %v", err)
		return
	}
	defer sc.Close()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs) // replies false to keepalive@openssh.com
	}()
	var wg sync.WaitGroup
	defer func() {
		c.Close() // ends stalled commands
		wg.Wait()
	}()
	for nch := range chans {
		switch nch.ChannelType() {
		case "session":
			ch, creqs, err := nch.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.session(c, sc.User(), ch, creqs)
			}()
		case "direct-tcpip":
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.directTCPIP(c, nch)
			}()
		default:
			nch.Reject(ssh.UnknownChannelType, "only session and direct-tcpip channels")
		}
	}
}

// directTCPIP forwards to loopback addresses only, so a Server can act as a
// ProxyJump host for another.
func (s *Server) directTCPIP(c *conn, nch ssh.NewChannel) {
	var p struct {
		Host  string
		Port  uint32
		OHost string
		OPort uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
		nch.Reject(ssh.ConnectionFailed, "bad direct-tcpip payload")
		return
	}
	ip := net.ParseIP(p.Host)
	if ip == nil || !ip.IsLoopback() {
		nch.Reject(ssh.Prohibited, "sshtest forwards to loopback only")
		return
	}
	target, err := net.Dial("tcp", net.JoinHostPort(p.Host, fmt.Sprint(p.Port)))
	if err != nil {
		nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		target.Close()
		return
	}
	s.goTracked(func() { ssh.DiscardRequests(reqs) })
	done := make(chan struct{}, 2)
	s.goTracked(func() { io.Copy(target, ch); target.(*net.TCPConn).CloseWrite(); done <- struct{}{} })
	s.goTracked(func() { io.Copy(ch, target); ch.CloseWrite(); done <- struct{}{} })
	select {
	case <-done:
		<-done
	case <-c.closed:
	}
	target.Close()
	ch.Close()
}

func (s *Server) session(c *conn, user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			chDone := make(chan struct{})
			s.goTracked(func() {
				ssh.DiscardRequests(reqs) // signals, window changes
				close(chDone)
			})
			s.exec(c, user, ch, p.Command, chDone)
			return
		default:
			// env, pty-req, shell, subsystem: not offered.
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

func (s *Server) goTracked(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Server) exec(c *conn, user string, ch ssh.Channel, raw string, chDone <-chan struct{}) {
	argv, aerr := SplitWords(raw)
	s.mu.Lock()
	s.execs = append(s.execs, Exec{Raw: raw, Argv: argv, ArgvErr: aerr, User: user})
	if n := s.opts.MaxRecorded; n > 0 && len(s.execs) > n {
		s.execs = append(s.execs[:0], s.execs[len(s.execs)-n:]...)
	}
	var r *rule
	for i := range s.rules {
		if s.rules[i].match(raw, argv) {
			r = &s.rules[i]
			break
		}
	}
	s.active++
	s.maxAct = max(s.maxAct, s.active)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()

	var rep Reply
	switch {
	case r != nil && r.handler != nil:
		rep.Exit = r.handler(raw, ch, ch, ch.Stderr())
	case r != nil:
		rep = r.reply
	case s.opts.Handler != nil:
		rep.Exit = s.opts.Handler(raw, ch, ch, ch.Stderr())
	default:
		rep = Reply{Stderr: fmt.Sprintf("sh: 1: %s: not found\n", firstWord(raw)), Exit: 127}
	}
	switch rep.Fault {
	case Stall:
		select {
		case <-c.closed:
		case <-chDone:
		}
		return
	case BlackHole:
		c.freeze()
		<-c.closed
		return
	}
	io.WriteString(ch, rep.Stdout)
	if rep.Fault == Drop {
		c.Close()
		return
	}
	io.WriteString(ch.Stderr(), rep.Stderr)
	if rep.Fault == NoExitStatus {
		ch.CloseWrite()
		return
	}
	if rep.Signal != "" {
		ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: rep.Signal}))
	} else {
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(rep.Exit)}))
	}
	ch.CloseWrite()
}

func firstWord(raw string) string {
	if f := strings.Fields(raw); len(f) > 0 {
		return f[0]
	}
	return ""
}

// conn is a net.Conn that can be frozen (BlackHole): reads then discard data
// and block, writes block, until the conn is closed.
type conn struct {
	net.Conn
	once    sync.Once
	closed  chan struct{}
	frozen  chan struct{}
	freezeO sync.Once
}

func newConn(c net.Conn) *conn {
	return &conn{Conn: c, closed: make(chan struct{}), frozen: make(chan struct{})}
}

func (c *conn) freeze() { c.freezeO.Do(func() { close(c.frozen) }) }

func (c *conn) isFrozen() bool {
	select {
	case <-c.frozen:
		return true
	default:
		return false
	}
}

func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.isFrozen() {
			<-c.closed
			return 0, net.ErrClosed
		}
		n, err := c.Conn.Read(p)
		if c.isFrozen() {
			continue
		}
		return n, err
	}
}

func (c *conn) Write(p []byte) (int, error) {
	if c.isFrozen() {
		<-c.closed
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
	})
	return err
}
