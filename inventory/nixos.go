package inventory

import (
	"net/netip"
	"path"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"
)

// NixOS is the optional [host.nixos] table: what `gpuctl nixos generate`
// needs beyond the host's own keys to write the USB stick's system.
type NixOS struct {
	Hostname string `toml:"hostname"`
	Timezone string `toml:"timezone"`
	Keymap   string `toml:"keymap"`
	// Nixpkgs is the release channel: "25.05" or "25.11".
	Nixpkgs string `toml:"nixpkgs"`
	// NvidiaOpen selects the open kernel modules; it must be set explicitly
	// (required by drivers >= 560).
	NvidiaOpen *bool `toml:"nvidia_open"`
	// ModelsDevice is the model drive's filesystem UUID (/dev/disk/by-uuid/...).
	ModelsDevice string `toml:"models_device"`
	// ModelsFSType is "ntfs3", "ntfs-3g" or "ext4".
	ModelsFSType string `toml:"models_fstype"`
	// ModelsMount is where the model drive is mounted (default: the parent
	// of the host's models_dir, /mnt/models). models_dir must lie under it.
	ModelsMount string `toml:"models_mount"`
	// SSHAuthorizedKeys may log in as User (default: the public half of
	// gpuctl's identity, STATE_DIR/id_ed25519.pub).
	SSHAuthorizedKeys []string `toml:"ssh_authorized_keys"`
	// AdminUser is the console user with TTY autologin (default "admin";
	// in wheel and docker). Equal to User, the one account stays unprivileged.
	AdminUser string `toml:"admin_user"`
	// AdminAuthorizedKeys may log in as AdminUser (default: none, console only).
	AdminAuthorizedKeys []string `toml:"admin_authorized_keys"`
	ExtraPackages       []string `toml:"extra_packages"`
	// WOLInterfaces are the PC's wired NICs by kernel name (the generated
	// system turns predictable names off), default ["eth0"]; a boot oneshot
	// arms every wired NIC as well.
	WOLInterfaces []string `toml:"wol_interfaces"`
	// ServerAddress is the gpuctl server's IP: exempt from sshd's
	// PerSourcePenalties and, with OllamaOnlyFromServer, the only client
	// allowed on 11434.
	ServerAddress        string `toml:"server_address"`
	OllamaOnlyFromServer bool   `toml:"ollama_only_from_server"`
	// OllamaImage is the pinned ollama container image.
	OllamaImage string `toml:"ollama_image"`
	// User is the account gpuctl logs in as (default: the host's ssh_user).
	User string `toml:"user"`
	// ImageSizeMiB is the raw-efi image's fixed size (default
	// DefaultImageSizeMiB). The stick's PERSIST partition starts right after
	// it, so it must not change between reflashes of one stick.
	ImageSizeMiB int `toml:"image_size_mib"`
}

// DefaultImageSizeMiB is the system part of the stick: 12 GiB holds the
// closure (about 4 GiB with the NVIDIA driver and Docker) with room for
// later releases, and leaves 16 GiB for PERSIST on a 32 GB stick.
const DefaultImageSizeMiB = 12288

// MinImageSizeMiB is the smallest image size accepted: the ESP (256 MiB),
// the closure and free space on root.
const MinImageSizeMiB = 6144

// DefaultOllamaImage is the image `gpuctl nixos generate` pins by default.
const DefaultOllamaImage = "ollama/ollama:0.17.4"

var (
	ntfsUUIDRE  = regexp.MustCompile(`^[0-9A-Fa-f]{16}$`)
	ext4UUIDRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	nixIdentRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)*$`)
	hostnameRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	timezoneRE  = regexp.MustCompile(`^[A-Za-z0-9_+./-]{1,64}$`)
	keymapRE    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)
	nixKeywords = map[string]bool{"if": true, "then": true, "else": true, "assert": true, "with": true,
		"let": true, "in": true, "rec": true, "inherit": true, "or": true}
	// reservedMounts may not hold the model drive.
	reservedMounts = []string{"/", "/boot", "/nix", "/persist", "/var", "/etc", "/root", "/home", "/run", "/tmp", "/usr"}
)

// nixosCheck validates and completes some keys of [host.nixos]; p is the
// table's key path ("host[1].nixos"), h the host it belongs to.
type nixosCheck struct {
	keys  string
	check func(v *validator, p string, h *Host, n *NixOS)
}

// nixosChecks run in order: models_device reads the completed
// models_fstype, and models_mount the host's models_dir.
var nixosChecks = []nixosCheck{
	{"nixpkgs", checkNixpkgs},
	{"nvidia_open", checkNvidiaOpen},
	{"models_fstype, models_device", checkModelsDevice},
	{"image_size_mib", checkImageSize},
	{"hostname, timezone, keymap", checkLocale},
	{"user, admin_user", checkNixOSUsers},
	{"ssh_authorized_keys, admin_authorized_keys", checkAuthorizedKeys},
	{"extra_packages", checkExtraPackages},
	{"wol_interfaces", checkWOLInterfaces},
	{"server_address, ollama_only_from_server", checkServerAddress},
	{"ollama_image", checkOllamaImage},
	{"models_dir, models_mount", checkModelsMount},
}

func (v *validator) checkNixOS(p string, h *Host) {
	for _, c := range nixosChecks {
		c.check(v, p, h, h.NixOS)
	}
}

func checkNixpkgs(v *validator, p string, _ *Host, n *NixOS) {
	switch n.Nixpkgs {
	case "":
		n.Nixpkgs = "25.11"
	case "25.05", "25.11":
	default:
		v.fail(p+".nixpkgs", "%q is not a supported channel (25.05 or 25.11)", n.Nixpkgs)
	}
}

func checkNvidiaOpen(v *validator, p string, _ *Host, n *NixOS) {
	if n.NvidiaOpen == nil {
		v.fail(p+".nvidia_open", "set nvidia_open = true (Turing or newer, driver >= 560) or false explicitly")
	}
}

func checkModelsDevice(v *validator, p string, _ *Host, n *NixOS) {
	switch n.ModelsFSType {
	case "":
		n.ModelsFSType = "ntfs3"
	case "ntfs3", "ntfs-3g", "ext4":
	default:
		v.fail(p+".models_fstype", "%q is not one of ntfs3, ntfs-3g, ext4", n.ModelsFSType)
	}
	switch {
	case n.ModelsDevice == "":
		v.fail(p+".models_device", "the model drive's filesystem UUID is required (see `blkid`)")
	case n.ModelsFSType == "ext4" && !ext4UUIDRE.MatchString(n.ModelsDevice):
		v.fail(p+".models_device", "%q is not an ext4 filesystem UUID such as \"2f6c1a7e-0b7d-4c1e-9a55-3d1f0e6b8c21\" (see `blkid`)", n.ModelsDevice)
	case strings.HasPrefix(n.ModelsFSType, "ntfs") && !ntfsUUIDRE.MatchString(n.ModelsDevice):
		v.fail(p+".models_device", "%q is not an NTFS volume serial such as \"01D9A1B2C3D4E5F6\" (16 hex digits, see `blkid`)", n.ModelsDevice)
	case n.ModelsFSType == "ext4" && n.ModelsDevice != strings.ToLower(n.ModelsDevice):
		// udev's /dev/disk/by-uuid links: lowercase for ext4, uppercase
		// for NTFS serials. Any other case names a link that never exists.
		v.note(p+".models_device", "%q written as %q: udev names ext4 UUIDs in lowercase under /dev/disk/by-uuid", n.ModelsDevice, strings.ToLower(n.ModelsDevice))
		n.ModelsDevice = strings.ToLower(n.ModelsDevice)
	case strings.HasPrefix(n.ModelsFSType, "ntfs") && n.ModelsDevice != strings.ToUpper(n.ModelsDevice):
		v.note(p+".models_device", "%q written as %q: udev names NTFS serials in uppercase under /dev/disk/by-uuid", n.ModelsDevice, strings.ToUpper(n.ModelsDevice))
		n.ModelsDevice = strings.ToUpper(n.ModelsDevice)
	}
}

func checkImageSize(v *validator, p string, _ *Host, n *NixOS) {
	switch {
	case n.ImageSizeMiB == 0:
		n.ImageSizeMiB = DefaultImageSizeMiB
	case n.ImageSizeMiB < MinImageSizeMiB || n.ImageSizeMiB > 1<<20:
		v.fail(p+".image_size_mib", "%d MiB is not a usable system image size (at least %d; default %d)", n.ImageSizeMiB, MinImageSizeMiB, DefaultImageSizeMiB)
	}
}

func checkLocale(v *validator, p string, h *Host, n *NixOS) {
	if n.Hostname == "" {
		n.Hostname = h.Name
	}
	if !hostnameRE.MatchString(n.Hostname) {
		v.fail(p+".hostname", "%q is not a valid hostname (letters, digits, '-')", n.Hostname)
	}
	if n.Timezone == "" {
		n.Timezone = "UTC"
	} else if !timezoneRE.MatchString(n.Timezone) || strings.Contains(n.Timezone, "..") {
		v.fail(p+".timezone", "%q is not a time zone such as \"Europe/Berlin\"", n.Timezone)
	}
	if n.Keymap == "" {
		n.Keymap = "us"
	} else if !keymapRE.MatchString(n.Keymap) {
		v.fail(p+".keymap", "%q is not a console keymap such as \"de\" or \"us\"", n.Keymap)
	}
}

func checkNixOSUsers(v *validator, p string, h *Host, n *NixOS) {
	if n.User == "" {
		n.User = h.SSHUser
	} else if !userRE.MatchString(n.User) {
		v.fail(p+".user", "%q is not a valid user name", n.User)
	}
	if n.User == "root" {
		v.fail(p+".user", "gpuctl must not log in as root; use an unprivileged user such as \"gpuctl\"")
	}
	if n.AdminUser == "" {
		n.AdminUser = "admin"
	} else if !userRE.MatchString(n.AdminUser) {
		v.fail(p+".admin_user", "%q is not a valid user name", n.AdminUser)
	} else if n.AdminUser == "root" {
		v.fail(p+".admin_user", "the console user must not be root; name an ordinary user such as \"admin\"")
	}
}

func checkAuthorizedKeys(v *validator, p string, _ *Host, n *NixOS) {
	v.checkKeys(p+".ssh_authorized_keys", n.SSHAuthorizedKeys)
	v.checkKeys(p+".admin_authorized_keys", n.AdminAuthorizedKeys)
}

func checkExtraPackages(v *validator, p string, _ *Host, n *NixOS) {
	for _, pkg := range n.ExtraPackages {
		if !nixIdentRE.MatchString(pkg) {
			v.fail(p+".extra_packages", "%q is not a nixpkgs attribute name such as \"htop\" or \"python3Packages.pip\"", pkg)
			continue
		}
		for _, part := range strings.Split(pkg, ".") {
			if nixKeywords[part] {
				v.fail(p+".extra_packages", "%q: %q is a Nix keyword, not a package name", pkg, part)
			}
		}
	}
}

func checkWOLInterfaces(v *validator, p string, _ *Host, n *NixOS) {
	if len(n.WOLInterfaces) == 0 {
		n.WOLInterfaces = []string{"eth0"}
	}
	for _, i := range n.WOLInterfaces {
		if !ifaceRE.MatchString(i) {
			v.fail(p+".wol_interfaces", "%q is not a network interface name such as \"eth0\"", i)
		}
	}
}

func checkServerAddress(v *validator, p string, _ *Host, n *NixOS) {
	var server netip.Prefix
	if n.ServerAddress != "" {
		if a, err := netip.ParseAddr(n.ServerAddress); err == nil {
			server = netip.PrefixFrom(a, a.BitLen())
		} else if pf, err := netip.ParsePrefix(n.ServerAddress); err == nil {
			server = pf
		} else {
			v.fail(p+".server_address", "%q is not an IP address or prefix", n.ServerAddress)
		}
	}
	if n.OllamaOnlyFromServer {
		if n.ServerAddress == "" {
			v.fail(p+".ollama_only_from_server", "needs server_address")
		} else if server.IsValid() && !server.Addr().Is4() {
			v.fail(p+".ollama_only_from_server", "needs an IPv4 server_address (Docker publishes the port on 0.0.0.0)")
		}
	}
}

func checkOllamaImage(v *validator, p string, _ *Host, n *NixOS) {
	if n.OllamaImage == "" {
		n.OllamaImage = DefaultOllamaImage
	} else if strings.ContainsAny(n.OllamaImage, " \t\n\"'`$\\;") || !strings.Contains(n.OllamaImage[strings.LastIndex(n.OllamaImage, "/")+1:], ":") || strings.HasSuffix(n.OllamaImage, ":latest") {
		v.fail(p+".ollama_image", "%q must be an image with a pinned tag such as \"ollama/ollama:0.17.4\"", n.OllamaImage)
	}
}

func checkModelsMount(v *validator, p string, h *Host, n *NixOS) {
	// The models dir becomes a Docker volume "HOST:CONTAINER[:opts]".
	if strings.ContainsAny(h.ModelsDir, ":,") {
		v.fail(p[:strings.LastIndex(p, ".")]+".models_dir", "%q: a Docker volume path cannot contain ':' or ','", h.ModelsDir)
	}
	if n.ModelsMount == "" {
		n.ModelsMount = path.Dir(h.ModelsDir)
		if h.ModelsDir == "/mnt/models" || n.ModelsMount == "/" || n.ModelsMount == "/mnt" {
			n.ModelsMount = h.ModelsDir
		}
	} else if !path.IsAbs(n.ModelsMount) || path.Clean(n.ModelsMount) != n.ModelsMount || strings.ContainsAny(n.ModelsMount, "\x00\n\r") {
		v.fail(p+".models_mount", "%q must be a clean absolute path such as \"/mnt/models\"", n.ModelsMount)
		return
	}
	for _, r := range reservedMounts {
		if n.ModelsMount == r || (r != "/" && strings.HasPrefix(n.ModelsMount, r+"/")) {
			v.fail(p+".models_mount", "%q is part of the system; mount the model drive elsewhere, such as \"/mnt/models\"", n.ModelsMount)
			return
		}
	}
	if h.ModelsDir != n.ModelsMount && !strings.HasPrefix(h.ModelsDir, n.ModelsMount+"/") {
		v.fail(p+".models_mount", "models_dir %q is not on the model drive mounted at %q; put it under the mount", h.ModelsDir, n.ModelsMount)
	}
}

func (v *validator) checkKeys(p string, keys []string) {
	for _, k := range keys {
		if strings.ContainsAny(k, "\r\n\x00") {
			v.fail(p, "a key must be one line: %.30q…", k)
			continue
		}
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(strings.TrimSpace(string(rest))) > 0 {
			v.fail(p, "not a public key in authorized_keys form: %.30q…", k)
		}
	}
}
