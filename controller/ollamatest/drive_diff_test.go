package ollamatest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/sshexec"
)

// TestDriveRunnerMatchesCoreutils compares the fake drive with the real
// GNU coreutils on this machine, command by command, for the argv gpuctl
// sends (hostcmd's templates): the same stdout for stat and cat, the same
// df header and a row hostcmd.ParseDF reads, and the same exit status and
// error text for missing paths. The fake maps Remote onto Local; here both
// are one directory, so the paths are the same on both sides.
func TestDriveRunnerMatchesCoreutils(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "blobs", "sha256-a b"), []byte("12345"), 0o644)
	os.WriteFile(filepath.Join(dir, "manifest"), []byte(`{"layers":[]}`), 0o644)
	fake := &DriveRunner{Remote: dir, Local: dir, Avail: 1 << 30}
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name string
		cmd  sshexec.Cmd
		same bool // stdout byte for byte (df's numbers differ: the fake's Avail is set)
	}{
		{"stat", hostcmd.StatCmd(filepath.Join(dir, "blobs", "sha256-a b"), filepath.Join(dir, "manifest")), true},
		{"stat-missing", hostcmd.StatCmd(filepath.Join(dir, "manifest"), missing), true},
		{"cat", hostcmd.CatCmd(filepath.Join(dir, "manifest")), true},
		{"cat-missing", hostcmd.CatCmd(missing), true},
		{"df", hostcmd.DFCmd(dir), false},
		{"df-missing", hostcmd.DFCmd(missing), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			real := exec.Command(tc.cmd.Args[0], tc.cmd.Args[1:]...)
			real.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
			real.Stdout, real.Stderr = &stdout, &stderr
			exit := 0
			if err := real.Run(); err != nil {
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatal(err)
				}
				exit = ee.ExitCode()
			}
			got, err := fake.Run(context.Background(), tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got.ExitStatus != exit {
				t.Errorf("exit: fake %d, coreutils %d", got.ExitStatus, exit)
			}
			if string(got.Stderr) != stderr.String() {
				t.Errorf("stderr:\nfake      %q\ncoreutils %q", got.Stderr, stderr.String())
			}
			if tc.same {
				if string(got.Stdout) != stdout.String() {
					t.Errorf("stdout:\nfake      %q\ncoreutils %q", got.Stdout, stdout.String())
				}
				return
			}
			fakeHdr, _, _ := strings.Cut(string(got.Stdout), "\n")
			realHdr, _, _ := strings.Cut(stdout.String(), "\n")
			if strings.Join(strings.Fields(fakeHdr), " ") != strings.Join(strings.Fields(realHdr), " ") {
				t.Errorf("df header: fake %q, coreutils %q", fakeHdr, realHdr)
			}
			for who, out := range map[string][]byte{"fake": got.Stdout, "coreutils": stdout.Bytes()} {
				if row, err := hostcmd.ParseDF(out); err != nil || row.Avail <= 0 || row.Size < row.Avail {
					t.Errorf("%s df: %+v, %v\n%s", who, row, err, out)
				}
			}
		})
	}
}
