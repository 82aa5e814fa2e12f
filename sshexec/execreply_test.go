package sshexec_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/sshexec"
)

// stuckExecServer accepts sessions on 127.0.0.1:0 and answers keepalives,
// but never replies to an exec request: an sshd whose session setup hangs
// (PAM, logind during shutdown, fork under memory pressure).
func stuckExecServer(t *testing.T) (addr string, hostKey ssh.PublicKey, client ssh.Signer) {
	t.Helper()
	host, client := mustKey(t), mustKey(t)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs) // keepalives are answered
				for nch := range chans {
					_, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					go func() {
						for range creqs { // exec: never replied to
						}
					}()
				}
			}()
		}
	}()
	return ln.Addr().String(), host.PublicKey(), client
}

// Session.Start waits for the reply to "exec"; a server that never sends it
// must not hold Run past the command's timeout.
func TestRunBoundedWhenExecIsNeverAnswered(t *testing.T) {
	addr, hk, signer := stuckExecServer(t)
	cfg := sshexec.Config{Host: "stuck", Addr: addr, User: "u", HostKey: hk, Signers: []ssh.Signer{signer},
		ConnectTimeout: 5 * time.Second, KeepaliveInterval: 50 * time.Millisecond, Logger: testLogger(t)}
	c := dial(t, cfg)
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), sshexec.Cmd{Args: []string{"true"}, Timeout: 300 * time.Millisecond})
		done <- err
	}()
	select {
	case err := <-done:
		var oe *sshexec.OpError
		if !errors.As(err, &oe) || !sshexec.IsTimeout(err) {
			t.Fatalf("Run error = %v, want a timeout OpError", err)
		}
	case <-time.After(10 * time.Second):
		c.Close() // unblocks Run so the test ends
		<-done
		t.Fatal("Run still waiting for the exec reply 10s after its 300ms timeout")
	}
	select {
	case <-c.Done():
	default:
		t.Error("client still open after a command that could not start in time")
	}
}
