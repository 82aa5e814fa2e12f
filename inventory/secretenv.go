package inventory

import (
	"fmt"
	"strconv"
	"strings"
)

// WOLPasswordEnv is the environment variable that gives host's SecureOn
// password instead of wol_password in the file: GPUCTL_WOL_PASSWORD_ and
// the host's name in capitals, '-' and '.' as '_' (gaming-pc:
// GPUCTL_WOL_PASSWORD_GAMING_PC). It is how secrets reach gpuctl when the
// inventory lies where others can read it, such as the Nix store (systemd's
// EnvironmentFile=, the NixOS module's services.gpuctl.environmentFile).
func WOLPasswordEnv(host string) string {
	return "GPUCTL_WOL_PASSWORD_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(host))
}

// secretsFromEnv fills in the SecureOn passwords given in the environment.
func secretsFromEnv(file string, ps *positions, inv *Inventory, env Env) Errors {
	var errs Errors
	for i := range inv.Hosts {
		h := &inv.Hosts[i]
		k := WOLPasswordEnv(h.Name)
		v := env.getenv(k)
		if h.Name == "" || v == "" {
			continue
		}
		key := "host[" + strconv.Itoa(i) + "].wol_password"
		line, col := ps.at(key)
		if len(h.WOLPassword) > 0 {
			errs = append(errs, &ConfigError{File: file, Line: line, Col: col, Key: key,
				Msg: fmt.Sprintf("host %q: wol_password is set both here and in $%s; keep one", h.Name, k)})
			continue
		}
		pw, err := ParseSecureOn(v)
		if err != nil {
			errs = append(errs, &ConfigError{File: file, Key: key, Msg: fmt.Sprintf("host %q: $%s: %v", h.Name, k, err)})
			continue
		}
		h.WOLPassword, h.wolPasswordEnv = pw, true
	}
	return errs
}
