package caddymodule

import (
	"bytes"
	"strings"
	"testing"
)

func TestDecodeBodyEveryEncoding(t *testing.T) {
	for _, enc := range []string{"", "identity", "gzip", "x-gzip", "br", "zstd", "deflate", "raw-deflate", "GZIP"} {
		wire := enc
		if enc == "raw-deflate" {
			wire = "deflate"
		}
		src := strings.ToLower(enc)
		if src == "x-gzip" {
			src = "gzip"
		}
		got, err := decodeBody(encode(t, src, []byte(userNotFound)), wire)
		if err != nil || string(got) != userNotFound {
			t.Errorf("%q: %q, %v", enc, got, err)
		}
	}
}

func TestDecodeBodyRefusesBadInput(t *testing.T) {
	bomb := bytes.Repeat([]byte{'0'}, 10<<20)
	gz := encode(t, "gzip", []byte(userNotFound))
	for name, c := range map[string]struct {
		body []byte
		enc  string
	}{
		"truncated gzip":       {gz[:len(gz)/2], "gzip"},
		"gzip bomb":            {encode(t, "gzip", bomb), "gzip"},
		"brotli bomb":          {encode(t, "br", bomb), "br"},
		"zstd bomb":            {encode(t, "zstd", bomb), "zstd"},
		"deflate bomb":         {encode(t, "deflate", bomb), "deflate"},
		"not gzip":             {[]byte(userNotFound), "gzip"},
		"not zstd":             {[]byte(userNotFound), "zstd"},
		"unknown encoding":     {[]byte(userNotFound), "compress"},
		"two encodings in one": {gz, "gzip, br"},
	} {
		if out, err := decodeBody(c.body, c.enc); err == nil {
			t.Errorf("%s: decoded %d bytes", name, len(out))
		}
	}
}
