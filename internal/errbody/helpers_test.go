package errbody

// helpers_test.go holds the package's test helpers: bodies as encoders
// make them, hostile ones, and a writer of crafted brotli streams. A
// helper that cannot make what it was asked for fails the test.

import (
	"bytes"
	"compress/flate"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// userNotFound is OpenRouter's misleading 401 body, byte for byte.
const userNotFound = `{"error":{"message":"User not found.","code":401}}`

// encode encodes b as enc ("raw-deflate": deflate without zlib's wrapper);
// any other enc leaves b as it is.
func encode(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "br":
		w = brotli.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw-deflate":
		fw, err := flate.NewWriter(&buf, flate.DefaultCompression)
		if err != nil {
			t.Fatal(err)
		}
		w = fw
	default:
		return b
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// freshBrotliReaders drops the kept brotli decoders, so that the next
// decodes make theirs afresh: the costliest case.
func freshBrotliReaders() {
	for len(brotliReaders) > 0 {
		<-brotliReaders
	}
}

// residentBytes is the process's resident set where /proc tells it, else 0.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident uint64
	fmt.Sscan(string(b), &size, &resident)
	return resident * uint64(os.Getpagesize())
}

type bomb struct {
	enc  string
	body []byte
}

// bombs are hostile bodies of every encoding, each at most HoldLimit
// bytes, built once.
var bombs = func() func(testing.TB) map[string]bomb {
	var once sync.Once
	var all map[string]bomb
	return func(t testing.TB) map[string]bomb {
		once.Do(func() { all = makeBombs(t) })
		for name, b := range all {
			if len(b.body) > HoldLimit {
				t.Fatalf("%s is %d bytes, more than a held 401", name, len(b.body))
			}
		}
		return all
	}
}()

func makeBombs(t testing.TB) map[string]bomb {
	zeros := make([]byte, 2<<20)
	var members []byte // gzip members of 2 KiB each
	for member := encode(t, "gzip", zeros[:2<<10]); len(members)+len(member) <= HoldLimit; {
		members = append(members, member...)
	}
	all := map[string]bomb{
		// The issue's: a 16 MiB window and a first metablock of 16 MiB,
		// for which the decoder allocated a 16 MiB ring buffer up front.
		"brotli window": {"br", brotliStream(24, brotliMetablock{last: true, length: 1 << 24, literalTrees: 1, commandTrees: 1, distanceTrees: 1})},
		// The same with 256 prefix codes in each group, for which the
		// decoder allocates 2.7 MB of tables before reading them.
		"brotli tables": {"br", brotliStream(24, brotliMetablock{last: true, length: 1 << 24, literalTrees: 256, commandTrees: 256, distanceTrees: 256, wideDistances: true})},
		// 254 metablocks of one byte each, each with one more literal
		// prefix code than the last: a valid 254-byte body for which the
		// decoder allocates ever larger tables, 80 MB in all.
		"brotli churn":        {"br", brotliChurn()},
		"brotli zeros":        {"br", brotliEncode(zeros, 11, 24)},
		"gzip zeros":          {"gzip", encode(t, "gzip", zeros)},
		"gzip members":        {"gzip", members},
		"zstd zeros":          {"zstd", zstdEncode(t, zeros)},
		"zstd zeros streamed": {"zstd", zstdStreamed(t, zeros)},
		"zlib zeros":          {"deflate", encode(t, "deflate", zeros)},
		"raw deflate zeros":   {"deflate", encode(t, "raw-deflate", zeros)},
	}
	return all
}

// nearCapBody is a JSON error body of almost HoldLimit bytes.
func nearCapBody() []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields("the key was not found user expired disabled limit credits provider request model")
	var b strings.Builder
	b.WriteString(`{"error":{"message":"User not found.","code":401,"detail":"`)
	for b.Len() < HoldLimit-100 {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteString(fmt.Sprint(" ", rng.IntN(1000), " "))
	}
	b.WriteString(`"}}`)
	return []byte(b.String())
}

// brotliQualities and brotliWindows are what bodies are encoded with in
// tests: every quality level's kind of encoder (fast, dictionary, context
// modelling, zopfli) and window coding; fewer for the larger bodies, which
// the slow levels take seconds over under the race detector.
func brotliQualities(body []byte) []int {
	if len(body) > 16<<10 {
		return []int{0, 2, 5, 9}
	}
	return []int{0, 1, 2, 4, 6, 9, 10, 11}
}

func brotliWindows(body []byte) []int {
	if len(body) > 16<<10 {
		return []int{16, 18, 22, 24}
	}
	return []int{10, 16, 17, 18, 19, 22, 24}
}

func brotliEncode(b []byte, quality, lgwin int) []byte {
	var buf bytes.Buffer
	w := brotli.NewWriterOptions(&buf, brotli.WriterOptions{Quality: quality, LGWin: lgwin})
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdEncode(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	w, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w.EncodeAll(b, nil)
}

// zstdStreamed encodes b as a proxy's streaming encoder does: flushed, so
// with no content size and the encoder's window (8 MiB by default).
func zstdStreamed(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Flush()
	w.Close()
	return buf.Bytes()
}

func flipLast(b []byte) []byte { return flipByte(b, len(b)-1) }

func flipByte(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x55
	return b
}

// brotliBits writes a brotli stream, least significant bit first (RFC 7932,
// section 1.5.1).
type brotliBits struct {
	out []byte
	n   uint
}

func (w *brotliBits) bits(n uint, v uint64) {
	for i := range n {
		if w.n%8 == 0 {
			w.out = append(w.out, 0)
		}
		w.out[len(w.out)-1] |= byte(v>>i&1) << (w.n % 8)
		w.n++
	}
}

// varLenUint8 writes v, 0 to 255, as NBLTYPES and NTREES are (section 9.2).
func (w *brotliBits) varLenUint8(v int) {
	if v == 0 {
		w.bits(1, 0)
		return
	}
	w.bits(1, 1)
	n := bits.Len(uint(v)) - 1
	w.bits(3, uint64(n))
	w.bits(uint(n), uint64(v-1<<n))
}

// oneSymbolCode writes a simple prefix code of one symbol, which then takes
// no bits to read (section 3.4).
func (w *brotliBits) oneSymbolCode(alphabetSize, symbol int) {
	w.bits(2, 1) // simple
	w.bits(2, 0) // one symbol
	w.bits(uint(bits.Len(uint(alphabetSize-1))), uint64(symbol))
}

// brotliMetablock is a compressed metablock of length literal 'x's, with as
// many prefix codes in each group as asked, all of one symbol.
type brotliMetablock struct {
	last                                      bool
	length                                    int // 1 to 1<<24
	literalTrees, commandTrees, distanceTrees int // 1 to 256
	wideDistances                             bool
}

var (
	insertBase  = [24]int{0, 1, 2, 3, 4, 5, 6, 8, 10, 14, 18, 26, 34, 50, 66, 98, 130, 194, 322, 578, 1090, 2114, 6210, 22594}
	insertExtra = [24]uint{0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 12, 14, 24}
)

// brotliStream writes a stream declaring a window of 2^wbits bytes.
func brotliStream(wbits int, metablocks ...brotliMetablock) []byte {
	w := &brotliBits{}
	switch { // section 9.1
	case wbits == 16:
		w.bits(1, 0)
	case wbits >= 18:
		w.bits(1, 1)
		w.bits(3, uint64(wbits-17))
	case wbits == 17:
		w.bits(7, 1)
	default:
		w.bits(4, 1)
		w.bits(3, uint64(wbits-8))
	}
	for _, m := range metablocks {
		w.metablock(m)
	}
	if !metablocks[len(metablocks)-1].last {
		w.bits(2, 0b11) // ISLAST, ISLASTEMPTY
	}
	return w.out
}

func (w *brotliBits) metablock(m brotliMetablock) {
	if m.last {
		w.bits(2, 0b01) // ISLAST, not ISLASTEMPTY
	} else {
		w.bits(1, 0)
	}
	nibbles := max(4, (bits.Len(uint(m.length-1))+3)/4)
	w.bits(2, uint64(nibbles-4))
	w.bits(uint(4*nibbles), uint64(m.length-1))
	if !m.last {
		w.bits(1, 0) // not ISUNCOMPRESSED
	}
	w.varLenUint8(0) // one literal block type
	w.varLenUint8(m.commandTrees - 1)
	if m.commandTrees > 1 { // the block switch codes and the first block's length, 1
		w.oneSymbolCode(m.commandTrees+2, 0)
		w.oneSymbolCode(26, 0)
		w.bits(2, 0)
	}
	w.varLenUint8(0) // one distance block type
	postfix, direct := 0, 0
	if m.wideDistances { // the largest distance alphabet: 520 symbols
		postfix, direct = 3, 15
	}
	w.bits(2, uint64(postfix))
	w.bits(4, uint64(direct))
	w.bits(2, 0) // the literal context mode
	for _, trees := range []int{m.literalTrees, m.distanceTrees} {
		w.varLenUint8(trees - 1)
		if trees > 1 { // a context map of zeros: no RLE, one symbol, no IMTF
			w.bits(1, 0)
			w.oneSymbolCode(trees, 0)
			w.bits(1, 0)
		}
	}
	code := 23
	for insertBase[code] > m.length {
		code--
	}
	command := [3]int{128, 256, 448}[code/8] + code%8<<3 // insert code, copy code 0
	for range m.literalTrees {
		w.oneSymbolCode(256, 'x')
	}
	for range m.commandTrees {
		w.oneSymbolCode(704, command)
	}
	for range m.distanceTrees {
		w.oneSymbolCode(16+direct<<postfix+48<<postfix, 0)
	}
	// One command inserting every literal: the metablock ends with them,
	// so no copy follows (section 9.3).
	w.bits(insertExtra[code], uint64(m.length-insertBase[code]))
}

func brotliChurn() []byte {
	var mbs []brotliMetablock
	for trees := 2; trees <= 255; trees++ {
		mbs = append(mbs, brotliMetablock{length: 1, literalTrees: trees, commandTrees: 1, distanceTrees: 1})
	}
	return brotliStream(16, mbs...)
}
