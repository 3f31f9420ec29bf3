// Command caddy is standard Caddy with the openrouter_keys module built in,
// so that `go run ./cmd/caddy` works without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the official build.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/openrouter-keys/caddy-openrouter-keys/caddymodule"
)

func main() {
	caddycmd.Main()
}
