package statedir

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile replaces path's contents with data atomically, the one way
// gpuctl writes a file: a temporary file in the same directory (a unique
// name, so concurrent writers never share one), written, given perm, synced,
// then renamed over path. A reader never sees half a file and a crash never
// leaves one. Missing directories are created with dirPerm.
func WriteFile(path string, data []byte, perm, dirPerm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Write replaces a state file's contents with b atomically (WriteFile, 0600
// in 0700 directories). It refuses (with an *OwnerError) to write into a
// directory another user owns (see CheckOwner).
func Write(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := CheckOwner(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w (check state_dir's permissions)", dir, err)
	}
	return WriteFile(path, b, 0o600, 0o700)
}

// WriteJSON writes v as indented JSON with a final newline, atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return Write(path, append(b, '\n'))
}

// ReadJSON decodes path into v. A missing file returns an error for which
// errors.Is(err, fs.ErrNotExist) holds.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w (delete it to start afresh)", path, err)
	}
	return nil
}

// MinFree is the room CheckWritable wants left in the state directory:
// enough for every file gpuctl keeps there, many times over.
const MinFree = 1 << 20

// CheckWritable reports, naming dir and what to do, when the state
// directory cannot be created or written (permissions, a read-only
// filesystem, a file in its place) or has less than MinFree bytes free:
// commands that record state (idle shutdown from cron) must say so rather
// than go on without it.
func CheckWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir %s cannot be created: %w (set state_dir or GPUCTL_STATE_DIR to a writable directory)", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		if free := uint64(st.Bavail) * uint64(st.Bsize); free < MinFree {
			return fmt.Errorf("state_dir %s is full (%d bytes free): free some space on its filesystem", dir, free)
		}
	}
	probe := filepath.Join(dir, writeProbeName)
	if err := Write(probe, []byte("gpuctl write probe\n")); err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w (check its permissions and free space)", dir, err)
	}
	if err := os.Remove(probe); err != nil {
		return fmt.Errorf("state_dir %s: remove %s: %w", dir, probe, err)
	}
	return nil
}
