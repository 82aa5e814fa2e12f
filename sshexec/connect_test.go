package sshexec_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/testlog"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
	"golang.org/x/crypto/ssh"
)

// A connection dropped after the caller said it asked for that (a
// poweroff) is logged at Info; one that drops unasked still warns.
func TestSSHConnectorExpectedClose(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expect    bool
		level     slog.Level
		want, not string
	}{
		{"expected", true, slog.LevelInfo, `level=INFO msg="ssh connection closed" host=gaming-pc`, "level=WARN"},
		{"expected-quiet-at-warn", true, slog.LevelWarn, "", "ssh connection closed"},
		{"unexpected", false, slog.LevelWarn, `level=WARN msg="ssh connection closed" host=gaming-pc`, "expected=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := sshtest.New(t, sshtest.Options{})
			logger, logs := testlog.New(tc.level)
			connect := sshexec.SSHConnector(func(h *inventory.Host) (sshexec.Config, error) {
				return sshexec.Config{Host: h.Name, Addr: srv.Addr(), User: "gpuctl", HostKey: srv.HostKey(),
					Signers: []ssh.Signer{srv.ClientSigner()}, KeepaliveInterval: -1, Logger: logger}, nil
			})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			host, _, _ := net.SplitHostPort(srv.Addr())
			h := &inventory.Host{Name: "gaming-pc", Address: host}
			r, cl, err := connect(ctx, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ce, ok := r.(sshexec.CloseExpecter)
			if !ok {
				t.Fatalf("%T is no sshexec.CloseExpecter", r)
			}
			ce.ExpectClose(tc.expect)
			srv.Close() // the box goes down
			done := r.(interface{ Done() <-chan struct{} }).Done()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("the client did not notice the server closing")
			}
			cl.Close() // waits for the client's goroutines, so the log is written
			out := logs.String()
			t.Logf("logs:\n%s", out)
			if tc.want != "" && !strings.Contains(out, tc.want) {
				t.Errorf("logs lack %q", tc.want)
			}
			if strings.Contains(out, tc.not) {
				t.Errorf("logs have %q", tc.not)
			}
		})
	}
}
