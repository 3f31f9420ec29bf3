package caddymodule

// rewrite.go owns what a verdict puts in a held body: its sentence (see
// verdict.message) and the members it sets in "metadata". Parsing and
// editing the body, in whichever envelope it came, is package errbody's.

import (
	"time"

	"github.com/openrouter-keys/caddy-openrouter-keys/caddymodule/internal/errbody"
)

// rewrite renders the body with the verdict: the message replaced (kept
// for provider_key_rejected) and "reason" (and what else the verdict
// knows) set in "metadata", every other member kept as it was. ok is false
// when the body cannot be edited without losing something (see
// errbody.Body.Edit); such a body passes unchanged.
func rewrite(eb *errbody.Body, v verdict) (out []byte, ok bool) {
	var members [3]errbody.Member
	return eb.Edit(v.message(), v.appendMembers(members[:0])...)
}

// appendMembers appends what the verdict sets in "metadata", in order.
func (v verdict) appendMembers(members []errbody.Member) []errbody.Member {
	members = append(members, errbody.Text("reason", string(v.reason)))
	switch v.reason {
	case reasonExpired, reasonTokenExpired:
		members = append(members, errbody.Text("expires_at", v.at.UTC().Format(time.RFC3339)))
	case reasonNotOpenRouterKey:
		members = append(members, errbody.Text("looks_like", foreignKeys[v.provider].id))
	}
	if v.byLabel {
		members = append(members, errbody.Text("matched_by", "label"))
	}
	return members
}
