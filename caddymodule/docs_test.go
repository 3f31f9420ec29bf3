package caddymodule

// docs_test.go keeps the documentation true to the code: the option syntax
// of docs/configuration.md is what the Caddyfile parser accepts, its tables
// and JSON examples name every config field, the README's Caddyfile loads,
// and monitoring/README.md lists every metric the module exports. Each fact
// has one home in the documentation; these tests keep that home right.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

const configurationDoc = "../docs/configuration.md"

// fences are the fenced code blocks of a Markdown file: the info string
// (the language) and the lines between the fences.
type fence struct {
	lang  string
	lines []string
}

func fencesOf(t *testing.T, path string) []fence {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []fence
	var cur *fence
	for l := range strings.Lines(string(b)) {
		l = strings.TrimRight(l, "\n")
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &fence{lang: strings.TrimPrefix(l, "```")}
		case cur != nil && l == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, l)
		}
	}
	if cur != nil {
		t.Fatalf("%s: a code block is never closed", path)
	}
	return out
}

// documentedSyntax reads the syntax blocks of docs/configuration.md: for
// each directive (`openrouter_keys [<matcher>] {`), the subdirectives it
// lists, in order.
func documentedSyntax(t *testing.T) map[string][]string {
	t.Helper()
	head := regexp.MustCompile(`^(openrouter_\w+) \[<matcher>\] \{$`)
	out := map[string][]string{}
	for _, f := range fencesOf(t, configurationDoc) {
		if len(f.lines) == 0 {
			continue
		}
		m := head.FindStringSubmatch(f.lines[0])
		if m == nil {
			continue
		}
		if _, dup := out[m[1]]; dup {
			t.Fatalf("%s: two syntax blocks for %s", configurationDoc, m[1])
		}
		closed := false
		var names []string
		for _, l := range f.lines[1:] {
			if l == "}" {
				closed = true
				break
			}
			fields := strings.Fields(l)
			if len(fields) == 0 {
				continue
			}
			if slices.Contains(names, fields[0]) {
				t.Errorf("%s: %s lists %s twice", configurationDoc, m[1], fields[0])
			}
			names = append(names, fields[0])
		}
		if !closed {
			t.Fatalf("%s: the syntax block of %s has no closing }", configurationDoc, m[1])
		}
		out[m[1]] = names
	}
	return out
}

// parserSubdirectives are the string labels of the cases the Caddyfile
// parser of recv (the receiver type of an UnmarshalCaddyfile method)
// switches on, read from the package's source: the method's own switch
// and those of the functions it calls that read tokens (they take a
// *caddyfile.Dispenser), such as the shared options' parser.
func parserSubdirectives(t *testing.T, recv string) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var start *ast.FuncDecl
	readers := map[string][]*ast.FuncDecl{} // by name: functions and methods that take a Dispenser
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			if fn.Name.Name == "UnmarshalCaddyfile" && fn.Recv != nil && receiverName(fn) == recv {
				start = fn
			}
			if takesDispenser(fn) {
				readers[fn.Name.Name] = append(readers[fn.Name.Name], fn)
			}
		}
	}
	if start == nil {
		t.Fatalf("no (*%s).UnmarshalCaddyfile in the package", recv)
	}
	labels := map[string]bool{}
	seen := map[*ast.FuncDecl]bool{}
	var visit func(fn *ast.FuncDecl)
	visit = func(fn *ast.FuncDecl) {
		if seen[fn] {
			return
		}
		seen[fn] = true
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SwitchStmt:
				if _, ok := n.Tag.(*ast.Ident); !ok {
					return true
				}
				for _, stmt := range n.Body.List {
					for _, e := range stmt.(*ast.CaseClause).List {
						if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							s, err := strconv.Unquote(lit.Value)
							if err != nil {
								t.Fatal(err)
							}
							labels[s] = true
						}
					}
				}
			case *ast.CallExpr:
				var name string
				switch fun := n.Fun.(type) {
				case *ast.Ident:
					name = fun.Name
				case *ast.SelectorExpr:
					name = fun.Sel.Name
				}
				for _, callee := range readers[name] {
					visit(callee)
				}
			}
			return true
		})
	}
	visit(start)
	return slices.Sorted(maps.Keys(labels))
}

func receiverName(fn *ast.FuncDecl) string {
	typ := fn.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

func takesDispenser(fn *ast.FuncDecl) bool {
	for _, p := range fn.Type.Params.List {
		star, ok := p.Type.(*ast.StarExpr)
		if !ok {
			continue
		}
		if sel, ok := star.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "Dispenser" {
			return true
		}
	}
	return false
}

// parseBlock runs the real parser of a directive over a block with one
// line, through the error-returning lexer (caddyfile.NewTestDispenser
// would log.Fatalf on a lexer error).
func parseBlock(directive, line string) error {
	tokens, err := caddyfile.Tokenize([]byte(directive+" {\n\t"+line+"\n}\n"), "Caddyfile")
	if err != nil {
		return err
	}
	d := caddyfile.NewDispenser(tokens)
	switch directive {
	case "openrouter_keys":
		return new(Handler).UnmarshalCaddyfile(d)
	case "openrouter_keycheck":
		return new(KeyCheck).UnmarshalCaddyfile(d)
	}
	panic("unknown directive " + directive)
}

// accepts reports whether the parser takes the subdirective with one of a
// few sample values (none, a word, a number, a duration, a rate limit, a
// URL).
func accepts(directive, name string) bool {
	for _, args := range []string{"", "on", "10", "1s", "30 1m", "https://openrouter.ai/api/v1"} {
		if parseBlock(directive, strings.TrimSpace(name+" "+args)) == nil {
			return true
		}
	}
	return false
}

// The syntax blocks of docs/configuration.md list exactly the
// subdirectives the parser accepts: an option added to one and not the
// other fails here.
func TestDocsSyntaxMatchesParser(t *testing.T) {
	doc := documentedSyntax(t)
	receivers := map[string]string{"openrouter_keys": "Handler", "openrouter_keycheck": "KeyCheck"}
	if got := slices.Sorted(maps.Keys(doc)); !slices.Equal(got, []string{"openrouter_keycheck", "openrouter_keys"}) {
		t.Fatalf("%s has syntax blocks for %v, want both directives", configurationDoc, got)
	}
	for directive, recv := range receivers {
		t.Run(directive, func(t *testing.T) {
			documented := slices.Sorted(slices.Values(doc[directive]))
			parsed := parserSubdirectives(t, recv)
			if !slices.Contains(parsed, "upstream") || !slices.Contains(parsed, "lookup_timeout") {
				t.Fatalf("the shared options are missing from what the parser's source switches on: %v", parsed)
			}
			for _, name := range parsed {
				if !slices.Contains(documented, name) {
					t.Errorf("the parser accepts %q, but %s does not list it", name, configurationDoc)
				}
			}
			for _, name := range documented {
				if !slices.Contains(parsed, name) {
					t.Errorf("%s lists %q, but the parser has no case for it", configurationDoc, name)
				}
				if !accepts(directive, name) {
					t.Errorf("%s lists %q, but the parser refuses it with every sample value", configurationDoc, name)
				}
			}
			if err := parseBlock(directive, "no_such_option 1"); err == nil || !strings.Contains(err.Error(), "no_such_option") {
				t.Errorf("an unknown subdirective is not refused by name: %v", err)
			}
		})
	}
}

// optionNames are the JSON names of a config struct's options, those of
// embedded structs included.
func optionNames(v any) []string {
	fields := map[string]reflect.Value{}
	optionFields(reflect.ValueOf(v).Elem(), fields)
	return slices.Sorted(maps.Keys(fields))
}

// The option tables and the JSON examples of docs/configuration.md name
// every config field by its JSON name, and the examples decode.
func TestDocsNameEveryOption(t *testing.T) {
	b, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| `([a-z_]+)`")
	for _, c := range []struct {
		directive string
		config    any
	}{{"openrouter_keys", new(Handler)}, {"openrouter_keycheck", new(KeyCheck)}} {
		t.Run(c.directive, func(t *testing.T) {
			want := optionNames(c.config)
			// The option table: from the directive's heading to the next.
			start := strings.Index(doc, "\n## "+c.directive+"\n")
			if start < 0 {
				t.Fatalf("%s has no section ## %s", configurationDoc, c.directive)
			}
			section := doc[start+1:]
			if end := strings.Index(section[3:], "\n## "); end >= 0 {
				section = section[:end+3]
			}
			var caddyfileNames, jsonNames []string
			for _, m := range row.FindAllStringSubmatch(section, -1) {
				caddyfileNames = append(caddyfileNames, m[1])
				jsonNames = append(jsonNames, m[2])
			}
			if got := slices.Sorted(slices.Values(jsonNames)); !slices.Equal(got, want) {
				t.Errorf("the option table's JSON names are %v, the config's fields %v", got, want)
			}
			if got, syntax := slices.Sorted(slices.Values(caddyfileNames)), slices.Sorted(slices.Values(documentedSyntax(t)[c.directive])); !slices.Equal(got, syntax) {
				t.Errorf("the option table lists %v, the syntax block %v", got, syntax)
			}
			// The JSON example: decodes (unknown members are refused) and
			// names every option.
			found := false
			for _, f := range fencesOf(t, configurationDoc) {
				body := strings.Join(f.lines, "\n")
				if f.lang != "json" || !strings.Contains(body, `"handler": "`+c.directive+`"`) {
					continue
				}
				found = true
				body = strings.Replace(body, `"handler": "`+c.directive+`",`, "", 1)
				cfg := reflect.New(reflect.TypeOf(c.config).Elem()).Interface()
				if err := decodeOptions([]byte(body), cfg); err != nil {
					t.Errorf("the JSON example does not decode: %v", err)
				}
				for _, name := range want {
					if !strings.Contains(body, `"`+name+`":`) {
						t.Errorf("the JSON example lacks %q", name)
					}
				}
			}
			if !found {
				t.Errorf("%s has no JSON example of %s", configurationDoc, c.directive)
			}
		})
	}
}

// The README's Caddyfile, the one users copy first, adapts without
// warnings and puts openrouter_keys in front of reverse_proxy.
func TestReadmeCaddyfileLoads(t *testing.T) {
	var found bool
	for _, f := range fencesOf(t, "../README.md") {
		body := strings.Join(f.lines, "\n") + "\n"
		if f.lang != "caddyfile" || !strings.Contains(body, "openrouter_keys") {
			continue
		}
		found = true
		cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "README.md"})
		if err != nil {
			t.Fatalf("the README's Caddyfile does not adapt: %v\n%s", err, body)
		}
		if len(warnings) > 0 {
			t.Errorf("adapting the README's Caddyfile warns: %v", warnings)
		}
		keys, proxy := strings.Index(string(cfg), `"handler":"openrouter_keys"`), strings.Index(string(cfg), `"handler":"reverse_proxy"`)
		if keys < 0 || proxy < 0 || keys > proxy {
			t.Errorf("openrouter_keys is not before reverse_proxy: %s", cfg)
		}
	}
	if !found {
		t.Fatal("the README has no Caddyfile with openrouter_keys")
	}
}

// monitoring/README.md is the one list of metrics: every metric the module
// exports is in it, by its full name.
func TestDocsListEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../monitoring/README.md")
	if err != nil {
		t.Fatal(err)
	}
	exported, _ := exportedMetrics(t)
	for name := range exported {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && exported[base+"_bucket"] {
				name = base
			}
		}
		if !strings.Contains(string(b), "`"+name+"`") {
			t.Errorf("monitoring/README.md does not list %s", name)
		}
	}
}
