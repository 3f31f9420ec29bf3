// Command bench compares plain Caddy reverse_proxy with openrouter_keys in
// front of it, end to end: one emulator (with a fixed response delay), two
// Caddy processes from the same binary with the same settings but for the
// module, a vegeta load alternating between them round by round, the CPU
// time each process spends per request while both are loaded at once, and
// the time to the first streamed event. Run it from the repository root:
//
//	go run ./tests/bench
//
// With -instructions N it instead runs both Caddy processes under
// valgrind's callgrind and counts the instructions each executes for N
// requests (with the allocations from Caddy's /metrics): unlike CPU time,
// the count does not move with what else the machine is doing, so a
// difference of a fraction of a percent shows. It needs valgrind. With
// -cache-sim it also counts the cache misses callgrind simulates: what
// costs CPU time beyond the instructions (a larger code path misses the
// instruction cache more often).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

var (
	profileTo    string
	control      bool
	twin         bool
	pinCaddy     string
	instructions int
	cacheSim     bool
	keepDir      string
	// moduleOptions are more lines for the gateway's openrouter_keys
	// block; otherHandler a directive the twin, or the control's gateway
	// side, runs before reverse_proxy.
	moduleOptions string
	otherHandler  string
)

func main() {
	rounds := flag.Int("rounds", 5, "rounds; each runs the load against both, in alternating order")
	duration := flag.Duration("duration", 5*time.Second, "load per side per round")
	workers := flag.Uint64("workers", 32, "concurrent connections of the load generator")
	keys := flag.Int("keys", 1000, "distinct keys in the load")
	delay := flag.Duration("delay", 2*time.Millisecond, "the emulator's fixed response delay")
	streams := flag.Int("streams", 50, "streamed requests per side for the time to first event")
	rate := flag.Int("rate", 0, "requests per second; 0 sends as fast as the workers can")
	flag.StringVar(&pinCaddy, "pin-caddy", "", "CPU list (taskset -c) for both Caddy processes, such as 1; run the bench itself pinned elsewhere, such as taskset -c 0")
	flag.BoolVar(&control, "control", false, "run the gateway side without the module: measures the harness's own bias")
	flag.BoolVar(&twin, "twin", false, "also load a second plain Caddy with the other two in the CPU rounds: each round's twin/plain ratio is the harness's own spread in that very round")
	flag.StringVar(&profileTo, "cpuprofile", "", "write a CPU profile of the gateway's Caddy, taken during its first round, to this file, and plain's to this file with .plain added (compare them with go tool pprof -diff_base)")
	flag.IntVar(&instructions, "instructions", 0, "count each Caddy's instructions per request over this many requests a round, under valgrind's callgrind, instead of timing")
	flag.BoolVar(&cacheSim, "cache-sim", false, "with -instructions: also simulate the caches (callgrind --cache-sim=yes) and print their misses per request")
	flag.StringVar(&moduleOptions, "module-options", "", "more lines for the gateway's openrouter_keys block, such as 'explain_limits off; warn_model_retirement off' (; separates lines): what a feature adds")
	flag.StringVar(&otherHandler, "other-handler", "", "a directive the twin (-twin) or the control's gateway side (-control) runs before reverse_proxy instead of nothing, such as 'vars x y': Caddy's own cost of one more handler in a route")
	flag.StringVar(&keepDir, "keep", "", "write the Caddyfiles, Caddy's logs, the binary and callgrind's counts (for callgrind_annotate) to this directory and keep them, instead of a temporary one")
	flag.Parse()
	// A flag that would change nothing is a mistaken command, not a
	// measurement to print.
	switch {
	case otherHandler != "" && !twin && !control:
		fmt.Fprintln(os.Stderr, "bench: -other-handler needs -twin or -control")
		os.Exit(2)
	case moduleOptions != "" && control:
		fmt.Fprintln(os.Stderr, "bench: -module-options has no module to configure with -control")
		os.Exit(2)
	case cacheSim && instructions == 0:
		fmt.Fprintln(os.Stderr, "bench: -cache-sim needs -instructions")
		os.Exit(2)
	}
	if err := run(*rounds, *duration, *workers, *keys, *delay, *streams, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type side struct {
	name  string
	base  string
	admin string // Caddy's admin endpoint: /metrics, /debug/pprof
	cmd   *exec.Cmd
	// callgrindOut is where callgrind writes its counts (-instructions).
	callgrindOut string
}

func run(rounds int, duration time.Duration, workers uint64, nkeys int, delay time.Duration, streams, rate int) error {
	dir := keepDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "openrouter-keys-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "caddy")
	fmt.Println("building ./cmd/caddy ...")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/caddy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}

	emu := emulator.New()
	emu.Delay = delay
	emu.EventGap = 10 * time.Millisecond
	upstream := httptest.NewServer(emu)
	defer upstream.Close()
	hostport := strings.TrimPrefix(upstream.URL, "http://")
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = emu.NewKey(emulator.KeyOptions{})
	}

	plain, err := startCaddy(bin, dir, "plain", hostport, "")
	if err != nil {
		return err
	}
	defer stop(plain)
	module := "openrouter_keys {\n\t\tupstream http://" + hostport + "/api/v1\n"
	for line := range strings.SplitSeq(moduleOptions, ";") {
		if line = strings.TrimSpace(line); line != "" {
			module += "\t\t" + line + "\n"
		}
	}
	module += "\t}"
	if control {
		module = otherHandler
	}
	gateway, err := startCaddy(bin, dir, "gateway", hostport, module)
	if err != nil {
		return err
	}
	defer stop(gateway)
	cpuSides := []*side{plain, gateway}
	if twin {
		t, err := startCaddy(bin, dir, "twin", hostport, otherHandler)
		if err != nil {
			return err
		}
		defer stop(t)
		cpuSides = append(cpuSides, t)
	}

	body := []byte(`{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	targets := func(base string) vegeta.Targeter {
		ts := make([]vegeta.Target, len(keys))
		for i, k := range keys {
			ts[i] = vegeta.Target{Method: "POST", URL: base + "/chat/completions", Body: body,
				Header: http.Header{"Authorization": {"Bearer " + k}, "Content-Type": {"application/json"}, "Accept-Encoding": {"gzip"}}}
		}
		return vegeta.NewStaticTargeter(ts...)
	}
	attack := func(s *side, duration time.Duration) (*vegeta.Metrics, error) {
		a := vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(workers), vegeta.KeepAlive(true), vegeta.Connections(int(workers)))
		var m vegeta.Metrics
		for res := range a.Attack(targets(s.base), vegeta.Rate{Freq: rate, Per: time.Second}, duration, s.name) {
			m.Add(res)
		}
		m.Close()
		if m.Success < 1 {
			return &m, fmt.Errorf("%s: %.2f%% success, errors %v", s.name, 100*m.Success, m.Errors)
		}
		return &m, nil
	}

	// Warm each (connections, the gateway's cache of the 1,000 keys).
	for _, s := range cpuSides {
		if _, err := attack(s, duration/5); err != nil {
			return err
		}
	}
	// The gateway learns each key once (its GET /key, within lookup_rate:
	// 20 a second by default, so 50 s for 1,000 keys); measured while it
	// is still learning, the rounds would count that one-time cost as a
	// per-request one. Load it until every key has been looked up.
	if !control {
		began := time.Now()
		for {
			n, err := keyLookups(gateway)
			if err != nil {
				return err
			}
			if n >= float64(nkeys) {
				break
			}
			if time.Since(began) > 5*time.Minute {
				return fmt.Errorf("the gateway looked up %.0f of %d keys in 5 minutes", n, nkeys)
			}
			if _, err := attack(gateway, time.Second); err != nil {
				return err
			}
		}
		fmt.Printf("the gateway learned all %d keys in %v\n", nkeys, time.Since(began).Round(time.Second))
	}
	if instructions > 0 {
		return countInstructions(plain, gateway, rounds, instructions, int(workers), targets)
	}

	load := "as fast as they can"
	if rate > 0 {
		load = fmt.Sprintf("at %d req/s", rate)
	}
	fmt.Printf("\n%d rounds of %v per side, %d workers %s, %d keys, upstream delay %v; this process may use %d CPUs\n\n", rounds, duration, workers, load, nkeys, delay, runtime.NumCPU())
	fmt.Printf("%-6s %12s %10s %10s   %12s %10s %10s   %8s %8s\n", "round", "plain req/s", "p50", "p99", "gateway req/s", "p50", "p99", "rps ratio", "p99 ratio")
	var rpsRatios, p50Ratios, p99Ratios []float64
	for r := 1; r <= rounds; r++ {
		order := []*side{plain, gateway}
		if r%2 == 0 {
			order = []*side{gateway, plain}
		}
		got := map[string]*vegeta.Metrics{}
		for _, s := range order {
			if r == 1 && profileTo != "" {
				go saveProfile(s, duration)
			}
			m, err := attack(s, duration)
			if err != nil {
				return err
			}
			got[s.name] = m
		}
		p, g := got["plain"], got["gateway"]
		rps, p50, p99 := g.Throughput/p.Throughput, float64(g.Latencies.P50)/float64(p.Latencies.P50), float64(g.Latencies.P99)/float64(p.Latencies.P99)
		rpsRatios, p50Ratios, p99Ratios = append(rpsRatios, rps), append(p50Ratios, p50), append(p99Ratios, p99)
		fmt.Printf("%-6d %12.0f %10v %10v   %12.0f %10v %10v   %8.3f %8.3f\n", r,
			p.Throughput, p.Latencies.P50.Round(time.Microsecond), p.Latencies.P99.Round(time.Microsecond),
			g.Throughput, g.Latencies.P50.Round(time.Microsecond), g.Latencies.P99.Round(time.Microsecond), rps, p99)
	}
	fmt.Printf("\nmedian of the rounds' ratios gateway/plain: throughput %.3f (target >= 0.97), p50 %.3f, p99 %.3f (target <= 1.05)\n",
		median(rpsRatios), median(p50Ratios), median(p99Ratios))

	// Throughput swings between rounds with what else the machine does;
	// the CPU time a process spends per request does much less, above all
	// when both sides are loaded at the same moment and share whatever
	// else is going on.
	fmt.Printf("\nboth loaded at once, CPU time per request of each Caddy process (/proc, user+system), and what it was spent on:\n")
	fmt.Printf("%-6s %14s %14s %8s   %17s %17s   %15s %15s\n", "round", "plain µs/req", "gateway µs/req", "ratio",
		"user/sys plain", "user/sys gateway", "syscalls p/g", "switches p/g")
	var cpuRatios, twinRatios, overTwin []float64
	var userRatios, sysRatios []float64
	for r := 1; r <= rounds; r++ {
		perReq := make([]procCounters, len(cpuSides)) // per request: plain, gateway, twin
		errs := make(chan error, len(cpuSides))
		for i, s := range cpuSides {
			go func() {
				before, err := countersOf(s.cmd.Process.Pid)
				if err != nil {
					errs <- err
					return
				}
				m, err := attack(s, duration)
				if err != nil {
					errs <- err
					return
				}
				after, err := countersOf(s.cmd.Process.Pid)
				if err == nil {
					perReq[i] = after.minus(before).per(float64(m.Requests))
				}
				errs <- err
			}()
		}
		for range cpuSides {
			if err := <-errs; err != nil {
				return err
			}
		}
		p, g := perReq[0], perReq[1]
		cpuRatios = append(cpuRatios, g.cpu()/p.cpu())
		userRatios = append(userRatios, g.user/p.user)
		sysRatios = append(sysRatios, g.system/p.system)
		fmt.Printf("%-6d %14.1f %14.1f %8.3f   %8.1f/%-8.1f %8.1f/%-8.1f   %7.2f/%-7.2f %7.2f/%-7.2f", r, p.cpu(), g.cpu(), g.cpu()/p.cpu(),
			p.user, p.system, g.user, g.system, p.syscalls, g.syscalls, p.switches, g.switches)
		if twin {
			t := perReq[2]
			twinRatios = append(twinRatios, t.cpu()/p.cpu())
			overTwin = append(overTwin, g.cpu()/t.cpu())
			fmt.Printf("   twin/plain %.3f gateway/twin %.3f", t.cpu()/p.cpu(), g.cpu()/t.cpu())
		}
		fmt.Println()
	}
	fmt.Printf("\nmedian user time per request gateway/plain: %.3f, system time: %.3f\n", median(userRatios), median(sysRatios))
	if twin {
		fmt.Printf("median CPU time per request twin/plain (the harness's own, same rounds): %.3f; gateway/twin: %.3f\n", median(twinRatios), median(overTwin))
	}
	fmt.Printf("\nmedian CPU time per request gateway/plain: %.3f (target <= 1.03)\n", median(cpuRatios))

	// Time to the first streamed event, alternating request by request.
	var firstPlain, firstGateway []time.Duration
	for i := 0; i < streams; i++ {
		for _, s := range []*side{plain, gateway} {
			d, err := firstEvent(s.base, keys[i%len(keys)])
			if err != nil {
				return fmt.Errorf("%s stream: %w", s.name, err)
			}
			if s == plain {
				firstPlain = append(firstPlain, d)
			} else {
				firstGateway = append(firstGateway, d)
			}
		}
	}
	mp, mg := medianDur(firstPlain), medianDur(firstGateway)
	fmt.Printf("time to first SSE event (median of %d): plain %v, gateway %v, difference %v (target <= 0.1ms)\n",
		streams, mp.Round(time.Microsecond), mg.Round(time.Microsecond), (mg - mp).Round(time.Microsecond))
	return nil
}

// procCounters are what a process has spent, from Linux's /proc: CPU
// time in µs (run: the scheduler's own count, in nanoseconds, summed over
// the threads; user and system: stat's split of it, in 10 ms ticks and
// apportioned by sampling, so only roughly), system calls that read and
// write, and context switches, voluntary or not.
type procCounters struct {
	run, user, system, syscalls, switches float64
}

// cpu is the CPU time: the scheduler's count where there is one, which at
// about a second of CPU a round is 1,000 times finer than stat's ticks.
func (c procCounters) cpu() float64 {
	if c.run > 0 {
		return c.run
	}
	return c.user + c.system
}

func (c procCounters) minus(o procCounters) procCounters {
	return procCounters{c.run - o.run, c.user - o.user, c.system - o.system, c.syscalls - o.syscalls, c.switches - o.switches}
}

func (c procCounters) per(n float64) procCounters {
	return procCounters{c.run / n, c.user / n, c.system / n, c.syscalls / n, c.switches / n}
}

// countersOf reads process pid's counters: CPU time from each thread's
// /proc/<pid>/task/<tid>/schedstat (a Go process keeps its threads), its
// split into user and system from /proc/<pid>/stat in units of USER_HZ
// taken as 100 per second (what Linux reports to user space on every
// architecture Go supports there), system calls from /proc/<pid>/io
// (syscr, syscw), context switches from each thread's status.
func countersOf(pid int) (procCounters, error) {
	var c procCounters
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, fmt.Errorf("CPU time per request needs Linux's /proc: %w", err)
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3 (state): utime is field 14,
	// stime field 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return c, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return c, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	for j, f := range fields[11:13] {
		ticks, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return c, fmt.Errorf("unreadable /proc/%d/stat: %w", pid, err)
		}
		us := float64(time.Duration(ticks)*(time.Second/100)) / float64(time.Microsecond)
		if j == 0 {
			c.user = us
		} else {
			c.system = us
		}
	}
	// The process's system calls are in its own io; context switches only
	// per thread.
	files := []string{fmt.Sprintf("/proc/%d/io", pid)}
	threads, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, file := range append(files, threads...) {
		b, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // a thread that ended
			}
			return c, err
		}
		if task, ok := strings.CutSuffix(file, "/status"); ok {
			// schedstat: time on the CPU in ns, time waiting, slices.
			if sched, err := os.ReadFile(task + "/schedstat"); err == nil {
				if f := strings.Fields(string(sched)); len(f) == 3 {
					if ns, err := strconv.ParseFloat(f[0], 64); err == nil {
						c.run += ns / 1e3
					}
				}
			}
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			n, err := strconv.ParseFloat(f[1], 64)
			switch {
			case err != nil:
			case f[0] == "syscr:" || f[0] == "syscw:":
				c.syscalls += n
			case f[0] == "voluntary_ctxt_switches:" || f[0] == "nonvoluntary_ctxt_switches:":
				c.switches += n
			}
		}
	}
	return c, nil
}

func startCaddy(bin, dir, name, upstream, module string) (*side, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
}

:%d {
	%s
	reverse_proxy %s
}
`, adminPort, port, module, upstream)
	file := filepath.Join(dir, name+".Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	if pinCaddy != "" {
		// Caddy on its own core(s), away from the load generator and the
		// emulator, so that the two sides do not fight over one scheduler.
		cmd = exec.Command("taskset", "-c", pinCaddy, bin, "run", "--config", file, "--adapter", "caddyfile")
	}
	started := 20 * time.Second
	var callgrindOut string
	if instructions > 0 {
		// Go's asynchronous preemption signals crash callgrind; the
		// scheduler preempts at function calls instead, on both sides.
		callgrindOut = filepath.Join(dir, name+".callgrind")
		args := []string{"--tool=callgrind", "--callgrind-out-file=" + callgrindOut}
		if cacheSim {
			args = append(args, "--cache-sim=yes")
		}
		cmd = exec.Command("valgrind", append(args, bin, "run", "--config", file, "--adapter", "caddyfile")...)
		cmd.Env = append(cmd.Env, "GODEBUG=asyncpreemptoff=1")
		started = 2 * time.Minute
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(append(os.Environ(), cmd.Env...), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &side{name: name, base: fmt.Sprintf("http://127.0.0.1:%d/api/v1", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), cmd: cmd, callgrindOut: callgrindOut}
	for deadline := time.Now().Add(started); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			stop(s)
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("%s caddy did not start:\n%s", name, log)
		}
	}
}

func stop(s *side) {
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var streamClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

func firstEvent(base, key string) (time.Duration, error) {
	req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(`{"model":"openai/gpt-4o","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := streamClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		return 0, err
	}
	d := time.Since(start)
	_, _ = io.Copy(io.Discard, resp.Body)
	return d, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianDur(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// keyLookups is how many GET /key lookups the side's module has had
// answered, from Caddy's /metrics.
func keyLookups(s *side) (float64, error) {
	resp, err := http.Get(s.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	const series = `caddy_openrouter_keys_lookups_total{endpoint="key",outcome="ok"} `
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, sc.Err()
}

func saveProfile(s *side, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", s.admin, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	to := profileTo
	if s.name == "plain" {
		to += ".plain"
	}
	f, err := os.Create(to)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// countInstructions loads both sides at once with n requests each per
// round, in the same order of keys, and prints the instructions each Caddy
// process executed per request (all its threads: the handlers, net/http,
// the garbage collector) and the allocations Caddy's /metrics counted.
func countInstructions(plain, gateway *side, rounds, n, workers int, targets func(string) vegeta.Targeter) error {
	fmt.Printf("\n%d rounds of %d requests per side, %d connections, both under callgrind\n\n", rounds, n, workers)
	fmt.Printf("%-6s %16s %16s %8s   %14s %14s   %12s %12s\n", "round", "plain instr/req", "gateway instr/req", "ratio", "plain allocs", "gateway allocs", "plain B", "gateway B")
	var ratios, cycleRatios []float64
	var misses [][2]callgrindEvents
	for r := 1; r <= rounds; r++ {
		var instr, allocs, bytes [2]float64
		var events [2]callgrindEvents
		errs := make(chan error, 2)
		for i, s := range []*side{plain, gateway} {
			go func() {
				errs <- func() error {
					// The scrapes of /metrics for the allocations stay
					// outside the count: the gateway's /metrics is longer,
					// and compressing it is no request's cost.
					before, err := goMetrics(s)
					if err != nil {
						return err
					}
					if out, err := exec.Command("callgrind_control", "-z", strconv.Itoa(s.cmd.Process.Pid)).CombinedOutput(); err != nil {
						return fmt.Errorf("callgrind_control -z: %v\n%s", err, out)
					}
					if err := sendN(s, targets, n, workers); err != nil {
						return err
					}
					if out, err := exec.Command("callgrind_control", "-d", strconv.Itoa(s.cmd.Process.Pid)).CombinedOutput(); err != nil {
						return fmt.Errorf("callgrind_control -d: %v\n%s", err, out)
					}
					after, err := goMetrics(s)
					if err != nil {
						return err
					}
					ev, err := callgrindSummary(fmt.Sprintf("%s.%d", s.callgrindOut, r))
					if err != nil {
						return err
					}
					events[i] = ev.per(float64(n))
					instr[i] = events[i]["Ir"]
					allocs[i] = (after[0] - before[0]) / float64(n)
					bytes[i] = (after[1] - before[1]) / float64(n)
					return nil
				}()
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				return err
			}
		}
		ratios = append(ratios, instr[1]/instr[0])
		fmt.Printf("%-6d %16.0f %16.0f %8.4f   %14.1f %14.1f   %12.0f %12.0f\n", r, instr[0], instr[1], instr[1]/instr[0], allocs[0], allocs[1], bytes[0], bytes[1])
		if cacheSim {
			misses = append(misses, events)
			cycleRatios = append(cycleRatios, events[1].cycles()/events[0].cycles())
		}
	}
	fmt.Printf("\nmedian instructions per request gateway/plain: %.4f (the scrapes of /metrics for the allocations not counted)\n", median(ratios))
	if cacheSim {
		fmt.Printf("\ncache misses per request in callgrind's simulated caches (sized as this machine's), plain/gateway:\n")
		fmt.Printf("%-6s %20s %20s %20s %22s\n", "round", "instruction L1", "data L1", "last level", "estimated cycles")
		for r, ev := range misses {
			p, g := ev[0], ev[1]
			fmt.Printf("%-6d %9.0f/%-10.0f %9.0f/%-10.0f %9.1f/%-10.1f %10.0f/%-11.0f\n", r+1,
				p["I1mr"], g["I1mr"], p["D1mr"]+p["D1mw"], g["D1mr"]+g["D1mw"],
				p["ILmr"]+p["DLmr"]+p["DLmw"], g["ILmr"]+g["DLmr"]+g["DLmw"], p.cycles(), g.cycles())
		}
		fmt.Printf("\nmedian estimated cycles per request gateway/plain: %.4f (instructions + 10 a first-level miss + 100 a last-level miss, KCachegrind's estimate)\n", median(cycleRatios))
	}
	return nil
}

// callgrindEvents are a callgrind dump's totals by event name (Ir: the
// instructions; with --cache-sim=yes I1mr, D1mr, D1mw, ILmr, DLmr, DLmw:
// the misses of the first-level instruction and data caches and of the
// last level).
type callgrindEvents map[string]float64

func (e callgrindEvents) per(n float64) callgrindEvents {
	out := make(callgrindEvents, len(e))
	for k, v := range e {
		out[k] = v / n
	}
	return out
}

// cycles is KCachegrind's rough cycle estimate.
func (e callgrindEvents) cycles() float64 {
	return e["Ir"] + 10*(e["I1mr"]+e["D1mr"]+e["D1mw"]) + 100*(e["ILmr"]+e["DLmr"]+e["DLmw"])
}

// sendN sends n requests from the targets, over workers connections.
func sendN(s *side, targets func(string) vegeta.Targeter, n, workers int) error {
	tr := targets(s.base)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	defer client.CloseIdleConnections()
	reqs := make(chan *http.Request, workers)
	errs := make(chan error, workers+1)
	go func() {
		defer close(reqs)
		for range n {
			var t vegeta.Target
			if err := tr(&t); err != nil {
				errs <- err
				return
			}
			req, err := t.Request()
			if err != nil {
				errs <- err
				return
			}
			reqs <- req
		}
	}()
	for range workers {
		go func() {
			for req := range reqs {
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s: status %d", s.name, resp.StatusCode)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// callgrindSummary reads a callgrind dump's totals.
func callgrindSummary(file string) (callgrindEvents, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "events: "); ok {
			names = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(line, "summary: "); ok {
			values := strings.Fields(v)
			if len(values) != len(names) {
				return nil, fmt.Errorf("%s: %d events named, %d summed", file, len(names), len(values))
			}
			ev := make(callgrindEvents, len(names))
			for i, name := range names {
				if ev[name], err = strconv.ParseFloat(values[i], 64); err != nil {
					return nil, fmt.Errorf("%s: %w", file, err)
				}
			}
			if _, ok := ev["Ir"]; !ok {
				return nil, fmt.Errorf("%s: no instruction count", file)
			}
			return ev, nil
		}
	}
	return nil, fmt.Errorf("%s: no summary line", file)
}

// goMetrics reads the Go runtime's count of allocations and of bytes
// allocated from Caddy's /metrics.
func goMetrics(s *side) ([2]float64, error) {
	var out [2]float64
	resp, err := http.Get(s.admin + "/metrics")
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		for i, name := range []string{"go_memstats_mallocs_total ", "go_memstats_alloc_bytes_total "} {
			if v, ok := strings.CutPrefix(sc.Text(), name); ok {
				if out[i], err = strconv.ParseFloat(v, 64); err != nil {
					return out, err
				}
			}
		}
	}
	return out, sc.Err()
}
