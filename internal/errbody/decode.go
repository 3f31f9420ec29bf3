package errbody

// decode.go owns undoing a held body's Content-Encoding within bounds: no
// body of at most HoldLimit bytes can make the gateway decode or allocate
// much more.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"
)

// HoldLimit caps both what is held of an error body and what it may
// decompress to. OpenRouter's error bodies are well under 1 KiB; anything
// near the cap is not a body the gateway edits, and passes through.
const HoldLimit = 64 << 10

// A held body is at most HoldLimit bytes, but what its Content-Encoding
// makes a decoder allocate is not bounded by that: brotli sizes its ring
// buffer from the window and metablock length a stream declares (16 MiB
// from a dozen bytes) and its Huffman tables from the tree counts it
// declares (2.7 MB from twenty), before producing any output. So decoding
// is bounded twice: each decoder is configured so that one decode holds at
// most its encoding's cost below, and the decodes in flight share
// decodeBudget, which a decode waits for at most maxDecodeWait. A body that
// cannot be decoded within these bounds is released unchanged.
const (
	// decodeBudget is the memory all decodes in flight may hold at once:
	// two brotli decodes at their worst, or dozens of the others. The
	// process grows by a small multiple of it at the most, as the garbage
	// collector lets the heap reach twice what is live;
	// TestConcurrentBombsStayInMemoryBound measures it.
	decodeBudget = 8 << 20

	// brotliCost bounds one brotli decode: the ring buffer, at most
	// 256 KiB once the declared window is capped (brotliWindowCapped); the
	// Huffman tables of a metablock, at most 256 trees in each of its
	// three groups, 256*(630+1080+952) entries of 4 bytes, 2.7 MB; the
	// decoder's own state and read buffer (~60 KB), the body's copy and the
	// output (2*HoldLimit).
	brotliCost = 4 << 20

	// flateCost bounds one gzip or deflate decode: the decompressor (~45
	// KB, its window included), a gzip header's extra field (at most
	// 64 KiB) and the output (2*HoldLimit).
	flateCost = 256 << 10

	// zstdCost bounds one zstd decode: DecodeAll writes into the output
	// buffer and takes its window from there, whatever window the frame
	// declares, so a decode holds a block decoder's buffers (~130 KB, a
	// compressed block being at most 128 KiB) and an output of HoldLimit
	// plus at most one block past it, which DecodeAll reallocates.
	zstdCost = 512 << 10

	// maxDecodeWait bounds how long a decode waits for the budget: a
	// legitimate body decodes in microseconds, a hostile one in
	// milliseconds (BenchmarkDecodeBomb); a body that waits longer is
	// refused (errDecodeBusy), and its caller passes it through as it came.
	maxDecodeWait = 100 * time.Millisecond

	// zstdMaxWindow is the largest zstd window HTTP allows (RFC 9659,
	// section 3); streaming encoders declare up to that much for any body,
	// zstd(1) 2 MiB and klauspost's writer 8 MiB for a 100-byte one.
	zstdMaxWindow = 8 << 20

	// brotliCappedWindowBits is the window a brotli stream is decoded with
	// when it declares a larger one; see brotliWindowCapped.
	brotliCappedWindowBits = 18
)

var (
	errTooLarge            = errors.New("decoded body over the cap")
	errTrailingData        = errors.New("data after the end of the encoded body")
	errUnsupportedEncoding = errors.New("unsupported content encoding")
	errDecodeBusy          = errors.New("decoders busy")
)

// decodeSlots is decodeBudget, taken by each decode for its encoding's cost.
var decodeSlots = semaphore.NewWeighted(decodeBudget)

type bodyDecoder struct {
	cost   int64 // the most one decode holds, taken from decodeSlots
	decode func(raw []byte) ([]byte, error)
}

var bodyDecoders = map[string]bodyDecoder{
	"gzip":    {flateCost, decodeGzip},
	"x-gzip":  {flateCost, decodeGzip},
	"deflate": {flateCost, decodeDeflate},
	"br":      {brotliCost, decodeBrotli},
	"zstd":    {zstdCost, decodeZstd},
}

// Decode undoes a response's Content-Encoding (one coding: gzip, x-gzip,
// deflate, br, zstd, identity or none), refusing with an error anything
// that decodes past HoldLimit (a zip bomb), is not one whole encoding, or
// cannot be decoded within the memory bounds above. raw is not changed, so
// that a refused body can be passed on as it came.
func Decode(raw []byte, contentEncoding string) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	if enc == "" || enc == "identity" {
		return raw, nil
	}
	d, ok := bodyDecoders[enc]
	if !ok {
		return nil, errUnsupportedEncoding
	}
	if !decodeSlots.TryAcquire(d.cost) {
		ctx, cancel := context.WithTimeout(context.Background(), maxDecodeWait)
		err := decodeSlots.Acquire(ctx, d.cost)
		cancel()
		if err != nil {
			return nil, errDecodeBusy
		}
	}
	defer decodeSlots.Release(d.cost)
	return d.decode(raw)
}

// outputs are the buffers bodies decode into, one byte over the cap so
// that a body over it shows; they are reused, since the decoded body is
// copied out of them.
var outputs = sync.Pool{New: func() any { return new([HoldLimit + 1]byte) }}

// readCapped reads r to its end, refusing more than HoldLimit bytes.
func readCapped(r io.Reader) ([]byte, error) {
	buf := outputs.Get().(*[HoldLimit + 1]byte)
	defer outputs.Put(buf)
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		switch {
		case err == io.EOF:
			return bytes.Clone(buf[:n]), nil
		case err != nil:
			return nil, err
		case m > 0:
			empty = 0
		case empty == 100: // as bufio gives up on a reader that reads nothing
			return nil, io.ErrNoProgress
		default:
			empty++
		}
	}
	return nil, errTooLarge
}

// gzipReaders are reused: a gzip reader costs ~40 KB to make.
var gzipReaders sync.Pool

// decodeGzip reads every member of a gzip body (RFC 1952 allows several);
// anything after the last member is refused as a bad header.
func decodeGzip(raw []byte) ([]byte, error) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(raw))
	} else {
		err = zr.Reset(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, err
	}
	defer gzipReaders.Put(zr)
	return readCapped(zr)
}

// decodeDeflate reads HTTP's "deflate", which is zlib-wrapped (RFC 9110,
// section 8.4.1.2), or the raw deflate some servers send instead. Both
// readers take bytes one at a time from a bytes.Reader, so what is left in
// it after the end is data that does not belong to the body.
func decodeDeflate(raw []byte) ([]byte, error) {
	src := bytes.NewReader(raw)
	var r io.Reader
	if zr, err := zlib.NewReader(src); err == nil {
		r = zr
	} else {
		src.Reset(raw)
		r = flate.NewReader(src)
	}
	out, err := readCapped(r)
	if err == nil && src.Len() > 0 {
		return nil, errTrailingData
	}
	return out, err
}

// brotliReaders keeps the brotli decoders, as many as the budget lets run
// at once, so there are never more. A decoder grows its Huffman tables to
// what a metablock declares and keeps them across metablocks and resets: made
// afresh for each body, it would regrow them for a stream that declares one
// more tree in each of its metablocks, 80 MB of garbage from a 50 KB body.
// Kept, each holds at most brotliCost (and the last body it read), and
// reuse spares a legitimate body the ~55 KB a new decoder allocates.
var brotliReaders = make(chan *brotli.Reader, decodeBudget/brotliCost)

func decodeBrotli(raw []byte) ([]byte, error) {
	src := bytes.NewReader(brotliWindowCapped(raw))
	var r *brotli.Reader
	select {
	case r = <-brotliReaders:
		r.Reset(src)
	default:
		r = brotli.NewReader(src)
	}
	defer func() {
		select {
		case brotliReaders <- r:
		default:
		}
	}()
	return readCapped(r)
}

// brotliWindowCapped returns the brotli stream raw with its declared window
// lowered to 2^brotliCappedWindowBits bytes (256 KiB) when it declares more,
// which encoders do for any body: libbrotli and andybalholm/brotli declare
// 4 MiB (WBITS 22) for a 100-byte one, ngx_brotli 512 KiB. The decoder
// sizes its ring buffer from the window (and the declared metablock
// lengths), so the window is what bounds it.
//
// Lowering it changes no output this gateway reads. The window enters
// decoding only as max_backward_distance, 2^WBITS-16: a distance is a
// backward reference when it is at most min(position, max_backward_distance),
// and a static dictionary reference above that (RFC 7932, section 4). Below
// position 2^18-16 the minimum is the position whatever the window, so the
// first 262128 bytes decode the same, and a body that decodes to more than
// HoldLimit is refused either way.
//
// WBITS 18 to 24 are coded in the stream's first four bits as 1 then
// WBITS-17 in three bits (section 9.1), so the lowered window fits in the
// same bits and nothing after them moves. The caller's bytes are not
// changed: the held body may be released as it came.
func brotliWindowCapped(raw []byte) []byte {
	if len(raw) == 0 || raw[0]&1 == 0 {
		return raw // WBITS 16
	}
	code := raw[0] >> 1 & 7
	if code == 0 || int(code)+17 <= brotliCappedWindowBits {
		return raw // WBITS 10 to 15 or 17 (seven bits), or already small
	}
	capped := bytes.Clone(raw)
	capped[0] = raw[0]&^0b1110 | (brotliCappedWindowBits-17)<<1
	return capped
}

// zstdDecoder is made on first use. It has as many block decoders as the
// budget lets zstd decodes run at once (16, which keep ~2 MB once used),
// so DecodeAll never waits for one. A frame's window may be up to
// zstdMaxWindow (klauspost caps the window at the maximum memory, so both
// are set to it) and costs nothing: DecodeAll keeps the window in the
// output buffer, which the cap limit bounds to the buffer's capacity.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(decodeBudget/zstdCost),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderMaxMemory(zstdMaxWindow),
		zstd.WithDecodeAllCapLimit(true))
})

func decodeZstd(raw []byte) ([]byte, error) {
	if len(raw) == 0 { // DecodeAll takes no frames for an empty body
		return nil, io.ErrUnexpectedEOF
	}
	dec, err := zstdDecoder()
	if err != nil {
		return nil, err
	}
	buf := outputs.Get().(*[HoldLimit + 1]byte)
	defer outputs.Put(buf)
	out, err := dec.DecodeAll(raw, buf[:0:HoldLimit])
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, err
	}
	return bytes.Clone(out), nil
}
