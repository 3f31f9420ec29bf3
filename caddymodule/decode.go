package caddymodule

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// zstdDecoder is shared: DecodeAll is safe for concurrent use, and the
// decoder refuses output past maxErrorBody.
var zstdDecoder, _ = zstd.NewReader(nil,
	zstd.WithDecoderConcurrency(1),
	zstd.WithDecoderLowmem(true),
	zstd.WithDecoderMaxMemory(maxErrorBody),
	zstd.WithDecoderMaxWindow(1<<20))

var gzipReaders sync.Pool

var errTooLarge = errors.New("decoded body over the cap")

// decodeBody undoes the response's Content-Encoding, refusing anything that
// decodes past maxErrorBody (a zip bomb) or is not one whole encoding.
func decodeBody(raw []byte, contentEncoding string) ([]byte, error) {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "", "identity":
		return raw, nil
	case "gzip", "x-gzip":
		// A gzip reader costs ~40 KB to make: reuse them.
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
		r = zr
	case "deflate":
		// HTTP's "deflate" is zlib-wrapped; some servers send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(raw)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(raw))
		}
	case "br":
		r = brotli.NewReader(bytes.NewReader(raw))
	case "zstd":
		return zstdDecoder.DecodeAll(raw, nil)
	default:
		return nil, errors.New("unsupported content encoding")
	}
	out, err := io.ReadAll(io.LimitReader(r, maxErrorBody+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxErrorBody {
		return nil, errTooLarge
	}
	return out, nil
}
