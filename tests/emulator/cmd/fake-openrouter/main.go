// Command fake-openrouter serves the OpenRouter emulator of
// tests/emulator on a local port, so that the gateway can be tried without
// an OpenRouter account or network access. It prints one fake key per
// state a key can be in (valid, expiring, expired, disabled, deleted, a
// management key used for inference, a JWT and an expired JWT, a key whose
// daily cap is spent, a key of an account without credits, a key of an
// account that used up its free-model requests today) and a management
// key for the gateway, as shell lines to paste, and runs until
// interrupted.
//
//	go run ./tests/emulator/cmd/fake-openrouter [-addr 127.0.0.1:9300]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
	"github.com/openrouter-keys/caddy-openrouter-keys/tests/emulator"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9300", "the address to serve the emulator on (host:port)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fake-openrouter:", err)
		os.Exit(1)
	}
}

// shutdownGrace is how long requests in flight may take to finish once
// the command is interrupted.
const shutdownGrace = 5 * time.Second

// run serves a freshly seeded emulator under /api/v1 on addr, prints its
// credentials and how to use them to out, and serves until ctx ends.
func run(ctx context.Context, addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	emu := emulator.New()
	creds, gatewayKey := seed(emu, time.Now())
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	printUsage(out, "http://"+ln.Addr().String(), creds, gatewayKey)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// credential is one printed credential: the shell variable it goes in and
// what it shows.
type credential struct {
	env, value, note string
}

// expiringIn is the life the expiring key starts with.
const expiringIn = 2 * time.Minute

// seed creates one credential per state, and the gateway's management key.
func seed(emu *emulator.Server, now time.Time) (creds []credential, gatewayKey string) {
	expiresAt, expiredAt := now.Add(expiringIn), now.Add(-time.Hour)
	limit := 10.0
	valid := emu.NewKey(emulator.KeyOptions{Name: "valid", Limit: &limit, Usage: 2.5})
	expiring := emu.NewKey(emulator.KeyOptions{Name: "expiring", ExpiresAt: &expiresAt})
	expired := emu.NewKey(emulator.KeyOptions{Name: "expired", ExpiresAt: &expiredAt})
	disabled := emu.NewKey(emulator.KeyOptions{Name: "disabled", Disabled: true})
	deleted := emu.NewKey(emulator.KeyOptions{Name: "deleted"})
	emu.Delete(deleted)
	management := emu.NewKey(emulator.KeyOptions{Name: "management", Management: true})
	capLimit := 5.0
	capped := emu.NewKey(emulator.KeyOptions{Name: "capped", Limit: &capLimit, LimitReset: "daily", Usage: capLimit})
	noBalance := emu.NewKey(emulator.KeyOptions{Name: "no balance", Account: emu.NewAccount(emulator.AccountOptions{Credits: 5, Usage: 5})})
	freeUsed := emu.NewKey(emulator.KeyOptions{Name: "free used", Account: emu.NewAccount(emulator.AccountOptions{
		Credits: 5, Usage: 1, FreeRequestsUsed: openrouter.FreeDailyLow,
	})})
	gatewayKey = emu.NewKey(emulator.KeyOptions{Name: "gateway", Management: true})
	return []credential{
		{"VALID_KEY", valid, "works (limit 10, 2.5 used)"},
		{"EXPIRING_KEY", expiring, "works until " + expiresAt.UTC().Format("15:04:05") + " UTC (2 minutes), then expired"},
		{"EXPIRED_KEY", expired, "expired an hour ago"},
		{"DISABLED_KEY", disabled, "disabled"},
		{"DELETED_KEY", deleted, "deleted"},
		{"MANAGEMENT_KEY", management, "a management key: answers GET /key, refused for inference"},
		{"VALID_JWT", emu.NewJWT(now.Add(24 * time.Hour)), "a JWT access token, valid for 24 hours"},
		{"EXPIRED_JWT", emu.NewJWT(expiredAt), "a JWT access token that expired an hour ago"},
		{"CAPPED_KEY", capped, "its daily limit of 5 is spent: 403 Key limit exceeded (daily limit) until 00:00 UTC"},
		{"NO_BALANCE_KEY", noBalance, "a key of another account whose credits are spent: 402 Insufficient credits"},
		{"FREE_USED_KEY", freeUsed, `its account used its 50 free-model requests today: 429 on any ":free" model until 00:00 UTC`},
		{"ACCESS_TOKEN", emu.NewAccessToken(emulator.AccessTokenOptions{}), `an access token as workload identity federation issues it (scope "inference"), valid for 15 minutes`},
		{"UNSCOPED_ACCESS_TOKEN", emu.NewAccessToken(emulator.AccessTokenOptions{Scope: "keys:read"}), `an access token without the "inference" scope: refused for inference`},
		{"FOREIGN_JWT", emulator.NewForeignJWT("https://token.actions.githubusercontent.com", now.Add(time.Hour)), "an identity provider's own token (another issuer): refused, it must be exchanged first"},
	}, gatewayKey
}

func printUsage(out io.Writer, origin string, creds []credential, gatewayKey string) {
	p := func(format string, a ...any) { _, _ = fmt.Fprintf(out, format+"\n", a...) }
	p("# fake-openrouter: an OpenRouter emulator at %s%s. The keys are fake. Ctrl-C stops it.", origin, openrouter.APIPrefix)
	p("# One key per state, to paste into a shell. OpenRouter answers every dead one (expired,")
	p(`# disabled, deleted, management key used for inference) with the same 401 "User not found.".`)
	p("export OPENROUTER_ORIGIN=%s", origin)
	for _, c := range creds {
		p("export %s=%s  # %s", c.env, c.value, c.note)
	}
	p("export OPENROUTER_MANAGEMENT_KEY=%s  # the gateway's management key", gatewayKey)
	p("")
	p("# Start the gateway against it, from the repository's root:")
	p("OPENROUTER_ORIGIN=%s OPENROUTER_MANAGEMENT_KEY=%s go run ./cmd/caddy run --config Caddyfile.example", origin, gatewayKey)
	p("# Then send a key through it:")
	p(`# curl -s http://localhost:8080%s%s -H "Authorization: Bearer $EXPIRED_KEY" -H 'Content-Type: application/json' -d '{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}]}'`,
		openrouter.APIPrefix, openrouter.PathChatCompletions)
	p(`# and $FREE_USED_KEY with "model":"%s"`, emulator.FreeModel)
	p(`# A model that retires in %d days: $VALID_KEY with "model":"%s" and curl -i shows %s`,
		emulator.RetiringSoonDays, emulator.ModelRetiringSoon, "X-OpenRouter-Model-Expires-At")
	p(`# A mistyped slug (400 "is not a valid model ID", answered with the nearest valid ids): $VALID_KEY with "model":"%s";`, emulator.ModelMistyped)
	p(`# a tools request to a model without tool support (404 "No endpoints found that support tool use"): "model":"%s" with "tools":[{"type":"function","function":{"name":"f"}}]`, emulator.ModelNoTools)
}
