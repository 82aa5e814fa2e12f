package statedir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// asUID makes the owner rule see the process as uid (the test does not need
// to change its real uid: the rule compares owners with geteuid).
func asUID(t *testing.T, uid int) {
	t.Helper()
	old := geteuid
	geteuid = func() int { return uid }
	t.Cleanup(func() { geteuid = old })
}

func TestCheckOwner(t *testing.T) {
	self := os.Geteuid()
	root := t.TempDir() // owned by the test's own user
	asUID(t, self)

	// Ours, and missing below ours: fine.
	if err := CheckOwner(root); err != nil {
		t.Errorf("own directory: %v", err)
	}
	if err := CheckOwner(filepath.Join(root, "state", "locks")); err != nil {
		t.Errorf("missing directory below an own one: %v", err)
	}

	// Another user's state directory (uid 4242, as the service account):
	// the directory, and anything to be created below it, is refused.
	const other = 4242
	state := filepath.Join(root, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, other, other); err != nil {
		t.Skipf("cannot chown (needs root): %v", err)
	}
	for _, dir := range []string{state, filepath.Join(state, "locks"), filepath.Join(state, "idle", "x")} {
		err := CheckOwner(dir)
		var oe *OwnerError
		if !errors.As(err, &oe) {
			t.Fatalf("CheckOwner(%s) = %v, want an *OwnerError", dir, err)
		}
		if oe.Dir != state || oe.Owner != "#4242" {
			t.Errorf("CheckOwner(%s) = %+v, want the state directory and its owner #4242", dir, oe)
		}
		msg := err.Error()
		for _, want := range []string{state, "belongs to user #4242", "run it as that user", "sudo -u #4242 gpuctl …"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
	}
	// With the command filled in, the suggestion is that command.
	oe := &OwnerError{Dir: state, Owner: "gpuctl", Self: "root", Command: "shutdown gaming-pc"}
	if !strings.Contains(oe.Error(), "`sudo -u gpuctl gpuctl shutdown gaming-pc`") {
		t.Errorf("message %q lacks the command", oe.Error())
	}

	// Write goes through the rule and leaves nothing behind.
	p := filepath.Join(state, "idle", "pc.json")
	if err := Write(p, []byte("{}\n")); !errors.As(err, new(*OwnerError)) {
		t.Fatalf("Write into another user's state directory = %v, want an *OwnerError", err)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("the refused write left %v in the state directory", ents)
	}

	// As that user, the same directory is fine.
	asUID(t, other)
	if err := CheckOwner(filepath.Join(state, "locks")); err != nil {
		t.Errorf("as the owner: %v", err)
	}

	// A root-owned directory is no one's to protect: a non-root gpuctl may
	// create its state in a sticky /tmp.
	if err := os.Chown(state, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := CheckOwner(filepath.Join(state, "new")); err != nil {
		t.Errorf("below a root-owned directory: %v", err)
	}
}
