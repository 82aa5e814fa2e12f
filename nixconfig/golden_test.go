package nixconfig

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/ollamalive/gpuctl/inventory"
)

var update = flag.Bool("update", false, "rewrite the expected files in testdata/*.txtar")

// sepName is the txtar file that separates the input (gpuctl.toml and files
// under state/) from the expected output: caddy's input / ---------- /
// expected layout. The expected part is every generated file, or a file
// named "error" holding a substring of the expected error.
const sepName = "----------"

type golden struct {
	path    string
	archive *txtar.Archive
	input   []txtar.File
	want    []txtar.File
}

func readGoldens(t *testing.T) []*golden {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	var out []*golden
	for _, p := range paths {
		a, err := txtar.ParseFile(p)
		if err != nil {
			t.Fatal(err)
		}
		g := &golden{path: p, archive: a}
		seen := false
		for _, f := range a.Files {
			switch {
			case f.Name == sepName:
				seen = true
			case seen:
				g.want = append(g.want, f)
			default:
				g.input = append(g.input, f)
			}
		}
		if !seen {
			t.Fatalf("%s: no %q separator file", p, sepName)
		}
		out = append(out, g)
	}
	return out
}

// generate loads the golden's inventory from a temporary directory (state
// dir DIR/state) and renders the gaming-pc host.
func (g *golden) generate(t *testing.T) (*Config, []File, error) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range g.input {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory.Load(filepath.Join(dir, "gpuctl.toml"), inventory.Env{Home: dir, Getenv: func(k string) string {
		if k == "XDG_STATE_HOME" {
			return dir
		}
		return ""
	}})
	if err != nil {
		return nil, nil, &pathError{err: err, dir: dir}
	}
	inv.StateDir = filepath.Join(dir, "state")
	c, err := FromInventory(inv, "gaming-pc")
	if err != nil {
		return nil, nil, &pathError{err: err, dir: dir}
	}
	files, err := Render(c)
	return c, files, err
}

// pathError replaces the temporary directory with a fixed name, so error
// goldens do not depend on it.
type pathError struct {
	err error
	dir string
}

func (e *pathError) Error() string {
	s := strings.ReplaceAll(e.err.Error(), filepath.Join(e.dir, "state"), "STATE")
	return strings.ReplaceAll(s, e.dir, "DIR")
}

func TestGolden(t *testing.T) {
	gs := readGoldens(t)
	if len(gs) < 6 {
		t.Fatalf("want at least 6 golden inventories, have %d", len(gs))
	}
	for _, g := range gs {
		t.Run(strings.TrimSuffix(filepath.Base(g.path), ".txtar"), func(t *testing.T) {
			_, files, err := g.generate(t)
			wantErr := len(g.want) == 1 && g.want[0].Name == "error"
			if *update {
				var head []txtar.File
				for _, f := range g.archive.Files {
					head = append(head, f)
					if f.Name == sepName {
						break
					}
				}
				if wantErr {
					head = append(head, g.want[0]) // a hand-written substring
				} else if err != nil {
					t.Fatalf("generate: %v", err)
				} else {
					for _, f := range files {
						head = append(head, txtar.File{Name: f.Path, Data: f.Data})
					}
				}
				g.archive.Files = head
				if werr := os.WriteFile(g.path, txtar.Format(g.archive), 0o644); werr != nil {
					t.Fatal(werr)
				}
				return
			}
			if wantErr {
				if err == nil {
					t.Fatalf("generated without error; want an error containing %q", g.want[0].Data)
				}
				if want := strings.TrimSpace(string(g.want[0].Data)); !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q\ndoes not contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("generate: %v", err)
			}
			if len(files) != len(g.want) {
				t.Fatalf("generated %d files, golden has %d (run go test -update)", len(files), len(g.want))
			}
			for i, f := range files {
				w := g.want[i]
				if f.Path != w.Name {
					t.Errorf("file %d is %s, golden has %s", i, f.Path, w.Name)
					continue
				}
				if !bytes.Equal(f.Data, w.Data) {
					t.Errorf("%s differs from the golden (go test -update to accept):\n%s", f.Path,
						UnifiedDiff("golden/"+f.Path, "generated/"+f.Path, w.Data, f.Data))
				}
			}
			// Rendering is deterministic.
			_, again, err := g.generate(t)
			if err != nil {
				t.Fatal(err)
			}
			for i := range files {
				if !bytes.Equal(files[i].Data, again[i].Data) {
					t.Errorf("%s: two renders differ", files[i].Path)
				}
			}
		})
	}
}

// goldenOutputs returns the golden inventories that generate, by name.
func goldenOutputs(t *testing.T) map[string]*golden {
	out := map[string]*golden{}
	for _, g := range readGoldens(t) {
		if len(g.want) > 1 {
			out[strings.TrimSuffix(filepath.Base(g.path), ".txtar")] = g
		}
	}
	return out
}
