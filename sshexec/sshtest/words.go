package sshtest

import (
	"errors"
	"fmt"
)

// SplitWords splits a POSIX shell command line into argv the way sh would
// for a simple command: whitespace separates words; '…' is literal; "…"
// honours \" \\ \$ \` and \newline; a backslash outside quotes escapes the
// next byte. It fails on anything a shell would interpret instead of pass
// through: unquoted ; & | < > ( ) $ ` * ? [ and a word-leading ~ or #, and
// unterminated quotes. Tests use it to assert that a command line arrives as
// exactly the argv that was quoted.
func SplitWords(s string) ([]string, error) {
	var out []string
	var cur []byte
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t', '\n':
			if inWord {
				out = append(out, string(cur))
				cur, inWord = nil, false
			}
		case '\'':
			j := i + 1
			for j < len(s) && s[j] != '\'' {
				j++
			}
			if j >= len(s) {
				return nil, errors.New("unterminated single quote")
			}
			cur = append(cur, s[i+1:j]...)
			inWord = true
			i = j
		case '"':
			inWord = true
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				switch s[j] {
				case '\\':
					if j+1 < len(s) && (s[j+1] == '"' || s[j+1] == '\\' || s[j+1] == '$' || s[j+1] == '`' || s[j+1] == '\n') {
						if s[j+1] != '\n' {
							cur = append(cur, s[j+1])
						}
						j++
						continue
					}
					cur = append(cur, '\\')
				case '$', '`':
					return nil, fmt.Errorf("expansion %q inside double quotes at byte %d", s[j], j)
				default:
					cur = append(cur, s[j])
				}
			}
			if j >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			i = j
		case '\\':
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			if s[i+1] != '\n' {
				cur = append(cur, s[i+1])
				inWord = true
			}
			i++
		case ';', '&', '|', '<', '>', '(', ')', '$', '`', '*', '?', '[':
			return nil, fmt.Errorf("unquoted shell metacharacter %q at byte %d", c, i)
		case '~', '#':
			if !inWord {
				return nil, fmt.Errorf("unquoted word-leading %q at byte %d", c, i)
			}
			cur = append(cur, c)
		default:
			cur = append(cur, c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, string(cur))
	}
	return out, nil
}
