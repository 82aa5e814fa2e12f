package statedir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestWriteJSONRoundTripAndModes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "idle", "pc.json")
	if err := WriteJSON(p, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := ReadJSON(p, &got); err != nil || got["n"] != 1 {
		t.Fatalf("ReadJSON = %v, %v", got, err)
	}
	st, _ := os.Stat(p)
	dst, _ := os.Stat(filepath.Dir(p))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("modes %v %v, want 0600 file in 0700 dir", st.Mode().Perm(), dst.Mode().Perm())
	}
	if b, _ := os.ReadFile(p); !strings.HasSuffix(string(b), "}\n") {
		t.Fatalf("no final newline: %q", b)
	}
}

func TestReadJSONMissingAndBroken(t *testing.T) {
	dir := t.TempDir()
	var v any
	if err := ReadJSON(filepath.Join(dir, "none.json"), &v); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(dir, "broken.json")
	os.WriteFile(p, []byte("{"), 0o600)
	if err := ReadJSON(p, &v); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("broken file error should name it: %v", err)
	}
}

// Concurrent writers never leave a torn file or a temporary behind.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.json")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if err := WriteJSON(p, map[string]string{"writer": strings.Repeat("x", 1000+i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var v map[string]string
	if err := ReadJSON(p, &v); err != nil || len(v["writer"]) < 1000 {
		t.Fatalf("torn file: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestCheckWritable(t *testing.T) {
	dir := t.TempDir()
	if err := CheckWritable(filepath.Join(dir, "state")); err != nil {
		t.Fatalf("a fresh directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", ".write-probe")); !os.IsNotExist(err) {
		t.Errorf("probe left behind: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckWritable(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("a file in the directory's place: %v, want an error naming it", err)
	}
}
