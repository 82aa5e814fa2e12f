package inventory

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// hostCheck validates and completes some keys of one [[host]]; p is the
// host's key path ("host[1]").
type hostCheck struct {
	keys  string
	check func(v *validator, p string, h *Host)
}

// hostChecks run in order: later checks read what earlier ones completed
// (other_os_probe the ssh_port, nixos the ssh_user, container and
// models_dir), and errors keep this order within a line.
var hostChecks = []hostCheck{
	{"name", checkHostName},
	{"mac", checkHostMAC},
	{"address", checkHostAddress},
	{"wake, wake_timeout", checkHostWake},
	{"wol_password, wol_interface, wol_to", checkHostWOL},
	{"ssh_port, ssh_user, host_key", checkHostSSH},
	{"ollama_url, container, models_dir, models", checkHostOllama},
	{"boot_timeout, idle_after, min_uptime", checkHostTimeouts},
	{"other_os_probe", checkHostOtherOSProbe},
	{"min_driver, min_free, gpu_busy_percent", checkHostGPU},
	{"nixos", checkHostNixOS},
	{"checks", checkHostChecks},
}

func (v *validator) checkHost(i int) {
	h := &v.inv.Hosts[i]
	p := fmt.Sprintf("host[%d]", i)
	for _, c := range hostChecks {
		c.check(v, p, h)
	}
}

func checkHostName(v *validator, p string, h *Host) {
	switch {
	case h.Name == "":
		v.fail(p+".name", "every host needs a name")
	case !hostNameRE.MatchString(h.Name):
		v.fail(p+".name", "%q is not a valid host name (lowercase letters, digits, '.', '-', '_'; at most 63)", h.Name)
	default:
		if j, dup := v.names[h.Name]; dup {
			line, _ := v.ps.at(fmt.Sprintf("host[%d].name", j))
			v.fail(p+".name", "duplicate host name %q (first declared on line %d)", h.Name, line)
		} else {
			v.names[h.Name] = h.index
		}
	}
}

func checkHostMAC(v *validator, p string, h *Host) {
	if h.MAC.IsZero() {
		return
	}
	if j, dup := v.macs[h.MAC]; dup {
		v.fail(p+".mac", "%s is also the MAC of host %q", h.MAC, v.inv.Hosts[j].Name)
	} else {
		v.macs[h.MAC] = h.index
	}
}

func checkHostAddress(v *validator, p string, h *Host) {
	if h.Address == "" {
		v.fail(p+".address", "every host needs an address (IP or DNS name) to reach it by")
	} else if _, err := netip.ParseAddr(h.Address); err != nil && !addressRE.MatchString(h.Address) {
		v.fail(p+".address", "%q is neither an IP address nor a host name", h.Address)
	}
}

func checkHostWake(v *validator, p string, h *Host) {
	if h.Wake == nil {
		h.Wake = WakeActions{{WOL: true}}
	} else if len(h.Wake) == 0 {
		v.fail(p+".wake", "an empty list leaves no way to wake the host: remove the key for the default [\"wol\"]")
	}
	for _, a := range h.Wake {
		if err := a.check(); err != nil {
			v.fail(p+".wake", "%v", err)
		}
	}
	if h.WakeTimeout == 0 {
		h.WakeTimeout = DefaultWakeTimeout
	} else if h.WakeTimeout < 0 {
		v.fail(p+".wake_timeout", "must be positive")
	}
	if h.OnDemand && h.Wake.HasWOL() && h.MAC.IsZero() {
		v.fail(p, "an on_demand host woken by Wake-on-LAN needs a mac (or set wake to a command)")
	}
}

func checkHostWOL(v *validator, p string, h *Host) {
	if len(h.WOLPassword) > 0 && h.MAC.IsZero() {
		v.fail(p+".wol_password", "a SecureOn password needs a mac")
	}
	if h.WOLInterface != "" && !ifaceRE.MatchString(h.WOLInterface) {
		v.fail(p+".wol_interface", "%q is not a network interface name", h.WOLInterface)
	}
	for _, t := range h.WOLTo {
		if _, ok := t.Addr(); !ok {
			v.fail(p+".wol_to", "%q: give an IP address, not a name (a sleeping host answers no DNS)", t.String())
		}
	}
}

func checkHostSSH(v *validator, p string, h *Host) {
	if h.SSHPort == 0 {
		h.SSHPort = DefaultSSHPort
	} else if h.SSHPort < 1 || h.SSHPort > 65535 {
		v.fail(p+".ssh_port", "%d is not a port number", h.SSHPort)
	}
	if h.SSHUser == "" {
		h.SSHUser = v.inv.SSH.User
	} else if !userRE.MatchString(h.SSHUser) {
		v.fail(p+".ssh_user", "%q is not a valid user name", h.SSHUser)
	}
	if h.HostKey != "" {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKey)); err != nil {
			v.fail(p+".host_key", "not a public key in authorized_keys form (\"ssh-ed25519 AAAA…\"): %v", err)
		}
	}
}

func checkHostOllama(v *validator, p string, h *Host) {
	if h.OllamaURL.IsZero() && h.Address != "" {
		u, err := ParseURL("http://" + HostPort{Host: h.Address, Port: DefaultOllamaPort}.String())
		if err == nil {
			h.OllamaURL = u
		}
	}
	if h.Container == "" {
		h.Container = DefaultContainer
	} else if !containerRE.MatchString(h.Container) {
		v.fail(p+".container", "%q is not a valid container name", h.Container)
	}
	if h.ModelsDir == "" {
		h.ModelsDir = DefaultModelsDir
	} else if !path.IsAbs(h.ModelsDir) || path.Clean(h.ModelsDir) != h.ModelsDir || strings.ContainsAny(h.ModelsDir, "\x00\n\r") {
		v.fail(p+".models_dir", "%q must be a clean absolute path", h.ModelsDir)
	}
	seen := map[ModelName]bool{}
	for _, m := range h.Models {
		n := m.Normalize()
		if seen[n] {
			v.fail(p+".models", "%q is declared twice", m)
		}
		seen[n] = true
	}
}

func checkHostTimeouts(v *validator, p string, h *Host) {
	v.duration(p+".boot_timeout", []string{"host", "boot_timeout"}, &h.BootTimeout, DefaultBootTimeout)
	if h.BootTimeout < MinBootTimeout {
		v.fail(p+".boot_timeout", "%s is too short: hardware needs at least %s to boot", h.BootTimeout, MinBootTimeout)
	}
	v.duration(p+".idle_after", []string{"host", "idle_after"}, &h.IdleAfter, DefaultIdleAfter)
	v.duration(p+".min_uptime", []string{"host", "min_uptime"}, &h.MinUptime, DefaultMinUptime)
}

func checkHostOtherOSProbe(v *validator, p string, h *Host) {
	switch {
	case h.OtherOSProbe == 0:
	case h.OtherOSProbe < 1 || h.OtherOSProbe > 65535:
		v.fail(p+".other_os_probe", "%d is not a port number", h.OtherOSProbe)
	case h.OtherOSProbe == h.SSHPort:
		v.fail(p+".other_os_probe", "%d is the SSH port; pick a port only the other OS answers on (such as 3389)", h.OtherOSProbe)
	}
}

func checkHostGPU(v *validator, p string, h *Host) {
	if h.MinDriver != "" && !driverRE.MatchString(h.MinDriver) {
		v.fail(p+".min_driver", "%q is not a driver version such as \"550.54\"", h.MinDriver)
	}
	if h.MinFree == 0 {
		h.MinFree = DefaultMinFreeSpace
	}
	if h.GPUBusyPercent == 0 {
		h.GPUBusyPercent = DefaultGPUBusy
	} else if h.GPUBusyPercent < 1 || h.GPUBusyPercent > 100 {
		v.fail(p+".gpu_busy_percent", "%d is not a percentage from 1 to 100", h.GPUBusyPercent)
	}
}

func checkHostNixOS(v *validator, p string, h *Host) {
	if h.NixOS != nil {
		v.checkNixOS(p+".nixos", h)
	}
}

func checkHostChecks(v *validator, p string, h *Host) {
	if _, set := v.ps.pos[p+".checks"]; set && len(h.Checks) == 0 {
		v.fail(p+".checks", "an empty list checks nothing; leave checks out for all of %s", strings.Join(CheckNames, ", "))
	}
	seenCheck := map[string]bool{}
	for _, c := range h.Checks {
		switch {
		case !slices.Contains(CheckNames, c):
			v.fail(p+".checks", "%q is not a check%s (checks: %s)", c, suggest(c, CheckNames), strings.Join(CheckNames, ", "))
		case seenCheck[c]:
			v.fail(p+".checks", "%q is listed twice", c)
		}
		seenCheck[c] = true
	}
	if h.OnDemand && len(h.Checks) > 0 {
		if !h.HasCheck("ollama") {
			v.fail(p+".checks", "an on_demand host needs the \"ollama\" check: wake and routing wait for Ollama to answer")
		}
		if len(h.Checks) == 1 && h.Checks[0] == "ollama" {
			v.fail(p+".checks", "an on_demand host needs at least one SSH check besides \"ollama\": gpuctl reaches it over SSH to check it and power it off")
		}
	}
}
