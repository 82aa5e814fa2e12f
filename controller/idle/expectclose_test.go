package idle

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// closeRecorder is the simulated box's SSH connection, recording when the
// shutdown says it expects the connection to drop.
type closeRecorder struct {
	*simBox
	mu    sync.Mutex
	calls []string // "true@<n poweroffs so far>" ...
}

func (c *closeRecorder) ExpectClose(expected bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := "false"
	if expected {
		s = "true"
	}
	if c.poweroffCount() > 0 {
		s += " after poweroff"
	} else {
		s += " before poweroff"
	}
	c.calls = append(c.calls, s)
}

// The shutdown tells the connection that it will drop before it sends the
// poweroff (so the drop is not logged as a warning), and takes that back
// when sudo refuses.
func TestPoweroffExpectsTheConnectionToClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		exit int
		want []string
	}{
		{"powered-off", 0, []string{"true before poweroff"}},
		{"sudo-refuses", 1, []string{"true before poweroff", "false after poweroff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idleEnv(t)
				e.box.set(func(b *simBox) { b.poweroffExit = tc.exit })
				rec := &closeRecorder{simBox: e.box}
				e.deps.Connect = func(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
					if _, _, err := e.box.connect(ctx, h, conn); err != nil {
						return nil, nil, err
					}
					return rec, io.NopCloser(nil), nil
				}
				e.cron()
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if len(rec.calls) != len(tc.want) {
					t.Fatalf("ExpectClose calls %q, want %q", rec.calls, tc.want)
				}
				for i := range tc.want {
					if rec.calls[i] != tc.want[i] {
						t.Errorf("ExpectClose calls %q, want %q", rec.calls, tc.want)
					}
				}
			})
		})
	}
}
