package errbody

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestDecodeBodyEveryEncoding(t *testing.T) {
	for _, enc := range []string{"", "identity", "gzip", "x-gzip", "br", "zstd", "deflate", "raw-deflate", "GZIP", " br "} {
		wire := enc
		if enc == "raw-deflate" {
			wire = "deflate"
		}
		src := strings.TrimSpace(strings.ToLower(enc))
		if src == "x-gzip" {
			src = "gzip"
		}
		got, err := Decode(encode(t, src, []byte(userNotFound)), wire)
		if err != nil || string(got) != userNotFound {
			t.Errorf("%q: %q, %v", enc, got, err)
		}
	}
}

// Bodies as real encoders make them, at the settings servers use, decode
// to what was encoded: whatever window they declare.
func TestDecodeBodyRealEncoders(t *testing.T) {
	bodies := map[string][]byte{"user-not-found": []byte(userNotFound), "near the cap": nearCapBody(), "empty": {}}
	for bname, body := range bodies {
		encoders := map[string]struct {
			enc  string
			wire []byte
		}{}
		// libbrotli's defaults (q11, 4 MiB), ngx_brotli's (q6, 512 KiB),
		// andybalholm's NewWriter (q6, 4 MiB) and the fast levels;
		// TestBrotliWindowCapKeepsOutput goes through every window.
		for _, qw := range [][2]int{{0, 22}, {1, 22}, {4, 22}, {6, 22}, {11, 22}, {6, 19}, {11, 24}} {
			if qw[0] > 9 && len(body) > 16<<10 {
				continue // seconds under the race detector
			}
			encoders[fmt.Sprintf("andybalholm q%d w%d", qw[0], qw[1])] = struct {
				enc  string
				wire []byte
			}{"br", brotliEncode(body, qw[0], qw[1])}
		}
		var b bytes.Buffer
		w := brotli.NewWriterV2(&b, 4) // the level Caddy's encode handler uses
		w.Write(body)
		w.Close()
		encoders["andybalholm v2 q4"] = struct {
			enc  string
			wire []byte
		}{"br", bytes.Clone(b.Bytes())}
		for _, level := range []int{gzip.HuffmanOnly, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
			b.Reset()
			w, _ := gzip.NewWriterLevel(&b, level)
			w.Write(body)
			w.Close()
			encoders[fmt.Sprintf("klauspost gzip %d", level)] = struct {
				enc  string
				wire []byte
			}{"gzip", bytes.Clone(b.Bytes())}
		}
		for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBestCompression} {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(level))
			encoders[fmt.Sprintf("klauspost zstd EncodeAll %v", level)] = struct {
				enc  string
				wire []byte
			}{"zstd", enc.EncodeAll(body, nil)}
			// Streaming and flushed, as a proxy's encoder does: no content
			// size, an 8 MiB window.
			encoders[fmt.Sprintf("klauspost zstd streamed %v", level)] = struct {
				enc  string
				wire []byte
			}{"zstd", zstdStreamed(t, body, zstd.WithEncoderLevel(level))}
		}
		encoders["stdlib zlib"] = struct {
			enc  string
			wire []byte
		}{"deflate", encode(t, "deflate", body)}
		encoders["stdlib raw deflate"] = struct {
			enc  string
			wire []byte
		}{"deflate", encode(t, "raw-deflate", body)}
		for ename, e := range encoders {
			got, err := Decode(e.wire, e.enc)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("%s, %s: %d bytes, %v", bname, ename, len(got), err)
			}
		}
	}

	// And as the reference encoders (C libbrotli, zstd(1), gzip(1), zlib) make
	// them; testdata/decode/README.md says how.
	files, _ := filepath.Glob("testdata/decode/*.*.*")
	if len(files) < 10 {
		t.Fatalf("testdata/decode has %d bodies", len(files))
	}
	license, err := os.ReadFile("testdata/decode/apache-2.0.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		wire, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		enc := map[string]string{".br": "br", ".zst": "zstd", ".gz": "gzip", ".zz": "deflate", ".deflate": "deflate"}[filepath.Ext(f)]
		want := []byte(userNotFound)
		if strings.HasPrefix(filepath.Base(f), "apache-2.0.") {
			want = license
		}
		if enc == "" {
			continue
		}
		got, err := Decode(wire, enc)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %.60q, %v", f, got, err)
		}
	}
}

// Anything that is not one whole body in the declared encoding, or that
// decodes past the cap, is refused with an error, never a panic or a hang.
func TestDecodeBodyRefusesBadInput(t *testing.T) {
	valid := map[string][]byte{}
	for _, enc := range []string{"gzip", "br", "zstd", "deflate", "raw-deflate"} {
		valid[enc] = encode(t, enc, []byte(userNotFound))
	}
	wireOf := func(enc string) string {
		if enc == "raw-deflate" {
			return "deflate"
		}
		return enc
	}
	overWindow := zstdStreamed(t, []byte(userNotFound), zstd.WithWindowSize(16<<20))
	var h zstd.Header
	if err := h.Decode(overWindow); err != nil || h.WindowSize <= zstdMaxWindow {
		t.Fatalf("the zstd body declares a window of %d bytes, %v", h.WindowSize, err)
	}
	type bad struct {
		body []byte
		enc  string
	}
	cases := map[string]bad{
		"not gzip":             {[]byte(userNotFound), "gzip"},
		"not zstd":             {[]byte(userNotFound), "zstd"},
		"not brotli":           {[]byte(userNotFound), "br"},
		"not deflate":          {[]byte("\x07" + userNotFound), "deflate"}, // reserved block type
		"unknown encoding":     {[]byte(userNotFound), "compress"},
		"parameters":           {valid["br"], "br;q=1"},
		"two encodings in one": {valid["gzip"], "gzip, br"},
		"empty gzip":           {nil, "gzip"},
		"empty brotli":         {nil, "br"},
		"empty deflate":        {nil, "deflate"},
		"empty zstd":           {nil, "zstd"},
		"brotli large window":  {[]byte{0x11, 0x3f}, "br"}, // RFC 7932 large-window streams are not HTTP's br
		"zstd over the window": {overWindow, "zstd"},
		"gzip extra field cut": {[]byte("\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\xff\xff"), "gzip"},
		"gzip trailing zeros":  {append(bytes.Clone(valid["gzip"]), 0, 0, 0, 0), "gzip"},
		"zlib bad checksum":    {flipLast(valid["deflate"]), "deflate"},
		"gzip bad checksum":    {flipByte(valid["gzip"], len(valid["gzip"])-6), "gzip"},
		"zstd bad checksum":    {flipLast(valid["zstd"]), "zstd"},
	}
	for enc, body := range valid {
		cases["truncated "+enc] = bad{body[:len(body)/2], wireOf(enc)}
		cases["cut one byte short "+enc] = bad{body[:len(body)-1], wireOf(enc)}
		cases["trailing garbage "+enc] = bad{append(bytes.Clone(body), "garbage"...), wireOf(enc)}
	}
	for name, b := range bombs(t) {
		cases[name] = bad{b.body, b.enc}
	}
	for name, c := range cases {
		if name == "brotli churn" {
			continue // a valid small body, heavy only on the decoder's allocator
		}
		if out, err := Decode(c.body, c.enc); err == nil {
			t.Errorf("%s: decoded %d bytes", name, len(out))
		}
	}
	for name, b := range bombs(t) {
		if _, err := Decode(b.body, b.enc); name != "brotli churn" && !errors.Is(err, errTooLarge) {
			t.Errorf("%s: %v, want %v", name, err, errTooLarge)
		}
	}
}

// The window cap never changes what a brotli body decodes to: whatever
// the window and quality it was encoded with, and bodies with references
// into the static dictionary (English text) and at distances up to the
// cap, it decodes as the uncapped decoder decodes it.
func TestBrotliWindowCapKeepsOutput(t *testing.T) {
	license, _ := os.ReadFile("testdata/decode/apache-2.0.txt")
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 20000)
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	// random bytes, repeated at distances the cap must keep: 20000, 40000
	farRepeats := append(append(append([]byte(nil), random...), license[:100]...), random...)
	farRepeats = append(farRepeats, farRepeats[:HoldLimit-len(farRepeats)]...)
	for name, body := range map[string][]byte{
		"user-not-found": []byte(userNotFound), "license": license, "far repeats": farRepeats,
		"near the cap": nearCapBody(), "past the cap": append(bytes.Clone(farRepeats), license...),
	} {
		for _, q := range brotliQualities(body) {
			for _, lgwin := range brotliWindows(body) {
				wire := brotliEncode(body, q, lgwin)
				want, wantErr := readCapped(brotli.NewReader(bytes.NewReader(wire)))
				got, err := Decode(wire, "br")
				if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
					t.Errorf("%s q%d w%d: %d bytes, %v; uncapped %d bytes, %v", name, q, lgwin, len(got), err, len(want), wantErr)
				}
				if len(body) <= HoldLimit && !bytes.Equal(got, body) {
					t.Errorf("%s q%d w%d: decoded %d bytes, not the body", name, q, lgwin, len(got))
				}
			}
		}
	}
}

// FuzzBrotliWindowCap: any bytes decode the same with the window capped as
// without, or fail both ways.
func FuzzBrotliWindowCap(f *testing.F) {
	for _, lgwin := range []int{16, 18, 22, 24} {
		f.Add(brotliEncode([]byte(userNotFound), 5, lgwin))
	}
	f.Add(brotliStream(24, brotliMetablock{last: true, length: 300, literalTrees: 7, commandTrees: 3, distanceTrees: 5, wideDistances: true}))
	f.Add(brotliStream(24, brotliMetablock{last: true, length: 1 << 19, literalTrees: 1, commandTrees: 1, distanceTrees: 1}))
	f.Add(brotliStream(20, brotliMetablock{last: true, length: 1 << 17, literalTrees: 256, commandTrees: 256, distanceTrees: 256, wideDistances: true}))
	f.Add([]byte{0x11, 0x3f})
	f.Add(bombs(f)["brotli churn"].body)
	f.Fuzz(func(t *testing.T, wire []byte) {
		want, wantErr := readCapped(brotli.NewReader(bytes.NewReader(wire)))
		got, err := readCapped(brotli.NewReader(bytes.NewReader(brotliWindowCapped(wire))))
		if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("capped: %q, %v; uncapped: %q, %v", got, err, want, wantErr)
		}
	})
}

// The streams brotliStream crafts are valid brotli: the bombs below are
// what an encoder could send, not corrupt input refused for that.
func TestCraftedBrotliStreams(t *testing.T) {
	for _, m := range []brotliMetablock{
		{last: true, length: 100, literalTrees: 1, commandTrees: 1, distanceTrees: 1},
		{last: true, length: 30000, literalTrees: 256, commandTrees: 256, distanceTrees: 256, wideDistances: true},
	} {
		for _, wbits := range []int{10, 16, 17, 18, 24} {
			wire := brotliStream(wbits, m)
			got, err := io.ReadAll(brotli.NewReader(bytes.NewReader(wire)))
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("x"), m.length)) {
				t.Errorf("w%d %+v: %d bytes, %v", wbits, m, len(got), err)
			}
		}
	}
	churn := bombs(t)["brotli churn"].body
	if got, err := io.ReadAll(brotli.NewReader(bytes.NewReader(churn))); err != nil || len(got) != 254 {
		t.Errorf("churn: %d bytes, %v", len(got), err)
	}
	if got, err := Decode(churn, "br"); err != nil || len(got) != 254 {
		t.Errorf("churn through decodeBody: %d bytes, %v", len(got), err)
	}
}

// The cost each decode takes from the budget covers what one decode of the
// worst body of its encoding allocates, all of which it holds at its peak
// (bar the brotli churn body, whose allocations are each garbage before
// the next: its peak is one metablock's tables).
func TestDecodeCostCoversOneDecode(t *testing.T) {
	var extra bytes.Buffer // a valid gzip body with a 60 KB extra field
	w := gzip.NewWriter(&extra)
	w.Extra = make([]byte, 60000)
	w.Write([]byte(userNotFound))
	w.Close()
	bodies := map[string]bomb{"gzip extra field": {"gzip", extra.Bytes()}}
	if out, err := Decode(extra.Bytes(), "gzip"); err != nil || string(out) != userNotFound {
		t.Fatalf("gzip extra field: %q, %v", out, err)
	}
	for name, b := range bombs(t) {
		if name != "brotli churn" {
			bodies[name] = b
		}
	}
	for name, b := range bodies {
		Decode(b.body, b.enc) // first use: the zstd decoder
		freshBrotliReaders()
		cost := bodyDecoders[b.enc].cost
		var before, after runtime.MemStats
		runtime.GC()
		runtime.GC() // and the pools emptied: the decode makes all it uses
		runtime.ReadMemStats(&before)
		Decode(b.body, b.enc)
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: one decode allocated %d KiB; its cost is %d KiB", name, allocated>>10, cost>>10)
		if allocated > uint64(cost) {
			t.Errorf("%s: one decode allocated %d bytes, over its cost %d", name, allocated, cost)
		}
	}
}

// Decodes of hostile bodies, 40 at once of each kind, grow the memory the
// Go runtime holds from the OS by less than 64 MB. The measure is the
// runtime's mapped memory less what it has returned to the OS
// (/memory/classes/total minus /memory/classes/heap/released): the heap
// with its free but kept pages, stacks and runtime metadata, which is the
// process's resident memory but for the binary and C allocations. A freed
// heap page stays counted until the scavenger returns it, so the peak is
// seen even between samples. The process's resident set (Linux) is logged
// beside it; under the race detector it also holds the detector's shadow
// memory.
//
// A decode that finds the budget taken for maxDecodeWait is passed through;
// here it tries again, so that every bomb is decoded (and refused).
func TestConcurrentBombsStayInMemoryBound(t *testing.T) {
	const perKind, bound = 40, 64 << 20
	all := bombs(t)
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	held := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() - samples[1].Value.Uint64()
	}
	for _, b := range all { // first use: the zstd decoder, pools
		Decode(b.body, b.enc)
	}
	// The decoding goroutines stand for the requests that got the bombs:
	// they exist before the decodes begin, and so do their stacks.
	start := make(chan struct{})
	var ready, wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]map[string]int{}
	busy := 0
	for name, b := range all {
		outcomes[name] = map[string]int{}
		for range perKind {
			ready.Add(1)
			wg.Go(func() {
				ready.Done()
				<-start
				_, err := Decode(b.body, b.enc)
				for ; errors.Is(err, errDecodeBusy); _, err = Decode(b.body, b.enc) {
					mu.Lock()
					busy++
					mu.Unlock()
				}
				mu.Lock()
				outcomes[name][fmt.Sprint(err)]++
				mu.Unlock()
			})
		}
	}
	ready.Wait()
	freshBrotliReaders()
	runtime.GC()
	debug.FreeOSMemory()
	base, baseRSS := held(), residentBytes()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	peak, peakRSS := base, baseRSS
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			peak, peakRSS = max(peak, held()), max(peakRSS, residentBytes())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	close(stop)
	<-sampled
	peak, peakRSS = max(peak, held()), max(peakRSS, residentBytes())
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	growth := peak - base
	t.Logf("%d bombs (%d of each of %d kinds) sent at once, decoded in %v (%d waits over %v): the runtime's memory held from the OS grew by %.1f MB at the peak (bound %d MB), the resident set by %.1f MB; %.0f MB allocated in all",
		perKind*len(all), perKind, len(all), took.Round(time.Millisecond), busy, maxDecodeWait, float64(growth)/1e6, bound>>20,
		float64(peakRSS-baseRSS)/1e6, float64(after.TotalAlloc-before.TotalAlloc)/1e6)
	for name, o := range outcomes {
		t.Logf("  %-20s %v", name, o)
		if o["<nil>"] > 0 && name != "brotli churn" {
			t.Errorf("%s: %d bombs decoded", name, o["<nil>"])
		}
	}
	if growth > bound {
		t.Errorf("memory grew by %d bytes, over %d", growth, bound)
	}
}

// A decode waits for the budget at most maxDecodeWait, then is refused
// (the caller passes the body through); once the budget frees up, bodies
// decode again.
func TestDecodeWaitIsBounded(t *testing.T) {
	if err := decodeSlots.Acquire(context.Background(), decodeBudget); err != nil {
		t.Fatal(err)
	}
	wire := encode(t, "br", []byte(userNotFound))
	// The budget is never released while it waits: a decode that returns
	// gave up waiting.
	if _, err := Decode(wire, "br"); !errors.Is(err, errDecodeBusy) {
		t.Errorf("with the budget taken: %v, want %v", err, errDecodeBusy)
	}
	if out, err := Decode([]byte(userNotFound), "identity"); err != nil || string(out) != userNotFound {
		t.Errorf("identity needs no budget: %q, %v", out, err)
	}
	decodeSlots.Release(decodeBudget)
	if out, err := Decode(wire, "br"); err != nil || string(out) != userNotFound {
		t.Errorf("after the release: %q, %v", out, err)
	}
}

// BenchmarkDecodeBody: a small legitimate 401 body from each encoder at its
// default settings.
func BenchmarkDecodeBody(b *testing.B) {
	for _, enc := range []string{"br", "gzip", "zstd", "deflate"} {
		b.Run(enc, func(b *testing.B) {
			wire := encode(b, enc, []byte(userNotFound))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(wire, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeBomb: what one hostile body costs to refuse.
func BenchmarkDecodeBomb(b *testing.B) {
	for name, bomb := range bombs(b) {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decode(bomb.body, bomb.enc)
			}
		})
	}
}
