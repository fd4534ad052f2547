package main

import (
	"errors"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// body returns a function of n lines in all.
func body(name, doc string, n int) string {
	return doc + "func " + name + "() {\n" + strings.Repeat("\t_ = 1\n", n-2) + "}\n"
}

func TestFileLengths(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want int // errors
	}{
		{"short func", body("f", "", maxFuncLines), 0},
		{"long func", body("f", "", maxFuncLines+1), 1},
		{"long func, marked", body("f", "// f does it all.\n//\n// long: one switch over every major type.\n", maxFuncLines+1), 0},
		{"long func, empty marker", body("f", "// long:\n", maxFuncLines+1), 1},
		{"long func, marker elsewhere", "// long: not this one.\n" + body("g", "", 3) + body("f", "", maxFuncLines+1), 1},
		{"long file", strings.Repeat(body("f", "", 3), maxFileLines/3+1), 1},
		{"long file, marked", "// long file: the grammar in one place.\n" + strings.Repeat(body("f", "", 3), maxFileLines/3+1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x.go", "package x\n"+tt.src, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			errs := fileLengths(fset, "x.go", f)
			if len(errs) != tt.want {
				t.Fatalf("got %d errors, want %d: %v", len(errs), tt.want, errs)
			}
			for _, err := range errs {
				if !errors.Is(err, errLong) {
					t.Errorf("%v is not errLong", err)
				}
			}
		})
	}
}
