package cli

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as in the cron line
// `gpuctl shutdown gaming-pc --if-idle`. urfave/cli v2 stops parsing flags at
// the first positional argument and would silently take `--if-idle` as an
// argument, so the arguments are reordered before parsing: global flags first,
// then the command path, then the command's flags, then its positional
// arguments (after "--" when one of them starts with a dash). Global flags
// written after the command name (`gpuctl status --config F`) move to the
// front too.
func interspersed(app *cli.App, argv []string) []string {
	if len(argv) < 2 {
		return argv
	}
	for _, a := range argv {
		if a == "--generate-bash-completion" {
			return argv // completion depends on the original order
		}
	}
	var global, path, flags, pos []string
	cmds := app.Commands
	var leaf *cli.Command
	rest := argv[1:]
	i := 0
	// Global flags and the command path.
	for i < len(rest) {
		a := rest[i]
		if a == "--" {
			break
		}
		if isFlag(a) {
			n := takes(a, app.Flags, nil)
			global = append(global, rest[i:min(i+n, len(rest))]...)
			i += n
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			break
		}
		path = append(path, a)
		leaf = c
		cmds = c.Subcommands
		i++
		if len(cmds) == 0 {
			break
		}
	}
	if leaf == nil {
		return argv // no command: the parser reports what is wrong
	}
	leafFlags := leaf.Flags
	// The leaf command's flags and positional arguments, in any order.
	for i < len(rest) {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i+1:]...)
			break
		}
		if isFlag(a) {
			if flagNamed(leafFlags, a) == nil && flagNamed(app.Flags, a) != nil {
				n := takes(a, app.Flags, nil)
				global = append(global, rest[i:min(i+n, len(rest))]...)
				i += n
				continue
			}
			n := takes(a, leafFlags, app.Flags)
			flags = append(flags, rest[i:min(i+n, len(rest))]...)
			i += n
			continue
		}
		pos = append(pos, a)
		i++
	}
	out := append([]string{argv[0]}, global...)
	out = append(out, path...)
	out = append(out, flags...)
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	return append(out, pos...)
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func flagNamed(flags []cli.Flag, a string) cli.Flag {
	name := strings.TrimLeft(a, "-")
	name, _, _ = strings.Cut(name, "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	if name == "help" || name == "h" {
		return cli.HelpFlag
	}
	return nil
}

// takes is how many words a flag uses: 1 for a boolean or --flag=value, 2
// when its value is the next word.
func takes(a string, flags, fallback []cli.Flag) int {
	if strings.Contains(a, "=") {
		return 1
	}
	f := flagNamed(flags, a)
	if f == nil {
		f = flagNamed(fallback, a)
	}
	if f == nil {
		return 1 // unknown: the parser will say so
	}
	if dg, ok := f.(cli.DocGenerationFlag); ok && !dg.TakesValue() {
		return 1
	}
	return 2
}
