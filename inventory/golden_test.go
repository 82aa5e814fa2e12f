package inventory

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected messages in testdata/bad")

const sep = "----------\n"

// TestBadInventories loads every broken inventory in testdata/bad. Each file
// is the TOML input, a line of dashes, then the exact error expected, with
// the file named "gpuctl.toml" (caddy's golden-file layout).
func TestBadInventories(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.txt")
	if err != nil || len(files) < 20 {
		t.Fatalf("want at least 20 broken inventories, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := bytes.Cut(raw, []byte(sep))
			if !ok {
				t.Fatalf("%s: no %q separator", f, strings.TrimSpace(sep))
			}
			_, err = Parse("gpuctl.toml", input, Env{Home: "/home/u", Getenv: func(string) string { return "" }})
			if err == nil {
				t.Fatalf("inventory accepted; want an error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError: %v", err, err)
			}
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(f, append(append(input, sep...), got...), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != string(want) {
				t.Errorf("error mismatch\ngot:  %s\nwant: %s", got, want)
			}
		})
	}
}
