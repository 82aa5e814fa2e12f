package nixconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// TestOptionTable: the embedded table parses for every release, has the
// options the generator sets, and stops at the free-form sections.
func TestOptionTable(t *testing.T) {
	for _, rel := range Releases {
		tree, err := optionTree(rel)
		if err != nil {
			t.Fatal(err)
		}
		c := &checker{}
		for _, tc := range []struct {
			path []string
			kind string
			want string
		}{
			{[]string{"hardware", "nvidia", "open"}, "bool", ""},
			{[]string{"services", "openssh", "settings", "AnyThing"}, "int", ""},
			{[]string{"systemd", "services", "x", "serviceConfig", "Type"}, "string", ""},
			{[]string{"virtualisation", "docker", "daemon", "settings", "features", "cdi"}, "bool", ""},
			{[]string{"users", "users", "u", "openssh", "authorizedKeys", "keys"}, "list", ""},
			{[]string{"image", "modules", "raw-efi", "virtualisation", "diskSize"}, "int", ""},
			{[]string{"virtualisation", "diskSize"}, "int", "virtualisation.diskSize exists only in the raw-efi image variant"},
			{[]string{"image", "modules", "iso", "isoImage", "makeEfiBootable"}, "bool", ""},
			{[]string{"isoImage", "makeEfiBootable"}, "bool", "isoImage.makeEfiBootable exists only in the iso image variant"},
			{[]string{"hardware", "nvidia", "opn"}, "bool", "hardware.nvidia.opn is not a NixOS option (did you mean hardware.nvidia.open?)"},
			{[]string{"hardware", "nvidai", "open"}, "bool", "hardware.nvidai is not a NixOS option (did you mean hardware.nvidia?)"},
			{[]string{"hardware", "bluetooth", "enable"}, "bool", ""},
			{[]string{"services", "xserver", "videoDrivers"}, "list", ""},
			{[]string{"time", "timeZone", "x"}, "string", "time.timeZone is a string or null, not an attribute set"},
			{[]string{"networking", "firewall"}, "bool", "networking.firewall is a set of options, not a boolean"},
			{[]string{"security", "sudo", "extraRules", "*", "commands", "*", "comand"}, "string", "security.sudo.extraRules.*.commands.*.comand is not a NixOS option (did you mean security.sudo.extraRules.*.commands.*.command?)"},
			{[]string{"security", "sudo", "extraRules", "*", "commands", "*", "command"}, "string", ""},
		} {
			if got := c.matchDef(tree, def{Path: tc.path, Kind: tc.kind}); !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
				t.Errorf("%s: %v: got %q, want %q", rel, tc.path, got, tc.want)
			}
		}
	}
}

// twelveTypos are misspelled or mistyped options for local.nix, one per
// line, and the finding each must give.
var twelveTypos = []struct{ line, want string }{
	{`hardware.nvidia.opn = true;`, "hardware.nvidia.opn is not a NixOS option (did you mean hardware.nvidia.open?)"},
	{`networking.interfaces.eth0.wakeOnLan.polcy = [ "magic" ];`, "networking.interfaces.eth0.wakeOnLan.polcy is not a NixOS option (did you mean networking.interfaces.eth0.wakeOnLan.policy?)"},
	{`services.openssh.setings.X11Forwarding = false;`, "services.openssh.setings is not a NixOS option (did you mean services.openssh.settings?)"},
	{`services.openssh.ports = [ "22" ];`, "services.openssh.ports must be a list of integers: element 1 is a string"},
	{`environment.systemPackages = [ pkgs.htopp ];`, "pkgs.htopp is not a package gpuctl knows (did you mean pkgs.htop?)"},
	{`boot.kernelModule = [ "kvm-amd" ];`, "boot.kernelModule is not a NixOS option (did you mean boot.kernelModules?)"},
	{`time.timezone = "Europe/Berlin";`, "time.timezone is not a NixOS option (did you mean time.timeZone?)"},
	{`users.users.gpuctl.isNormaluser = true;`, "users.users.gpuctl.isNormaluser is not a NixOS option (did you mean users.users.gpuctl.isNormalUser?)"},
	{`virtualisation.docker.autoPrune.enable = "yes";`, "virtualisation.docker.autoPrune.enable must be a boolean (true or false), not a string"},
	{`networking.firewall.allowedTCPPort = [ 8080 ];`, "networking.firewall.allowedTCPPort is not a NixOS option (did you mean networking.firewall.allowedTCPPorts?)"},
	{`systemd.services.backup.wantedby = [ "multi-user.target" ];`, "systemd.services.backup.wantedby is not a NixOS option (did you mean systemd.services.backup.wantedBy?)"},
	{`virtualisation.oci-containers.containers.ollama.pull = "sometimes";`, `virtualisation.oci-containers.containers.ollama.pull must be one of "always", "missing", "never", "newer", not "sometimes"`},
}

// TestCheckTwelveTypos: twelve mistakes in local.nix give twelve findings,
// each at its file and line, and nothing else; a package name far from
// every known one is a warning at its line.
func TestCheckTwelveTypos(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	_, dir := writeGolden(t, goldenOutputs(t)["ntfs3"])
	var b strings.Builder
	b.WriteString("{ config, lib, pkgs, ... }:\n{\n")
	for _, ty := range twelveTypos {
		b.WriteString("  " + ty.line + "\n")
	}
	b.WriteString("  environment.etc.motd.text = \"${pkgs.doesNotExist}\";\n}\n")
	if err := os.WriteFile(filepath.Join(dir, LocalName), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r := check(t, dir)
	var got []string
	for _, f := range r.Findings {
		got = append(got, f.String())
	}
	for i, ty := range twelveTypos {
		want := fmt.Sprintf("local.nix:%d: error: %s", i+3, ty.want)
		n := 0
		for _, g := range got {
			if g == want {
				n++
			}
		}
		if n != 1 {
			t.Errorf("typo %d (%s): %d findings %q", i+1, ty.line, n, want)
		}
	}
	if len(r.Errors()) != 12 {
		t.Errorf("%d errors, want 12:\n%s", len(r.Errors()), strings.Join(got, "\n"))
	}
	warn := fmt.Sprintf("local.nix:%d: warning: pkgs.doesNotExist is not a package gpuctl knows", len(twelveTypos)+3)
	found := false
	for _, g := range got {
		found = found || strings.HasPrefix(g, warn)
	}
	if !found || len(r.Findings) != 13 {
		t.Errorf("want the twelve errors and %q; got:\n%s", warn, strings.Join(got, "\n"))
	}
}
