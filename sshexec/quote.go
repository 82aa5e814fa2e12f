package sshexec

import "strings"

// Quote renders argv as one POSIX shell command line in which every argument
// reaches the remote program as exactly one, byte-identical argv element.
// sshd hands the exec string to the user's login shell ($SHELL -c), so this
// is the only place where gpuctl builds a remote command line. Arguments made
// only of characters that are never special to a shell are left bare (for
// readable logs); everything else is single-quoted, with each ' written as
// '\”. The empty string becomes ”.
func Quote(args ...string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		quoteTo(&b, a)
	}
	return b.String()
}

func quoteTo(b *strings.Builder, s string) {
	if s == "" {
		b.WriteString("''")
		return
	}
	if isBare(s) {
		b.WriteString(s)
		return
	}
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b.WriteString(`'\''`)
		} else {
			b.WriteByte(s[i])
		}
	}
	b.WriteByte('\'')
}

// isBare reports whether s is safe unquoted in any position of a command:
// letters, digits and _ - . / : , @ % + only. '=' is excluded so a leading
// argument can never become a variable assignment, '~' and '#' so nothing
// expands or starts a comment.
func isBare(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_' || c == '-' || c == '.' || c == '/' || c == ':' || c == ',' || c == '@' || c == '%' || c == '+':
		default:
			return false
		}
	}
	return true
}

// String returns the command line Run sends for c.
func (c Cmd) String() string { return Quote(c.Args...) }
