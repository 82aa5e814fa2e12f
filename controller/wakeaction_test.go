package controller

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/testlog"
	"github.com/ollamalive/gpuctl/inventory"
)

func wakeHost(actions ...inventory.WakeAction) *inventory.Host {
	mac, _ := inventory.ParseMAC("02:00:5e:00:00:01")
	return &inventory.Host{Name: "pc", MAC: mac, Wake: actions, WakeTimeout: inventory.Duration(5 * time.Second)}
}

func cmdAction(argv ...string) inventory.WakeAction { return inventory.WakeAction{Argv: argv} }

// A command that succeeds wakes the host: the waker then waits, as the
// Waker contract says, until the wake stops waiting.
func TestActionWakerCommandOK(t *testing.T) {
	var log testlog.Buffer
	w := &ActionWaker{Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Getenv: func(k string) string { return map[string]string{"PLUG_TOKEN": "tok-123456"}[k] }}
	h := wakeHost(cmdAction("sh", "-c", `echo "switched on with $1"; echo "note: $1" >&2`, "sh", "${env:PLUG_TOKEN}"))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := w.Wake(ctx, h); err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if ctx.Err() == nil {
		t.Error("Wake returned before the wake stopped waiting")
	}
	out := log.String()
	if !strings.Contains(out, "wake command ran") || !strings.Contains(out, "switched on with [redacted]") {
		t.Errorf("log lacks the command's output:\n%s", out)
	}
	if strings.Contains(out, "tok-123456") {
		t.Errorf("log leaks the secret:\n%s", out)
	}
}

// A host woken by a command alone fails the wake at once when the command
// fails, with its exit status and the last line it printed.
func TestActionWakerCommandFails(t *testing.T) {
	w := &ActionWaker{}
	h := wakeHost(cmdAction("sh", "-c", `echo "curl: (22) The requested URL returned error: 401" >&2; exit 22`))
	err := w.Wake(t.Context(), h)
	if err == nil || !strings.Contains(err.Error(), "exit status 22") || !strings.Contains(err.Error(), "401") ||
		!strings.Contains(err.Error(), "wake command `sh -c") {
		t.Fatalf("Wake: %v", err)
	}

	h = wakeHost(cmdAction("sleep", "10"))
	h.WakeTimeout = inventory.Duration(100 * time.Millisecond)
	if err := w.Wake(t.Context(), h); err == nil || !strings.Contains(err.Error(), "wake_timeout") {
		t.Fatalf("a command past wake_timeout: %v", err)
	}
	h = wakeHost(cmdAction("/nonexistent/plug-on"))
	if err := w.Wake(t.Context(), h); err == nil || !strings.Contains(err.Error(), "/nonexistent/plug-on") {
		t.Fatalf("a missing program: %v", err)
	}
	h = wakeHost(cmdAction("true", "${env:UNSET_TOKEN}"))
	if err := w.Wake(t.Context(), h); err == nil || !strings.Contains(err.Error(), "UNSET_TOKEN") {
		t.Fatalf("an unset variable: %v", err)
	}
}

// With Wake-on-LAN listed too, a failing command is logged and the magic
// packets go on; the wake fails early only when every action failed.
func TestActionWakerOrderAndFallback(t *testing.T) {
	var mu sync.Mutex
	var order []string
	wol := WakerFunc(func(ctx context.Context, h *inventory.Host) error {
		mu.Lock()
		order = append(order, "wol")
		mu.Unlock()
		<-ctx.Done()
		return nil
	})
	w := &ActionWaker{WOL: wol}
	h := wakeHost(inventory.WakeAction{WOL: true}, cmdAction("false"))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := w.Wake(ctx, h); err != nil {
		t.Fatalf("WoL going on with a failed command: %v", err)
	}
	mu.Lock()
	if len(order) != 1 {
		t.Errorf("Wake-on-LAN ran %d times", len(order))
	}
	mu.Unlock()

	broken := WakerFunc(func(ctx context.Context, h *inventory.Host) error { return errors.New("no interface reaches 10.0.0.5") })
	w = &ActionWaker{WOL: broken}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel2()
	if err := w.Wake(ctx2, wakeHost(inventory.WakeAction{WOL: true}, cmdAction("true"))); err != nil {
		t.Fatalf("a working command with broken WoL: %v", err)
	}
	err := w.Wake(t.Context(), wakeHost(inventory.WakeAction{WOL: true}, cmdAction("false")))
	if err == nil || !strings.Contains(err.Error(), "sending magic packets") || !strings.Contains(err.Error(), "wake command `false`") {
		t.Fatalf("every action failed: %v", err)
	}
	noMAC := &inventory.Host{Name: "pc", Wake: inventory.WakeActions{{WOL: true}}}
	if Wakeable(noMAC) {
		t.Error("a host with WoL and no mac is wakeable")
	}
	if !Wakeable(&inventory.Host{Name: "pc", Wake: inventory.WakeActions{cmdAction("plug-on")}}) {
		t.Error("a host with a command is not wakeable")
	}
	if got := WakeDescription(wakeHost(inventory.WakeAction{WOL: true}, cmdAction("plug-on", "${env:T}"))); got != "magic packets sent to 02:00:5e:00:00:01, running wake command `plug-on ${env:T}`" {
		t.Errorf("WakeDescription: %q", got)
	}
}

// WakerFunc adapts a function to Waker.
type WakerFunc func(ctx context.Context, h *inventory.Host) error

// Wake calls f.
func (f WakerFunc) Wake(ctx context.Context, h *inventory.Host) error { return f(ctx, h) }
