package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/inventory"
)

// backendsFor builds serve's adapter between the proxy and the controller
// exactly as runServe does, for the simulated PC's inventory.
func backendsFor(t *testing.T, pc *simPC) *controllerBackends {
	t.Helper()
	inv, err := inventory.Load(pc.config, inventory.Env{Getenv: func(string) string { return "" }, Home: pc.dir})
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}
	env.fill()
	li := &loadedInventory{Inventory: inv}
	return newControllerBackends(env, li)
}

// Up asks the host's Ollama and nothing else: 200 is up; another status or
// no answer is "not up" without an error; an unknown host is an error.
func TestControllerBackendsUp(t *testing.T) {
	pc := newSimPC(t)
	b := backendsFor(t, pc)
	ctx := t.Context()
	if up, err := b.Up(ctx, "gaming-pc"); err != nil || !up {
		t.Errorf("Up with Ollama answering 200: %v, %v", up, err)
	}
	if pc.packetCount() != 0 || pc.srv != nil {
		t.Error("Up woke the PC or it booted")
	}

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	h, _ := b.inv.Host("gaming-pc")
	u, err := inventory.ParseURL(failing.URL)
	if err != nil {
		t.Fatal(err)
	}
	h.OllamaURL = u
	if up, err := b.Up(ctx, "gaming-pc"); err != nil || up {
		t.Errorf("Up with Ollama answering 503: %v, %v", up, err)
	}
	failing.Close()
	if up, err := b.Up(ctx, "gaming-pc"); err != nil || up {
		t.Errorf("Up with nothing listening: %v, %v", up, err)
	}
	if _, err := b.Up(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Up of an unknown host: %v", err)
	}
	if err := b.Wake(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Wake of an unknown host: %v", err)
	}
}

// Wake (WakeProgress) is the controller's wake: magic packet, SSH, checks; it returns nil
// once the host is ready, and the proxy's context deadline bounds it.
func TestControllerBackendsWake(t *testing.T) {
	pc := newSimPC(t)
	b := backendsFor(t, pc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var notes []string
	if err := b.WakeProgress(ctx, "gaming-pc", func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }); err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if pc.packetCount() == 0 {
		t.Error("Wake sent no magic packet")
	}
	// The phases serve shows held streams are the ones `gpuctl wake` prints.
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(notes, "\n")
	for _, want := range []string{"boot: magic packets sent to", "checks:"} {
		if !strings.Contains(all, want) {
			t.Errorf("progress lacks %q:\n%s", want, all)
		}
	}
}

// A degraded host whose Ollama answers still takes requests (a failed GPU
// check is reported by status, not by refusing chats); one that never boots
// ends in an error naming its state before the proxy's deadline.
func TestControllerBackendsWakeDegradedAndNeverBoots(t *testing.T) {
	pc := newSimPC(t)
	pc.mu.Lock()
	pc.gpuOut, pc.gpuExit = fixtures.Must("nvidia-smi_error_driver-not-loaded.txt"), 9
	pc.mu.Unlock()
	b := backendsFor(t, pc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := b.Wake(ctx, "gaming-pc"); err != nil {
		t.Errorf("Wake of a degraded host whose Ollama answers: %v", err)
	}

	pc2 := newSimPC(t)
	pc2.mu.Lock()
	pc2.neverUp = true
	pc2.mu.Unlock()
	b2 := backendsFor(t, pc2)
	ctx2, cancel2 := context.WithTimeout(t.Context(), time.Second)
	defer cancel2()
	err := b2.Wake(ctx2, "gaming-pc")
	if err == nil || !strings.Contains(err.Error(), "gaming-pc") {
		t.Fatalf("Wake of a PC that never boots: %v (want an error naming the host)", err)
	}
	t.Logf("never boots: %v", err)
}
