package inventory

import (
	"regexp"
	"strconv"
	"strings"
)

// positions maps key paths in a TOML document to where they are written.
//
// BurntSushi/toml has no position API for keys, so the loader scans the text
// itself: table headers ([a.b], [[a]]) and "key =" assignments, skipping
// multi-line strings and arrays. A path names array tables with their index:
// "host[1].mac", "host[0].nixos.hostname", "serve.listen".
type positions struct {
	pos   map[string][2]int // path -> line, col (1-based)
	order []string          // paths in document order
}

var (
	arrayHeaderRE = regexp.MustCompile(`^\s*\[\[\s*([^\]]+?)\s*\]\]`)
	tableHeaderRE = regexp.MustCompile(`^\s*\[\s*([^\[\]]+?)\s*\]`)
	keyRE         = regexp.MustCompile(`^(\s*)((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=`)
)

func splitKey(k string) []string {
	var parts []string
	for _, p := range strings.Split(k, ".") {
		p = strings.TrimSpace(p)
		p = strings.Trim(p, `"'`)
		parts = append(parts, p)
	}
	return parts
}

func scanPositions(src string) *positions {
	ps := &positions{pos: map[string][2]int{}}
	add := func(path string, line, col int) {
		if _, ok := ps.pos[path]; !ok {
			ps.order = append(ps.order, path)
		}
		ps.pos[path] = [2]int{line, col}
	}
	counts := map[string]int{} // array table (plain path) -> elements so far
	prefix := ""               // current table, with indices
	depth := 0                 // open brackets of a multi-line array value
	inML := ""                 // open multi-line string delimiter
	for i, line := range strings.Split(src, "\n") {
		n := i + 1
		if inML != "" {
			if strings.Contains(line, inML) {
				inML = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		if m := arrayHeaderRE.FindStringSubmatchIndex(line); m != nil {
			name := strings.Join(splitKey(line[m[2]:m[3]]), ".")
			idx := counts[name]
			counts[name] = idx + 1
			// Reset counts of arrays nested under a new element.
			for k := range counts {
				if strings.HasPrefix(k, name+".") {
					delete(counts, k)
				}
			}
			prefix = withIndices(name, counts) + "[" + strconv.Itoa(idx) + "]"
			add(prefix, n, m[2]+1)
			continue
		}
		if m := tableHeaderRE.FindStringSubmatchIndex(line); m != nil {
			name := strings.Join(splitKey(line[m[2]:m[3]]), ".")
			prefix = withIndices(name, counts)
			add(prefix, n, m[2]+1)
			continue
		}
		if m := keyRE.FindStringSubmatchIndex(line); m != nil {
			key := strings.Join(splitKey(line[m[4]:m[5]]), ".")
			p := key
			if prefix != "" {
				p = prefix + "." + key
			}
			add(p, n, m[4]+1)
			rest := line[m[1]:]
			if j := strings.Index(rest, `"""`); j >= 0 && !strings.Contains(rest[j+3:], `"""`) {
				inML = `"""`
			} else if j := strings.Index(rest, `'''`); j >= 0 && !strings.Contains(rest[j+3:], `'''`) {
				inML = `'''`
			} else {
				depth = bracketDelta(rest)
				if depth < 0 {
					depth = 0
				}
			}
		}
	}
	return ps
}

// withIndices turns "host.nixos" into "host[2].nixos" using the index of the
// latest element of each enclosing array table.
func withIndices(name string, counts map[string]int) string {
	parts := strings.Split(name, ".")
	var out []string
	for i := range parts {
		out = append(out, parts[i])
		plain := strings.Join(parts[:i+1], ".")
		if c, ok := counts[plain]; ok && c > 0 && i < len(parts)-1 {
			out[len(out)-1] += "[" + strconv.Itoa(c-1) + "]"
		}
	}
	return strings.Join(out, ".")
}

// bracketDelta counts [ minus ] outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	var q byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q != 0:
			if c == '\\' && q == '"' {
				i++
			} else if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case c == '#':
			return d
		case c == '[':
			d++
		case c == ']':
			d--
		}
	}
	return d
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// stripIndices turns "host[1].mac" into "host.mac".
func stripIndices(p string) string { return indexRE.ReplaceAllString(p, "") }

// at returns the position of a path, falling back to its nearest written parent.
func (ps *positions) at(path string) (line, col int) {
	for p := path; p != ""; {
		if v, ok := ps.pos[p]; ok {
			return v[0], v[1]
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0, 0
}

// find returns the first written path whose plain form is plain.
func (ps *positions) find(plain string) (string, bool) {
	for _, p := range ps.order {
		if stripIndices(p) == plain {
			return p, true
		}
	}
	return "", false
}

// onLine returns the path of the key written on the given line.
func (ps *positions) onLine(line int) (string, bool) {
	for _, p := range ps.order {
		if ps.pos[p][0] == line {
			return p, true
		}
	}
	return "", false
}
