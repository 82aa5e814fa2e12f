package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

const nixosInventory = `
[[host]]
name = "server"
address = "192.168.1.10"

[[host]]
name = "gaming-pc"
on_demand = true
mac = "a8:a1:59:12:34:56"
address = "192.168.1.50"

[host.nixos]
nvidia_open = true
models_device = "01DA2B3C4D5E6F70"
server_address = "192.168.1.10"
`

const testPubKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4TiOcSgdgq7lC2qUG2THJz4ej8HZqZehc2zdZSNTyf gpuctl@server\n"

func TestNixosGenerateAndCheck(t *testing.T) {
	state := t.TempDir()
	env := map[string]string{"GPUCTL_STATE_DIR": state}
	inv := writeInventory(t, nixosInventory)
	out := filepath.Join(t.TempDir(), "stick")

	// No key yet: exit 2 with the ssh-keygen command.
	code, _, stderr := run(t, env, "--config", inv, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitUsage || !strings.Contains(stderr, "ssh-keygen -t ed25519 -f "+filepath.Join(state, "id_ed25519")) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if err := os.WriteFile(filepath.Join(state, "id_ed25519.pub"), []byte(testPubKey), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, env, "--config", inv, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitOK || !strings.Contains(stderr, "wrote gpuctl.nix") || !strings.Contains(stderr, "created local.nix") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	gp, _ := os.ReadFile(filepath.Join(out, "gpuctl.nix"))
	if !strings.Contains(string(gp), strings.TrimSpace(testPubKey)) {
		t.Errorf("gpuctl.nix lacks the identity's public key")
	}
	// Unchanged inventory: unchanged files.
	code, _, stderr = run(t, env, "--config", inv, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitOK || !strings.Contains(stderr, "unchanged: flake.nix") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// A hand edit: refused with the diff on stdout, exit 1; --force overwrites.
	edited := strings.Replace(string(gp), `time.timeZone = "UTC";`, `time.timeZone = "Asia/Tokyo";`, 1)
	os.WriteFile(filepath.Join(out, "gpuctl.nix"), []byte(edited), 0o644)
	code, stdout, stderr := run(t, env, "--config", inv, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitFailure || !strings.Contains(stdout, `-  time.timeZone = "Asia/Tokyo";`) || !strings.Contains(stderr, "--force") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, env, "--config", inv, "nixos", "generate", "--force", "--out", out, "gaming-pc")
	if code != ExitOK || !strings.Contains(stderr, "overwrote gpuctl.nix") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// Unknown host, missing --out; a flag after the argument is honoured.
	if code, _, _ := run(t, env, "--config", inv, "nixos", "generate", "--out", out, "nope"); code != ExitUsage {
		t.Errorf("unknown host: exit %d", code)
	}
	if code, _, _ := run(t, env, "--config", inv, "nixos", "generate", "gaming-pc"); code != ExitUsage {
		t.Errorf("no --out: exit %d", code)
	}
	if code, _, stderr := run(t, env, "--config", inv, "nixos", "generate", "gaming-pc", "--out", out, "--force"); code != ExitOK {
		t.Errorf("flags after the argument: exit %d, stderr %q", code, stderr)
	}

	waketest.RequireProgram(t, "nix-instantiate")
	code, stdout, stderr = run(t, env, "nixos", "check", "--no-flake-check", out)
	if code != ExitOK || stdout != "" || !strings.Contains(stderr, "parse, denylist, stub-eval, options, workflow; skipped nix flake check (turned off); 0 error(s)") {
		t.Fatalf("check: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	os.WriteFile(filepath.Join(out, "local.nix"), []byte("{ ... }:\n{\n  hardware.opengl.enable = true;\n}\n"), 0o644)
	code, stdout, _ = run(t, env, "nixos", "check", "--no-flake-check", out)
	if code != ExitFailure || !strings.Contains(stdout, out+"/local.nix:3: error: hardware.opengl was renamed") {
		t.Fatalf("check: exit %d, stdout %q", code, stdout)
	}
	code, stdout, _ = run(t, env, "nixos", "check", "--json", "--no-flake-check", out)
	var rep struct {
		Findings []struct {
			File     string `json:"file"`
			Line     int    `json:"line"`
			Severity string `json:"severity"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != ExitFailure || len(rep.Findings) == 0 ||
		rep.Findings[0].File != "local.nix" || rep.Findings[0].Line != 3 || rep.Findings[0].Severity != "error" {
		t.Fatalf("check --json: exit %d, %v, %s", code, err, stdout)
	}
}

// TestNixosGenerateLayoutAndSerial: generate writes the lowercase NTFS serial
// in uppercase and says so, records the stick layout, refuses a changed
// image size (exit 1, nothing written) and accepts it with
// --new-stick-layout, loudly.
func TestNixosGenerateLayoutAndSerial(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "id_ed25519.pub"), []byte(testPubKey), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GPUCTL_STATE_DIR": state}
	inv := writeInventory(t, strings.Replace(nixosInventory, `"01DA2B3C4D5E6F70"`, `"01da2b3c4d5e6f70"`, 1))
	out := filepath.Join(t.TempDir(), "stick")
	code, _, stderr := run(t, env, "--config", inv, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitOK || !strings.Contains(stderr, `note: `+inv+`:14:17: host "gaming-pc": nixos.models_device: "01da2b3c4d5e6f70" written as "01DA2B3C4D5E6F70"`) ||
		!strings.Contains(stderr, "wrote stick-layout.json: sticks flashed from "+out+" have a 12288 MiB system image and PERSIST from sector 25165824") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	gp, _ := os.ReadFile(filepath.Join(out, "gpuctl.nix"))
	if !strings.Contains(string(gp), `device = "/dev/disk/by-uuid/01DA2B3C4D5E6F70";`) {
		t.Errorf("gpuctl.nix does not name the uppercase serial:\n%s", gp)
	}
	bigger := inv + ".2"
	data, _ := os.ReadFile(inv)
	os.WriteFile(bigger, []byte(strings.Replace(string(data), "nvidia_open = true", "nvidia_open = true\nimage_size_mib = 16384", 1)), 0o600)
	code, _, stderr = run(t, env, "--config", bigger, "nixos", "generate", "--out", out, "gaming-pc")
	if code != ExitFailure || !strings.Contains(stderr, "image_size_mib 16384 differs from the 12288 MiB recorded in stick-layout.json") {
		t.Fatalf("changed size: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run(t, env, "--config", bigger, "nixos", "generate", "--new-stick-layout", "--out", out, "gaming-pc")
	if code != ExitOK || !strings.Contains(stderr, "WARNING: replaced stick-layout.json: the image is now 16384 MiB") {
		t.Fatalf("--new-stick-layout: exit %d, stderr %q", code, stderr)
	}
}
