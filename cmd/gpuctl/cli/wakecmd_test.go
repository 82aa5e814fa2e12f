package cli

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestHelperPlugCommand is not a test: it is the wake command of the tests
// below, run by gpuctl as a child process (the test binary re-executed), a
// stand-in for `curl -fsS -X POST URL`. It POSTs to its last argument and
// exits 22 with curl's message when the answer is not 2xx.
func TestHelperPlugCommand(t *testing.T) {
	if os.Getenv("GPUCTL_TEST_PLUG_HELPER") != "1" {
		t.Skip("helper process for the wake-command tests")
	}
	url := os.Args[len(os.Args)-1]
	res, err := http.Post(url, "application/json", strings.NewReader(`{"entity_id":"switch.gaming_pc"}`))
	if err != nil {
		fmt.Fprintln(os.Stderr, "curl: (7)", err)
		os.Exit(7)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "curl: (22) The requested URL returned error: %d\n", res.StatusCode)
		os.Exit(22)
	}
	fmt.Println(`{"state":"on"}`)
	os.Exit(0)
}

// useWakeCommand rewrites the simulated PC's inventory so that its only way
// to be woken is a command hitting url (no mac, no wol_to).
func useWakeCommand(t *testing.T, pc *simPC, url string) {
	t.Helper()
	b, err := os.ReadFile(pc.config)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "mac = ") || strings.HasPrefix(l, "wol_to = ") {
			continue
		}
		lines = append(lines, l)
		if l == "on_demand = true" {
			lines = append(lines, fmt.Sprintf("wake = [%q, %q, %q, %q]", os.Args[0], "-test.run=^TestHelperPlugCommand$", "--", url))
		}
	}
	if err := os.WriteFile(pc.config, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GPUCTL_TEST_PLUG_HELPER", "1") // inherited by the command gpuctl runs
}

// A host with only a command wake action is woken by it: the command boots
// the simulated PC, no magic packet is sent, and wake ends ready.
func TestWakeByCommand(t *testing.T) {
	pc := newSimPC(t)
	useWakeCommand(t, pc, pc.ollama.URL+plugPath)
	code, out, errs := pc.run(t, "wake", "gaming-pc")
	if code != ExitOK {
		t.Fatalf("wake: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	pc.mu.Lock()
	packets, ons := pc.packets, pc.powerOns
	pc.mu.Unlock()
	if ons != 1 || packets != 0 {
		t.Errorf("power-on requests %d, magic packets %d; want 1 and 0", ons, packets)
	}
	if !strings.Contains(errs, "wake command `") || !strings.Contains(errs, "waiting for SSH") {
		t.Errorf("progress does not say the command woke it:\n%s", errs)
	}
	// status never runs the wake action.
	if code, _, errs := pc.run(t, "status", "gaming-pc"); code != ExitOK {
		t.Errorf("status: exit %d\n%s", code, errs)
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.powerOns != 1 {
		t.Errorf("status ran the wake command (%d power-on requests)", pc.powerOns)
	}
}

// A failing wake command is reported like a failed wake: at once, exit 1,
// with the command's exit status and its last line of stderr.
func TestWakeByCommandFails(t *testing.T) {
	pc := newSimPC(t)
	useWakeCommand(t, pc, pc.ollama.URL+"/no-such-plug")
	code, out, errs := pc.run(t, "wake", "--timeout", "20s", "gaming-pc")
	if code != ExitFailure {
		t.Fatalf("wake: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, ExitFailure, out, errs)
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errs)
	if !strings.Contains(out+errs, "exit status 22") || !strings.Contains(out+errs, "returned error: 404") {
		t.Errorf("the failure does not say why:\nstdout:\n%s\nstderr:\n%s", out, errs)
	}
}
