package nixconfig

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The option table: what NixOS declares in the namespaces the appliance
// touches (options/options.txt, sources in options/SOURCES.md), and the
// package names `pkgs.` may name (options/packages.txt).

//go:embed options/options.txt
var optionsTable []byte

//go:embed options/packages.txt
var packagesList []byte

// Releases are the NixOS releases the table describes.
var Releases = []string{"25.05", "25.11"}

// optType is a declared option's type.
type optType struct {
	kind string     // bool int str path package lines any free module enum list attrsOf sub
	enum []string   // kind enum
	elem *optType   // list, attrsOf
	alts []*optType // either (kind "either")
	null bool
}

func (t *optType) String() string {
	var s string
	switch t.kind {
	case "enum":
		s = "one of " + strings.Join(quoteAll(t.enum), ", ")
	case "list":
		s = "a list"
		if t.elem != nil {
			s = "a list of " + plural(t.elem)
		}
	case "attrsOf":
		s = "an attribute set"
	case "either":
		var p []string
		for _, a := range t.alts {
			p = append(p, a.String())
		}
		s = strings.Join(p, " or ")
	case "sub", "module":
		s = "a set of options"
	case "str", "lines":
		s = "a string"
	case "int":
		s = "an integer"
	case "bool":
		s = "a boolean (true or false)"
	case "path":
		s = "a path"
	case "package":
		s = "a package"
	default:
		s = t.kind
	}
	if t.null {
		s += " or null"
	}
	return s
}

// plural names a list's elements.
func plural(t *optType) string {
	switch t.kind {
	case "bool":
		return "booleans"
	case "int":
		return "integers"
	case "str", "lines":
		return "strings"
	case "path":
		return "paths"
	case "package":
		return "packages"
	case "sub":
		return "sets of options"
	case "attrsOf":
		return "attribute sets"
	}
	return "(" + t.String() + ")"
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// optNode is one component of the option tree.
type optNode struct {
	name     string
	typ      *optType // nil: a namespace (attribute set of options)
	variant  string   // "" or the image variant it exists in
	children map[string]*optNode
}

func (n *optNode) child(name string) *optNode {
	if c, ok := n.children[name]; ok {
		return c
	}
	return n.children["<name>"]
}

func parseType(s string) (*optType, error) {
	t := &optType{}
	if strings.HasSuffix(s, "?") {
		t.null = true
		s = strings.TrimSuffix(s, "?")
	}
	if parts := splitTop(s, '|'); len(parts) > 1 {
		t.kind = "either"
		for _, p := range parts {
			a, err := parseType(p)
			if err != nil {
				return nil, err
			}
			t.alts = append(t.alts, a)
		}
		return t, nil
	}
	open := strings.IndexByte(s, '(')
	if open < 0 {
		switch s {
		case "bool", "int", "str", "path", "package", "lines", "any", "free", "module", "list", "attrs", "sub":
			t.kind = s
			if s == "attrs" {
				t.kind = "attrsOf"
			}
			return t, nil
		}
		return nil, fmt.Errorf("unknown type %q", s)
	}
	if !strings.HasSuffix(s, ")") {
		return nil, fmt.Errorf("bad type %q", s)
	}
	arg := s[open+1 : len(s)-1]
	switch s[:open] {
	case "enum":
		t.kind, t.enum = "enum", strings.Split(arg, "|")
	case "list", "attrsOf":
		t.kind = s[:open]
		e, err := parseType(arg)
		if err != nil {
			return nil, err
		}
		t.elem = e
	default:
		return nil, fmt.Errorf("unknown type %q", s)
	}
	return t, nil
}

// splitTop splits at sep outside parentheses.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// optionTree parses the table for a release.
func optionTree(release string) (*optNode, error) {
	root := &optNode{children: map[string]*optNode{}}
	sc := bufio.NewScanner(bytes.NewReader(optionsTable))
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("options.txt:%d: no type", line)
		}
		typ, err := parseType(f[1])
		if err != nil {
			return nil, fmt.Errorf("options.txt:%d: %w", line, err)
		}
		variant, skip := "", false
		for _, tag := range f[2:] {
			switch {
			case strings.HasPrefix(tag, "@"):
				variant = tag[1:]
			case tag == "25.05" || tag == "25.11":
				skip = skip || tag != release
			default:
				return nil, fmt.Errorf("options.txt:%d: unknown tag %q", line, tag)
			}
		}
		if skip {
			continue
		}
		n := root
		for _, comp := range strings.Split(f[0], ".") {
			c, ok := n.children[comp]
			if !ok {
				c = &optNode{name: comp, children: map[string]*optNode{}}
				n.children[comp] = c
			}
			n = c
		}
		n.typ, n.variant = typ, variant
	}
	return root, sc.Err()
}

// checkedNamespaces are walked in full; under partial parents only the
// named children are, and an unknown child close to one of them is a typo.
var (
	checkedTop     = map[string]bool{"boot": true, "console": true, "environment": true, "fileSystems": true, "image": true, "isoImage": true, "networking": true, "systemd": true, "time": true, "users": true}
	partialParents = map[string]bool{"hardware": true, "security": true, "services": true, "virtualisation": true}
)

// diskImageVariants are the image variants built by disk-image.nix, which
// declares virtualisation.diskSize and image.format/efiSupport.
var diskImageVariants = map[string]bool{"raw-efi": true, "raw": true, "qemu": true, "qemu-efi": true}

// def is one definition the stub's "defs" mode reports.
type def struct {
	Path  []string `json:"p"`
	File  *string  `json:"f"`
	Line  int      `json:"l"`
	Kind  string   `json:"k"`
	Elems []string `json:"e"`
	Str   *string  `json:"s"`
}

// checkOptions reports every definition whose path no declaration matches
// and every simple type mismatch, against the table of the flake's release.
func (c *checker) checkOptions(release string, defs []def) {
	tree, err := optionTree(release)
	if err != nil {
		c.add("", 0, SevError, "options", "the embedded option table is broken: %v", err)
		return
	}
	seen := map[string]bool{}
	for _, d := range defs {
		file, line := "configuration.nix", 0
		if d.File != nil {
			if rel, err := filepath.Rel(c.dir, *d.File); err == nil && !strings.HasPrefix(rel, "..") {
				file, line = filepath.ToSlash(rel), d.Line
			}
		}
		msg := c.matchDef(tree, d)
		if msg == "" {
			continue
		}
		key := fmt.Sprintf("%s:%d:%s", file, line, msg)
		if seen[key] {
			continue
		}
		seen[key] = true
		c.add(file, line, SevError, "options", "%s", msg)
	}
}

// matchDef walks one definition down the tree; "" means it is fine.
func (c *checker) matchDef(root *optNode, d def) string {
	p := d.Path
	if len(p) == 0 {
		return ""
	}
	if !checkedTop[p[0]] && !partialParents[p[0]] {
		return ""
	}
	return walkOpt(root, root, p, 0, "", d)
}

func walkOpt(root, n *optNode, p []string, i int, variant string, d def) string {
	at := strings.Join(quotePath(p[:i]), ".")
	for ; i < len(p); i++ {
		comp := p[i]
		if n.typ != nil {
			return checkUnder(root, n, p, i, variant, d)
		}
		c := n.child(comp)
		if c == nil && comp == "*" {
			return ""
		}
		if c == nil {
			if i == 1 && partialParents[p[0]] {
				// Only some of hardware, security, services and
				// virtualisation is in the table: a name close to one of
				// those is a typo, any other is not checked.
				if s := suggest(comp, n); s != "" && isCheckedChild(p[0], s) {
					return fmt.Sprintf("%s is not a NixOS option (did you mean %s?)", optPath(p[:i+1]), optPath(append(append([]string{}, p[:i]...), s)))
				}
				return ""
			}
			msg := fmt.Sprintf("%s is not a NixOS option", optPath(p[:i+1]))
			if s := suggest(comp, n); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", optPath(append(append([]string{}, p[:i]...), s)))
			}
			return msg
		}
		if c.variant != "" && !variantOK(c.variant, variant) {
			where := "image.modules." + c.variant
			if c.variant == "raw-efi" {
				where = "image.modules.raw-efi (or another disk image variant)"
			}
			return fmt.Sprintf("%s exists only in the %s image variant: set it in %s", optPath(p[:i+1]), c.variant, where)
		}
		n = c
		at = optPath(p[:i+1])
	}
	if n.typ == nil {
		if d.Kind != "set" && d.Kind != "other" {
			return fmt.Sprintf("%s is a set of options, not %s", at, kindName(d.Kind))
		}
		return ""
	}
	return typeMismatch(at, n.typ, d)
}

func variantOK(want, have string) bool {
	if want == have {
		return true
	}
	return want == "raw-efi" && diskImageVariants[have]
}

func isCheckedChild(parent, child string) bool {
	switch parent {
	case "hardware":
		return child == "nvidia" || child == "graphics" || child == "nvidia-container-toolkit"
	case "security":
		return child == "sudo"
	case "services":
		return child == "openssh" || child == "getty"
	case "virtualisation":
		return child == "docker" || child == "oci-containers"
	}
	return false
}

// checkUnder handles the components below a declared option.
func checkUnder(root, n *optNode, p []string, i int, variant string, d def) string {
	at := optPath(p[:i])
	t := n.typ
	switch t.kind {
	case "any", "free":
		return ""
	case "module":
		return ""
	case "attrsOf":
		if t.elem == nil || t.elem.kind == "any" || t.elem.kind == "free" {
			return ""
		}
		if t.elem.kind == "module" {
			// image.modules.<variant>: a NixOS module of its own.
			return walkOpt(root, root, p[i+1:], 0, p[i], d)
		}
		if t.elem.kind == "sub" {
			return walkSub(root, n, p, i, variant, d)
		}
		if i+1 == len(p) {
			return typeMismatch(optPath(p), t.elem, d)
		}
		if t.elem.kind == "attrsOf" || t.elem.kind == "list" {
			return ""
		}
		return fmt.Sprintf("%s is %s, not an attribute set", optPath(p[:i+1]), t.elem)
	case "list":
		if p[i] == "*" {
			if hasSub(t.elem) {
				return walkSub(root, n, p, i, variant, d)
			}
			return ""
		}
		return fmt.Sprintf("%s is %s, not an attribute set", at, t)
	case "sub":
		return walkSub(root, n, p, i, variant, d)
	case "either":
		for _, a := range t.alts {
			if a.kind == "attrsOf" || a.kind == "any" {
				return ""
			}
		}
	}
	return fmt.Sprintf("%s is %s, not an attribute set (no option %s)", at, t, optPath(p[:i+1]))
}

// hasSub reports whether t is, or may be, a submodule.
func hasSub(t *optType) bool {
	if t == nil {
		return false
	}
	if t.kind == "sub" {
		return true
	}
	for _, a := range t.alts {
		if a.kind == "sub" {
			return true
		}
	}
	return false
}

// walkSub continues into a submodule's declared children (<name> or *).
func walkSub(root, n *optNode, p []string, i int, variant string, d def) string {
	c := n.child(p[i])
	if c == nil {
		c = n.children["*"]
	}
	if c == nil {
		return ""
	}
	return walkOpt(root, c, p, i+1, variant, d)
}

// typeMismatch compares a definition's value with the declared type.
func typeMismatch(at string, t *optType, d def) string {
	if ok, why := kindFits(t, d.Kind, d.Str); !ok {
		if why == "" {
			why = "not " + kindName(d.Kind)
		}
		return fmt.Sprintf("%s must be %s, %s", at, t, why)
	}
	if d.Kind == "list" && t.kind == "list" && t.elem != nil {
		for j, e := range d.Elems {
			if ok, _ := kindFits(t.elem, e, nil); !ok && e != "other" {
				return fmt.Sprintf("%s must be %s: element %d is %s", at, t, j+1, kindName(e))
			}
		}
	}
	if d.Kind == "list" && t.kind == "either" {
		for _, a := range t.alts {
			if a.kind == "list" {
				return typeMismatch(at, a, d)
			}
		}
	}
	return ""
}

// kindFits reports whether a value of the stub's kind fits type t.
func kindFits(t *optType, kind string, str *string) (bool, string) {
	if kind == "other" || kind == "lambda" && (t.kind == "any" || t.kind == "free" || t.kind == "module") {
		return true, ""
	}
	if kind == "null" && t.null {
		return true, ""
	}
	switch t.kind {
	case "any", "free":
		return true, ""
	case "bool":
		return kind == "bool", ""
	case "int":
		return kind == "int", ""
	case "str", "lines":
		return kind == "string", ""
	case "path":
		return kind == "string" || kind == "path" || kind == "package", ""
	case "package":
		return kind == "package" || kind == "string" || kind == "path", ""
	case "list":
		return kind == "list", ""
	case "attrsOf", "sub", "module":
		return kind == "set" || kind == "lambda" && t.kind == "module", ""
	case "enum":
		if kind != "string" {
			return false, ""
		}
		if str == nil {
			return true, ""
		}
		for _, e := range t.enum {
			if e == *str {
				return true, ""
			}
		}
		return false, fmt.Sprintf("not %q", *str)
	case "either":
		for _, a := range t.alts {
			if ok, _ := kindFits(a, kind, str); ok {
				return true, ""
			}
		}
		return false, ""
	}
	return true, ""
}

func kindName(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int":
		return "an integer"
	case "bool":
		return "a boolean"
	case "list":
		return "a list"
	case "set":
		return "an attribute set"
	case "null":
		return "null"
	case "package":
		return "a package"
	case "path":
		return "a path"
	case "lambda":
		return "a function"
	case "float":
		return "a float"
	}
	return k
}

var bareComp = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*$`)

func quotePath(p []string) []string {
	out := make([]string, len(p))
	for i, s := range p {
		if bareComp.MatchString(s) || s == "*" || s == "<name>" {
			out[i] = s
		} else {
			out[i] = fmt.Sprintf("%q", s)
		}
	}
	return out
}

func optPath(p []string) string { return strings.Join(quotePath(p), ".") }

// suggest is the declared child closest to name (edit distance at most 2,
// or equal ignoring case), or "".
func suggest(name string, n *optNode) string {
	best, bestD := "", 3
	var names []string
	for k := range n.children {
		if k != "<name>" && k != "*" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD > 1 && len(name) < 4 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// knownPackages parses packages.txt: exact names and "name.*" prefixes.
func knownPackages() (exact map[string]bool, prefixes []string) {
	exact = map[string]bool{}
	for _, l := range strings.Split(string(packagesList), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if p, ok := strings.CutSuffix(l, ".*"); ok {
			prefixes = append(prefixes, p+".")
			exact[p] = true
			continue
		}
		exact[l] = true
	}
	return exact, prefixes
}

var pkgsRef = regexp.MustCompile(`(?:^|[^A-Za-z0-9_.'-])pkgs\.([A-Za-z_][A-Za-z0-9_'-]*(?:\.[A-Za-z_][A-Za-z0-9_'-]*)*)`)

// checkPackages reports every pkgs.NAME reference in the files that names
// no package on the list.
func (c *checker) checkPackages() {
	exact, prefixes := knownPackages()
	var all []string
	for k := range exact {
		all = append(all, k)
	}
	sort.Strings(all)
	for _, f := range c.files {
		for i, l := range strings.Split(stripComments(c.srcs[f]), "\n") {
			for _, m := range pkgsRef.FindAllStringSubmatch(l, -1) {
				name := m[1]
				if exact[name] || pkgAccepted(name, prefixes) || name == "lib" || strings.HasPrefix(name, "lib.") || name == "system" || name == "stdenv" || strings.HasPrefix(name, "stdenv.") {
					continue
				}
				msg := fmt.Sprintf("pkgs.%s is not a package gpuctl knows", name)
				best, bestD := "", 3
				for _, k := range all {
					if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
						best, bestD = k, d
					}
				}
				// A near miss is a typo; anything else may still be in
				// nixpkgs, beyond the list.
				sev := SevWarning
				if best != "" {
					msg += fmt.Sprintf(" (did you mean pkgs.%s?)", best)
					sev = SevError
				} else {
					msg += ": nixpkgs may not have it (check the name on search.nixos.org)"
				}
				c.add(f, i+1, sev, "packages", "%s", msg)
			}
		}
	}
}

func pkgAccepted(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
