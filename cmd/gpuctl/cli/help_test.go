package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"unicode"

	"github.com/urfave/cli/v2"
)

// TestHelpText walks every command and lints its help text, as tailscale's
// TestDocs does: a usage line that starts with a capital and has no trailing
// period, ArgsUsage on leaf commands, and every flag documented.
func TestHelpText(t *testing.T) {
	app := newApp(&Env{})
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := path + " " + c.Name
			if c.Usage == "" {
				t.Errorf("%s: no Usage", name)
			} else {
				if r := []rune(c.Usage)[0]; !unicode.IsUpper(r) {
					t.Errorf("%s: Usage %q should start with a capital letter", name, c.Usage)
				}
				if strings.HasSuffix(c.Usage, ".") {
					t.Errorf("%s: Usage %q has a trailing period", name, c.Usage)
				}
			}
			if len(c.Subcommands) == 0 && c.ArgsUsage == "" {
				t.Errorf("%s: leaf command without ArgsUsage (use \" \" for none)", name)
			}
			if len(c.Subcommands) > 0 && c.Action != nil {
				t.Errorf("%s: has both subcommands and an action", name)
			}
			for _, f := range c.Flags {
				df, ok := f.(cli.DocGenerationFlag)
				if !ok {
					continue
				}
				u := df.GetUsage()
				fl := f.Names()[0]
				switch {
				case u == "":
					t.Errorf("%s: flag --%s has no usage text", name, fl)
				case strings.HasSuffix(u, "."):
					t.Errorf("%s: flag --%s usage %q has a trailing period", name, fl, u)
				case unicode.IsUpper([]rune(u)[0]) && !unicode.IsUpper([]rune(u)[min(1, len([]rune(u))-1)]):
					// Flag usages read as continuations: "print JSON…", "show help".
					t.Errorf("%s: flag --%s usage %q should start in lowercase", name, fl, u)
				}
				// A `word` in backquotes names the value; only value flags have one,
				// and it must be a placeholder (N, DURATION), not prose.
				if strings.Count(u, "`") > 0 {
					if !df.TakesValue() {
						t.Errorf("%s: boolean flag --%s usage %q has a `placeholder`", name, fl, u)
					} else if _, after, ok := strings.Cut(u, "`"); ok {
						ph, _, _ := strings.Cut(after, "`")
						if strings.ToUpper(ph) != ph {
							t.Errorf("%s: flag --%s placeholder %q should be upper case", name, fl, ph)
						}
					}
				}
				if dur, ok := f.(*cli.DurationFlag); ok && dur.Value == 0 && dur.DefaultText == "" {
					t.Errorf("%s: duration flag --%s shows \"(default: 0s)\"; set Value or DefaultText", name, fl)
				}
			}
			walk(name, c.Subcommands)
		}
	}
	walk("gpuctl", app.Commands)
	for _, f := range app.Flags {
		if df, ok := f.(cli.DocGenerationFlag); ok && df.GetUsage() == "" {
			t.Errorf("global flag --%s has no usage text", f.Names()[0])
		}
	}
}

// TestEveryCommandHasHelp runs `--help` on each command through Run.
func TestEveryCommandHasHelp(t *testing.T) {
	app := newApp(&Env{})
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			argv := append(append([]string{"gpuctl"}, prefix...), c.Name, "--help")
			var out, errb bytes.Buffer
			code := Run(context.Background(), &Env{Stdout: &out, Stderr: &errb}, argv)
			if code != 0 {
				t.Errorf("%v: exit %d: %s", argv, code, errb.String())
			}
			if !strings.Contains(out.String(), "USAGE:") {
				t.Errorf("%v: no USAGE section:\n%s", argv, out.String())
			}
			walk(append(prefix, c.Name), c.Subcommands)
		}
	}
	walk(nil, app.Commands)
}
