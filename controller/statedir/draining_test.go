package statedir

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDrainingMarker(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := Draining(dir, "pc"); ok || err != nil {
		t.Fatalf("no marker: %v %v", ok, err)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	clear, err := MarkDraining(dir, "pc", at)
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := Draining(dir, "pc")
	if !ok || err != nil || d.PID != os.Getpid() || !d.Started.Equal(at) || d.Host != "pc" {
		t.Fatalf("marker: %+v %v %v", d, ok, err)
	}
	if _, ok, _ := Draining(dir, "other"); ok {
		t.Error("another host's marker seen")
	}
	ents, _ := os.ReadDir(filepath.Dir(DrainingPath(dir, "pc")))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := clear(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := Draining(dir, "pc"); ok {
		t.Error("marker still there after clear")
	}
	if err := clear(); err != nil {
		t.Errorf("second clear: %v", err)
	}
}

func TestDrainingMarkerOfDeadOrDamaged(t *testing.T) {
	dir := t.TempDir()
	old := Alive
	t.Cleanup(func() { Alive = old })
	Alive = func(pid int) bool { return pid == 77 }
	p := DrainingPath(dir, "pc")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"host":"pc","pid":77}`)
	if _, ok, _ := Draining(dir, "pc"); !ok {
		t.Error("live process's marker ignored")
	}
	write(`{"host":"pc","pid":78}`)
	if _, ok, _ := Draining(dir, "pc"); ok {
		t.Error("dead process's marker honoured")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("dead process's marker not removed: %v", err)
	}
	write(`garbage`)
	if _, ok, _ := Draining(dir, "pc"); !ok {
		t.Error("a fresh damaged marker must hold requests (busy is safe)")
	}
	old2 := time.Now().Add(-StaleDrain - time.Minute)
	if err := os.Chtimes(p, old2, old2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := Draining(dir, "pc"); ok {
		t.Error("stale damaged marker honoured")
	}
	// clear leaves another process's marker alone.
	clear, err := MarkDraining(dir, "pc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(`{"host":"pc","pid":77}`)
	if err := clear(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := Draining(dir, "pc"); !ok {
		t.Error("clear removed another process's marker")
	}
}
