package nixconfig

import (
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Accessors for the stub-evaluated configuration (decoded JSON).

func get(v any, p ...string) any {
	for _, k := range p {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func getStr(v any, p ...string) (string, bool) {
	s, ok := get(v, p...).(string)
	return s, ok
}

func getBool(v any, p ...string) (val, ok bool) {
	b, ok := get(v, p...).(bool)
	return b, ok
}

func getMap(v any, p ...string) map[string]any {
	m, _ := get(v, p...).(map[string]any)
	return m
}

func getList(v any, p ...string) []any {
	l, _ := get(v, p...).([]any)
	return l
}

func getStrs(v any, p ...string) []string {
	var out []string
	for _, x := range getList(v, p...) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func getInts(v any, p ...string) []int {
	var out []int
	for _, x := range getList(v, p...) {
		if f, ok := x.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

func contains[T comparable](l []T, x T) bool {
	for _, y := range l {
		if y == x {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

var (
	ntfsSerialRE = regexp.MustCompile(`^[0-9A-Fa-f]{16}$`)
	ext4UUID     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	channelRE    = regexp.MustCompile(`^github:NixOS/nixpkgs/nixos-(25\.(?:05|11))$`)
)

// knownTop are the top-level option namespaces the appliance may use; any
// other is most likely a typo.
var knownTop = map[string]bool{"boot": true, "console": true, "environment": true, "fileSystems": true, "hardware": true,
	"i18n": true, "image": true, "networking": true, "nix": true, "nixpkgs": true, "programs": true, "security": true,
	"services": true, "swapDevices": true, "system": true, "systemd": true, "time": true, "users": true,
	"virtualisation": true, "documentation": true, "fonts": true, "powerManagement": true, "zramSwap": true,
	"location": true, "xdg": true, "assertions": true, "warnings": true, "specialisation": true, "containers": true,
	"sound": true, "qt": true, "gtk": true, "appstream": true, "isoImage": true, "lib": true, "meta": true}

// deniedPaths are option paths that must not be set (walked structurally).
var deniedPaths = map[string]string{
	"hardware.opengl":                                  "hardware.opengl was renamed hardware.graphics in 24.11",
	"virtualisation.docker.enableNvidia":               "virtualisation.docker.enableNvidia is deprecated; use hardware.nvidia-container-toolkit.enable and CDI",
	"services.openssh.passwordAuthentication":          "old option name; use services.openssh.settings.PasswordAuthentication",
	"services.openssh.permitRootLogin":                 "old option name; use services.openssh.settings.PermitRootLogin",
	"services.openssh.kbdInteractiveAuthentication":    "old option name; use services.openssh.settings.KbdInteractiveAuthentication",
	"services.openssh.challengeResponseAuthentication": "old option name; use services.openssh.settings.KbdInteractiveAuthentication",
	"hardware.nvidia.enable":                           "not an option; services.xserver.videoDrivers = [ \"nvidia\" ] enables the driver",
	"isoImage":                                         "isoImage.* exists only in the ISO variant; set it in image.modules.iso",
	"services.ollama.acceleration":                     "removed from nixpkgs; the appliance runs Ollama in Docker",
}

var persistWhy = map[string]string{
	"docker":      "Docker's state is bound from /persist/docker",
	"sshd":        "the host keys live under /persist/ssh",
	"sshd-keygen": "else a fresh host key is written under /persist/ssh on the stick's root and served",
}

// must records a must-contain violation, located by a regexp over the files.
func (c *checker) must(ok bool, locRE, file, format string, args ...any) {
	if ok {
		return
	}
	f, l := c.locate(regexp.MustCompile(locRE), file)
	c.add(f, l, SevError, "must", format, args...)
}

func (c *checker) cross(locRE, file, format string, args ...any) {
	f, l := c.locate(regexp.MustCompile(locRE), file)
	c.add(f, l, SevError, "cross", format, args...)
}

// The files checkConfig's findings fall back to when no line matches.
const (
	confNix   = "configuration.nix"
	gpuctlNix = "gpuctl.nix"
)

// configState is what checkConfig's rules share: the parts of the evaluated
// configuration several rules read, and what one rule finds for a later one.
type configState struct {
	cfg        map[string]any
	fsys       map[string]any // fileSystems
	containers map[string]any // virtualisation.oci-containers.containers
	users      map[string]any // users.users
	// The Ollama container: the one with /root/.ollama mounted (name ""
	// and ctr nil if none is), and the host directory mounted there.
	name    string
	ctr     map[string]any
	hostDir string
	// modelMount is the fileSystems entry that holds hostDir, set by the
	// container's unit rule.
	modelMount string
}

func newConfigState(cfg map[string]any) *configState {
	s := &configState{
		cfg:        cfg,
		fsys:       getMap(cfg, "fileSystems"),
		containers: getMap(cfg, "virtualisation", "oci-containers", "containers"),
		users:      getMap(cfg, "users", "users"),
	}
	for _, n := range sortedKeys(s.containers) {
		for _, v := range getStrs(s.containers[n], "volumes") {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == ContainerOllamaDir {
				s.name, s.ctr, s.hostDir = n, getMap(s.containers, n), parts[0]
			}
		}
	}
	return s
}

// inWheel reports whether user u is in the wheel group.
func (s *configState) inWheel(u string) bool {
	g, _ := getStr(s.users, u, "group")
	return g == "wheel" || contains(getStrs(s.users, u, "extraGroups"), "wheel")
}

// configRule is one group of checkConfig's checks.
type configRule struct {
	name  string
	check func(c *checker, s *configState)
}

// configRules are checkConfig's checks, run in this order (a later rule may
// read what an earlier one put in the configState).
var configRules = []configRule{
	{"denylist", (*checker).cfgDenylist},
	{"allowlist", (*checker).cfgTopLevel},
	{"nvidia", (*checker).cfgNvidia},
	{"docker", (*checker).cfgDocker},
	{"ollama container", (*checker).cfgContainer},
	{"ollama unit", (*checker).cfgContainerUnit},
	{"model drive", (*checker).cfgModelDrive},
	{"stick partitions", (*checker).cfgStick},
	{"stick image", (*checker).cfgImage},
	{"ssh", (*checker).cfgSSH},
	{"ssh mounts", (*checker).cfgSSHMounts},
	{"passwords", (*checker).cfgPasswords},
	{"sudo", (*checker).cfgSudo},
	{"autologin", (*checker).cfgAutologin},
	{"firewall", (*checker).cfgFirewall},
	{"wake-on-lan", (*checker).cfgWakeOnLAN},
	{"boot and tools", (*checker).cfgBootTools},
}

// checkConfig asserts the must-contain items by value, walks the denylist
// over the option paths and checks fields against each other.
func (c *checker) checkConfig(cfg map[string]any) {
	s := newConfigState(cfg)
	for _, r := range configRules {
		r.check(c, s)
	}
}

// cfgDenylist walks the option paths for denied options and --gpus.
func (c *checker) cfgDenylist(s *configState) { c.walkDenied("", s.cfg) }

func (c *checker) walkDenied(p string, v any) {
	if msg, ok := deniedPaths[p]; ok && !strings.HasPrefix(p, "image.modules.") {
		last := p[strings.LastIndex(p, ".")+1:]
		f, l := c.locate(regexp.MustCompile(regexp.QuoteMeta(last)), confNix)
		c.add(f, l, SevError, "denylist", "%s is set: %s", p, msg)
	}
	switch v := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(v) {
			q := k
			if p != "" {
				q = p + "." + k
			}
			c.walkDenied(q, v[k])
		}
	case []any:
		for _, x := range v {
			c.walkDenied(p, x)
		}
	case string:
		if strings.Contains(v, "--gpus") {
			f, l := c.locate(regexp.MustCompile(`--gpus`), confNix)
			c.add(f, l, SevError, "denylist", "%s uses --gpus, which fails on NixOS 25.05; use %s", p, CDIDevice)
		}
	}
}

// cfgTopLevel warns about top-level namespaces the appliance does not use.
func (c *checker) cfgTopLevel(s *configState) {
	for _, k := range sortedKeys(s.cfg) {
		if !knownTop[k] {
			f, l := c.locate(regexp.MustCompile(`(^|[^.\w])`+regexp.QuoteMeta(k)+`\b`), confNix)
			c.add(f, l, SevWarning, "allowlist", "unknown top-level option %q (a typo?)", k)
		}
	}
}

func (c *checker) cfgNvidia(s *configState) {
	cfg := s.cfg
	b, ok := getBool(cfg, "nixpkgs", "config", "allowUnfree")
	c.must(ok && b, `allowUnfree`, confNix, "nixpkgs.config.allowUnfree must be true (the NVIDIA driver is unfree)")
	c.must(contains(getStrs(cfg, "services", "xserver", "videoDrivers"), "nvidia"), `videoDrivers`, confNix,
		`services.xserver.videoDrivers must contain "nvidia" (it enables the driver, even headless)`)
	_, ok = getBool(cfg, "hardware", "nvidia", "open")
	c.must(ok, `nvidia\.open|open\s*=`, gpuctlNix, "hardware.nvidia.open must be set to true or false explicitly (drivers >= 560 require it)")
	_, ok = getStr(cfg, "hardware", "nvidia", "package")
	c.must(ok, `nvidia\s*=\s*\{|nvidia\.package`, confNix, "hardware.nvidia.package should name the driver (config.boot.kernelPackages.nvidiaPackages.stable)")
	b, ok = getBool(cfg, "hardware", "graphics", "enable")
	c.must(ok && b, `graphics`, confNix, "hardware.graphics.enable must be true (CDI mounts /run/opengl-driver)")
	km := getStrs(cfg, "boot", "kernelModules")
	c.must(contains(km, "nvidia") && contains(km, "nvidia_uvm"), `kernelModules`, confNix,
		`boot.kernelModules must load "nvidia" and "nvidia_uvm" early (else the CDI generator can race the driver)`)
	b, ok = getBool(cfg, "hardware", "nvidia-container-toolkit", "enable")
	c.must(ok && b, `nvidia-container-toolkit`, confNix, "hardware.nvidia-container-toolkit.enable must be true (it writes the CDI spec)")
}

func (c *checker) cfgDocker(s *configState) {
	cfg := s.cfg
	b, ok := getBool(cfg, "virtualisation", "docker", "enable")
	c.must(ok && b, `docker`, confNix, "virtualisation.docker.enable must be true")
	if b, ok := getBool(cfg, "virtualisation", "docker", "daemon", "settings", "features", "cdi"); ok && !b {
		c.cross(`cdi`, confNix, "virtualisation.docker.daemon.settings.features.cdi is false: containers cannot get the GPU through CDI")
	}
	// PERSIST is nofail: nothing orders it before local-fs.target, so every
	// unit that writes there must require it.
	for _, u := range []string{"docker", "sshd", "sshd-keygen"} {
		svc := getMap(cfg, "systemd", "services", u)
		c.must(contains(getStrs(svc, "after"), "persist.mount") && contains(getStrs(svc, "requires"), "persist.mount"),
			regexp.QuoteMeta("systemd.services."+u)+`\s*=`, confNix, "systemd.services.%s must be ordered after and require persist.mount (PERSIST is nofail, so it may mount late or never; %s)", u, persistWhy[u])
	}
	be, _ := getStr(cfg, "virtualisation", "oci-containers", "backend")
	c.must(be == "docker", `backend`, confNix, `virtualisation.oci-containers.backend must be "docker"`)
}

// cfgContainer checks the Ollama container: GPU, image, port, volume.
func (c *checker) cfgContainer(s *configState) {
	c.must(s.ctr != nil, `oci-containers|containers`, gpuctlNix, "no container in virtualisation.oci-containers.containers mounts the models directory at %s", ContainerOllamaDir)
	if s.ctr == nil {
		return
	}
	name, ctr := s.name, s.ctr
	opts := getStrs(ctr, "extraOptions")
	c.must(contains(opts, CDIDevice), `extraOptions`, gpuctlNix, "container %q must get the GPU with %q in extraOptions (CDI)", name, CDIDevice)
	img, _ := getStr(ctr, "image")
	tagged := strings.Contains(img[strings.LastIndex(img, "/")+1:], ":") && !strings.HasSuffix(img, ":latest")
	c.must(tagged || strings.Contains(img, "@sha256:"), `image\s*=`, gpuctlNix, "container %q image %q must be pinned to a tag such as ollama/ollama:0.17.4", name, img)
	published := false
	for _, p := range getStrs(ctr, "ports") {
		parts := strings.Split(p, ":")
		if len(parts) == 3 && parts[0] == "0.0.0.0" && parts[2] == strconv.Itoa(ContainerPort) {
			published = true
		}
	}
	c.must(published, `ports`, gpuctlNix, "container %q must publish 0.0.0.0:PORT:%d", name, ContainerPort)
	c.must(path.IsAbs(s.hostDir), `volumes`, gpuctlNix, "container %q: the models directory %q must be an absolute host path", name, s.hostDir)
}

// cfgContainerUnit checks the Ollama container's systemd unit: it waits for
// the CDI spec and for the model mount, which it records in s.modelMount.
func (c *checker) cfgContainerUnit(s *configState) {
	if s.ctr == nil {
		return
	}
	name := s.name
	loc := regexp.QuoteMeta(name)
	svcName, _ := getStr(s.ctr, "serviceName")
	if svcName == "" {
		svcName = "docker-" + name
	}
	svc := getMap(s.cfg, "systemd", "services", svcName)
	c.must(contains(getStrs(svc, "after"), CDIGenerator) && contains(getStrs(svc, "requires"), CDIGenerator),
		`docker-`+loc, gpuctlNix, "systemd.services.%s must be ordered after and require %s", svcName, CDIGenerator)
	rmf := getStrs(svc, "unitConfig", "RequiresMountsFor")
	c.must(len(rmf) > 0, `docker-`+loc+`|RequiresMountsFor`, gpuctlNix, "systemd.services.%s.unitConfig.RequiresMountsFor must name the model mount, so models never land on the stick", svcName)
	for _, m := range rmf {
		if _, ok := s.fsys[m]; !ok {
			c.cross(`RequiresMountsFor`, gpuctlNix, "systemd.services.%s RequiresMountsFor %q, which is not a fileSystems entry", svcName, m)
		} else if under(s.hostDir, m) && m != "/" {
			s.modelMount = m
		}
	}
	if s.modelMount == "" && len(rmf) > 0 {
		c.cross(`volumes`, gpuctlNix, "container %q stores models in %q, which is not on the mount it requires (%s)", name, s.hostDir, strings.Join(rmf, ", "))
	}
}

// cfgModelDrive checks the fileSystems entry of the model drive.
func (c *checker) cfgModelDrive(s *configState) {
	mount := s.modelMount
	if mount == "" {
		return
	}
	m := getMap(s.fsys, mount)
	dev, _ := getStr(m, "device")
	fsType, _ := getStr(m, "fsType")
	opts := getStrs(m, "options")
	loc := regexp.QuoteMeta(`"` + mount + `"`)
	c.must(strings.HasPrefix(dev, "/dev/disk/by-uuid/"), loc+`|device`, gpuctlNix, "fileSystems.%q must name the drive by UUID (/dev/disk/by-uuid/...), not %q", mount, dev)
	c.must(contains(opts, "nofail"), loc+`|options`, gpuctlNix, "fileSystems.%q needs the nofail option: a missing or dirty drive must not stop the boot", mount)
	uuid := strings.TrimPrefix(dev, "/dev/disk/by-uuid/")
	switch fsType {
	case "ntfs3", "ntfs-3g", "ntfs":
		c.ntfsDrive(mount, uuid, opts)
	case "ext4":
		c.ext4Drive(mount, uuid, opts)
	default:
		c.must(false, `fsType`, gpuctlNix, "fileSystems.%q fsType %q is not one of ntfs3, ntfs-3g, ext4", mount, fsType)
	}
}

func (c *checker) ntfsDrive(mount, uuid string, opts []string) {
	if !ntfsSerialRE.MatchString(uuid) {
		c.cross(`device`, gpuctlNix, "fileSystems.%q: %q is not an NTFS volume serial (16 hex digits)", mount, uuid)
	} else if uuid != strings.ToUpper(uuid) {
		c.cross(`device`, gpuctlNix, "fileSystems.%q: write the NTFS serial in uppercase (%s): udev's /dev/disk/by-uuid link is uppercase, so %q never appears", mount, strings.ToUpper(uuid), uuid)
	}
	if contains(opts, "force") {
		f, l := c.locate(regexp.MustCompile(`"force"`), gpuctlNix)
		c.add(f, l, SevWarning, "cross", "fileSystems.%q mounts a dirty NTFS volume with force: Windows' unwritten changes can be lost", mount)
	}
}

func (c *checker) ext4Drive(mount, uuid string, opts []string) {
	if !ext4UUID.MatchString(uuid) {
		c.cross(`device`, gpuctlNix, "fileSystems.%q: %q is not an ext4 UUID (8-4-4-4-12 hex)", mount, uuid)
	} else if uuid != strings.ToLower(uuid) {
		c.cross(`device`, gpuctlNix, "fileSystems.%q: write the ext4 UUID in lowercase (%s): udev's /dev/disk/by-uuid link is lowercase", mount, strings.ToLower(uuid))
	}
	for _, o := range opts {
		if strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=") || strings.HasPrefix(o, "umask=") || o == "windows_names" {
			c.cross(`options`, gpuctlNix, "fileSystems.%q: ext4 does not accept %q (mount would fail)", mount, o)
		}
	}
}

// cfgStick checks the stick's partitions: the image's root and ESP, PERSIST,
// and Docker's state on PERSIST.
func (c *checker) cfgStick(s *configState) {
	fsys := s.fsys
	d, _ := getStr(fsys, "/", "device")
	t, _ := getStr(fsys, "/", "fsType")
	c.must(d == "/dev/disk/by-label/nixos" && t == "ext4", `fileSystems\."/"`, confNix, `fileSystems."/" must be the raw-efi image's root (by-label/nixos, ext4) so the definitions merge`)
	d, _ = getStr(fsys, "/boot", "device")
	t, _ = getStr(fsys, "/boot", "fsType")
	c.must(d == "/dev/disk/by-label/ESP" && t == "vfat", `fileSystems\."/boot"`, confNix, `fileSystems."/boot" must be the raw-efi image's ESP (by-label/ESP, vfat)`)
	d, _ = getStr(fsys, "/persist", "device")
	t, _ = getStr(fsys, "/persist", "fsType")
	c.must(d == "/dev/disk/by-label/"+PersistLabel && t == "ext4", `/persist`, confNix, `fileSystems."/persist" must be the ext4 partition labelled exactly PERSIST (/dev/disk/by-label/PERSIST)`)
	dockerDev, _ := getStr(fsys, "/var/lib/docker", "device")
	dataRoot, _ := getStr(s.cfg, "virtualisation", "docker", "daemon", "settings", "data-root")
	c.must((under(dockerDev, "/persist") && contains(getStrs(fsys, "/var/lib/docker", "options"), "bind")) || under(dataRoot, "/persist") && dataRoot != "",
		`/var/lib/docker`, confNix, "Docker's state must live on PERSIST: bind /persist/docker to /var/lib/docker")
}

// cfgImage checks the raw-efi and ISO image settings and the stick layout.
func (c *checker) cfgImage(s *configState) {
	cfg := s.cfg
	b, ok := getBool(cfg, "image", "modules", "raw-efi", "boot", "growPartition")
	c.must(ok && !b, `growPartition|raw-efi`, confNix, "image.modules.raw-efi.boot.growPartition must be lib.mkForce false, or the root partition grows over the space PERSIST needs")
	size, sizeOK := get(cfg, "image", "modules", "raw-efi", "virtualisation", "diskSize").(float64)
	c.must(sizeOK && size > 0, `diskSize|raw-efi`, confNix, "image.modules.raw-efi.virtualisation.diskSize must be a fixed size in MiB (\"auto\" changes with every build and moves the end of the image into PERSIST)")
	if sizeOK {
		c.checkLayout(int(size))
	}
	for _, o := range []string{"makeEfiBootable", "makeUsbBootable"} {
		b, ok = getBool(cfg, "image", "modules", "iso", "isoImage", o)
		c.must(ok && b, `image\.modules\.iso|isoImage`, confNix, "image.modules.iso.isoImage.%s must be true (the ISO must boot under UEFI and from USB)", o)
	}
}

// cfgSSH checks sshd: keys only, no root, host keys on PERSIST.
func (c *checker) cfgSSH(s *configState) {
	cfg := s.cfg
	b, ok := getBool(cfg, "services", "openssh", "enable")
	c.must(ok && b, `openssh`, confNix, "services.openssh.enable must be true")
	b, ok = getBool(cfg, "services", "openssh", "settings", "PasswordAuthentication")
	c.must(ok && !b, `PasswordAuthentication|openssh`, confNix, "services.openssh.settings.PasswordAuthentication must be false (keys only)")
	b, ok = getBool(cfg, "services", "openssh", "settings", "KbdInteractiveAuthentication")
	c.must(ok && !b, `KbdInteractiveAuthentication|openssh`, confNix, "services.openssh.settings.KbdInteractiveAuthentication must be false (keys only)")
	str, _ := getStr(cfg, "services", "openssh", "settings", "PermitRootLogin")
	c.must(str == "no", `PermitRootLogin|openssh`, confNix, `services.openssh.settings.PermitRootLogin must be "no"`)
	hk := getList(cfg, "services", "openssh", "hostKeys")
	c.must(len(hk) > 0, `hostKeys|openssh`, confNix, "services.openssh.hostKeys must keep the host keys under /persist/ssh (they must survive reflashes)")
	for _, k := range hk {
		if p, _ := getStr(k, "path"); !under(p, "/persist/ssh") {
			c.cross(`hostKeys|path`, confNix, "SSH host key %q is not under /persist/ssh: it would change with every reflash", p)
		}
	}
}

// cfgSSHMounts checks that nothing hides /etc/ssh and that sshd will not
// penalise the gpuctl server.
func (c *checker) cfgSSHMounts(s *configState) {
	for _, mp := range sortedKeys(s.fsys) {
		dev, _ := getStr(s.fsys, mp, "device")
		mpt, _ := getStr(s.fsys, mp, "mountPoint")
		if under(mp, "/etc/ssh") || under(mpt, "/etc/ssh") && mpt != "" || (dev == "/etc/ssh" && mp != "") {
			f, l := c.locate(regexp.MustCompile(`/etc/ssh`), confNix)
			c.add(f, l, SevError, "denylist", "fileSystems.%q mounts over /etc/ssh, hiding sshd_config; use services.openssh.hostKeys under /persist/ssh", mp)
		}
	}
	if _, ok := get(s.cfg, "services", "openssh", "settings", "PerSourcePenaltyExemptList").(string); !ok {
		f, l := c.locate(regexp.MustCompile(`openssh`), gpuctlNix)
		c.add(f, l, SevWarning, "must", "services.openssh.settings.PerSourcePenaltyExemptList is not set: sshd may penalise the gpuctl server after failed logins (set server_address in [host.nixos])")
	}
}

// cfgPasswords rejects empty passwords.
func (c *checker) cfgPasswords(s *configState) {
	for _, u := range sortedKeys(s.users) {
		for _, k := range []string{"password", "initialPassword", "hashedPassword", "initialHashedPassword"} {
			if str, ok := getStr(s.users, u, k); ok && str == "" {
				f, l := c.locate(regexp.MustCompile(k+`\s*=\s*""`), gpuctlNix)
				c.add(f, l, SevError, "denylist", "users.users.%s.%s is empty: an empty password lets anyone log in", u, k)
			}
		}
	}
}

// cfgSudo checks that exactly the gpuctl account may run exactly gpuctl's
// commands without a password.
func (c *checker) cfgSudo(s *configState) {
	container := s.name
	if container == "" {
		container = "ollama"
	}
	wantCmds := SudoCommands(container)
	poweroffUsers := 0
	for _, r := range getList(s.cfg, "security", "sudo", "extraRules") {
		poweroffUsers += c.sudoRule(s, r, wantCmds)
	}
	c.must(poweroffUsers > 0, `extraRules|sudo`, gpuctlNix, "security.sudo.extraRules must let the gpuctl user run exactly %s with NOPASSWD", strings.Join(wantCmds, ", "))
	if b, ok := getBool(s.cfg, "security", "sudo", "execWheelOnly"); ok && b {
		c.cross(`execWheelOnly`, confNix, "security.sudo.execWheelOnly = true stops the non-wheel gpuctl user from using its poweroff rule")
	}
}

// sudoRule checks one security.sudo.extraRules entry and returns how many
// users it lets run gpuctl's poweroff.
func (c *checker) sudoRule(s *configState, r any, wantCmds []string) int {
	rusers := getStrs(r, "users")
	nopasswd := c.sudoNopasswd(r)
	if !contains(nopasswd, PoweroffSudoCommand) {
		if len(nopasswd) > 0 {
			for _, u := range rusers {
				if u != "root" && !s.inWheel(u) {
					c.cross(`extraRules`, gpuctlNix, "sudo rule for %q allows %q without a password: the gpuctl account may run only %s", u, strings.Join(nopasswd, ", "), strings.Join(wantCmds, ", "))
				}
			}
		}
		return 0
	}
	// The gpuctl account's rule: exactly gpuctl's commands.
	for _, cmd := range nopasswd {
		if !contains(wantCmds, cmd) {
			f, l := c.locate(regexp.MustCompile(regexp.QuoteMeta(Str(cmd))+`|extraRules`), gpuctlNix)
			c.add(f, l, SevError, "cross", "sudo rule for %s allows %q: the gpuctl account may run exactly %s", strings.Join(rusers, ", "), cmd, strings.Join(wantCmds, ", "))
		}
	}
	for _, w := range wantCmds[1:] {
		if !contains(nopasswd, w) {
			c.cross(`extraRules`, gpuctlNix, "the gpuctl account's sudo rule lacks %q (NOPASSWD): its container checks run it with sudo -n", w)
		}
	}
	for _, u := range rusers {
		c.gpuctlAccount(s, u)
	}
	return len(rusers)
}

// sudoNopasswd returns the commands a sudo rule allows with NOPASSWD, and
// flags poweroff commands written other than as gpuctl runs it.
func (c *checker) sudoNopasswd(r any) []string {
	var nopasswd []string
	for _, cm := range getList(r, "commands") {
		cmd, _ := getStr(cm, "command")
		if cmd == "" {
			cmd, _ = cm.(string)
		}
		if contains(getStrs(cm, "options"), "NOPASSWD") {
			nopasswd = append(nopasswd, cmd)
		}
		if strings.HasSuffix(strings.Fields(cmd + " x")[0], "/poweroff") && cmd != PoweroffSudoCommand {
			c.cross(`poweroff`, gpuctlNix, "sudo rule %q: write exactly %q (the trailing \"\" forbids arguments; a relative or other path does not match what gpuctl runs)", cmd, PoweroffSudoCommand)
		}
	}
	return nopasswd
}

// gpuctlAccount checks user u, named by the poweroff sudo rule: it exists,
// has no more rights than its rules and can log in with a key.
func (c *checker) gpuctlAccount(s *configState, u string) {
	users := s.users
	if _, ok := users[u]; !ok {
		c.cross(`extraRules|users\s*=`, gpuctlNix, "the sudo poweroff rule names user %q, who is not in users.users", u)
		return
	}
	if s.inWheel(u) {
		c.cross(`wheel`, gpuctlNix, "user %q (the gpuctl account) must not be in wheel: it may run its sudo rules and nothing else", u)
	}
	g, _ := getStr(users, u, "group")
	if contains(getStrs(users, u, "extraGroups"), "docker") || g == "docker" {
		c.cross(`"docker"|extraGroups`, gpuctlNix, "user %q (the gpuctl account) must not be in the docker group: docker access is root-equivalent; its sudo rules cover the docker commands it runs", u)
	}
	if len(getStrs(users, u, "openssh", "authorizedKeys", "keys")) == 0 && len(getList(users, u, "openssh", "authorizedKeys", "keyFiles")) == 0 {
		c.cross(`authorizedKeys`, gpuctlNix, "user %q has no SSH authorized key: gpuctl cannot log in", u)
	}
}

func (c *checker) cfgAutologin(s *configState) {
	al, _ := getStr(s.cfg, "services", "getty", "autologinUser")
	c.must(al != "", `autologinUser`, gpuctlNix, "services.getty.autologinUser must name the console user (TTY autologin)")
	if _, ok := s.users[al]; al != "" && !ok && al != "root" {
		c.cross(`autologinUser`, gpuctlNix, "services.getty.autologinUser %q is not in users.users", al)
	}
}

// cfgFirewall checks that the firewall opens only SSH and the Ollama API.
func (c *checker) cfgFirewall(s *configState) {
	cfg := s.cfg
	b, ok := getBool(cfg, "networking", "firewall", "enable")
	c.must(!ok || b, `firewall`, confNix, "networking.firewall.enable must be true")
	sshPorts := getInts(cfg, "services", "openssh", "ports")
	if len(sshPorts) == 0 {
		sshPorts = []int{22}
	}
	published := publishedPorts(s.containers)
	allowed := getInts(cfg, "networking", "firewall", "allowedTCPPorts")
	extra, _ := getStr(cfg, "networking", "firewall", "extraCommands")
	for _, p := range sshPorts {
		c.must(contains(allowed, p), `allowedTCPPorts`, gpuctlNix, "networking.firewall.allowedTCPPorts must open the SSH port %d", p)
	}
	for _, p := range published {
		if !contains(allowed, p) && !strings.Contains(extra, "--dport "+strconv.Itoa(p)) {
			c.cross(`allowedTCPPorts`, gpuctlNix, "port %d is published by a container but neither allowedTCPPorts nor an extraCommands rule opens it", p)
		}
	}
	for _, p := range allowed {
		if !contains(sshPorts, p) && !contains(published, p) {
			c.cross(`allowedTCPPorts`, gpuctlNix, "networking.firewall.allowedTCPPorts opens %d: only SSH (%v) and the Ollama API may be open", p, sshPorts)
		}
	}
	for _, k := range []string{"allowedUDPPorts", "allowedTCPPortRanges", "allowedUDPPortRanges"} {
		if len(getList(cfg, "networking", "firewall", k)) > 0 {
			c.cross(k, gpuctlNix, "networking.firewall.%s is set: only TCP %v and the Ollama API may be open", k, sshPorts)
		}
	}
}

// publishedPorts are the host ports the containers publish.
func publishedPorts(containers map[string]any) []int {
	var published []int
	for _, n := range sortedKeys(containers) {
		for _, p := range getStrs(containers[n], "ports") {
			parts := strings.Split(p, ":")
			if len(parts) >= 2 {
				if v, err := strconv.Atoi(parts[len(parts)-2]); err == nil {
					published = append(published, v)
				}
			}
		}
	}
	return published
}

func (c *checker) cfgWakeOnLAN(s *configState) {
	cfg := s.cfg
	wol := false
	for _, i := range sortedKeys(getMap(cfg, "networking", "interfaces")) {
		w := getMap(cfg, "networking", "interfaces", i, "wakeOnLan")
		if e, _ := getBool(w, "enable"); e {
			pol := getStrs(w, "policy")
			wol = wol || len(pol) == 0 || contains(pol, "magic")
		}
	}
	c.must(wol, `wakeOnLan|interfaces`, gpuctlNix, `networking.interfaces.<if>.wakeOnLan must be enabled with policy [ "magic" ] on a wired NIC`)
	udevRule := false
	rules, _ := getStr(cfg, "services", "udev", "extraRules")
	for _, l := range strings.Split(rules, "\n") {
		if strings.Contains(l, `ACTION=="add"`) && strings.Contains(l, `SUBSYSTEM=="net"`) && strings.Contains(l, "ethtool") && strings.Contains(l, "wol g") {
			udevRule = true
		}
	}
	c.must(udevRule, `udev|wol g`, confNix, "a udev rule (services.udev.extraRules) must arm Wake-on-LAN on every wired NIC as it appears: ACTION==\"add\", SUBSYSTEM==\"net\", RUN+=\"ethtool -s %%k wol g\"")
}

// cfgBootTools checks booting from USB, the console tools and the release.
func (c *checker) cfgBootTools(s *configState) {
	cfg := s.cfg
	im := getStrs(cfg, "boot", "initrd", "availableKernelModules")
	c.must(contains(im, "usb_storage") && contains(im, "uas"), `availableKernelModules`, confNix, `boot.initrd.availableKernelModules must contain "usb_storage" and "uas" to boot from USB`)
	pkgs := packageNames(getStrs(cfg, "environment", "systemPackages"))
	for _, want := range []string{"tmux", "nvtop", "ethtool"} {
		found := false
		for _, p := range pkgs {
			found = found || strings.Contains(p, want)
		}
		c.must(found, `systemPackages`, confNix, "environment.systemPackages must contain %s", want)
	}
	sv, _ := getStr(cfg, "system", "stateVersion")
	c.must(sv != "", `stateVersion`, gpuctlNix, "system.stateVersion must be set")
}

// packageNames are the names of store paths (their hash dropped) or of
// packages as written.
func packageNames(paths []string) []string {
	var pkgs []string
	for _, p := range paths {
		base := path.Base(p)
		if i := strings.IndexByte(base, '-'); i >= 0 && strings.HasPrefix(p, "/nix/store/") {
			base = base[i+1:]
		}
		pkgs = append(pkgs, base)
	}
	return pkgs
}

// checkFlake asserts what the stub-called flake exposes.
func (c *checker) checkFlake(fl map[string]any) {
	const f = "flake.nix"
	url, _ := getStr(fl, "inputs", "nixpkgs")
	m := channelRE.FindStringSubmatch(url)
	c.must(m != nil, `nixpkgs\.url|url`, f, "inputs.nixpkgs.url %q must be github:NixOS/nixpkgs/nixos-25.05 or nixos-25.11", url)
	raw, _ := getStr(fl, "packages", "x86_64-linux", "raw")
	iso, _ := getStr(fl, "packages", "x86_64-linux", "iso")
	c.must(raw == "RAW", `raw\s*=`, f, "packages.x86_64-linux.raw must be the raw-efi image (config.system.build.images.raw-efi)")
	c.must(iso == "ISO", `iso\s*=`, f, "packages.x86_64-linux.iso must be the ISO (config.system.build.images.iso)")
	c.must(len(getMap(fl, "checks", "x86_64-linux")) > 0, `checks`, f, "checks.x86_64-linux must not be empty (nix flake check builds them)")
	confs := getMap(fl, "nixosConfigurations")
	c.must(len(confs) > 0, `nixosConfigurations`, f, "nixosConfigurations must expose the appliance")
	if hn, _ := getStr(c.r.Config, "networking", "hostName"); hn != "" && len(confs) > 0 {
		_, ok := confs[hn]
		c.must(ok, `nixosConfigurations`, f, "nixosConfigurations.%s must exist: `nixos-rebuild --flake .` looks the configuration up by the host name %q", hn, hn)
	}
	for _, n := range sortedKeys(confs) {
		hasPath := false
		for _, mod := range getList(confs, n, "modules") {
			if p, ok := getStr(mod, "path"); ok && p != "" {
				hasPath = true
			}
		}
		c.must(hasPath, `modules`, f, "nixosConfigurations.%s must load ./configuration.nix", n)
		sys, _ := getStr(confs, n, "system")
		c.must(sys == "x86_64-linux", `system\s*=`, f, "nixosConfigurations.%s must be built for x86_64-linux, not %q", n, sys)
	}
	if m != nil && c.r.Config != nil {
		sv, _ := getStr(c.r.Config, "system", "stateVersion")
		if sv != "" && versionLess(m[1], sv) {
			c.cross(`stateVersion`, "gpuctl.nix", "system.stateVersion %q is newer than the nixpkgs release %s the flake uses", sv, m[1])
		}
	}
}

// versionLess compares "YY.MM" release numbers.
func versionLess(a, b string) bool {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	for i := 0; i < 2 && i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}
