package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeSurvivesSIGHUP runs the built binary: SIGHUP (the terminal or
// SSH session that started serve closed, or systemctl reload) never stops
// gpuctl serve; it validates the inventory again and logs the verdict,
// valid or not, and keeps serving. SIGTERM still stops it cleanly.
func TestServeSurvivesSIGHUP(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gpuctl")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if b, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version":"0.17.4"}`)
	}))
	defer backend.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gpuctl.toml")
	good := "state_dir = \"" + dir + "/state\"\n[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\nollama_url = \"" + backend.URL + "\"\n"
	if err := os.WriteFile(cfg, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(t.Context(), bin, "--config", cfg, "serve", "--listen", free)
	cmd.Env = append(os.Environ(), "GPUCTL_LOG=info", "GPUCTL_STATE_DIR="+dir+"/state")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	exited := make(chan error, 1)
	await := func(want string) string {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					exited <- cmd.Wait()
					t.Fatalf("gpuctl serve exited (%v) before logging %q", <-exited, want)
				}
				t.Log(l)
				if strings.Contains(l, want) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q within 60 s", want)
			}
		}
	}
	l := await("listening on http://")
	addr := strings.Fields(strings.SplitN(l, "http://", 2)[1])[0]
	get := func() {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		res, err := c.Get("http://" + addr + "/api/version")
		if err != nil {
			t.Fatalf("serve no longer answers: %v", err)
		}
		res.Body.Close()
		c.CloseIdleConnections()
	}
	get()

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	await("SIGHUP: the inventory is valid")
	get()

	if err := os.WriteFile(cfg, []byte(good+"bogus_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if l := await("SIGHUP: the inventory has errors"); !strings.Contains(l, "bogus_key") {
		t.Errorf("the log line does not say what is wrong: %s", l)
	}
	get()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 130) {
		t.Errorf("after SIGTERM: %v, want exit 0 or 130", err)
	}
}
