package nixconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// writeGolden renders a golden inventory into a fresh directory the way
// `gpuctl nixos generate` does (with local.nix and the manifest).
func writeGolden(t *testing.T, g *golden) (*Config, string) {
	t.Helper()
	c, files, err := g.generate(t)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Write(dir, c, files, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func offline(context.Context) bool { return false }

func check(t *testing.T, dir string) *Report {
	t.Helper()
	r, err := Check(t.Context(), dir, CheckOptions{Online: offline})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCheckGoldens: every golden output parses, stub-evaluates, and has
// each must-contain item, asserted here by value on the evaluated options.
func TestCheckGoldens(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	for name, g := range goldenOutputs(t) {
		t.Run(name, func(t *testing.T) {
			c, dir := writeGolden(t, g)
			r := check(t, dir)
			for _, f := range r.Findings {
				if f.Severity == SevWarning && c.Server == "" && strings.Contains(f.Msg, "PerSourcePenaltyExemptList") {
					continue
				}
				t.Errorf("unexpected finding: %s", f)
			}
			if want := []string{"parse", "denylist", "stub-eval", "options", "workflow"}; strings.Join(r.Ran, ",") != strings.Join(want, ",") {
				t.Errorf("ran %v, want %v", r.Ran, want)
			}
			if len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "nix flake check (no network") {
				t.Errorf("skipped = %q, want nix flake check skipped for lack of network", r.Skipped)
			}
			assertMustContain(t, c, r.Config, r.Flake)
		})
	}
}

type want struct {
	path []string
	val  any // compared as JSON
}

func p(s string) []string {
	// Split "a.b.\"c.d\".e" into components; quoted parts keep their dots.
	var out []string
	for s != "" {
		if s[0] == '"' {
			end := strings.Index(s[1:], `"`) + 1
			out = append(out, s[1:end])
			s = strings.TrimPrefix(s[end+1:], ".")
			continue
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
	return out
}

func jsonEq(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func assertMustContain(t *testing.T, c *Config, cfg, fl map[string]any) {
	t.Helper()
	if cfg == nil || fl == nil {
		t.Fatal("stub evaluation produced nothing")
	}
	ctr := `virtualisation.oci-containers.containers."` + c.Container + `"`
	svc := `systemd.services."docker-` + c.Container + `"`
	mnt := `fileSystems."` + c.ModelsMount + `"`
	user := `users.users."` + c.User + `"`
	ports := []int{c.SSHPort, c.OllamaPort}
	if c.OllamaOnly {
		ports = []int{c.SSHPort}
	}
	dockerAfter := []string{"nvidia-container-toolkit-cdi-generator.service"}
	var ext4 []want
	if c.ModelsFSType == "ext4" {
		// ext4 keeps owners: the models directory is handed to the gpuctl
		// account before the container starts.
		dockerAfter = append(dockerAfter, "gpuctl-models-dir.service")
		ext4 = []want{
			{p(`systemd.services."gpuctl-models-dir".script`), "install -d -o " + shQuote(c.User) + " -g users -m 0755 " + shQuote(c.ModelsDir)},
			{p(`systemd.services."gpuctl-models-dir".unitConfig.RequiresMountsFor`), []string{c.ModelsMount}},
		}
	}
	wants := []want{
		{p("nixpkgs.config.allowUnfree"), true},
		{p("services.xserver.videoDrivers"), []string{"nvidia"}},
		{p("hardware.nvidia.open"), c.NvidiaOpen},
		{p("hardware.nvidia.package"), "/nix/store/00000000000000000000000000000000-linuxPackages.nvidiaPackages.stable"},
		{p("hardware.graphics.enable"), true},
		{p("boot.kernelModules"), []string{"nvidia", "nvidia_uvm"}},
		{p("hardware.nvidia-container-toolkit.enable"), true},
		{p("virtualisation.docker.enable"), true},
		// Set once, by the toolkit module: not duplicated here.
		{p("virtualisation.docker.daemon.settings.features.cdi"), nil},
		{p("virtualisation.oci-containers.backend"), "docker"},
		{p(ctr + ".image"), c.Image},
		{p(ctr + ".extraOptions"), []string{"--device=nvidia.com/gpu=all"}},
		{p(ctr + ".ports"), []string{fmt.Sprintf("0.0.0.0:%d:11434", c.OllamaPort)}},
		{p(ctr + ".volumes"), []string{c.ModelsDir + ":/root/.ollama"}},
		{p(svc + ".after"), dockerAfter},
		{p(svc + ".requires"), []string{"nvidia-container-toolkit-cdi-generator.service"}},
		{p(svc + ".unitConfig.RequiresMountsFor"), []string{c.ModelsMount}},
		{p(mnt + ".device"), c.ModelsDevice},
		{p(mnt + ".fsType"), c.ModelsFSType},
		{p(mnt + ".options"), MountOptions(c.ModelsFSType)},
		{p(`fileSystems."/persist".device`), "/dev/disk/by-label/PERSIST"},
		{p(`fileSystems."/persist".fsType`), "ext4"},
		{p(`fileSystems."/var/lib/docker".device`), "/persist/docker"},
		{p(`fileSystems."/var/lib/docker".options`), []string{"bind", "nofail"}},
		{p(`fileSystems."/".device`), "/dev/disk/by-label/nixos"},
		{p(`fileSystems."/boot".device`), "/dev/disk/by-label/ESP"},
		{p("services.openssh.hostKeys"), []map[string]string{{"type": "ed25519", "path": "/persist/ssh/ssh_host_ed25519_key"}}},
		{p("services.openssh.settings.PasswordAuthentication"), false},
		{p("services.openssh.settings.KbdInteractiveAuthentication"), false},
		{p("services.openssh.settings.PermitRootLogin"), "no"},
		{p(user + ".openssh.authorizedKeys.keys"), c.UserKeys},
		// No docker group (root-equivalent): exact sudo rules instead.
		{p(user + ".extraGroups"), nil},
		{p(user + ".group"), nil},
		{p("security.sudo.extraRules"), []map[string]any{{"users": []string{c.User}, "commands": []map[string]any{
			{"command": `/run/current-system/sw/bin/poweroff ""`, "options": []string{"NOPASSWD"}},
			{"command": "/run/current-system/sw/bin/docker inspect --type container " + c.Container, "options": []string{"NOPASSWD"}},
			{"command": "/run/current-system/sw/bin/docker exec " + c.Container + " nvidia-smi -L", "options": []string{"NOPASSWD"}},
		}}}},
		{p("security.sudo.execWheelOnly"), false},
		{p("networking.firewall.enable"), true},
		{p("networking.firewall.allowedTCPPorts"), ports},
		{p("services.openssh.ports"), []int{c.SSHPort}},
		{p("boot.initrd.availableKernelModules"), []string{"xhci_pci", "ehci_pci", "usb_storage", "uas", "sd_mod", "nvme", "ahci"}},
		{p("services.getty.autologinUser"), c.Admin},
		{p("image.modules.raw-efi.boot.growPartition"), false},
		// A fixed image size: PERSIST starts at the same offset every release.
		{p("image.modules.raw-efi.virtualisation.diskSize"), c.ImageSizeMiB},
		{p("image.modules.iso.isoImage.makeEfiBootable"), true},
		{p("image.modules.iso.isoImage.makeUsbBootable"), true},
		// Host keys, their generation and Docker's state wait for PERSIST.
		{p("systemd.services.sshd.after"), []string{"persist.mount"}},
		{p("systemd.services.sshd.requires"), []string{"persist.mount"}},
		{p("systemd.services.sshd-keygen.after"), []string{"persist.mount"}},
		{p("systemd.services.sshd-keygen.requires"), []string{"persist.mount"}},
		{p("systemd.services.sshd-keygen.preStart"), "install -d -m 0700 -o root -g root /persist/ssh"},
		{p("systemd.services.docker.after"), []string{"persist.mount"}},
		{p("systemd.services.docker.requires"), []string{"persist.mount"}},
		{p("systemd.tmpfiles.rules"), []string{"d /persist/ssh 0700 root root -", "d /persist/docker 0710 root root -"}},
		{p("system.stateVersion"), c.Channel},
		{p("networking.hostName"), c.Hostname},
	}
	if c.Server != "" {
		wants = append(wants, want{p("services.openssh.settings.PerSourcePenaltyExemptList"), c.Server})
	}
	for _, i := range c.WOLIfaces {
		wants = append(wants, want{p(`networking.interfaces."` + i + `".wakeOnLan`), map[string]any{"enable": true, "policy": []string{"magic"}}})
	}
	if !c.AdminIsUser {
		wants = append(wants, want{p(`users.users."` + c.Admin + `".extraGroups`), []string{"wheel", "docker", "video"}})
	}
	wants = append(wants, ext4...)
	for _, w := range wants {
		if got := get(cfg, w.path...); !jsonEq(got, w.val) {
			g, _ := json.Marshal(got)
			v, _ := json.Marshal(w.val)
			t.Errorf("%s = %s, want %s", strings.Join(w.path, "."), g, v)
		}
	}
	// Packages: the three tools plus the extras.
	pk := strings.Join(getStrs(cfg, "environment", "systemPackages"), " ")
	for _, n := range append([]string{"-tmux", "-nvtopPackages.nvidia", "-ethtool"}, prefixAll("-", c.ExtraPkgs)...) {
		if !strings.Contains(pk+" ", n+" ") {
			t.Errorf("environment.systemPackages lacks %s: %s", n, pk)
		}
	}
	// A udev rule arms Wake-on-LAN on every wired NIC as it appears.
	rules, _ := getStr(cfg, "services", "udev", "extraRules")
	if want := `ACTION=="add", SUBSYSTEM=="net", ATTR{type}=="1", ENV{DEVTYPE}!="wlan", TEST=="device", RUN+="/nix/store/00000000000000000000000000000000-ethtool/bin/ethtool -s %k wol g"` + "\n"; rules != want {
		t.Errorf("services.udev.extraRules = %q, want %q", rules, want)
	}
	if get(cfg, "systemd", "services", "gpuctl-wake-on-lan") != nil {
		t.Error("the old Wake-on-LAN oneshot is still there")
	}
	// The serial as udev names it: uppercase for NTFS, lowercase for ext4.
	if dev := strings.TrimPrefix(c.ModelsDevice, "/dev/disk/by-uuid/"); c.ModelsFSType == "ext4" && dev != strings.ToLower(dev) ||
		c.ModelsFSType != "ext4" && dev != strings.ToUpper(dev) {
		t.Errorf("model drive device %q has the wrong case for %s", c.ModelsDevice, c.ModelsFSType)
	}
	if c.OllamaOnly {
		ex, _ := getStr(cfg, "networking", "firewall", "extraCommands")
		for _, s := range []string{"-s " + c.Server + " --dport 11434 -j nixos-fw-accept", "-I DOCKER-USER", "! -s " + c.Server + " -j DROP"} {
			if !strings.Contains(ex, s) {
				t.Errorf("extraCommands lacks %q:\n%s", s, ex)
			}
		}
	}
	// Flake: nixpkgs channel, images, checks, nixosConfigurations.
	fwants := []want{
		{p("inputs.nixpkgs"), "github:NixOS/nixpkgs/nixos-" + c.Channel},
		{p("packages.x86_64-linux"), map[string]string{"default": "RAW", "iso": "ISO", "raw": "RAW"}},
		{p("checks.x86_64-linux.toplevel"), "TOP"},
		{p("nixosConfigurations.appliance.system"), "x86_64-linux"},
		// By host name, for `nixos-rebuild --flake .`.
		{[]string{"nixosConfigurations", c.Hostname, "system"}, "x86_64-linux"},
	}
	for _, w := range fwants {
		if got := get(fl, w.path...); !jsonEq(got, w.val) {
			t.Errorf("flake %s = %v, want %v", strings.Join(w.path, "."), got, w.val)
		}
	}
	mods := getList(fl, "nixosConfigurations", "appliance", "modules")
	if len(mods) != 1 || !strings.HasSuffix(fmt.Sprint(get(mods[0], "path")), "/configuration.nix") {
		t.Errorf("flake modules = %v, want [ ./configuration.nix ]", mods)
	}
}

func prefixAll(pre string, ss []string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, pre+s)
	}
	return out
}

// TestHostileRoundTrip: strings with ", \, ${ and ” come out of Nix
// evaluation exactly as they went in.
func TestHostileRoundTrip(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	c, dir := writeGolden(t, goldenOutputs(t)["hostile"])
	r := check(t, dir)
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatalf("hostile strings broke the config: %v", errs)
	}
	if got := getStrs(r.Config, "users", "users", c.User, "openssh", "authorizedKeys", "keys"); !jsonEq(got, c.UserKeys) || len(got) != 2 {
		t.Errorf("keys after evaluation = %q, want %q", got, c.UserKeys)
	}
	if got := getStrs(r.Config, "virtualisation", "oci-containers", "containers", c.Container, "volumes"); len(got) != 1 || got[0] != c.ModelsDir+":/root/.ollama" {
		t.Errorf("volume after evaluation = %q, want %q", got, c.ModelsDir+":/root/.ollama")
	}
	if !strings.Contains(c.ModelsDir, `${builtins.getEnv "HOME"}`) || !strings.Contains(c.UserKeys[1], `${builtins.abort "pwned"}`) {
		t.Fatalf("the hostile golden lost its hostile strings: %q %q", c.ModelsDir, c.UserKeys)
	}
	// The injected attribute did not become an option.
	if pw := get(r.Config, "users", "users", "root", "initialPassword"); pw != nil {
		t.Errorf("a key comment injected users.users.root.initialPassword = %v", pw)
	}
}

// nixEval evaluates expr with nix-instantiate and returns the JSON.
func nixEval(t *testing.T, expr string) string {
	t.Helper()
	tmp := t.TempDir()
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode", "-E", expr)
	cmd.Env = append(os.Environ(), "HOME="+tmp, "NIX_STATE_DIR="+tmp+"/state", "NIX_LOG_DIR="+tmp+"/log")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate -E %s: %v\n%s", expr, err, stderr.String())
	}
	return string(out)
}

func TestStrRoundTripNix(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	cases := []string{"", "plain", `a"b`, `back\slash`, "${x}", `\${x}`, "$${x}", "$", "${", "''", "'''", "''${x}",
		"tab\there\nnewline\r", `"; users.users.root.initialPassword = ""; x = "`, "ü ñ 日本", "}", "${builtins.abort \"no\"}", `\`}
	var lits []string
	for _, s := range cases {
		lits = append(lits, Str(s))
	}
	got := nixEval(t, "[ "+strings.Join(lits, " ")+" ]")
	var vals []string
	if err := json.Unmarshal([]byte(got), &vals); err != nil {
		t.Fatal(err)
	}
	for i, s := range cases {
		if vals[i] != s {
			t.Errorf("Str(%q) = %s evaluates to %q", s, lits[i], vals[i])
		}
	}
	// Attribute names too.
	for _, s := range []string{"ollama", "if", "a.b", `x"y`, "${x}", "docker-ollama", "0abc"} {
		out := nixEval(t, "builtins.attrNames { "+Attr(s)+" = 1; }")
		if want, _ := json.Marshal([]string{s}); out != string(want) {
			t.Errorf("Attr(%q) = %s gives %s", s, Attr(s), out)
		}
	}
}

// unquoteNix decodes a Nix double-quoted literal made by Str.
func unquoteNix(lit string) (string, bool) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", false
	}
	in := lit[1 : len(lit)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '"':
			return "", false // an unescaped quote ends the string early
		case c == '$' && i+1 < len(in) && in[i+1] == '{':
			return "", false // an antiquotation
		case c == '\\':
			if i+1 == len(in) {
				return "", false
			}
			i++
			switch in[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(in[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

func FuzzStr(f *testing.F) {
	for _, s := range []string{"", `"`, `\`, "${", "$${", "''", "\n", `\${`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := unquoteNix(Str(s))
		if !ok || got != s {
			t.Fatalf("Str(%q) = %s does not decode back (%q, %v)", s, Str(s), got, ok)
		}
	})
}

// TestCheckFindsProblems puts a mistake into local.nix (or a generated
// file) and expects Check to name it at file:line.
func TestCheckFindsProblems(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	g := goldenOutputs(t)["ntfs3"]
	cases := []struct {
		name  string
		local string // body of local.nix's attribute set
		file  string // or: replace in this generated file
		from  string
		to    string
		want  string // finding "file:line: error: ...substring"
	}{
		{name: "opengl", local: "hardware.opengl.enable = true;", want: "local.nix:3: error: hardware.opengl was renamed"},
		{name: "opengl-nested", local: "hardware = {\n opengl = { enable = true; }; };", want: "local.nix:4: error: hardware.opengl"},
		{name: "enableNvidia", local: "virtualisation.docker.enableNvidia = true;", want: "local.nix:3: error: virtualisation.docker.enableNvidia is deprecated"},
		{name: "gpus", local: `virtualisation.oci-containers.containers.ollama.extraOptions = [ "--gpus=all" ];`, want: "local.nix:3: error: docker --gpus fails"},
		{name: "etc-ssh-bind", local: `fileSystems."/etc/ssh" = { device = "/persist/ssh"; options = [ "bind" ]; };`, want: "local.nix:3: error: a mount over /etc/ssh"},
		{name: "empty-password", local: `users.users.gpuctl.initialPassword = "";`, want: "local.nix:3: error: empty password"},
		{name: "old-openssh", local: `services.openssh.passwordAuthentication = true;`, want: "local.nix:3: error: old services.openssh option name"},
		{name: "old-openssh-root", local: `services.openssh.permitRootLogin = "yes";`, want: "local.nix:3: error: old services.openssh option name"},
		{name: "nvidia-enable", local: `hardware.nvidia.enable = true;`, want: "local.nix:3: error: hardware.nvidia.enable is not an option"},
		{name: "no-graphics", local: `hardware.graphics.enable = lib.mkForce false;`, want: "local.nix:3: error: hardware.graphics.enable must be true"},
		{name: "password-auth", local: `services.openssh.settings.PasswordAuthentication = lib.mkForce true;`, want: "local.nix:3: error: services.openssh.settings.PasswordAuthentication must be false"},
		{name: "root-login", local: `services.openssh.settings.PermitRootLogin = lib.mkForce "prohibit-password";`, want: "local.nix:3: error: services.openssh.settings.PermitRootLogin must be \"no\""},
		{name: "wheel", local: `users.users.gpuctl.extraGroups = [ "wheel" ];`, want: "local.nix:3: error: user \"gpuctl\" (the gpuctl account) must not be in wheel"},
		{name: "docker-group", local: `users.users.gpuctl.extraGroups = [ "docker" ];`, want: "local.nix:3: error: user \"gpuctl\" (the gpuctl account) must not be in the docker group"},
		{name: "sudo-extra", local: `security.sudo.extraRules = [ { users = [ "gpuctl" ]; commands = [ { command = "/run/current-system/sw/bin/docker ps"; options = [ "NOPASSWD" ]; } ]; } ];`, want: "local.nix:3: error: sudo rule for \"gpuctl\" allows \"/run/current-system/sw/bin/docker ps\""},
		{name: "sudo-lacks-exec", file: "gpuctl.nix", from: `{ command = "/run/current-system/sw/bin/docker exec ollama nvidia-smi -L"; options = [ "NOPASSWD" ]; }`, to: ``, want: "error: the gpuctl account's sudo rule lacks \"/run/current-system/sw/bin/docker exec ollama nvidia-smi -L\""},
		{name: "sshd-before-persist", file: "configuration.nix", from: "  systemd.services.sshd = {\n    after = [ \"persist.mount\" ];\n    requires = [ \"persist.mount\" ];\n  };\n", to: "", want: "error: systemd.services.sshd must be ordered after and require persist.mount"},
		{name: "keygen-before-persist", local: `systemd.services.sshd-keygen.requires = lib.mkForce [ ];`, want: "error: systemd.services.sshd-keygen must be ordered after and require persist.mount"},
		{name: "image-size-auto", file: "configuration.nix", from: `virtualisation.diskSize = 12288;`, to: `virtualisation.diskSize = "auto";`, want: "error: image.modules.raw-efi.virtualisation.diskSize must be a fixed size"},
		{name: "image-size-changed", file: "configuration.nix", from: `virtualisation.diskSize = 12288;`, to: `virtualisation.diskSize = 16384;`, want: "configuration.nix:91: error: image.modules.raw-efi.virtualisation.diskSize is 16384 MiB but the sticks flashed from this directory have PERSIST at 12288 MiB"},
		{name: "iso-bios-only", file: "configuration.nix", from: `isoImage.makeEfiBootable = true;`, to: ``, want: "error: image.modules.iso.isoImage.makeEfiBootable must be true"},
		{name: "lowercase-serial", file: "gpuctl.nix", from: `"/dev/disk/by-uuid/01DA2B3C4D5E6F70"`, to: `"/dev/disk/by-uuid/01da2b3c4d5e6f70"`, want: "error: fileSystems.\"/mnt/models\": write the NTFS serial in uppercase (01DA2B3C4D5E6F70)"},
		{name: "flake-no-hostname", file: "flake.nix", from: `nixosConfigurations.gaming-pc = appliance;`, to: ``, want: "error: nixosConfigurations.gaming-pc must exist"},
		{name: "sudo-all", local: `security.sudo.extraRules = [ { users = [ "gpuctl" ]; commands = [ { command = "ALL"; options = [ "NOPASSWD" ]; } ]; } ];`, want: "local.nix:3: error: sudo rule for \"gpuctl\" allows \"ALL\""},
		{name: "extra-port", local: `networking.firewall.allowedTCPPorts = [ 8080 ];`, want: "local.nix:3: error: networking.firewall.allowedTCPPorts opens 8080"},
		{name: "udp", local: `networking.firewall.allowedUDPPorts = [ 53 ];`, want: "local.nix:3: error: networking.firewall.allowedUDPPorts is set"},
		{name: "grow", local: `image.modules.raw-efi.boot.growPartition = lib.mkVMOverride true;`, want: "local.nix:3: error: image.modules.raw-efi.boot.growPartition must be"},
		{name: "conflict", local: `networking.hostName = "other";`, want: "local.nix:3: error: conflicting definitions for `networking.hostName'"},
		{name: "wrong-mount", local: `systemd.services.docker-ollama.unitConfig.RequiresMountsFor = lib.mkForce [ "/srv" ];`, want: "local.nix:3: error: systemd.services.docker-ollama RequiresMountsFor \"/srv\", which is not a fileSystems entry"},
		{name: "typo", local: `servics.openssh.enable = true;`, want: "local.nix:3: warning: unknown top-level option \"servics\""},
		{name: "parse", local: `networking.hostName = ;`, want: "local.nix:3: error: syntax error"},
		{name: "no-nofail", file: "gpuctl.nix", from: `"windows_names" "nofail"`, to: `"windows_names"`, want: "gpuctl.nix:21: error: fileSystems.\"/mnt/models\" needs the nofail option"},
		{name: "by-label", file: "gpuctl.nix", from: `"/dev/disk/by-uuid/01DA2B3C4D5E6F70"`, to: `"/dev/sdb1"`, want: "error: fileSystems.\"/mnt/models\" must name the drive by UUID"},
		{name: "ext4-uid", file: "gpuctl.nix", from: `fsType = "ntfs3";`, to: `fsType = "ext4";`, want: "error: fileSystems.\"/mnt/models\": \"01DA2B3C4D5E6F70\" is not an ext4 UUID"},
		{name: "latest", file: "gpuctl.nix", from: `"ollama/ollama:0.17.4"`, to: `"ollama/ollama:latest"`, want: "gpuctl.nix:28: error: container \"ollama\" image \"ollama/ollama:latest\" must be pinned"},
		{name: "no-cdi", file: "gpuctl.nix", from: `[ "--device=nvidia.com/gpu=all" ]`, to: `[ ]`, want: "error: container \"ollama\" must get the GPU with \"--device=nvidia.com/gpu=all\""},
		{name: "no-order", file: "gpuctl.nix", from: `requires = [ "nvidia-container-toolkit-cdi-generator.service" ];`, to: ``, want: "error: systemd.services.docker-ollama must be ordered after and require"},
		{name: "poweroff-args", file: "gpuctl.nix", from: `poweroff \"\""`, to: `poweroff"`, want: "error: sudo rule \"/run/current-system/sw/bin/poweroff\": write exactly"},
		{name: "no-open", file: "gpuctl.nix", from: `hardware.nvidia.open = true;`, to: ``, want: "error: hardware.nvidia.open must be set"},
		{name: "no-uvm", file: "configuration.nix", from: `"nvidia" "nvidia_uvm" ]`, to: `"nvidia" ]`, want: "configuration.nix:30: error: boot.kernelModules must load"},
		{name: "no-usb", file: "configuration.nix", from: `"usb_storage" "uas" `, to: ``, want: "error: boot.initrd.availableKernelModules must contain"},
		{name: "no-tmux", file: "configuration.nix", from: `pkgs.tmux `, to: ``, want: "error: environment.systemPackages must contain tmux"},
		{name: "no-wol-udev", file: "configuration.nix", from: `wol g`, to: `wol d`, want: "configuration.nix:137: error: a udev rule (services.udev.extraRules) must arm Wake-on-LAN"},
		{name: "hostkeys", file: "configuration.nix", from: `"/persist/ssh/ssh_host_ed25519_key"`, to: `"/etc/ssh/ssh_host_ed25519_key"`, want: "error: SSH host key \"/etc/ssh/ssh_host_ed25519_key\" is not under /persist/ssh"},
		{name: "persist-label", file: "configuration.nix", from: `by-label/PERSIST`, to: `by-label/persist`, want: "error: fileSystems.\"/persist\" must be the ext4 partition labelled exactly PERSIST"},
		{name: "no-unfree", file: "configuration.nix", from: `allowUnfree = true`, to: `allowUnfree = false`, want: "configuration.nix:14: error: nixpkgs.config.allowUnfree must be true"},
		{name: "flake-url", file: "flake.nix", from: `nixos-25.11`, to: `nixos-unstable`, want: "flake.nix:7: error: inputs.nixpkgs.url \"github:NixOS/nixpkgs/nixos-unstable\""},
		{name: "flake-no-iso", file: "flake.nix", from: `iso = images.iso;`, to: ``, want: "error: packages.x86_64-linux.iso must be the ISO"},
		{name: "stateversion", file: "flake.nix", from: `nixos-25.11`, to: `nixos-25.05`, want: "error: system.stateVersion \"25.11\" is newer than the nixpkgs release 25.05"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := writeGolden(t, g)
			if tc.file != "" {
				p := filepath.Join(dir, tc.file)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), tc.from) {
					t.Fatalf("%s does not contain %q", tc.file, tc.from)
				}
				if err := os.WriteFile(p, []byte(strings.Replace(string(data), tc.from, tc.to, 1)), 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				local := "{ config, lib, pkgs, ... }:\n{\n" + tc.local + "\n}\n"
				if err := os.WriteFile(filepath.Join(dir, LocalName), []byte(local), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := check(t, dir)
			var all []string
			found := false
			for _, f := range r.Findings {
				all = append(all, f.String())
				found = found || strings.Contains(f.String(), tc.want)
			}
			if !found {
				t.Errorf("no finding contains %q; got:\n%s", tc.want, strings.Join(all, "\n"))
			}
			if strings.Contains(tc.want, "error:") && r.Err() == nil {
				t.Errorf("Err() is nil with an error finding")
			}
		})
	}
}

// TestCheckCommentsIgnored: denylisted words in comments and strings of a
// comment-like shape are not findings.
func TestCheckCommentsIgnored(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	_, dir := writeGolden(t, goldenOutputs(t)["ntfs3"])
	local := "{ config, lib, pkgs, ... }:\n# hardware.opengl.enable = true; --gpus\n/* virtualisation.docker.enableNvidia = true; */\n{\n  environment.etc.\"motd\".text = ''\n    # not a comment: ''${x}\n  '';\n}\n"
	if err := os.WriteFile(filepath.Join(dir, LocalName), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	r := check(t, dir)
	for _, f := range r.Findings {
		t.Errorf("unexpected finding: %s", f)
	}
}

// TestCheckLocalBeyondStubs: a local.nix the stubs cannot evaluate is a
// warning, and the rest is still checked.
func TestCheckLocalBeyondStubs(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	_, dir := writeGolden(t, goldenOutputs(t)["ntfs3"])
	local := "{ config, lib, pkgs, ... }:\n{\n  environment.etc.x.text = lib.generators.toINI { } { a.b = 1; };\n}\n"
	if err := os.WriteFile(filepath.Join(dir, LocalName), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	r := check(t, dir)
	if r.Config == nil || len(r.Errors()) > 0 || len(r.Findings) != 1 || r.Findings[0].File != LocalName || r.Findings[0].Severity != SevWarning {
		t.Fatalf("findings = %v, want one warning about local.nix", r.Findings)
	}
}

func TestCheckWorkflow(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	cases := []struct{ name, from, to, want string }{
		{"no-dispatch", "  workflow_dispatch:\n", "", "the workflow must run on workflow_dispatch"},
		{"no-push", "  push:\n", "", "the workflow must run on push"},
		{"no-free", "uses: jlumbroso/free-disk-space@v1.3.1", "uses: actions/cache@v4", "no step frees disk space"},
		{"no-kvm", "DeterminateSystems/nix-installer-action@main\n        with:\n          extra-conf: |\n            system-features = nixos-test benchmark big-parallel kvm\n", "cachix/install-nix-action@v31\n", "the Nix installer must enable KVM"},
		{"no-flake-check", "run: nix flake check --print-build-logs", "run: echo", "no step runs `nix flake check`"},
		{"no-iso", "run: nix build --print-build-logs .#iso", "run: nix build .#vm", "no step builds .#iso"},
		{"no-raw", "run: nix build --print-build-logs .#raw", "run: nix build .#vm", "no step builds .#raw"},
		{"no-zstd", "zstd -T0 -10 --rm out/*", "true", "no step compresses the images"},
		{"old-upload", "actions/upload-artifact@v4", "actions/upload-artifact@v3", "no step uploads them with actions/upload-artifact@v4"},
		{"magic", "      - name: nix flake check\n", "      - uses: DeterminateSystems/magic-nix-cache-action@main\n      - name: nix flake check\n", "magic-nix-cache-action stopped working"},
		{"yaml", "jobs:\n", "jobs: [\n", "not valid YAML"},
	}
	g := goldenOutputs(t)["ntfs3"]
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := writeGolden(t, g)
			p := filepath.Join(dir, ".github", "workflows", "build.yml")
			data, _ := os.ReadFile(p)
			if !strings.Contains(string(data), tc.from) {
				t.Fatalf("workflow lacks %q", tc.from)
			}
			os.WriteFile(p, []byte(strings.Replace(string(data), tc.from, tc.to, 1)), 0o644)
			r := check(t, dir)
			var all []string
			for _, f := range r.Findings {
				if f.Check == "workflow" && strings.Contains(f.Msg, tc.want) && f.File == ".github/workflows/build.yml" {
					return
				}
				all = append(all, f.String())
			}
			t.Errorf("no workflow finding %q; got:\n%s", tc.want, strings.Join(all, "\n"))
		})
	}
	// Moving the cleanup after the installer is caught too.
	_, dir := writeGolden(t, g)
	p := filepath.Join(dir, ".github", "workflows", "build.yml")
	data, _ := os.ReadFile(p)
	s := string(data)
	re := regexp.MustCompile(`(?s)(      # The runner has.*?swap-storage: false\n\n)(      # make-disk-image.*?kvm\n\n)`)
	if !re.MatchString(s) {
		t.Fatal("workflow layout changed; update the test")
	}
	os.WriteFile(p, []byte(re.ReplaceAllString(s, "$2$1")), 0o644)
	r := check(t, dir)
	if len(r.Findings) != 1 || !strings.Contains(r.Findings[0].String(), "error: disk space is freed after Nix is installed") {
		t.Errorf("findings = %v", r.Findings)
	}
}

func TestCheckNoNix(t *testing.T) {
	_, err := Check(t.Context(), t.TempDir(), CheckOptions{NixInstantiate: "/nonexistent/nix-instantiate"})
	if err != ErrNoNix {
		t.Fatalf("err = %v, want ErrNoNix", err)
	}
	if _, err := Check(t.Context(), "/nonexistent-dir", CheckOptions{}); err == nil {
		t.Fatal("checked a missing directory")
	}
}

func TestCheckFlakeCheckSkipped(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	_, dir := writeGolden(t, goldenOutputs(t)["ntfs3"])
	r, err := Check(t.Context(), dir, CheckOptions{FlakeCheck: FlakeCheckNever})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Skipped) != 1 || r.Skipped[0] != "nix flake check (turned off)" {
		t.Errorf("skipped = %q", r.Skipped)
	}
	r, err = Check(t.Context(), dir, CheckOptions{Nix: "/nonexistent/nix"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Skipped) != 1 || r.Skipped[0] != "nix flake check (nix is not installed)" {
		t.Errorf("skipped = %q", r.Skipped)
	}
}
