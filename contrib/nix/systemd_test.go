package nix_test

// The systemd units the project ships (contrib/) and the ones the NixOS
// module generates, checked with systemd's own tools: `systemd-analyze
// verify` must be clean, and `systemd-analyze security` must rate gpuctl-serve
// and the idle check at 2.0 or below (OK).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// maxExposure is the highest `systemd-analyze security` exposure accepted for
// gpuctl-serve and the idle check.
const maxExposure = 2.0

// builtGpuctl builds cmd/gpuctl into dir/bin/gpuctl (units must name an
// executable for verify to pass).
func builtGpuctl(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin", "gpuctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gpuctl")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// systemdAnalyze runs systemd-analyze in dir; stdout and stderr apart.
func systemdAnalyze(t *testing.T, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// verifyUnits runs `systemd-analyze verify` on the unit files in dir; any
// message is a failure (verify prints nothing for clean units).
func verifyUnits(t *testing.T, dir string, units ...string) {
	t.Helper()
	out, stderr, err := systemdAnalyze(t, dir, append([]string{"verify"}, units...)...)
	if err != nil || strings.TrimSpace(out+stderr) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s%s", strings.Join(units, " "), err, out, stderr)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+\.[0-9])`)

// exposure runs `systemd-analyze security --offline=true` on unit (a file in
// dir) and returns its overall exposure level.
func exposure(t *testing.T, dir, unit string) float64 {
	t.Helper()
	out, stderr, err := systemdAnalyze(t, dir, "security", "--offline=true", "--no-pager", unit)
	m := exposureRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s%s", unit, err, out, stderr)
	}
	v, _ := strconv.ParseFloat(m[2], 64)
	t.Logf("systemd-analyze security %s: exposure %.1f", m[1], v)
	return v
}

func requireSystemdAnalyze(t *testing.T) {
	t.Helper()
	waketest.RequireProgram(t, "systemd-analyze")
}

// TestContribUnits checks contrib's units as `make install` installs them
// (gpuctl-idle.service as the template gpuctl-idle@.service, the binary's
// path rewritten to where it lies).
func TestContribUnits(t *testing.T) {
	requireSystemdAnalyze(t)
	dir := t.TempDir()
	bin := builtGpuctl(t, dir)
	units := filepath.Join(dir, "units")
	if err := os.Mkdir(units, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		"gpuctl-serve.service": "gpuctl-serve.service",
		"gpuctl-idle.service":  "gpuctl-idle@.service",
		"gpuctl-idle.timer":    "gpuctl-idle@.timer",
	} {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "contrib", src))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("/usr/local/bin/gpuctl")) && strings.HasSuffix(src, ".service") {
			t.Errorf("contrib/%s does not run /usr/local/bin/gpuctl (make install rewrites that path)", src)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/gpuctl"), []byte(bin))
		if err := os.WriteFile(filepath.Join(units, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verifyUnits(t, units, "gpuctl-serve.service", "gpuctl-idle@.service", "gpuctl-idle@.timer", "gpuctl-idle@gaming-pc.service")
	for _, u := range []string{"gpuctl-serve.service", "gpuctl-idle@gaming-pc.service"} {
		if e := exposure(t, units, u); e > maxExposure {
			t.Errorf("contrib's %s: exposure %.1f, want at most %.1f", u, e, maxExposure)
		}
	}
	// The account the units run as comes with them.
	sysusers, err := os.ReadFile(filepath.Join(repoRoot(t), "contrib", "gpuctl.sysusers"))
	if err != nil || !regexp.MustCompile(`(?m)^u gpuctl - ".*" /var/lib/gpuctl /usr/sbin/nologin$`).Match(sysusers) {
		t.Errorf("contrib/gpuctl.sysusers does not create the gpuctl system user: %v\n%s", err, sysusers)
	}
}

// nixUnitText renders a systemd.services/timers entry as NixOS writes the
// unit file: one line per list element, booleans as true/false, empty lists
// as nothing, environment as Environment="K=V".
func nixUnitText(t *testing.T, section string, u unit) string {
	t.Helper()
	var b strings.Builder
	line := func(k string, v any) {
		switch v := v.(type) {
		case nil:
		case []any:
			for _, e := range v {
				fmt.Fprintf(&b, "%s=%v\n", k, e)
			}
		case bool:
			fmt.Fprintf(&b, "%s=%t\n", k, v)
		case json.Number, string:
			fmt.Fprintf(&b, "%s=%v\n", k, v)
		default:
			t.Fatalf("%s=%#v: no rendering", k, v)
		}
	}
	b.WriteString("[Unit]\n")
	line("Description", u.Description)
	for k, vs := range map[string][]string{"After": u.After, "Wants": u.Wants, "Requires": u.Requires, "Documentation": u.Documentation} {
		for _, v := range vs {
			line(k, v)
		}
	}
	fmt.Fprintf(&b, "[%s]\n", section)
	for _, k := range keys(u.Environment) {
		fmt.Fprintf(&b, "Environment=\"%s=%s\"\n", k, u.Environment[k])
	}
	cfg := u.ServiceConfig
	if section == "Timer" {
		cfg = u.TimerConfig
	}
	for _, k := range keys(cfg) {
		line(k, cfg[k])
	}
	return b.String()
}

// TestModuleUnits renders the units the NixOS module generates for
// example.nix (and variants) and checks them like contrib's.
func TestModuleUnits(t *testing.T) {
	requireSystemdAnalyze(t)
	dir := t.TempDir()
	bin := builtGpuctl(t, dir)
	pkg := fmt.Sprintf(`{ services.gpuctl.package = lib.mkForce { outPath = %s; name = "gpuctl"; meta.mainProgram = "gpuctl"; }; }`, nixString(filepath.Dir(filepath.Dir(bin))))
	for _, v := range []struct {
		name, extra string
		rated       bool // exposure must stay within maxExposure
	}{
		{"example", "{ }", true},
		{"wol.raw and port 443", `{ services.gpuctl = { wol.raw = true; settings.serve.listen = lib.mkForce "0.0.0.0:443"; environmentFile = "/run/secrets/gpuctl.env"; }; }`, false},
		{"no key", `{ services.gpuctl.sshKeyFile = lib.mkForce null; }`, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			// Two modules: the package, then the variant.
			r := evalModule(t, pkg+") ("+v.extra)
			units := filepath.Join(t.TempDir(), "units")
			if err := os.Mkdir(units, 0o755); err != nil {
				t.Fatal(err)
			}
			write := func(name, text string) {
				// The store paths of the stub packages, as a real system
				// would have them.
				text = strings.ReplaceAll(text, "/nix/store/00000000000000000000000000000000-coreutils/bin/", "/usr/bin/")
				if err := os.WriteFile(filepath.Join(units, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var names []string
			for _, name := range keys(r.Services) {
				write(name+".service", nixUnitText(t, "Service", r.Services[name]))
				names = append(names, name+".service")
			}
			for _, name := range keys(r.Timers) {
				write(name+".timer", nixUnitText(t, "Timer", r.Timers[name]))
				names = append(names, name+".timer")
			}
			if !slices.Contains(names, "gpuctl-serve.service") || !slices.Contains(names, "gpuctl-idle@.service") {
				t.Fatalf("units %q", names)
			}
			verifyUnits(t, units, append(names, "gpuctl-idle@gaming-pc.service")...)
			for _, u := range []string{"gpuctl-serve.service", "gpuctl-idle@gaming-pc.service"} {
				if e := exposure(t, units, u); v.rated && e > maxExposure {
					t.Errorf("the module's %s: exposure %.1f, want at most %.1f", u, e, maxExposure)
				}
			}
		})
	}
}
