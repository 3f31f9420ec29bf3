// Package container builds the gateway's image with deploy/image.sh and
// runs it in a real container runtime, podman with runc, as teams deploy
// it: the default config (Caddyfile.example), the management key and the
// origin from the environment, against the OpenRouter emulator on the host.
package container

// runtime_test.go owns how the tests reach podman: its configuration
// (deploy/containers.conf), a storage of the tests' own in the temporary
// directory, and the rule that a machine without a working runtime fails
// in CI (CI=true) and skips, saying why, elsewhere.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podmanTimeout bounds every podman command but the image build, so that
// a wedged runtime fails the test instead of hanging it.
const podmanTimeout = 2 * time.Minute

// runtime runs podman with the test's configuration and storage.
type runtime struct {
	root string   // the repository's root
	env  []string // podman's environment: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF
}

// unavailable ends a test that cannot run a container on this machine:
// a failure in CI, which must build and run the image, a skip elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI must run the image in a container runtime, and cannot: %s", reason)
	}
	t.Skipf("no container runtime to test the image with: %s", reason)
}

// newRuntime checks that podman is installed and answers, and gives it a
// storage under the temporary directory: the images, containers and
// volumes of the test never mix with the machine's, and are gone, with
// the directory, when the test ends.
func newRuntime(t testing.TB) *runtime {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "image.sh")); err != nil {
		t.Fatalf("deploy/image.sh not found from %s: %v", root, err)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		unavailable(t, "podman is not installed (apt-get install podman runc): %v", err)
	}

	dir, err := os.MkdirTemp("", "caddy-openrouter-keys-podman-")
	if err != nil {
		t.Fatal(err)
	}
	storageConf := filepath.Join(dir, "storage.conf")
	conf := fmt.Sprintf("[storage]\ndriver = %q\ngraphroot = %q\nrunroot = %q\n", storageDriver(dir), filepath.Join(dir, "storage"), filepath.Join(dir, "run"))
	if err := os.WriteFile(storageConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CONTAINERS_STORAGE_CONF="+storageConf)
	if os.Getenv("CONTAINERS_CONF") == "" {
		env = append(env, "CONTAINERS_CONF="+filepath.Join(root, "deploy", "containers.conf"))
	}
	r := &runtime{root: root, env: env}

	t.Cleanup(func() {
		// Everything in this storage is the test's: containers first (they
		// hold the image and the volumes), then images and volumes, then
		// the directory.
		for _, args := range [][]string{
			{"rm", "--all", "--force", "--volumes"},
			{"rmi", "--all", "--force"},
			{"volume", "rm", "--all", "--force"},
			{"secret", "rm", "--all"},
		} {
			if out, err := r.podman(args...); err != nil {
				t.Logf("cleanup: podman %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: the test's podman storage stays behind: %v", err)
		}
	})

	if out, err := r.podman("info", "--format", "{{.Host.OCIRuntime.Name}}"); err != nil {
		unavailable(t, "podman info: %v\n%s", err, out)
	}
	return r
}

// overlayfsMagic is the file system type of an overlay mount (statfs).
const overlayfsMagic = 0x794c7630

// storageDriver is the storage driver for images under dir: overlay, as
// podman's default, unless dir is itself on an overlay mount (a CI job in
// a container), which overlay cannot be stacked on; vfs works anywhere.
func storageDriver(dir string) string {
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) == nil && fs.Type == overlayfsMagic {
		return "vfs"
	}
	return "overlay"
}

// command is podman with args, with the test's configuration and storage.
func (r *runtime) command(ctx context.Context, args ...string) *exec.Cmd {
	return r.program(ctx, "podman", args...)
}

// program runs name, in the repository's root, with podman's environment.
func (r *runtime) program(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = r.env
	cmd.Dir = r.root
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// podman runs podman with args and returns its output, stdout and stderr
// together.
func (r *runtime) podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), podmanTimeout)
	defer cancel()
	out, err := r.command(ctx, args...).CombinedOutput()
	return string(out), err
}

// stdout runs podman with args and returns its standard output, failing
// the test, with podman's messages, if it fails.
func (r *runtime) stdout(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), podmanTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := r.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}
