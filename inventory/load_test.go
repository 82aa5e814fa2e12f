package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testEnv = Env{Home: "/home/u", Getenv: func(k string) string { return "" }}

func TestExampleInventoryLoads(t *testing.T) {
	inv, err := Load("../examples/gpuctl.toml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	pc, ok := inv.Host("gaming-pc")
	if !ok || !pc.OnDemand || pc.MAC.String() != "a8:a1:59:12:34:56" || pc.VRAM != 24<<30 {
		t.Fatalf("gaming-pc = %+v", pc)
	}
	if inv.Serve.DefaultHost != "server" || inv.Serve.Listen.String() != "127.0.0.1:11435" {
		t.Fatalf("serve = %+v", inv.Serve)
	}
	if r := inv.MatchRoute("llama3.3:70b-instruct-q3_K_M"); r == nil || r.Host != "gaming-pc" || r.Fallback != "server" {
		t.Fatalf("route = %+v", r)
	}
	if r := inv.MatchRoute("llama3.2:3b"); r != nil {
		t.Fatalf("light model routed to %+v", r)
	}
}

func TestDefaults(t *testing.T) {
	inv, err := Parse("x.toml", []byte(`
[[host]]
name = "server"
address = "127.0.0.1"

[[host]]
name = "pc"
on_demand = true
mac = "aa:bb:cc:dd:ee:01"
address = "192.0.2.10"
`), Env{Home: "/home/u", Getenv: func(k string) string {
		if k == "XDG_STATE_HOME" {
			return "/xdg/state"
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	pc, _ := inv.Host("pc")
	checks := map[string][2]string{
		"state_dir":       {inv.StateDir, "/xdg/state/gpuctl"},
		"ssh.user":        {pc.SSHUser, "gpuctl"},
		"ssh_addr":        {pc.SSHAddr(), "192.0.2.10:22"},
		"ollama_url":      {pc.OllamaURL.String(), "http://192.0.2.10:11434"},
		"container":       {pc.Container, "ollama"},
		"models_dir":      {pc.ModelsDir, "/mnt/models/ollama"},
		"boot_timeout":    {pc.BootTimeout.String(), "3m0s"},
		"idle_after":      {pc.IdleAfter.String(), "30m0s"},
		"listen":          {inv.Serve.Listen.String(), "127.0.0.1:11435"},
		"default_host":    {inv.Serve.DefaultHost, "server"},
		"page_actions":    {strconv.FormatBool(inv.Serve.PageActions), "false"},
		"known_hosts":     {inv.SSH.KnownHosts[0], "/home/u/.ssh/known_hosts"},
		"connect_timeout": {inv.SSH.ConnectTimeout.String(), "5s"},
	}
	for k, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %q, want %q", k, v[0], v[1])
		}
	}
	root, err := Parse("x.toml", []byte("[[host]]\nname = \"s\"\naddress = \"127.0.0.1\"\n"), Env{Root: true, Getenv: func(string) string { return "" }})
	if err != nil || root.StateDir != "/var/lib/gpuctl" {
		t.Fatalf("root state dir = %q, %v", root.StateDir, err)
	}
}

func TestAllProblemsReportedInLineOrder(t *testing.T) {
	_, err := Parse("x.toml", []byte(`
[[host]]
name = "pc"
on_demand = true
address = "192.0.2.10"

[[route]]
models = ["m"]
host = "nope"
`), testEnv)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	if !strings.HasPrefix(es[0].Error(), "x.toml:2:") || !strings.HasPrefix(es[1].Error(), "x.toml:9:") {
		t.Fatalf("problems not located in order:\n%v", err)
	}
}

func TestWorldReadableSecretRefused(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "gpuctl.toml")
	body := "[[host]]\nname = \"pc\"\non_demand = true\nmac = \"aa:bb:cc:dd:ee:01\"\naddress = \"192.0.2.10\"\nwol_password = \"01:02:03:04\"\n"
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(f, testEnv)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+f) {
		t.Fatalf("want a chmod hint, got %v", err)
	}
	if strings.Contains(err.Error(), "01:02") {
		t.Fatalf("error leaks the secret: %v", err)
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f, testEnv); err != nil {
		t.Fatalf("0600 file refused: %v", err)
	}
}

func TestFindSearchOrder(t *testing.T) {
	exists := func(set ...string) func(string) bool {
		return func(p string) bool {
			for _, s := range set {
				if s == p {
					return true
				}
			}
			return false
		}
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		name, explicit, gpuctlConfig, xdg string
		present                           []string
		want, source                      string
	}{
		{"flag wins", "/x.toml", "/env.toml", "", nil, "/x.toml", "--config"},
		{"env next", "", "/env.toml", "", nil, "/env.toml", "$GPUCTL_CONFIG"},
		{"xdg", "", "", "/xdg", []string{"/xdg/gpuctl/gpuctl.toml", "/etc/gpuctl/gpuctl.toml"}, "/xdg/gpuctl/gpuctl.toml", "$XDG_CONFIG_HOME"},
		{"home config", "", "", "", []string{"/home/u/.config/gpuctl/gpuctl.toml"}, "/home/u/.config/gpuctl/gpuctl.toml", "~/.config"},
		{"etc last", "", "", "", []string{"/etc/gpuctl/gpuctl.toml"}, "/etc/gpuctl/gpuctl.toml", "/etc"},
	}
	for _, c := range cases {
		env = map[string]string{"GPUCTL_CONFIG": c.gpuctlConfig, "XDG_CONFIG_HOME": c.xdg}
		got, src, err := Find(Lookup{Getenv: getenv, Exists: exists(c.present...), Home: "/home/u", Explicit: c.explicit})
		if err != nil || got != c.want || src != c.source {
			t.Errorf("%s: Find = %q, %q, %v; want %q, %q", c.name, got, src, err, c.want, c.source)
		}
	}
	env = map[string]string{}
	_, _, err := Find(Lookup{Getenv: getenv, Exists: exists(), Home: "/home/u"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "/etc/gpuctl/gpuctl.toml") {
		t.Fatalf("not found error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.txt")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		in, _, _ := strings.Cut(string(b), sep)
		f.Add(in)
	}
	if b, err := os.ReadFile("../examples/gpuctl.toml"); err == nil {
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, src string) {
		inv, err := Parse("f.toml", []byte(src), testEnv)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, h := range inv.Hosts {
			if h.Name == "" || h.Address == "" || (h.OnDemand && h.MAC.IsZero()) || h.BootTimeout < MinBootTimeout {
				t.Fatalf("invalid host accepted: %+v", h)
			}
		}
	})
}

// [serve] header_timeout (a cold load of a big model from a slow drive can
// take minutes) and debug_listen (pprof, loopback only).
func TestServeHeaderTimeoutAndDebugListen(t *testing.T) {
	base := "[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\n[serve]\n"
	inv, err := Parse("x.toml", []byte(base), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Serve.HeaderTimeout != DefaultHeaderTimeout || DefaultHeaderTimeout < Duration(10*time.Minute) {
		t.Errorf("default header_timeout = %v, want a generous %v", inv.Serve.HeaderTimeout, DefaultHeaderTimeout)
	}
	if inv.Serve.DebugListen != (HostPort{}) {
		t.Errorf("debug_listen on by default: %v", inv.Serve.DebugListen)
	}
	inv, err = Parse("x.toml", []byte(base+"header_timeout = \"25m\"\ndebug_listen = \"127.0.0.1:6060\"\n"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Serve.HeaderTimeout != Duration(25*time.Minute) || inv.Serve.DebugListen.String() != "127.0.0.1:6060" {
		t.Errorf("serve = %+v", inv.Serve)
	}
	for _, ok := range []string{"[::1]:6060", "localhost:6060", "127.0.0.2:6060"} {
		if _, err := Parse("x.toml", []byte(base+"debug_listen = \""+ok+"\"\n"), testEnv); err != nil {
			t.Errorf("debug_listen %s refused: %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"debug_listen = \"0.0.0.0:6060\"":    "x.toml:5:",
		"debug_listen = \"192.0.2.1:6060\"":  "loopback",
		"debug_listen = \"[::]:6060\"":       "loopback",
		"debug_listen = \"gpu.lan:6060\"":    "loopback",
		"header_timeout = \"0s\"":            "header_timeout",
		"debug_listen = \"127.0.0.1:11435\"": "serve.listen",
		"header_timeout = \"10\"":            "header_timeout",
	} {
		_, err := Parse("x.toml", []byte(base+bad+"\n"), testEnv)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", bad, err, want)
		}
	}
}
