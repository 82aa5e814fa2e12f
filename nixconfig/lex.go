package nixconfig

import (
	"regexp"
	"strings"
)

// stripComments blanks out Nix comments (# ... and /* ... */), keeping
// strings, antiquotations and every newline, so line numbers still hold and
// text searches do not match words in comments.
func stripComments(src string) string {
	b := []byte(src)
	const (
		code = iota
		dstr // "..."
		istr // ''...''
	)
	// Each antiquotation pushes the string kind to return to and the brace
	// depth at which it closes.
	type frame struct{ kind, depth int }
	var stack []frame
	state, depth := code, 0
	blank := func(i int) {
		if b[i] != '\n' {
			b[i] = ' '
		}
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch state {
		case code:
			switch {
			case c == '#':
				for ; i < len(b) && b[i] != '\n'; i++ {
					blank(i)
				}
			case c == '/' && i+1 < len(b) && b[i+1] == '*':
				j := strings.Index(src[i+2:], "*/")
				end := len(b)
				if j >= 0 {
					end = i + 2 + j + 2
				}
				for ; i < end; i++ {
					blank(i)
				}
				i--
			case c == '"':
				state = dstr
			case c == '\'' && i+1 < len(b) && b[i+1] == '\'':
				state = istr
				i++
			case c == '{':
				depth++
			case c == '}':
				if n := len(stack); n > 0 && stack[n-1].depth == depth {
					state = stack[n-1].kind
					stack = stack[:n-1]
				} else {
					depth--
				}
			}
		case dstr:
			switch {
			case c == '\\':
				i++
			case c == '"':
				state = code
			case c == '$' && i+1 < len(b) && b[i+1] == '{':
				stack = append(stack, frame{dstr, depth})
				state = code
				i++
			}
		case istr:
			switch {
			case c == '\'' && i+1 < len(b) && b[i+1] == '\'':
				if i+2 < len(b) && (b[i+2] == '\'' || b[i+2] == '$' || b[i+2] == '\\') {
					i += 2 // escape: ''' ''$ ''\x
					if b[i] == '\\' {
						i++
					}
				} else {
					state = code
					i++
				}
			case c == '$' && i+1 < len(b) && b[i+1] == '{':
				stack = append(stack, frame{istr, depth})
				state = code
				i++
			}
		}
	}
	return string(b)
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
