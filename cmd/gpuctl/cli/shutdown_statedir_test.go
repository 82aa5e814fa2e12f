package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ollamalive/gpuctl/controller/idle"
)

// fullDir mounts a tiny tmpfs on a temporary directory and fills it: a
// full state_dir, as on a full disk. It needs root (CI runs as root).
func fullDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("a full state_dir needs root to mount a tmpfs; CI runs as root")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("gpuctl-full", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	return dir
}

// Item 5: `shutdown --if-idle` (from cron) with a state_dir it cannot
// write, or one that is full, exits 1 with a message naming the path, and
// never prints a stray line on stdout (cron mails stdout).
func TestShutdownReportsUnusableStateDir(t *testing.T) {
	base := t.TempDir()
	cfg := filepath.Join(base, "gpuctl.toml")
	toml := "[[host]]\nname = \"server\"\naddress = \"127.0.0.1\"\n" +
		"[[host]]\nname = \"pc\"\non_demand = true\nmac = \"aa:bb:cc:dd:ee:01\"\naddress = \"127.0.0.1\"\nssh_port = 1\n"
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(base, "state-is-a-file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]func() string{
		"unwritable": func() string { return notDir },
		"full":       func() string { return fullDir(t) },
	} {
		t.Run(name, func(t *testing.T) {
			state := dir()
			var stdout, stderr bytes.Buffer
			env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
				switch k {
				case "GPUCTL_STATE_DIR":
					return state
				case "HOME":
					return base
				}
				return ""
			}}
			code := Run(t.Context(), env, []string{"gpuctl", "--config", cfg, "shutdown", "pc", "--if-idle"})
			if code != ExitFailure {
				t.Errorf("exit %d, want %d", code, ExitFailure)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if !strings.Contains(stderr.String(), state) {
				t.Errorf("stderr %q does not name the state_dir %s", stderr.String(), state)
			}
		})
	}
}

// A run that failed before checking anything has no report to print: not
// even the empty ":  ()" line cron would mail.
func TestNoReportWhenNothingChecked(t *testing.T) {
	var b bytes.Buffer
	writeIdleReport(&b, idle.Report{}, true)
	if b.Len() != 0 {
		t.Errorf("report of nothing: %q", b.String())
	}
}
