package inventory

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// WakeWOL is the wake action that sends Wake-on-LAN magic packets.
const WakeWOL = "wol"

// DefaultCommandTimeout bounds one round of checks over SSH ([ssh]
// command_timeout).
const DefaultCommandTimeout = Duration(10e9)

// DefaultWakeTimeout bounds one wake command.
const DefaultWakeTimeout = Duration(30e9)

// WakeAction is one way to wake a host: Wake-on-LAN magic packets, or a
// command run on the gpuctl machine (a smart plug's or Home Assistant's
// HTTP API through curl, a BMC through ipmitool…), without a shell.
type WakeAction struct {
	WOL bool
	// Argv is the command. Its arguments may hold ${env:NAME} (an
	// environment variable of gpuctl's) and ${file:PATH} (a file's content,
	// trailing newline removed), expanded only when it runs, so secrets
	// never sit in the inventory.
	Argv []string
}

// String is "wol" or the command as written (placeholders unexpanded, so
// it is safe to log).
func (a WakeAction) String() string {
	if a.WOL {
		return WakeWOL
	}
	return strings.Join(a.Argv, " ")
}

// WakeActions are a host's wake actions, tried in order. In TOML:
//
//	wake = ["wol"]                                  # the default
//	wake = ["curl", "-fsS", "-X", "POST", "…"]      # one command
//	wake = ["wol", ["ipmitool", "…", "power", "on"]] # several actions
type WakeActions []WakeAction

// HasWOL reports whether Wake-on-LAN is among the actions.
func (w WakeActions) HasWOL() bool {
	for _, a := range w {
		if a.WOL {
			return true
		}
	}
	return false
}

// UnmarshalTOML implements toml.Unmarshaler.
func (w *WakeActions) UnmarshalTOML(v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("must be a list: [\"wol\"], a command such as [\"curl\", \"-fsS\", \"URL\"], or both: [\"wol\", [\"curl\", …]]")
	}
	strs, allStrings := make([]string, 0, len(list)), true
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			allStrings = false
			break
		}
		strs = append(strs, s)
	}
	switch {
	case len(list) == 0:
		*w = WakeActions{}
		return nil
	case allStrings && !(len(strs) > 1 && strs[0] == WakeWOL):
		// ["wol"] or one command.
		if len(strs) == 1 && strs[0] == WakeWOL {
			*w = WakeActions{{WOL: true}}
		} else {
			*w = WakeActions{{Argv: strs}}
		}
		return nil
	}
	var out WakeActions
	for i, e := range list {
		switch x := e.(type) {
		case string:
			if x != WakeWOL {
				return fmt.Errorf("action %d (%q): in a list of actions each is \"wol\" or a command as a list of strings", i, x)
			}
			out = append(out, WakeAction{WOL: true})
		case []any:
			var argv []string
			for j, a := range x {
				s, ok := a.(string)
				if !ok {
					return fmt.Errorf("action %d, word %d: a command's words are strings", i, j)
				}
				argv = append(argv, s)
			}
			out = append(out, WakeAction{Argv: argv})
		default:
			return fmt.Errorf("action %d: each action is \"wol\" or a command as a list of strings", i)
		}
	}
	*w = out
	return nil
}

var (
	placeholderRE = regexp.MustCompile(`\$\{([^}]*)\}`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// clearSecretRE finds what looks like a credential written in clear.
	clearSecretRE = regexp.MustCompile(`(?i)(bearer\s+|(token|password|passwd|secret|api[_-]?key|auth)\s*[=:]\s*)[^\s$"']{6,}`)
)

// check reports the first problem with an action, or nil.
func (a WakeAction) check() error {
	if a.WOL {
		return nil
	}
	if len(a.Argv) == 0 || a.Argv[0] == "" {
		return errors.New("a wake command needs at least a program name")
	}
	if strings.Contains(a.Argv[0], "${") {
		return fmt.Errorf("the program %q may not hold a placeholder", a.Argv[0])
	}
	for _, arg := range a.Argv {
		if strings.ContainsAny(arg, "\x00\n\r") {
			return fmt.Errorf("argument %q holds a control character", arg)
		}
		for _, m := range placeholderRE.FindAllStringSubmatch(arg, -1) {
			kind, val, _ := strings.Cut(m[1], ":")
			switch {
			case kind == "env" && envNameRE.MatchString(val):
			case kind == "file" && strings.HasPrefix(val, "/"):
			default:
				return fmt.Errorf("%q: placeholders are ${env:NAME} or ${file:/absolute/path}", m[0])
			}
		}
		if clearSecretRE.MatchString(placeholderRE.ReplaceAllString(arg, "")) {
			return fmt.Errorf("argument %q looks like a secret written in clear: put it in an environment variable or a file and write ${env:NAME} or ${file:/path}", redact(arg))
		}
	}
	return nil
}

// redact keeps the start of a string that may hold a secret.
func redact(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// Expand returns the command's argv with its placeholders replaced, reading
// the environment through getenv and files through readFile (os.ReadFile
// when nil), and the values it put in. Both hold secrets: never log them
// (String is the loggable form; redact output with the values).
func (a WakeAction) Expand(getenv func(string) string, readFile func(string) ([]byte, error)) (argv, values []string, err error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	out := make([]string, len(a.Argv))
	for i, arg := range a.Argv {
		out[i] = placeholderRE.ReplaceAllStringFunc(arg, func(m string) string {
			kind, val, _ := strings.Cut(m[2:len(m)-1], ":")
			switch kind {
			case "env":
				v := getenv(val)
				if v == "" && err == nil {
					err = fmt.Errorf("%s: the environment variable %s is not set for gpuctl", m, val)
				}
				values = append(values, v)
				return v
			case "file":
				b, ferr := readFile(val)
				if ferr != nil && err == nil {
					err = fmt.Errorf("%s: %w", m, ferr)
				}
				v := strings.TrimRight(string(b), "\r\n")
				values = append(values, v)
				return v
			}
			return m
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return out, values, nil
}

// WakesByWOL reports whether Wake-on-LAN is among h's wake actions (the
// default when none are set).
func (h *Host) WakesByWOL() bool { return len(h.Wake) == 0 || h.Wake.HasWOL() }
