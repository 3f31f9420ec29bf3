package openrouter

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// OpenRouter's API has one home, this package: the gateway (caddymodule/)
// and the emulator (tests/emulator/) spell none of its endpoint paths,
// query parameters or URLs, so that the two cannot drift apart from each
// other or from the facts. Every string literal of their code is read.
//
// Test files are not read: a test that spells "/keys/{hash}" or a body
// byte for byte is the independent witness of what this package says; one
// that spelled everything through these constants would pass whatever they
// said.
func TestAPISpelledOnlyHere(t *testing.T) {
	// What may not be spelled: every path this package names (the
	// templates' static part, the inference paths and the API prefix) as
	// the start of a literal, every query parameter, and any URL of
	// openrouter.ai.
	var paths []string
	for _, e := range Endpoints() {
		paths = append(paths, strings.Split(e.Template(), "{")[0])
	}
	paths = append(paths, pathKeyLegacy, PathChatCompletions, PathMessages, PathResponses, APIPrefix)
	params := []string{queryIncludeDisabled, queryOffset, queryWorkspaceID, queryLimit}
	const site = "https://openrouter.ai"

	checked := 0
	for _, dir := range []string{"caddymodule", "tests/emulator"} {
		root := filepath.Join("..", "..", dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			checked++
			for lit := range stringLiterals(f) {
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Errorf("%s: %v", fset.Position(lit.Pos()), err)
					continue
				}
				say := func(what string) {
					t.Errorf("%s: %s %q spelled outside internal/openrouter", fset.Position(lit.Pos()), what, s)
				}
				if strings.Contains(s, site) {
					say("the URL")
				}
				for _, p := range paths {
					if rest, ok := strings.CutPrefix(s, p); ok && (rest == "" || strings.ContainsAny(rest[:1], "/?")) {
						say("the path")
						break
					}
				}
				for _, q := range params {
					// "limit" alone is also a member of the gateway's
					// answers: a parameter is one with its value.
					if s == q && q != queryLimit || strings.Contains(s, q+"=") {
						say("the query parameter")
						break
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 30 {
		t.Fatalf("%d files read: the check proves nothing", checked)
	}
}

// stringLiterals are the string literals of a file's code: not its
// imports, not struct tags.
func stringLiterals(f *ast.File) func(yield func(*ast.BasicLit) bool) {
	return func(yield func(*ast.BasicLit) bool) {
		skip := map[*ast.BasicLit]bool{}
		for _, imp := range f.Imports {
			skip[imp.Path] = true
		}
		ok := true
		ast.Inspect(f, func(n ast.Node) bool {
			if !ok {
				return false
			}
			switch n := n.(type) {
			case *ast.Field:
				if n.Tag != nil {
					skip[n.Tag] = true
				}
			case *ast.BasicLit:
				if n.Kind == token.STRING && !skip[n] {
					ok = yield(n)
				}
			}
			return true
		})
	}
}
