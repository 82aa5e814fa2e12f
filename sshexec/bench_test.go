package sshexec_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshdtest"
)

// benchConfig starts a real sshd on loopback and returns a config that
// trusts its ed25519 key.
func benchConfig(b *testing.B) sshexec.Config {
	s := sshdtest.Start(b, sshdtest.Options{})
	tg := target{addr: s.Addr, user: s.User, hostKeys: s.HostKeys(), signer: s.ClientSigner()}
	cfg := tg.config(b, tg.knownLine(s.HostKey(ssh.KeyAlgoED25519)))
	cfg.Logger = nil
	return cfg
}

var trueCmd = sshexec.Cmd{Args: []string{"true"}, Timeout: 10 * time.Second}

func runOnce(b *testing.B, c *sshexec.Client) {
	res, err := c.Run(context.Background(), trueCmd)
	if err != nil || res.ExitStatus != 0 {
		b.Fatalf("Run: %+v %v", res, err)
	}
}

// BenchmarkFirstCommand: dial + handshake + auth + one command + close.
func BenchmarkFirstCommand(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	for b.Loop() {
		c, err := sshexec.Dial(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		runOnce(b, c)
		c.Close()
	}
}

// BenchmarkFourCommands compares 4 commands run concurrently over one
// (already open) connection with 4 commands each on its own new connection,
// one after another; the ratio is reported as seq/conc.
func BenchmarkFourCommands(b *testing.B) {
	cfg := benchConfig(b)
	ctx := context.Background()
	c, err := sshexec.Dial(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var conc, seq time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runOnce(b, c)
			}()
		}
		wg.Wait()
		conc += time.Since(start)

		start = time.Now()
		for range 4 {
			c2, err := sshexec.Dial(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			runOnce(b, c2)
			c2.Close()
		}
		seq += time.Since(start)
		n++
	}
	b.ReportMetric(float64(conc.Microseconds())/float64(n)/1000, "conc-one-conn-ms")
	b.ReportMetric(float64(seq.Microseconds())/float64(n)/1000, "seq-new-conns-ms")
	b.ReportMetric(float64(seq)/float64(conc), "seq/conc")
}

// BenchmarkCommandOnOpenConnection: one command over an established connection.
func BenchmarkCommandOnOpenConnection(b *testing.B) {
	cfg := benchConfig(b)
	c, err := sshexec.Dial(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		runOnce(b, c)
	}
}
