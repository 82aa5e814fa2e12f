package nixconfig

import (
	"regexp"
	"strings"
)

// Str returns s as a Nix double-quoted string literal. Every inventory value
// goes through it: `"`, `\` and `${` are escaped, so no value can end the
// string or start an antiquotation.
func Str(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`\$`)
			} else {
				b.WriteByte('$')
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// StrList returns a Nix list of string literals: [ "a" "b" ].
func StrList(ss []string) string {
	if len(ss) == 0 {
		return "[ ]"
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = Str(s)
	}
	return "[ " + strings.Join(parts, " ") + " ]"
}

var nixIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*$`)

var keywords = map[string]bool{"if": true, "then": true, "else": true, "assert": true, "with": true,
	"let": true, "in": true, "rec": true, "inherit": true, "or": true, "true": false}

// Attr returns s as an attribute name: bare when it is a plain identifier,
// else a quoted string.
func Attr(s string) string {
	if nixIdent.MatchString(s) && !keywords[s] {
		return s
	}
	return Str(s)
}

// AttrPath returns a dotted attribute path with each component through Attr.
func AttrPath(p string) string {
	parts := strings.Split(p, ".")
	for i, s := range parts {
		parts[i] = Attr(s)
	}
	return strings.Join(parts, ".")
}
