package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// maxFuncLines is the longest a non-test function may be, from its func
// line to its closing brace.
const maxFuncLines = 80

// TestLayout keeps the layout docs/development.md describes: no package
// imports its parent, no non-test function (literals included) is longer
// than maxFuncLines, every package has a row in the layout table, and
// gpuctl's own code builds HTTP transports only in controller/hosthttp,
// renames files only in statedir.WriteFile and dials SSH only in sshexec.
func TestLayout(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	mod := modulePath(t, root)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "development.md"))
	if err != nil {
		t.Fatal(err)
	}
	table := string(doc)
	if i := strings.Index(table, "## Layout"); i >= 0 {
		table = table[i:]
	}
	if i := strings.Index(table, "\n## "); i >= 0 {
		table = table[:i]
	}
	dirs := map[string]bool{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		dir := filepath.ToSlash(filepath.Dir(rel))
		dirs[dir] = true
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if parent := path.Dir(dir); parent != "." {
			for _, imp := range f.Imports {
				if ip, _ := strconv.Unquote(imp.Path.Value); ip == mod+"/"+parent {
					t.Errorf("%s imports its parent %s", rel, ip)
				}
			}
		}
		if !strings.HasSuffix(name, "_test.go") {
			checkFuncLengths(t, fset, rel, f)
			if ownCode(dir) && dir != "controller/hosthttp" {
				checkNoCall(t, fset, rel, f, "http", "Transport", "builds an http.Transport; use hosthttp.NewTransport")
			}
			// The blob spool streams gigabytes while hashing them: the
			// one rename outside statedir.WriteFile.
			if ownCode(dir) && dir != "controller/statedir" && rel != "controller/proxy/blobs.go" {
				checkNoCall(t, fset, rel, f, "os", "Rename", "renames a file; write it with statedir.WriteFile")
			}
			if ownCode(dir) && dir != "sshexec" {
				checkNoCall(t, fset, rel, f, "sshexec", "Dial", "dials SSH itself; use sshexec.SSHConnector through Controller.Connect or Runner")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir := range dirs {
		if !strings.Contains(table, "`"+dir+"/`") && !strings.Contains(table, "`"+dir+"`") && !strings.Contains(table, "`"+path.Base(dir)+"/`") {
			t.Errorf("package %s has no row in docs/development.md's layout table", dir)
		}
	}
}

// ownCode reports whether dir is gpuctl's own code rather than a tool for
// its tests and benchmarks (fakes, test servers, the simulator, proxybench).
func ownCode(dir string) bool {
	for _, p := range []string{"cmd/gpuctl-sim", "cmd/proxybench", "controller/ollamatest", "controller/fixtures", "controller/testlog"} {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return false
		}
	}
	return !strings.HasSuffix(dir, "test")
}

// checkNoCall flags pkg.name used in f (called, or built as a composite
// literal): what gpuctl does in one place only.
func checkNoCall(t *testing.T, fset *token.FileSet, rel string, f *ast.File, pkg, name, why string) {
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != name {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == pkg {
			t.Errorf("%s:%d: %s", rel, fset.Position(sel.Pos()).Line, why)
		}
		return true
	})
}

func checkFuncLengths(t *testing.T, fset *token.FileSet, rel string, f *ast.File) {
	ast.Inspect(f, func(n ast.Node) bool {
		var body *ast.BlockStmt
		what := "a func literal"
		switch fn := n.(type) {
		case *ast.FuncDecl:
			body, what = fn.Body, fn.Name.Name
		case *ast.FuncLit:
			body = fn.Body
		}
		if body == nil {
			return true
		}
		start, end := fset.Position(n.Pos()), fset.Position(body.End())
		if lines := end.Line - start.Line + 1; lines > maxFuncLines {
			t.Errorf("%s:%d: %s is %d lines; split it into named steps (at most %d)", rel, start.Line, what, lines, maxFuncLines)
		}
		return true
	})
}

func modulePath(t *testing.T, root string) string {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if m, ok := strings.CutPrefix(l, "module "); ok {
			return strings.TrimSpace(m)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}
