package container

// startup_test.go owns the image's figures: its size and its time from
// start to the first answered request, as a benchmark that prints them.

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkStartup builds the image with deploy/image.sh and starts b.N
// containers of it, each on fresh volumes, one after another. It reports
// the image's size and the mean time from invoking `podman run` to the
// first 200 of the readiness probe:
//
//	go test -run '^$' -bench Startup ./tests/container/
func BenchmarkStartup(b *testing.B) {
	rt := newRuntime(b)
	buildImage(b, rt)
	_, origin, _ := startEmulator(b)
	size := imageSize(b, rt)

	var toFirstAnswer time.Duration
	starts := 0
	for b.Loop() {
		name := fmt.Sprintf("caddy-openrouter-keys-bench-%d-%d", os.Getpid(), starts)
		c := runGateway(b, rt, name, name, origin)
		toFirstAnswer += c.waitReady(b).Sub(c.runAt)
		starts++
		if out, err := rt.podman("rm", "--force", "--volumes", "--time", "0", name); err != nil {
			b.Fatalf("podman rm: %v\n%s", err, out)
		}
	}
	b.ReportMetric(float64(size)/1e6, "MB/image")
	b.ReportMetric(float64(toFirstAnswer.Milliseconds())/float64(starts), "ms/first-answer")
}
