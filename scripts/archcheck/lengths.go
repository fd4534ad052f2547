package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The size limits of STYLE: a file or a function longer than these says
// why, in a comment that starts with the marker, or archcheck fails.
const (
	maxFileLines = 800
	maxFuncLines = 80
	// fileMarker, anywhere in a file's comments, explains its length.
	fileMarker = "long file:"
	// funcMarker, in a function's doc comment, explains its length.
	funcMarker = "long:"
)

var errLong = errors.New("archcheck: too long without a comment saying why")

// checkLengths returns one error per .go file under root longer than
// maxFileLines and per function longer than maxFuncLines that does not
// carry its marker. Directories starting with "." or "_", testdata and
// node_modules are skipped, as the go tool skips them.
func checkLengths(root string) ([]error, error) {
	var errs []error
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
		if err != nil {
			return fmt.Errorf("archcheck: %w", err)
		}
		rel, _ := filepath.Rel(root, path)
		errs = append(errs, fileLengths(fset, rel, f)...)
		return nil
	})
	return errs, err
}

// fileLengths checks one parsed file.
func fileLengths(fset *token.FileSet, name string, f *ast.File) []error {
	var errs []error
	if n := fset.File(f.Pos()).LineCount(); n > maxFileLines && !marked(f.Comments, fileMarker) {
		errs = append(errs, fmt.Errorf("%w: %s has %d lines (limit %d; say why in a %q comment)", errLong, name, n, maxFileLines, "// "+fileMarker))
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
		if n <= maxFuncLines {
			continue
		}
		if fd.Doc != nil && marked([]*ast.CommentGroup{fd.Doc}, funcMarker) {
			continue
		}
		errs = append(errs, fmt.Errorf("%w: %s:%d: func %s has %d lines (limit %d; say why in a %q line of its doc comment)",
			errLong, name, fset.Position(fd.Pos()).Line, funcName(fd), n, maxFuncLines, "// "+funcMarker))
	}
	return errs
}

// marked reports whether a comment line starts with marker and says
// something after it.
func marked(groups []*ast.CommentGroup, marker string) bool {
	for _, g := range groups {
		for _, c := range g.List {
			text := strings.TrimSpace(strings.TrimPrefix(c.Text, "//"))
			if why, ok := strings.CutPrefix(text, marker); ok && strings.TrimSpace(why) != "" {
				return true
			}
		}
	}
	return false
}

func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if g, ok := t.(*ast.IndexExpr); ok {
		t = g.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}
