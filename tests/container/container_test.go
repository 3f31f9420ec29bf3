package container

// container_test.go owns the image's test: deploy/image.sh builds it,
// podman runs it with the default config against the emulator on the
// host, and a client checks what a team deploying it would: the readiness
// probe, explained refusals, a stream passed event by event, a non-root
// process with writable volumes that outlive it, no key in its logs or
// volumes, and a clean stop on SIGTERM that lets a stream in flight
// finish. It logs the image's size and its time from start to the first
// answered request (go test -v).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

const (
	// image is deploy/image.sh's default tag, in the test's own storage.
	image = "caddy-openrouter-keys:dev"
	// gateway is where Caddyfile.example listens; the container shares the
	// host's network, so the port must be free on the host.
	gateway = "http://127.0.0.1:8080"
	// user is the image's numeric user and group.
	user = 65532
	// stopTimeout is how long podman stop waits after SIGTERM before it
	// kills; Caddy must have exited by itself well before.
	stopTimeout = 30 * time.Second
	// eventGap is the emulator's time between streamed events: a stream
	// lasts 7 gaps, long enough to see events arrive one by one and to stop
	// the container while one is in flight.
	eventGap = 500 * time.Millisecond
)

func TestImage(t *testing.T) {
	rt := newRuntime(t)

	buildImage(t, rt)
	checkImageConfig(t, rt)

	emu, origin, upstreamRequests := startEmulator(t)
	limit := 10.0
	expiredAt := time.Now().Add(-time.Hour)
	valid := emu.NewKey(emulator.KeyOptions{Name: "valid", Limit: &limit, Usage: 2.5})
	expired := emu.NewKey(emulator.KeyOptions{Name: "expired", ExpiresAt: &expiredAt})
	disabled := emu.NewKey(emulator.KeyOptions{Name: "disabled", Disabled: true})
	management := emu.NewKey(emulator.KeyOptions{Name: "gateway", Management: true})
	keys := []string{valid, expired, disabled, management}

	// The management key reaches the container through podman's
	// environment (`--env NAME` without a value): on no command line.
	rt.env = append(rt.env, "OPENROUTER_MANAGEMENT_KEY="+management)
	volumes := fmt.Sprintf("caddy-openrouter-keys-test-%d", os.Getpid())
	ctr := runGateway(t, rt, volumes+"-1", volumes, origin)

	// Start-up: from `podman run` to the first answer of the readiness
	// probe, and from the process's start (podman's StartedAt) to it.
	firstAnswer := ctr.waitReady(t)
	startedAt := ctr.state(t).State.StartedAt
	t.Logf("image %s: %.1f MB; start to first answered request: %s after `podman run`, %s after the process started",
		image, float64(imageSize(t, rt))/1e6, firstAnswer.Sub(ctr.runAt).Round(time.Millisecond), firstAnswer.Sub(startedAt).Round(time.Millisecond))

	t.Run("readiness", func(t *testing.T) { checkReadiness(t, upstreamRequests) })
	t.Run("non-root", func(t *testing.T) { checkNonRoot(t, ctr) })
	t.Run("expired key explained", func(t *testing.T) {
		status, header, body := chat(t, expired)
		if status != http.StatusUnauthorized || header.Get("X-OpenRouter-Key-Status") != "key_expired" || reason(body) != "key_expired" {
			t.Errorf("expired key through the container: %d, X-OpenRouter-Key-Status %q, body %s", status, header.Get("X-OpenRouter-Key-Status"), body)
		}
	})
	t.Run("x-api-key explained", func(t *testing.T) {
		// The access log gets this request's headers: the sweep below
		// shows that the key stays out of it.
		status, body := messages(t, expired)
		if status != http.StatusUnauthorized || reason(body) != "key_expired" || !strings.Contains(string(body), `"authentication_error"`) {
			t.Errorf("/messages with an expired key in x-api-key through the container: %d %s", status, body)
		}
	})
	t.Run("management key from the environment", func(t *testing.T) {
		// Only the management API tells a disabled key from a deleted one.
		status, _, body := chat(t, disabled)
		if status != http.StatusUnauthorized || reason(body) != "key_disabled" {
			t.Errorf("disabled key through the container: %d %s (key_disabled needs the management key)", status, body)
		}
	})
	t.Run("stream passes event by event", func(t *testing.T) {
		s := stream(t, valid)
		if s.status != http.StatusOK || !strings.HasPrefix(s.contentType, "text/event-stream") || !s.done || s.content != emulator.Reply {
			t.Fatalf("stream through the container: %d %q, [DONE] %v, content %q", s.status, s.contentType, s.done, s.content)
		}
		if gap := s.doneAt.Sub(s.firstEventAt); gap < 3*eventGap {
			t.Errorf("the first event came %s before [DONE]; sent %s apart, they were buffered", gap, 5*eventGap)
		}
	})
	t.Run("volumes written by the user", func(t *testing.T) { checkVolumes(t, ctr) })
	instance := readFile(t, filepath.Join(ctr.volume(t, "/data"), "caddy", "instance.uuid"))
	t.Run("SIGTERM lets a stream in flight finish", func(t *testing.T) { checkStop(t, ctr, valid) })
	t.Run("no key in logs or volumes", func(t *testing.T) { checkNoKeys(t, ctr, keys) })

	// A new container on the same volumes (a redeploy) finds what the
	// last one kept: Caddy's instance ID, and with shared_storage what the
	// gateway learned.
	t.Run("volumes kept across containers", func(t *testing.T) {
		if out, err := rt.podman("rm", ctr.name); err != nil {
			t.Fatalf("podman rm %s: %v\n%s", ctr.name, err, out)
		}
		next := runGateway(t, rt, volumes+"-2", volumes, origin)
		next.waitReady(t)
		if got := readFile(t, filepath.Join(next.volume(t, "/data"), "caddy", "instance.uuid")); got != instance {
			t.Errorf("instance ID %q after a new container on the same volumes, %q before", got, instance)
		}
		status, _, body := chat(t, expired)
		if status != http.StatusUnauthorized || reason(body) != "key_expired" {
			t.Errorf("expired key through the new container: %d %s", status, body)
		}
		checkNoKeys(t, next, keys)
	})
}

// buildImage builds the image with deploy/image.sh, as docs/container.md
// says, and checks that podman can run a container of it. A cold Go build
// cache makes this the test's longest step (minutes on 2 cores).
func buildImage(t testing.TB, rt *runtime) {
	t.Helper()
	started := time.Now()
	// What is left of the test's deadline, less a margin for the rest.
	timeout := 10 * time.Minute
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			timeout = max(time.Until(deadline)-time.Minute, time.Minute)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if out, err := rt.program(ctx, "deploy/image.sh").CombinedOutput(); err != nil {
		t.Fatalf("deploy/image.sh: %v\n%s", err, out)
	}
	t.Logf("deploy/image.sh built %s in %s", image, time.Since(started).Round(100*time.Millisecond))

	// A container that cannot start at all is the runtime's doing, not the
	// image's (a static binary that runs on the host): say so, and fail in
	// CI.
	if out, err := rt.podman("run", "--rm", "--network", "host", image, "version"); err != nil {
		unavailable(t, "podman cannot run a container here: %v\n%s", err, out)
	}
}

// imageSize is the image's size in bytes, as podman reports it.
func imageSize(t testing.TB, rt *runtime) int64 {
	t.Helper()
	size, err := strconv.ParseInt(rt.stdout(t, "image", "inspect", "--format", "{{.Size}}", image), 10, 64)
	if err != nil {
		t.Fatalf("image size: %v", err)
	}
	return size
}

// checkImageConfig checks what the image declares: its user, volumes,
// port, data and config directories, stop signal and command.
func checkImageConfig(t testing.TB, rt *runtime) {
	t.Helper()
	var cfg struct {
		User         string
		ExposedPorts map[string]struct{}
		Env          []string
		Entrypoint   []string
		Cmd          []string
		Volumes      map[string]struct{}
		StopSignal   string
	}
	if err := json.Unmarshal([]byte(rt.stdout(t, "image", "inspect", "--format", "{{json .Config}}", image)), &cfg); err != nil {
		t.Fatalf("image config: %v", err)
	}
	env := strings.Join(cfg.Env, " ")
	_, data := cfg.Volumes["/data"]
	_, config := cfg.Volumes["/config"]
	_, port := cfg.ExposedPorts["8080/tcp"]
	if cfg.User != fmt.Sprintf("%d:%d", user, user) || !data || !config || !port || cfg.StopSignal != "SIGTERM" ||
		!strings.Contains(env, "XDG_DATA_HOME=/data") || !strings.Contains(env, "XDG_CONFIG_HOME=/config") ||
		strings.Join(append(cfg.Entrypoint, cfg.Cmd...), " ") != "/usr/bin/caddy run --config /etc/caddy/Caddyfile --adapter caddyfile" {
		t.Errorf("image config: %+v", cfg)
	}
}

// startEmulator serves a fresh emulator on a loopback port of the host,
// which the container reaches through the host's network, and counts the
// requests that reach it.
func startEmulator(t testing.TB) (emu *emulator.Server, origin string, requests *atomic.Int64) {
	t.Helper()
	emu = emulator.New()
	emu.EventGap = eventGap
	requests = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return emu, srv.URL, requests
}

// container is the gateway's running container.
type container struct {
	rt      *runtime
	name    string
	volumes string    // the named volumes' prefix
	runAt   time.Time // when `podman run` was started
}

// runGateway starts the image with its default command and config, as
// docs/container.md shows, on the host's network, with the named volumes
// volumes-data and volumes-config. Caddy's admin endpoint moves, through
// CADDY_ADMIN, from localhost:2019 to a free loopback port: on the host's
// network the default could meet another Caddy.
func runGateway(t testing.TB, rt *runtime, name, volumes, origin string) *container {
	t.Helper()
	if ln, err := net.Listen("tcp", ":8080"); err != nil {
		t.Fatalf("port 8080, where Caddyfile.example listens, is taken on this host: %v", err)
	} else {
		ln.Close()
	}
	t.Cleanup(func() {
		if out, err := rt.podman("rm", "--force", "--ignore", "--volumes", "--time", "0", name); err != nil {
			t.Logf("podman rm %s: %v\n%s", name, err, out)
		}
	})
	c := &container{rt: rt, name: name, volumes: volumes, runAt: time.Now()}
	// --timeout: if the test process dies (go test's timeout) before its
	// cleanup, the container does not hold port 8080 for long after it.
	rt.stdout(t, "run", "--detach", "--name", name, "--network", "host", "--pull", "never", "--timeout", "300",
		"--env", "OPENROUTER_ORIGIN="+origin,
		"--env", "OPENROUTER_MANAGEMENT_KEY",
		"--env", "CADDY_ADMIN=localhost:"+strconv.Itoa(freePort(t)),
		"--volume", volumes+"-data:/data", "--volume", volumes+"-config:/config",
		image)
	return c
}

// freePort is a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// fresh is a client that opens a new connection for every request, so
// that an answer proves the listener is open.
var fresh = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitReady polls the readiness probe until it answers 200 and returns
// when it did.
func (c *container) waitReady(t testing.TB) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := fresh.Get(gateway + "/healthz")
		last := fmt.Sprint(err)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now()
			}
			last = resp.Status
		}
		if time.Now().After(deadline) {
			out, _ := c.rt.podman("logs", "--tail", "20", c.name)
			t.Fatalf("the container did not answer /healthz within 30 s (last: %s); its log ends:\n%s", last, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// state is what the test reads of `podman container inspect`.
type state struct {
	State struct {
		Status    string
		Pid       int
		ExitCode  int
		OOMKilled bool
		StartedAt time.Time
	}
	Mounts []struct{ Name, Source, Destination string }
}

// state inspects the container.
func (c *container) state(t testing.TB) state {
	t.Helper()
	var states []state
	if err := json.Unmarshal([]byte(c.rt.stdout(t, "container", "inspect", c.name)), &states); err != nil || len(states) != 1 {
		t.Fatalf("podman container inspect %s: %v (%d states)", c.name, err, len(states))
	}
	return states[0]
}

// logs is what the container wrote, stdout and stderr together.
func (c *container) logs(t testing.TB) string {
	t.Helper()
	out, err := c.rt.podman("logs", c.name)
	if err != nil {
		t.Fatalf("podman logs %s: %v\n%s", c.name, err, out)
	}
	return out
}

// volume is the host directory of the volume mounted at dest.
func (c *container) volume(t testing.TB, dest string) string {
	t.Helper()
	for _, m := range c.state(t).Mounts {
		if m.Destination == dest {
			if m.Name != c.volumes+"-"+strings.TrimPrefix(dest, "/") {
				t.Errorf("%s is volume %q, not the named volume the test gave", dest, m.Name)
			}
			return m.Source
		}
	}
	t.Fatalf("no volume at %s", dest)
	return ""
}

// checkReadiness checks the probe: 200 "ok" to GET and HEAD without a
// key, 405 naming GET and HEAD to anything else, and no request to
// OpenRouter for any of them.
func checkReadiness(t *testing.T, upstreamRequests *atomic.Int64) {
	before := upstreamRequests.Load()
	for _, c := range []struct {
		method string
		status int
		body   string
	}{{"GET", 200, "ok"}, {"HEAD", 200, ""}, {"POST", 405, ""}, {"DELETE", 405, ""}} {
		req, _ := http.NewRequest(c.method, gateway+"/healthz", nil)
		resp, err := fresh.Do(req)
		if err != nil {
			t.Fatalf("%s /healthz: %v", c.method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || string(body) != c.body {
			t.Errorf("%s /healthz: %d %q, want %d %q", c.method, resp.StatusCode, body, c.status, c.body)
		}
		if c.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /healthz: 405 with Allow %q, want \"GET, HEAD\"", c.method, resp.Header.Get("Allow"))
		}
	}
	if n := upstreamRequests.Load() - before; n != 0 {
		t.Errorf("the readiness probe sent %d requests to OpenRouter", n)
	}
}

// checkNonRoot checks the container's process on the host: Caddy, run by
// the image's user and group, with no capability in effect.
func checkNonRoot(t *testing.T, c *container) {
	pid := c.state(t).State.Pid
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("the container's process %d: %v", pid, err)
	}
	if !bytes.HasPrefix(cmdline, []byte("/usr/bin/caddy\x00run\x00")) {
		t.Fatalf("process %d is %q, not Caddy", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	status := readFile(t, fmt.Sprintf("/proc/%d/status", pid))
	fields := make(map[string]string)
	for line := range strings.Lines(status) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	if fields["Uid"] == "" || fields["Gid"] == "" {
		t.Fatalf("no Uid or Gid in /proc/%d/status:\n%s", pid, status)
	}
	// As root, podman maps no IDs: the host sees the image's user and
	// group. A rootless podman maps them to subordinate IDs of the user
	// running it: then none may be 0.
	for _, f := range []string{"Uid", "Gid", "Groups"} {
		for id := range strings.FieldsSeq(fields[f]) {
			if id == "0" || (os.Geteuid() == 0 && id != strconv.Itoa(user)) {
				t.Errorf("Caddy runs with %s %q (real, effective, saved, filesystem), want %d", f, fields[f], user)
				break
			}
		}
	}
	if fields["CapEff"] != "0000000000000000" {
		t.Errorf("Caddy has capabilities in effect: CapEff %s", fields["CapEff"])
	}
}

// checkVolumes checks that Caddy wrote its autosaved config and its
// instance ID into the volumes, as the image's user, and that the
// autosaved config holds the management key's placeholder.
func checkVolumes(t *testing.T, c *container) {
	autosave := filepath.Join(c.volume(t, "/config"), "caddy", "autosave.json")
	instance := filepath.Join(c.volume(t, "/data"), "caddy", "instance.uuid")
	for _, path := range []string{autosave, instance} {
		info, err := os.Stat(path)
		if err != nil {
			t.Errorf("Caddy did not write its volume: %v", err)
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && (st.Uid != user || st.Gid != user) {
			t.Errorf("%s is owned by %d:%d, not the image's user", path, st.Uid, st.Gid)
		}
	}
	if cfg := readFile(t, autosave); !strings.Contains(cfg, "{env.OPENROUTER_MANAGEMENT_KEY}") {
		t.Errorf("the autosaved config does not read the management key from the environment: %s", cfg)
	}
}

// checkStop stops the container as orchestrators do (SIGTERM, then SIGKILL
// after stopTimeout) while a stream is in flight: Caddy stops accepting
// connections at once, lets the stream finish (its grace period is
// unlimited by default), and exits 0 by itself, saying it was SIGTERM.
func checkStop(t *testing.T, c *container, key string) {
	firstEvent := make(chan time.Time, 1)
	streamed := make(chan streamResult, 1)
	go func() {
		s, err := openStream(key, firstEvent)
		s.err = err
		streamed <- s
	}()
	select {
	case <-firstEvent:
	case s := <-streamed:
		t.Fatalf("the stream ended before its first event: %+v", s)
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30 s")
	}

	type stopped struct {
		out  string
		err  error
		took time.Duration
	}
	stop := make(chan stopped, 1)
	stopAt := time.Now()
	go func() {
		out, err := c.rt.podman("stop", "--time", strconv.Itoa(int(stopTimeout.Seconds())), c.name)
		stop <- stopped{out, err, time.Since(stopAt)}
	}()

	// The listener closes at once: a new connection is refused (or reset,
	// if it was still waiting to be accepted when the listener closed).
	var refusedAt time.Time
	for deadline := time.Now().Add(10 * time.Second); refusedAt.IsZero(); {
		resp, err := fresh.Get(gateway + "/healthz")
		switch {
		case err == nil:
			resp.Body.Close()
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
			refusedAt = time.Now()
		default:
			t.Fatalf("/healthz after SIGTERM: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("Caddy still accepts connections 10 s after podman stop")
		}
		time.Sleep(5 * time.Millisecond)
	}

	s := <-streamed
	if s.err != nil || !s.done || s.content != emulator.Reply {
		t.Errorf("the stream in flight at SIGTERM: %v, [DONE] %v, content %q", s.err, s.done, s.content)
	}
	if !refusedAt.Before(s.doneAt) {
		t.Errorf("the stream ended (%s) before Caddy stopped accepting connections (%s): SIGTERM came too late to test",
			s.doneAt.Format(time.StampMicro), refusedAt.Format(time.StampMicro))
	}

	r := <-stop
	if r.err != nil {
		t.Fatalf("podman stop: %v\n%s", r.err, r.out)
	}
	st := c.state(t).State
	if st.Status != "exited" || st.ExitCode != 0 || st.OOMKilled || r.took >= stopTimeout {
		t.Errorf("after podman stop: %s, exit code %d, OOM-killed %v, %s after SIGTERM (SIGKILL at %s)",
			st.Status, st.ExitCode, st.OOMKilled, r.took, stopTimeout)
	}
	t.Logf("stopped %s after SIGTERM, a stream in flight finished %s after it", r.took.Round(time.Millisecond), s.doneAt.Sub(stopAt).Round(time.Millisecond))

	// Caddy's own account: it heard SIGTERM and shut down cleanly.
	var heard, completed bool
	for line := range strings.Lines(c.logs(t)) {
		var l struct {
			Msg      string `json:"msg"`
			Signal   string `json:"signal"`
			ExitCode *int   `json:"exit_code"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Signal != "SIGTERM" {
			continue
		}
		heard = heard || l.Msg == "shutting down apps, then terminating"
		completed = completed || (l.Msg == "shutdown complete" && l.ExitCode != nil && *l.ExitCode == 0)
	}
	if !heard || !completed {
		t.Errorf("Caddy's log: SIGTERM heard %v, shutdown complete with exit code 0 %v", heard, completed)
	}
}

// checkNoKeys sweeps the container's logs and every file in its volumes
// for any form of the keys.
func checkNoKeys(t *testing.T, c *container, keys []string) {
	t.Helper()
	places := map[string]string{"podman logs": c.logs(t)}
	for _, dest := range []string{"/data", "/config"} {
		root := c.volume(t, dest)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				places[dest+strings.TrimPrefix(path, root)] = readFile(t, path)
			}
			return err
		})
		if err != nil {
			t.Fatalf("sweeping the volume at %s: %v", dest, err)
		}
	}
	swept := 0
	for place, text := range places {
		swept += len(text)
		for _, key := range keys {
			for _, form := range keyMaterial(key) {
				if strings.Contains(text, form) {
					t.Errorf("%s holds key material (%d characters of a key)", place, len(form))
				}
			}
		}
	}
	if swept == 0 {
		t.Error("nothing to sweep: the sweep would prove nothing")
	}
}

// keyMaterial is every form of a key that must never be written: the key,
// its hex part, the hex part's first 24 digits, its SHA-256 (OpenRouter's
// record hash).
func keyMaterial(key string) []string {
	sum := sha256.Sum256([]byte(key))
	forms := []string{key, hex.EncodeToString(sum[:])}
	if hexPart, ok := strings.CutPrefix(key, "sk-or-v1-"); ok && len(hexPart) >= 24 {
		forms = append(forms, hexPart, hexPart[:24])
	}
	return forms
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
