package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/cmd/gpuctl-sim/sim"
)

// TestPullOverSSHToSimulatedPC runs `gpuctl pull` as a user does, with
// nothing replaced: the models manager the command builds reaches the
// simulated PC's drive over real SSH (Controller.Runner: the probe, then
// sshexec.SSHConnector) and its Ollama over hosthttp's client. The room
// check (df), the pull and the proof on the drive (cat, stat) share one SSH
// connection; a second pull finds the model present.
func TestPullOverSSHToSimulatedPC(t *testing.T) {
	s, err := sim.Start(sim.Config{Dir: t.TempDir(), Up: true, Models: []string{sim.DefaultModel},
		Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := filepath.Join(t.TempDir(), "gpuctl.toml")
	if err := os.WriteFile(cfg, []byte(s.Inventory()), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := s.PC("gaming-pc")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := pc.WaitState(ctx, sim.Up); err != nil {
		t.Fatalf("the simulated PC did not come up: %v", err)
	}

	code, out, errOut := runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gaming-pc")
	if code != 0 {
		t.Fatalf("pull: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if !strings.Contains(out+errOut, sim.DefaultModel) {
		t.Errorf("pull did not name %s:\n%s%s", sim.DefaultModel, out, errOut)
	}
	if n := pc.SSHConnections(); n != 1 {
		t.Errorf("%d SSH connections for one pull, want 1 (df, cat and stat share it)", n)
	}
	code, _, errOut = runEnv(t, false, time.Time{}, "--config", cfg, "pull", "gaming-pc")
	if code != 0 || !strings.Contains(errOut, "is present") {
		t.Errorf("second pull: exit %d, stderr %q; want the declared model present", code, errOut)
	}
}
