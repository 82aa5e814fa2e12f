package controller

import (
	"context"
	"net"
	"strings"
	"testing"
	"testing/synctest"
)

// A host whose checks are ["ollama"] alone (the always-on server gpuctl runs
// on) is checked over HTTP: no TCP probe of its SSH port, no SSH, no magic
// packet, and its Ollama decides the state.
func TestOllamaOnlyHostNeverUsesSSH(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.power, pc.sshUp = true, true
		h := pc.host()
		h.OnDemand, h.Checks = false, []string{"ollama"}
		c := pc.controller(t.TempDir())
		dials := 0
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials++
			return pc.dial(ctx, network, addr)
		}
		st := c.Status(context.Background(), h)
		if st.State != StateReady || dials != 0 || pc.conns != 0 {
			t.Fatalf("state %s (%s), %d dials, %d SSH connections; want ready over HTTP alone", st.State, st.Reason, dials, pc.conns)
		}
		var names []string
		for _, ch := range st.Checks {
			names = append(names, ch.Name)
		}
		if got := strings.Join(names, ","); got != "ollama,models" {
			t.Errorf("checks %s, want ollama,models", got)
		}

		res, err := c.Wake(context.Background(), h, WakeOptions{})
		if err != nil || res.Status.State != StateReady || res.Record.Woke || pc.wakeCount() != 0 || dials != 0 {
			t.Fatalf("wake: %+v %v (woke %v, %d packets, %d dials)", res.Status, err, res.Record.Woke, pc.wakeCount(), dials)
		}

		// Its Ollama down: degraded, naming the check.
		pc.mu.Lock()
		pc.sshUp = false
		pc.mu.Unlock()
		st = c.Status(context.Background(), h)
		if st.State != StateDegraded || failingNames(st) != "ollama" {
			t.Fatalf("state %s, failing %q; want degraded on ollama", st.State, failingNames(st))
		}
	})
}

// A selection of SSH checks runs only those, over one connection.
func TestSelectedChecksOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.power, pc.sshUp = true, true
		h := pc.host()
		h.Checks = []string{"gpu", "ollama"}
		st := pc.controller(t.TempDir()).Status(context.Background(), h)
		var names []string
		for _, ch := range st.Checks {
			names = append(names, ch.Name)
		}
		if got := strings.Join(names, ","); got != "gpu,ollama,models" || st.State != StateReady {
			t.Fatalf("state %s, checks %s; want ready with gpu,ollama,models", st.State, got)
		}
		if len(pc.commands) == 0 {
			t.Fatal("no remote command recorded")
		}
		for _, cmd := range pc.commands {
			if !strings.HasPrefix(cmd, "nvidia-smi") {
				t.Errorf("ran %q, which no selected check needs", cmd)
			}
		}
	})
}
