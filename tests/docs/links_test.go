// Package docs tests the repository's documentation as a reader meets it:
// every relative link and anchor resolves, the README stays a map (short,
// with the build line and the two commands in its first screen) and links
// every page of docs/.
package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// root is the repository root, from this package's directory.
const root = "../.."

// pages are the Markdown files whose links are checked, relative to root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md", "monitoring/README.md", "tests/emulator/README.md"}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, filepath.ToSlash(rel))
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found")
	}
	return out
}

var (
	// inlineLink is [text](target) and ![alt](target); the target ends at
	// the first space (a title may follow) or the closing parenthesis.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// autoLink is <https://...>.
	autoLink = regexp.MustCompile(`<([a-z]+://[^>\s]+)>`)
	// inlineCode is `code`, whose text is no link.
	inlineCode = regexp.MustCompile("`+[^`]*`+")
)

// prose is a Markdown file's text without its fenced code blocks and
// inline code (their lines left empty, so that line numbers hold).
func prose(text string) string {
	lines := strings.Split(text, "\n")
	fenced := false
	for i, l := range lines {
		fence := strings.HasPrefix(strings.TrimSpace(l), "```")
		if fence {
			fenced = !fenced
		}
		if fence || fenced {
			lines[i] = ""
			continue
		}
		lines[i] = inlineCode.ReplaceAllString(l, "")
	}
	return strings.Join(lines, "\n")
}

// anchors are the heading anchors GitHub gives a Markdown file: the
// heading lower-cased, punctuation dropped, spaces as hyphens, a repeated
// one suffixed -1, -2, ...
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	count := map[string]int{}
	fenced := false
	for l := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if fenced || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		slug := b.String()
		if n := count[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		count[slug]++
	}
	return out
}

func TestAnchors(t *testing.T) {
	got := anchors("# Title\n## 402, 403 and 429: which limit, how much is left\n```\n# not a heading\n```\n## `x-api-key`: logs\n## Logs\n## Logs\n")
	for _, want := range []string{"title", "402-403-and-429-which-limit-how-much-is-left", "x-api-key-logs", "logs", "logs-1"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Error("a line in a code block counted as a heading")
	}
}

// Every relative link of the README, docs/, monitoring/README.md and the
// emulator's README names a file or folder that exists, and every anchor a
// heading of its page. External links are not fetched (the suite runs
// offline); they must at least be https.
func TestLinksResolve(t *testing.T) {
	texts := map[string]string{}
	read := func(path string) (string, error) {
		if s, ok := texts[path]; ok {
			return s, nil
		}
		b, err := os.ReadFile(filepath.Join(root, path))
		texts[path] = string(b)
		return string(b), err
	}
	checked := 0
	for _, page := range pages(t) {
		text, err := read(page)
		if err != nil {
			t.Fatal(err)
		}
		text = prose(text)
		var found [][]int
		found = append(found, inlineLink.FindAllStringSubmatchIndex(text, -1)...)
		found = append(found, autoLink.FindAllStringSubmatchIndex(text, -1)...)
		for _, m := range found {
			n := strings.Count(text[:m[0]], "\n") + 1
			target := text[m[2]:m[3]]
			checked++
			where := fmt.Sprintf("%s:%d: %s", page, n, target)
			switch {
			case strings.HasPrefix(target, "https://"), strings.HasPrefix(target, "http://localhost:"):
				continue
			case strings.Contains(target, "://"), strings.HasPrefix(target, "mailto:"):
				t.Errorf("%s: an external link that is not https", where)
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := page
			if path != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(page), path))
				if strings.HasPrefix(file, "../") {
					t.Errorf("%s: leaves the repository", where)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, file)); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(file, ".md") {
				t.Errorf("%s: an anchor into a file that is not Markdown", where)
				continue
			}
			dest, err := read(file)
			if err != nil {
				t.Fatal(err)
			}
			if !anchors(dest)[anchor] {
				t.Errorf("%s: %s has no heading #%s", where, file, anchor)
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d links found: is the link pattern right?", checked)
	}
}

// The README is a map: under 300 lines, its first screen (60 lines)
// holds the xcaddy line and the two commands that work on a fresh machine,
// and it links every page of docs/.
func TestReadmeIsAMap(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) >= 300 {
		t.Errorf("README.md has %d lines, want under 300: move detail to docs/", len(lines))
	}
	xcaddy, err := os.ReadFile(filepath.Join(root, "xcaddy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Join(lines[:min(60, len(lines))], "\n")
	for _, want := range []string{
		strings.TrimSpace(string(xcaddy)),
		"go run ./cmd/caddy run --config Caddyfile.example",
		"go test -race ./...",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("the README's first 60 lines lack %q", want)
		}
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var linked []string
	for _, m := range inlineLink.FindAllStringSubmatch(string(b), -1) {
		path, _, _ := strings.Cut(m[1], "#")
		linked = append(linked, path)
	}
	for _, d := range docs {
		if want := "docs/" + filepath.Base(d); !slices.Contains(linked, want) {
			t.Errorf("the README does not link %s", want)
		}
	}
}
