package openrouter

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The package is OpenRouter's API and nothing else: it builds on the
// standard library alone, so that the gateway, the key check, the watch
// and the emulator can all use it, and none of Caddy, zap, Prometheus or
// the gateway leaks into it.
func TestImportsStandardLibraryOnly(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the imports with")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var std []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, standard, _ := strings.Cut(line, " ")
		switch {
		case standard == "true":
			std = append(std, path)
		case path != "github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter":
			t.Errorf("internal/openrouter depends on %s, which is not in the standard library", path)
		}
	}
	if !slices.Contains(std, "net/http") {
		t.Fatalf("go list names %d standard packages, not net/http: the check above proved nothing", len(std))
	}
}
