package controller

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
	"golang.org/x/crypto/ssh"
)

// TestHostRunnerReusesAndRedials: one connection for many commands, a new
// one once the old has dropped, none at all for a runner never used, and
// none after Close.
func TestHostRunnerReusesAndRedials(t *testing.T) {
	srv := sshtest.New(t, sshtest.Options{})
	srv.Handle("drop", sshtest.Reply{Fault: sshtest.Drop})
	host, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	h := &inventory.Host{Name: "gaming-pc", Address: host, SSHPort: p}
	c := &Controller{SSH: sshexec.SSHConnector(func(h *inventory.Host) (sshexec.Config, error) {
		return sshexec.Config{Host: h.Name, Addr: srv.Addr(), User: "gpuctl", HostKey: srv.HostKey(),
			Signers: []ssh.Signer{srv.ClientSigner()}, KeepaliveInterval: -1}, nil
	})}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	unused := c.Runner(h)
	unused.Close()

	r := c.Runner(h)
	defer r.Close()
	for range 3 {
		if _, err := r.Run(ctx, sshexec.Cmd{Args: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections for 3 commands, want 1", n)
	}
	if _, err := r.Run(ctx, sshexec.Cmd{Args: []string{"drop"}}); err == nil {
		t.Fatal("drop: no error")
	}
	<-r.r.(interface{ Done() <-chan struct{} }).Done()
	if _, err := r.Run(ctx, sshexec.Cmd{Args: []string{"x"}}); err != nil {
		t.Fatalf("Run after the connection dropped: %v", err)
	}
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want a redial (2)", n)
	}
	r.Close()
	if _, err := r.Run(ctx, sshexec.Cmd{Args: []string{"x"}}); !errors.Is(err, ErrRunnerClosed) {
		t.Errorf("Run after Close: %v, want ErrRunnerClosed", err)
	}
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections after Close, want still 2", n)
	}
}
