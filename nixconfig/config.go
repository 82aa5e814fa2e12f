// Package nixconfig generates the NixOS flake for the USB stick that turns an
// on-demand gaming PC into an Ollama box, from the same inventory gpuctl uses,
// and checks such a flake offline with nix-instantiate.
//
// Generate derives a Config from one host's [host.nixos] table, Render turns
// it into files, and Write puts them in a directory without clobbering hand
// edits. Check parses and stub-evaluates a directory (see check.go).
package nixconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/inventory"
)

// Fixed values the generated system and the checks agree on.
const (
	CDIGenerator    = "nvidia-container-toolkit-cdi-generator.service"
	CDIDevice       = "--device=nvidia.com/gpu=all"
	PoweroffCommand = hostcmd.PoweroffCommand
	// PoweroffSudoCommand is the sudoers command: the trailing "" forbids
	// any argument.
	PoweroffSudoCommand = PoweroffCommand + ` ""`
	PersistLabel        = "PERSIST"
	ContainerOllamaDir  = "/root/.ollama"
	ContainerPort       = 11434
	ManifestName        = ".gpuctl-generated.json"
	LocalName           = "local.nix"
)

// Config is everything the templates need, already validated.
type Config struct {
	// Inventory is the inventory file's base name and Host the host's name,
	// for the generated-file headers.
	Inventory string
	Host      string

	Hostname     string
	Timezone     string
	Keymap       string
	Channel      string // "25.05" or "25.11"
	StateVersion string
	NvidiaOpen   bool

	ModelsDevice  string // "/dev/disk/by-uuid/..."
	ModelsFSType  string
	ModelsMount   string
	ModelsOptions []string
	ModelsDir     string

	Container   string
	Image       string
	OllamaPort  int // published host port
	SSHPort     int
	ExtraPkgs   []string
	WOLIfaces   []string
	Server      string // "" when unknown
	OllamaOnly  bool   // 11434 only from Server
	User        string
	UserKeys    []string
	Admin       string // == User when one account
	AdminKeys   []string
	AdminIsUser bool

	// ImageSizeMiB is the raw-efi image's fixed size; PERSIST starts there.
	ImageSizeMiB int
	// SudoCommands are the gpuctl account's sudoers commands, in order:
	// poweroff without arguments, then the controller's docker command
	// lines for the container.
	SudoCommands []string
}

// SudoCommands are the sudoers commands (full argv, as sudo matches them)
// of what gpuctl runs with `sudo -n` on the box: poweroff with no argument
// and the container checks' docker command lines.
func SudoCommands(container string) []string {
	return []string{
		PoweroffSudoCommand,
		strings.Join(hostcmd.SudoArgv(hostcmd.InspectArgs(container)), " "),
		strings.Join(hostcmd.SudoArgv(hostcmd.ContainerGPUArgs(container)), " "),
	}
}

// KeyError says no SSH key could be found for the gpuctl user.
type KeyError struct {
	Host     string
	StateDir string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("host %q: no SSH key for the generated system: create gpuctl's identity with `ssh-keygen -t ed25519 -f %s` "+
		"or list keys in [host.nixos] ssh_authorized_keys", e.Host, filepath.Join(e.StateDir, "id_ed25519"))
}

// FromInventory builds the Config for one host. The inventory must have been
// loaded (and so validated and completed) by inventory.Load or Parse.
func FromInventory(inv *inventory.Inventory, host string) (*Config, error) {
	h, ok := inv.Host(host)
	if !ok {
		return nil, fmt.Errorf("no host %q in %s (hosts: %s)", host, inv.Path, strings.Join(inv.HostNames(), ", "))
	}
	n := h.NixOS
	if n == nil {
		return nil, fmt.Errorf("host %q has no [host.nixos] table in %s: add one with at least nvidia_open and models_device (see examples/gpuctl.toml)", host, inv.Path)
	}
	if n.NvidiaOpen == nil {
		return nil, fmt.Errorf("host %q: [host.nixos] nvidia_open must be set to true or false", host)
	}
	c := &Config{
		Inventory:    filepath.Base(inv.Path),
		Host:         h.Name,
		Hostname:     n.Hostname,
		Timezone:     n.Timezone,
		Keymap:       n.Keymap,
		Channel:      n.Nixpkgs,
		StateVersion: n.Nixpkgs,
		NvidiaOpen:   *n.NvidiaOpen,
		ModelsDevice: "/dev/disk/by-uuid/" + n.ModelsDevice,
		ModelsFSType: n.ModelsFSType,
		ModelsMount:  n.ModelsMount,
		ModelsDir:    h.ModelsDir,
		Container:    h.Container,
		Image:        n.OllamaImage,
		OllamaPort:   inventory.DefaultOllamaPort,
		SSHPort:      h.SSHPort,
		ExtraPkgs:    n.ExtraPackages,
		WOLIfaces:    n.WOLInterfaces,
		Server:       n.ServerAddress,
		OllamaOnly:   n.OllamaOnlyFromServer,
		User:         n.User,
		UserKeys:     n.SSHAuthorizedKeys,
		Admin:        n.AdminUser,
		AdminKeys:    n.AdminAuthorizedKeys,
		ImageSizeMiB: n.ImageSizeMiB,
	}
	c.SudoCommands = SudoCommands(c.Container)
	c.AdminIsUser = c.Admin == c.User
	if !h.OllamaURL.IsZero() {
		if p, err := strconv.Atoi(h.OllamaURL.Port()); err == nil && p > 0 {
			c.OllamaPort = p
		}
	}
	c.ModelsOptions = MountOptions(c.ModelsFSType)
	if len(c.UserKeys) == 0 {
		keys, err := identityKeys(inv)
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", host, err)
		}
		if len(keys) == 0 {
			return nil, &KeyError{Host: host, StateDir: inv.StateDir}
		}
		c.UserKeys = keys
	}
	if c.AdminIsUser {
		c.UserKeys = appendNew(c.UserKeys, c.AdminKeys...)
		c.AdminKeys = nil
	}
	return c, nil
}

func appendNew(dst []string, add ...string) []string {
	for _, a := range add {
		found := false
		for _, d := range dst {
			found = found || d == a
		}
		if !found {
			dst = append(dst, a)
		}
	}
	return dst
}

// identityKeys reads the public half of gpuctl's identity:
// STATE_DIR/id_ed25519.pub, else FILE.pub for each [ssh] identity_files.
func identityKeys(inv *inventory.Inventory) ([]string, error) {
	cands := []string{filepath.Join(inv.StateDir, "id_ed25519.pub")}
	for _, f := range inv.SSH.IdentityFiles {
		cands = append(cands, f+".pub")
	}
	for _, f := range cands {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", err)
		}
		line := strings.TrimSpace(string(data))
		if strings.ContainsAny(line, "\r\n") {
			line = strings.TrimSpace(line[:strings.IndexAny(line, "\r\n")])
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return nil, fmt.Errorf("%s is not a public key (%v); recreate it with `ssh-keygen -y -f %s > %s`", f, err, strings.TrimSuffix(f, ".pub"), f)
		}
		return []string{line}, nil
	}
	return nil, nil
}

// MountOptions are the model drive's mount options for an fsType. Every set
// has nofail, so a missing or dirty drive never drops boot into emergency
// mode; Ollama's unit RequiresMountsFor it instead.
func MountOptions(fsType string) []string {
	common := []string{"nofail", "x-systemd.device-timeout=10s", "noatime"}
	switch fsType {
	case "ntfs3":
		// In-kernel driver. It refuses a dirty volume (Windows Fast Startup);
		// "force" is deliberately not set.
		return append([]string{"uid=1000", "gid=100", "umask=0022", "windows_names"}, common...)
	case "ntfs-3g":
		// FUSE driver: falls back to read-only on a hibernated volume.
		return append([]string{"uid=1000", "gid=100", "umask=0022", "windows_names"}, common...)
	default: // ext4: ownership is real, no uid= mapping.
		return common
	}
}
