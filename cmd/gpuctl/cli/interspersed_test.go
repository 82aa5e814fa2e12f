package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestInterspersedFlags(t *testing.T) {
	app := newApp(&Env{})
	for _, c := range []struct{ in, want string }{
		{"gpuctl hosts --json", "gpuctl hosts --json"},
		{"gpuctl --config f hosts --json", "gpuctl --config f hosts --json"},
		{"gpuctl hosts --json --config f", "gpuctl --config f hosts --json"},
		{"gpuctl hosts --config=f", "gpuctl --config=f hosts"},
		{"gpuctl completion bash --help", "gpuctl completion --help bash"},
		{"gpuctl config check --config f", "gpuctl --config f config check"},
		{"gpuctl completion -- -weird", "gpuctl completion -- -weird"},
		{"gpuctl nosuch --json x", "gpuctl nosuch --json x"},
	} {
		got := strings.Join(interspersed(app, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("%q -> %q, want %q", c.in, got, c.want)
		}
	}
	// Completion requests keep their order.
	in := []string{"gpuctl", "hosts", "--generate-bash-completion"}
	if got := interspersed(app, in); !reflect.DeepEqual(got, in) {
		t.Errorf("completion request reordered: %v", got)
	}
}

// A verb's flags and the global --config after its positional argument are
// honoured, as in the cron line `gpuctl shutdown gaming-pc --if-idle`.
func TestFlagAfterArgumentIsHonoured(t *testing.T) {
	example, err := os.ReadFile("../../../examples/gpuctl.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "gpuctl.toml")
	inv := strings.Replace(string(example), "[host.nixos]\n",
		"[host.nixos]\nssh_authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpUX6K6pS0lqFbcD1wWbsRRFrdn37tfOH7+ry/Pm6OK gpuctl\"]\n", 1)
	if err := os.WriteFile(cfg, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	code, stdout, stderr := run(t, nil, "nixos", "generate", "gaming-pc", "--out", out, "--force", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "flake.nix")); err != nil {
		t.Fatalf("--out after the host was not honoured: %v", err)
	}
}
