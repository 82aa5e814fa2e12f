package inventory

import (
	"net/netip"
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
	ModelsFSType      string   `toml:"models_fstype"`
	SSHAuthorizedKeys []string `toml:"ssh_authorized_keys"`
	AdminUser         string   `toml:"admin_user"`
	ExtraPackages     []string `toml:"extra_packages"`
	// ServerAddress is the gpuctl server's IP: exempt from sshd's
	// PerSourcePenalties and, with OllamaOnlyFromServer, the only client
	// allowed on 11434.
	ServerAddress        string `toml:"server_address"`
	OllamaOnlyFromServer bool   `toml:"ollama_only_from_server"`
	// OllamaImage is the pinned ollama container image.
	OllamaImage string `toml:"ollama_image"`
	// User is the account gpuctl logs in as (default: the host's ssh_user).
	User string `toml:"user"`
}

var (
	uuidRE     = regexp.MustCompile(`^[0-9A-Fa-f-]{8,36}$`)
	nixIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)*$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

func (v *validator) checkNixOS(p string, h *Host) {
	n := h.NixOS
	switch n.Nixpkgs {
	case "":
		n.Nixpkgs = "25.11"
	case "25.05", "25.11":
	default:
		v.fail(p+".nixpkgs", "%q is not a supported channel (25.05 or 25.11)", n.Nixpkgs)
	}
	if n.NvidiaOpen == nil {
		v.fail(p+".nvidia_open", "set nvidia_open = true (Turing or newer, driver >= 560) or false explicitly")
	}
	switch n.ModelsFSType {
	case "":
		n.ModelsFSType = "ntfs3"
	case "ntfs3", "ntfs-3g", "ext4":
	default:
		v.fail(p+".models_fstype", "%q is not one of ntfs3, ntfs-3g, ext4", n.ModelsFSType)
	}
	if n.ModelsDevice == "" {
		v.fail(p+".models_device", "the model drive's filesystem UUID is required (see `blkid`)")
	} else if !uuidRE.MatchString(n.ModelsDevice) {
		v.fail(p+".models_device", "%q is not a filesystem UUID such as \"01D9A1B2C3D4E5F6\"", n.ModelsDevice)
	}
	if n.Hostname == "" {
		n.Hostname = h.Name
	}
	if !hostnameRE.MatchString(n.Hostname) {
		v.fail(p+".hostname", "%q is not a valid hostname (letters, digits, '-')", n.Hostname)
	}
	if n.Timezone == "" {
		n.Timezone = "UTC"
	}
	if n.Keymap == "" {
		n.Keymap = "us"
	}
	if n.User == "" {
		n.User = h.SSHUser
	} else if !userRE.MatchString(n.User) {
		v.fail(p+".user", "%q is not a valid user name", n.User)
	}
	if n.AdminUser != "" && !userRE.MatchString(n.AdminUser) {
		v.fail(p+".admin_user", "%q is not a valid user name", n.AdminUser)
	}
	for _, k := range n.SSHAuthorizedKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			v.fail(p+".ssh_authorized_keys", "not a public key in authorized_keys form: %.30q…", k)
		}
	}
	for _, pkg := range n.ExtraPackages {
		if !nixIdentRE.MatchString(pkg) {
			v.fail(p+".extra_packages", "%q is not a nixpkgs attribute name such as \"htop\" or \"python3Packages.pip\"", pkg)
		}
	}
	if n.ServerAddress != "" {
		if _, err := netip.ParseAddr(n.ServerAddress); err != nil {
			if _, err := netip.ParsePrefix(n.ServerAddress); err != nil {
				v.fail(p+".server_address", "%q is not an IP address or prefix", n.ServerAddress)
			}
		}
	} else if n.OllamaOnlyFromServer {
		v.fail(p+".ollama_only_from_server", "needs server_address")
	}
	if n.OllamaImage == "" {
		n.OllamaImage = "ollama/ollama:0.17.4"
	} else if strings.ContainsAny(n.OllamaImage, " \t\n\"'`$\\;") || !strings.Contains(n.OllamaImage, ":") || strings.HasSuffix(n.OllamaImage, ":latest") {
		v.fail(p+".ollama_image", "%q must be an image with a pinned tag such as \"ollama/ollama:0.17.4\"", n.OllamaImage)
	}
}
