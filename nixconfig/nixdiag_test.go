package nixconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/wake/waketest"
)

// Captured from nix-instantiate 2.8.0 (Debian nix-bin) with
// NIX_CONFIG="build-users-group = gpuctl-no-such-group\nfoo = bar".
const (
	capturedParseErr = "warning: the group 'gpuctl-no-such-group' specified in 'build-users-group' does not exist\n" +
		"error: syntax error, unexpected ';'\n\n       at /tmp/h15/bad.nix:3:23:\n\n            2| {\n" +
		"            3| networking.hostName = ;\n             |                       ^\n            4| }\n"
	capturedAbort = "warning: unknown setting 'foo'\n" +
		"warning: the group 'gpuctl-no-such-group' specified in 'build-users-group' does not exist\n" +
		"error: evaluation aborted with the following error message: 'boom'\n(use '--show-trace' to show detailed location information)\n"
)

func TestSplitNixStderr(t *testing.T) {
	cases := []struct {
		in, wantErr string
		wantWarn    int
	}{
		{capturedParseErr, "error: syntax error, unexpected ';'\n\n       at /tmp/h15/bad.nix:3:23:", 1},
		{capturedAbort, "error: evaluation aborted with the following error message: 'boom'\n(use '--show-trace' to show detailed location information)", 2},
		{"warning: a\n  continued\nerror: x\n       at /a.nix:1:2:\n", "error: x\n       at /a.nix:1:2:", 1},
		{"", "", 0},
	}
	for _, tc := range cases {
		got, w := splitNixStderr(tc.in)
		if !strings.HasPrefix(got, tc.wantErr) || len(w) != tc.wantWarn {
			t.Errorf("splitNixStderr(%q) = %q, %q; want prefix %q and %d warnings", tc.in, got, w, tc.wantErr, tc.wantWarn)
		}
		for _, x := range w {
			if strings.HasPrefix(x, "warning") || strings.Contains(got, x) {
				t.Errorf("warning %q leaked", x)
			}
		}
	}
}

// TestCheckWithNixWarnings runs the Nix tier with a nix.conf whose
// build-users-group names a group that does not exist, so every Nix call
// prints a warning on stderr: a clean directory still has no findings, and a
// parse error is still reported at its file and line with Nix's message.
func TestCheckWithNixWarnings(t *testing.T) {
	waketest.RequireProgram(t, "nix-instantiate")
	t.Setenv("NIX_CONFIG", "build-users-group = gpuctl-no-such-group\ngpuctl-unknown-setting = 1")
	g := goldenOutputs(t)["ntfs3"]
	_, dir := writeGolden(t, g)
	r := check(t, dir)
	for _, f := range r.Findings {
		if f.Severity == SevWarning && strings.Contains(f.Msg, "PerSourcePenaltyExemptList") {
			continue
		}
		t.Errorf("unexpected finding: %s", f)
	}
	if r.Config == nil || r.Flake == nil {
		t.Fatal("stub evaluation gave nothing")
	}
	local := "{ config, lib, pkgs, ... }:\n{\nnetworking.hostName = ;\n}\n"
	if err := os.WriteFile(filepath.Join(dir, LocalName), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	r = check(t, dir)
	if len(r.Findings) != 1 || !strings.HasPrefix(r.Findings[0].String(), "local.nix:3: error: syntax error, unexpected ';'") ||
		strings.Contains(r.Findings[0].Msg, "warning") {
		t.Errorf("findings = %q, want one syntax error at local.nix:3 without the warning", r.Findings)
	}
}

// FuzzSplitNixStderr: whatever Nix prints, no warning line survives into the
// error text and no error line is dropped.
func FuzzSplitNixStderr(f *testing.F) {
	f.Add(capturedParseErr)
	f.Add(capturedAbort)
	f.Add("warning: a\n  b\nerror: c\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, warns := splitNixStderr(s)
		for _, l := range strings.Split(got, "\n") {
			if strings.HasPrefix(l, "warning:") {
				t.Fatalf("warning line kept: %q", l)
			}
		}
		for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
			if strings.HasPrefix(l, "error:") && !strings.Contains(got, strings.TrimSpace(l)) {
				t.Fatalf("error line %q dropped from %q", l, got)
			}
		}
		_ = warns
	})
}

// FuzzParseType: the table's type grammar never panics.
func FuzzParseType(f *testing.F) {
	for _, s := range []string{"bool", "list(str)", "enum(a|b)", "str|int", "attrsOf(list(int))?", "path|package?", "list(enum(a|b))"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ty, err := parseType(s); err == nil {
			_ = ty.String()
		}
	})
}
