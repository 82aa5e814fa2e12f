package sshexec_test

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nvidia-smi", "--query-gpu=name", "--format=csv,noheader"}, "nvidia-smi '--query-gpu=name' '--format=csv,noheader'"},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "'; touch /tmp/pwned; '"}, `echo ''\''; touch /tmp/pwned; '\'''`},
		{[]string{"echo", "$(id)"}, "echo '$(id)'"},
		{[]string{"echo", "a\nb"}, "echo 'a\nb'"},
		{[]string{"echo", "ünï"}, "echo 'ünï'"},
		{[]string{"X=1"}, "'X=1'"},
		{[]string{"~", "#c"}, "'~' '#c'"},
		{[]string{"/usr/bin/docker", "inspect", "ollama"}, "/usr/bin/docker inspect ollama"},
	} {
		if got := sshexec.Quote(tc.args...); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

// shArgv runs line under the local /bin/sh with printf '%s\0' in front and
// returns the argv the shell built.
func shArgv(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", `printf '%s\0' `+line).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// Every hostile argument survives a real POSIX shell and SplitWords.
func TestQuoteRoundTripThroughShell(t *testing.T) {
	if _, err := exec.LookPath("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, a := range hostile {
		line := sshexec.Quote(a)
		if got := shArgv(t, line); len(got) != 1 || !bytes.Equal([]byte(got[0]), []byte(a)) {
			t.Errorf("sh turned %q (quoted %s) into %q", a, line, got)
		}
		if got, err := sshtest.SplitWords(line); err != nil || !slices.Equal(got, []string{a}) {
			t.Errorf("SplitWords(%s) = %q, %v; want [%q]", line, got, err, a)
		}
	}
	all := sshexec.Quote(hostile...)
	if got := shArgv(t, all); !slices.Equal(got, hostile) {
		t.Errorf("sh split the joined line into %q", got)
	}
}

func FuzzQuote(f *testing.F) {
	for _, h := range hostile {
		f.Add(h, "x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if strings.ContainsRune(a+b, 0) {
			t.Skip("argv cannot hold NUL")
		}
		got, err := sshtest.SplitWords(sshexec.Quote(a, b))
		if err != nil || !slices.Equal(got, []string{a, b}) {
			t.Fatalf("SplitWords(Quote(%q, %q)) = %q, %v", a, b, got, err)
		}
	})
}
