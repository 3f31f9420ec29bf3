// Package caddymodule is the openrouter_keys Caddy module: a gateway in
// front of reverse_proxy to OpenRouter that turns OpenRouter's misleading
// key and account failures into accurate answers with a machine-readable
// reason: 401 "User not found." becomes key expired, disabled, not found,
// malformed, a management key used for inference, ...; 402, 403 and 429
// say which limit was hit (this key's cap, the account's balance, a
// workspace budget, the free-model allowance, a provider), the figures,
// when it resets and whether a retry can succeed. It also serves a key
// check page (openrouter_keycheck, keycheck*.go) and the
// `caddy openrouter-keycheck` command, and with watch_keys exports the
// account's key health to Prometheus (watch.go, watch_select.go).
//
// A request's way through the files: handler.go (ServeHTTP) reads the
// credential (credential.go) and what is known of it (knowledge.go, over
// cache.go and state.go), answers known-dead and capped keys itself
// (answerAtEdge, under state.go's edge rule), and passes the rest on
// through the holding writer (response.go); a held 401 (or, with
// explain_limits, 402, 403, 429 or a provider's error at any status) is decoded and parsed (package errbody,
// in internal/errbody), given its reason by the reason table (reasons.go;
// for 402, 403 and 429 through explainlimits.go: the entry of the kind
// openrouter.Recognise gives it, its figures gathered as limits.go says)
// with evidence from OpenRouter (records.go, listing.go, reach.go,
// account.go, evidence.go, asking through internal/openrouter's Client,
// which lookup.go makes) and other replicas (storage.go, shared.go) where
// the table needs it, and rewritten (rewrite.go puts the entry's sentence
// and members in, errbody edits the body in the upstream's envelope,
// envelope.go picks the envelope of an edge answer) or counted as
// unexplained (drift.go).
package caddymodule
