package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/inventory"
)

type upBackends struct{}

func (upBackends) Up(context.Context, string) (bool, error) { return true, nil }
func (upBackends) Wake(context.Context, string) error       { return nil }

// TestServe runs the verb's runServe against a backend on loopback: it
// listens, proxies, and on cancel stops cleanly, saving its activity
// (activity.json, with the request counted) and withdrawing serve.json.
func TestServe(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version":"0.17.4"}`)
	}))
	defer backend.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gpuctl.toml")
	toml := "state_dir = \"" + dir + "/state\"\n[serve]\nlisten = \"127.0.0.1:11435\"\n" +
		"[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\nollama_url = \"" + backend.URL + "\"\n"
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(cfg, inventory.Env{Getenv: func(string) string { return "" }, Home: dir})
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	env := &Env{Stderr: &stderr}
	env.fill()
	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, env, serveOptions{inv: &loadedInventory{Inventory: inv}, listen: "127.0.0.1:0",
			drain: time.Second, backends: upBackends{}, ready: func(a string) { addr <- a }})
	}()
	a := <-addr
	client := &http.Client{Timeout: 10 * time.Second}
	res, err := client.Get("http://" + a + "/api/version")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "0.17.4") {
		t.Errorf("/api/version through serve = %s", body)
	}
	client.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if !strings.Contains(stderr.String(), "listening on http://127.0.0.1:") {
		t.Errorf("stderr %q", stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "state", "activity.json"))
	if err != nil {
		t.Fatalf("activity not saved on exit: %v", err)
	}
	var snap activity.Snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatalf("activity.json: %v\n%s", err, b)
	}
	if h := snap.Hosts["server"]; h.Requests < 1 || h.InFlight != 0 {
		t.Errorf("activity.json after one request: %+v", h)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "serve.json")); !os.IsNotExist(err) {
		t.Errorf("serve.json left behind after exit (stat: %v)", err)
	}
}
