package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWOLPasswordFromEnv(t *testing.T) {
	if got := WOLPasswordEnv("gaming-pc.lan"); got != "GPUCTL_WOL_PASSWORD_GAMING_PC_LAN" {
		t.Errorf("WOLPasswordEnv = %q", got)
	}
	const pc = "[[host]]\nname = \"gaming-pc\"\non_demand = true\nmac = \"a8:a1:59:12:34:56\"\naddress = \"192.168.1.50\"\n"
	envWith := func(vars map[string]string) Env {
		return Env{Home: "/home/u", Getenv: func(k string) string { return vars[k] }}
	}

	// A world-readable file (the Nix store's gpuctl.toml is 0444) with the
	// password in the environment: accepted, the password used.
	file := filepath.Join(t.TempDir(), "gpuctl.toml")
	if err := os.WriteFile(file, []byte(pc), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := Load(file, envWith(map[string]string{"GPUCTL_WOL_PASSWORD_GAMING_PC": "01:02:03:04:05:06"}))
	if err != nil {
		t.Fatalf("Load with the password in the environment: %v", err)
	}
	if h, _ := inv.Host("gaming-pc"); string(h.WOLPassword) != "\x01\x02\x03\x04\x05\x06" {
		t.Errorf("WOLPassword = %x", h.WOLPassword)
	}

	for _, tt := range []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"bad value", pc, map[string]string{"GPUCTL_WOL_PASSWORD_GAMING_PC": "0a:0b:0c"}, "$GPUCTL_WOL_PASSWORD_GAMING_PC: the SecureOn password is not 4 or 6 hex bytes"},
		{"both", pc + "wol_password = \"01:02:03:04\"\n", map[string]string{"GPUCTL_WOL_PASSWORD_GAMING_PC": "0a:0b:0c:0d"}, "set both here and in $GPUCTL_WOL_PASSWORD_GAMING_PC"},
		{"needs a mac", "[[host]]\nname = \"gaming-pc\"\naddress = \"192.168.1.50\"\n", map[string]string{"GPUCTL_WOL_PASSWORD_GAMING_PC": "01:02:03:04"}, "a SecureOn password needs a mac"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gpuctl.toml", []byte(tt.file), envWith(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v, want an error saying %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "0a:0b") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}

	// In the file itself, a readable file is still refused.
	if err := os.WriteFile(file, []byte(pc+"wol_password = \"01:02:03:04\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, envWith(nil)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Load of a readable file with wol_password = %v, want the chmod 600 error", err)
	}
}
