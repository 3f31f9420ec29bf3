package errbody

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The package stays free of the gateway's frameworks, so that any status's
// code can use it: nothing it builds on, directly or not, is Caddy, zap,
// Prometheus or package caddymodule.
func TestImportsNoFramework(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the imports with")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/andybalholm/brotli") {
		t.Fatalf("go list names %d packages, not brotli: the check below would prove nothing", len(deps))
	}
	const module = "github.com/openrouter-keys/caddy-openrouter-keys/"
	for _, d := range deps {
		for _, banned := range []string{"github.com/caddyserver/", "go.uber.org/zap", "github.com/prometheus/"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("errbody depends on %s", d)
			}
		}
		if rest, ok := strings.CutPrefix(d, module); ok && rest != "internal/openrouter" && rest != "internal/errbody" {
			t.Errorf("errbody depends on %s; of this module only internal/openrouter is allowed", d)
		}
	}
}
