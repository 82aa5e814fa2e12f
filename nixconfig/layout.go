package nixconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

var regexpDiskSize = regexp.MustCompile(`diskSize\s*=`)

// LayoutName is the file in the output directory that records the layout
// of the sticks flashed from it. `gpuctl nixos generate` writes it once and
// refuses to change it; `gpuctl nixos check` compares the configuration
// against it.
const LayoutName = "stick-layout.json"

// ESPStartMiB and ESPEndMiB are where make-disk-image's "efi" partition
// table puts the ESP (8 MiB alignment, 256 MiB boot size by default).
const (
	ESPStartMiB = 8
	ESPEndMiB   = 256
)

// Layout is the partition layout every stick flashed from a directory has.
type Layout struct {
	// ImageSizeMiB is the raw-efi image's size: ESP and root partition,
	// with the image's backup GPT in its last 33 sectors.
	ImageSizeMiB int `json:"image_size_mib"`
	// PersistStartMiB is where PERSIST (partition 3) starts: right after the
	// image, so a reflash of ImageSizeMiB never reaches it.
	PersistStartMiB int `json:"persist_start_mib"`
}

// PersistStartSector is PERSIST's first 512-byte sector.
func (l Layout) PersistStartSector() int64 { return int64(l.PersistStartMiB) * 2048 }

// LayoutFor is the layout a Config produces.
func LayoutFor(c *Config) Layout {
	return Layout{ImageSizeMiB: c.ImageSizeMiB, PersistStartMiB: c.ImageSizeMiB}
}

// ReadLayout reads DIR's recorded layout; ok is false when none is.
func ReadLayout(dir string) (l Layout, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, LayoutName))
	if errors.Is(err, fs.ErrNotExist) {
		return l, false, nil
	}
	if err != nil {
		return l, false, err
	}
	if err := json.Unmarshal(data, &l); err != nil || l.ImageSizeMiB <= 0 {
		return l, false, fmt.Errorf("%s: not a stick layout (%v); restore it from git, the sticks you flashed depend on it", filepath.Join(dir, LayoutName), err)
	}
	return l, true, nil
}

func writeLayout(dir string, l Layout) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, LayoutName), append(data, '\n'))
}

// LayoutChangedError is returned by Write when the inventory's image size
// differs from the layout recorded for the sticks already flashed: the new
// image would end inside (or leave a gap before) their PERSIST partition.
type LayoutChangedError struct {
	Dir       string
	Recorded  Layout
	Requested Layout
}

func (e *LayoutChangedError) Error() string {
	return fmt.Sprintf("%s: image_size_mib %d differs from the %d MiB recorded in %s for the sticks already flashed from it: "+
		"reflashing would overwrite the start of their PERSIST partition (host keys, Docker state). "+
		"Set image_size_mib = %d in [host.nixos] again, or, to re-partition every stick from scratch (first flash, PERSIST lost), run again with --new-stick-layout",
		e.Dir, e.Requested.ImageSizeMiB, e.Recorded.ImageSizeMiB, LayoutName, e.Recorded.ImageSizeMiB)
}

// checkLayout compares the configured image size with the recorded layout.
func (c *checker) checkLayout(sizeMiB int) {
	l, ok, err := ReadLayout(c.dir)
	if err != nil {
		c.add(LayoutName, 0, SevError, "layout", "%v", err)
		return
	}
	if !ok {
		f, line := c.locate(regexpDiskSize, "configuration.nix")
		c.add(f, line, SevWarning, "layout", "no %s records the layout of the sticks flashed from this directory; `gpuctl nixos generate` writes it: keep it with the flake", LayoutName)
		return
	}
	if sizeMiB != l.ImageSizeMiB {
		f, line := c.locate(regexpDiskSize, "configuration.nix")
		c.add(f, line, SevError, "layout", "image.modules.raw-efi.virtualisation.diskSize is %d MiB but the sticks flashed from this directory have PERSIST at %d MiB (%s): "+
			"a reflash would overwrite it; keep %d, or re-partition every stick (first flash)", sizeMiB, l.PersistStartMiB, LayoutName, l.ImageSizeMiB)
	}
}
