package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code = Run(context.Background(), e, append([]string{"gpuctl"}, args...))
	return code, out.String(), errb.String()
}

func TestConfigCheckExample(t *testing.T) {
	code, _, stderr := run(t, nil, "--config", "../../../examples/gpuctl.toml", "config", "check")
	if code != ExitOK || !strings.Contains(stderr, "ok (2 hosts, 1 on demand, 1 routes") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestBrokenInventoriesExit2 runs `config check` on every broken inventory in
// inventory/testdata/bad and compares the message with the golden one there.
func TestBrokenInventoriesExit2(t *testing.T) {
	files, _ := filepath.Glob("../../../inventory/testdata/bad/*.txt")
	if len(files) < 20 {
		t.Fatalf("found %d broken inventories, want at least 20", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in, want, _ := strings.Cut(string(raw), "----------\n")
		dir := t.TempDir()
		path := filepath.Join(dir, "gpuctl.toml")
		if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := run(t, nil, "--config", path, "config", "check")
		if code != ExitUsage {
			t.Errorf("%s: exit %d, want 2", filepath.Base(f), code)
		}
		if stdout != "" {
			t.Errorf("%s: data on stdout for an error: %q", filepath.Base(f), stdout)
		}
		wantMsg := "gpuctl: " + strings.ReplaceAll(want, "gpuctl.toml", path)
		if stderr != wantMsg {
			t.Errorf("%s:\n got: %s\nwant: %s", filepath.Base(f), stderr, wantMsg)
		}
	}
}

func TestPositionalArgumentChecks(t *testing.T) {
	cfg := "../../../examples/gpuctl.toml"
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--config", cfg, "hosts", "extra"}, `unexpected argument "extra"`},
		{[]string{"--config", cfg, "hosts", "x", "--json"}, `unexpected argument "x" (usage: gpuctl hosts [options])`},
		{[]string{"completion"}, "missing SHELL"},
		{[]string{"completion", "bash", "--x"}, "flag provided but not defined: -x"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"hosts", "--bogus"}, "flag provided but not defined"},
	} {
		code, _, stderr := run(t, nil, c.args...)
		if code != ExitUsage || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.msg)
		}
	}
}

func TestHostsJSON(t *testing.T) {
	code, stdout, _ := run(t, nil, "--config", "../../../examples/gpuctl.toml", "hosts", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var hosts []hostJSON
	if err := json.Unmarshal([]byte(stdout), &hosts); err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[1].Name != "gaming-pc" || hosts[1].MAC != "a8:a1:59:12:34:56" || !hosts[0].Default {
		t.Fatalf("hosts = %+v", hosts)
	}
}

func TestConfigPathUsesSearchOrder(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gpuctl", "gpuctl.toml")
	os.MkdirAll(filepath.Dir(p), 0o700)
	os.WriteFile(p, []byte(""), 0o600)
	code, stdout, stderr := run(t, map[string]string{"XDG_CONFIG_HOME": dir, "HOME": "/nonexistent"}, "config", "path")
	if code != 0 || strings.TrimSpace(stdout) != p || !strings.Contains(stderr, "$XDG_CONFIG_HOME") {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, map[string]string{"HOME": "/nonexistent"}, "config", "path")
	if code != ExitUsage || !strings.Contains(stderr, "no inventory file found") {
		t.Fatalf("missing inventory: exit %d stderr %q", code, stderr)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, stdout, stderr := run(t, nil, "completion", sh)
		if code != 0 || !strings.Contains(stdout, "gpuctl") {
			t.Errorf("%s: exit %d stderr %q", sh, code, stderr)
		}
	}
}
