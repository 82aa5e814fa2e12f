package nixconfig

import (
	"regexp"
	"strings"
)

// stripComments blanks out Nix comments (# ... and /* ... */), keeping
// strings, antiquotations and every newline, so line numbers still hold and
// text searches do not match words in comments.
func stripComments(src string) string {
	l := &commentLexer{src: src, b: []byte(src)}
	for i := 0; i < len(l.b); i++ {
		switch l.state {
		case lexCode:
			i = l.code(i)
		case lexDstr:
			i = l.dstr(i)
		case lexIstr:
			i = l.istr(i)
		}
	}
	return string(l.b)
}

// The lexer states of stripComments.
const (
	lexCode = iota
	lexDstr // "..."
	lexIstr // ''...''
)

// commentLexer is stripComments' state. Each step method looks at b[i] and
// returns the index of the last byte it consumed.
type commentLexer struct {
	src string
	b   []byte
	// Each antiquotation pushes the string kind to return to and the brace
	// depth at which it closes.
	stack []lexFrame
	state int
	depth int
}

type lexFrame struct{ kind, depth int }

func (l *commentLexer) blank(i int) {
	if l.b[i] != '\n' {
		l.b[i] = ' '
	}
}

// at reports whether b[i] is c.
func (l *commentLexer) at(i int, c byte) bool { return i < len(l.b) && l.b[i] == c }

// antiquote enters the code of a ${ at i, to return to string kind.
func (l *commentLexer) antiquote(i, kind int) int {
	l.stack = append(l.stack, lexFrame{kind, l.depth})
	l.state = lexCode
	return i + 1
}

func (l *commentLexer) code(i int) int {
	b := l.b
	switch c := b[i]; {
	case c == '#':
		for ; i < len(b) && b[i] != '\n'; i++ {
			l.blank(i)
		}
	case c == '/' && l.at(i+1, '*'):
		j := strings.Index(l.src[i+2:], "*/")
		end := len(b)
		if j >= 0 {
			end = i + 2 + j + 2
		}
		for ; i < end; i++ {
			l.blank(i)
		}
		i--
	case c == '"':
		l.state = lexDstr
	case c == '\'' && l.at(i+1, '\''):
		l.state = lexIstr
		i++
	case c == '{':
		l.depth++
	case c == '}':
		if n := len(l.stack); n > 0 && l.stack[n-1].depth == l.depth {
			l.state = l.stack[n-1].kind
			l.stack = l.stack[:n-1]
		} else {
			l.depth--
		}
	}
	return i
}

func (l *commentLexer) dstr(i int) int {
	switch c := l.b[i]; {
	case c == '\\':
		i++
	case c == '"':
		l.state = lexCode
	case c == '$' && l.at(i+1, '{'):
		i = l.antiquote(i, lexDstr)
	}
	return i
}

func (l *commentLexer) istr(i int) int {
	b := l.b
	switch c := b[i]; {
	case c == '\'' && l.at(i+1, '\''):
		if i+2 < len(b) && (b[i+2] == '\'' || b[i+2] == '$' || b[i+2] == '\\') {
			i += 2 // escape: ''' ''$ ''\x
			if b[i] == '\\' {
				i++
			}
		} else {
			l.state = lexCode
			i++
		}
	case c == '$' && l.at(i+1, '{'):
		i = l.antiquote(i, lexIstr)
	}
	return i
}

var dottedName = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_'-]*(?:\.[A-Za-z_][A-Za-z0-9_'-]*)*`)

// pkgNames collects every dotted identifier in the sources, for the stub
// pkgs set: anything the files could look up in pkgs exists there.
func pkgNames(srcs []string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add("linuxPackages.nvidiaPackages.stable")
	for _, src := range srcs {
		for _, m := range dottedName.FindAllString(stripComments(src), -1) {
			if rest, ok := strings.CutPrefix(m, "pkgs."); ok {
				add(rest)
			} else if rest, ok := strings.CutPrefix(m, "config.boot.kernelPackages."); ok {
				add("linuxPackages." + rest)
			} else {
				add(m)
			}
		}
	}
	return out
}
