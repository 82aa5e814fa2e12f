package inventory

import (
	"strings"
	"testing"
)

func parseNixOS(t *testing.T, table string) (*Inventory, error) {
	t.Helper()
	return Parse("x.toml", []byte(`
[[host]]
name = "pc"
on_demand = true
mac = "aa:bb:cc:dd:ee:01"
address = "192.0.2.10"

[host.nixos]
nvidia_open = true
`+table), Env{Home: "/home/u", Getenv: func(string) string { return "" }})
}

// TestModelsDeviceCase: udev's by-uuid link is uppercase for an NTFS serial
// and lowercase for an ext4 UUID; the loader writes the device that way and
// says so, at the key's line.
func TestModelsDeviceCase(t *testing.T) {
	cases := []struct{ table, want, note string }{
		{"models_device = \"01da2b3c4d5e6f70\"\n", "01DA2B3C4D5E6F70", `x.toml:10:17: host "pc": nixos.models_device: "01da2b3c4d5e6f70" written as "01DA2B3C4D5E6F70": udev names NTFS serials in uppercase`},
		{"models_fstype = \"ntfs-3g\"\nmodels_device = \"01dA2B3C4D5E6F70\"\n", "01DA2B3C4D5E6F70", "uppercase"},
		{"models_fstype = \"ext4\"\nmodels_device = \"2F6C1A7E-0B7D-4C1E-9A55-3D1F0E6B8C21\"\n", "2f6c1a7e-0b7d-4c1e-9a55-3d1f0e6b8c21", "udev names ext4 UUIDs in lowercase"},
		{"models_device = \"01DA2B3C4D5E6F70\"\n", "01DA2B3C4D5E6F70", ""},
	}
	for _, tc := range cases {
		inv, err := parseNixOS(t, tc.table)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := inv.Host("pc")
		if h.NixOS.ModelsDevice != tc.want {
			t.Errorf("%q: models_device = %q, want %q", tc.table, h.NixOS.ModelsDevice, tc.want)
		}
		var notes []string
		for _, n := range inv.Notes {
			notes = append(notes, n.Error())
		}
		got := strings.Join(notes, "\n")
		if tc.note == "" && got != "" || !strings.Contains(got, tc.note) {
			t.Errorf("%q: notes %q, want %q", tc.table, got, tc.note)
		}
	}
}

func TestImageSize(t *testing.T) {
	inv, err := parseNixOS(t, "models_device = \"01DA2B3C4D5E6F70\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := inv.Host("pc"); h.NixOS.ImageSizeMiB != DefaultImageSizeMiB {
		t.Errorf("image_size_mib default = %d", h.NixOS.ImageSizeMiB)
	}
	_, err = parseNixOS(t, "models_device = \"01DA2B3C4D5E6F70\"\nimage_size_mib = 2048\n")
	if err == nil || !strings.Contains(err.Error(), "x.toml:11:18: ") || !strings.Contains(err.Error(), "2048 MiB is not a usable system image size") {
		t.Errorf("err = %v", err)
	}
}
