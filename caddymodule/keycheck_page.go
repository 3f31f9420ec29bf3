package caddymodule

// keycheck_page.go owns the key check's page: the report in words for
// people, rendered by the server (no JavaScript needed) under a strict
// Content-Security-Policy.

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/openrouter-keys/caddy-openrouter-keys/internal/openrouter"
)

// The page is one self-contained document: its style and script are inline
// and allowed by hash in a strict Content-Security-Policy, so nothing else
// can run or load. Every word of a result is rendered here, in Go, from a
// reportView, which the CLI prints too: with JavaScript the script posts the
// form and swaps in the result part of the page the server answers, so the
// page reads the same with and without it. The script adds only what needs
// the browser: dates in the reader's locale, and focus.

// pageStyle keeps every text colour at a contrast of at least 4.5:1 on its
// background (WCAG AA).
const pageStyle = `
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:46rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}
h2,h3{margin:0}
h3{font-size:1rem;margin-bottom:.35rem}
p{margin:.35rem 0}
.lead{margin:0 0 1.25rem;color:#424a5b}
label{display:block;font-weight:600;margin-bottom:.25rem}
.row{display:flex;gap:.5rem}
input{flex:1;min-width:0;font:inherit;padding:.55rem .7rem;border:1px solid #6b7385;border-radius:6px;background:#fff;color:inherit}
input[aria-invalid=true]{border-color:#b3261e}
button{font:inherit;font-weight:600;padding:.55rem 1.2rem;border:0;border-radius:6px;background:#2f49c2;color:#fff;cursor:pointer}
button:disabled{background:#5b6275;cursor:progress}
:focus-visible{outline:3px solid #1a2f8a;outline-offset:2px}
.hint{color:#4f5668;font-size:.9rem;margin:.3rem 0 0}
#result{margin-top:1.5rem}
.card{background:#fff;border:1px solid #d3d8e1;border-radius:8px;padding:1rem 1.25rem;margin-bottom:1rem}
.status{font-size:1.3rem;display:flex;flex-wrap:wrap;align-items:baseline;gap:.6rem;width:fit-content}
.ok .status{color:#0f6b2c}.bad .status{color:#a4221b}.unknown .status{color:#7a4f00}
.ok{border-left:6px solid #0f6b2c}.bad{border-left:6px solid #a4221b}.unknown{border-left:6px solid #b07a12}
.reason{font:500 .8rem/1.4 ui-monospace,monospace;color:#4f5668;background:#eef0f4;border-radius:4px;padding:.05rem .4rem}
ol{margin:.25rem 0 0;padding-left:1.4rem}
li+li{margin-top:.3rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.25rem;margin:0}
dt{color:#4f5668}dd{margin:0;overflow-wrap:anywhere}
.muted{color:#4f5668;font-style:italic}
#common h2{font-size:1.1rem;margin-bottom:.35rem}
details{border-top:1px solid #d3d8e1;padding:.4rem 0}
summary{cursor:pointer;font-weight:600}
#common dl{display:block;margin:.25rem 0 0}
#common dt{font-weight:600;color:#1d2330;margin-top:.6rem}
#common dd{margin:.1rem 0 0}
`

const pageScript = `
(function () {
  "use strict";
  var form = document.getElementById("check");
  var input = document.getElementById("key");
  var button = document.getElementById("submit");
  var result = document.getElementById("result");
  // The page's own message for an empty field, in the result region,
  // rather than the browser's bubble.
  form.noValidate = true;

  // Dates in the reader's locale; the UTC time stays in the title.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        t.textContent = d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
      }
    });
  }
  function show(nodes, focusHeading) {
    result.replaceChildren.apply(result, nodes);
    localTimes(result);
    var heading = document.getElementById("status");
    if (focusHeading && heading) heading.focus();
  }
  function fromTemplate(id) {
    return [document.getElementById(id).content.cloneNode(true)];
  }
  localTimes(document);

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (input.value === "") {
      input.setAttribute("aria-invalid", "true");
      show(fromTemplate("empty-key"), false);
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    button.disabled = true;
    result.setAttribute("aria-busy", "true");
    show(fromTemplate("checking"), false);
    fetch(window.location.pathname, {
      method: "POST",
      headers: {"Accept": "text/html"},
      body: new URLSearchParams({key: input.value}),
      credentials: "same-origin", // a page behind basic_auth or forward_auth still works
      cache: "no-store",
      redirect: "error"
    }).then(function (resp) {
      return resp.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("result");
      if (!fresh) throw new Error("no result in the answer");
      show(Array.prototype.map.call(fresh.childNodes, function (n) { return document.importNode(n, true); }), true);
    }).catch(function () {
      show(fromTemplate("unsent"), true);
    }).finally(function () {
      button.disabled = false;
      result.removeAttribute("aria-busy");
    });
  });
})();
`

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// pageCSP lets the page run its own inline script and style and talk to
// its own origin, nothing else.
var pageCSP = "default-src 'none'; script-src " + cspHash(pageScript) + "; style-src " + cspHash(pageStyle) +
	"; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Wording shared by the page's messages and the API's errors.
const (
	headlineNotChecked = "Key not checked"
	headlineNoKey      = "No key"
	msgNoKeyForm       = `Paste a key into the field, then choose "Check key".`
)

// pageData is what the page template renders: a result after a form post,
// or an error.
type pageData struct {
	Result *reportView
	Error  *pageError
	Style  template.CSS
	Script template.JS
}

// pageError is a request the key check could not answer with a report.
type pageError struct {
	Headline string
	Message  string
}

// reportView is a report in words, as people read it on the page and in
// the CLI.
type reportView struct {
	// Tone is ok, bad or unknown: the result's colour.
	Tone     string
	Headline string
	// Status is the report's status code, shown small beside the headline.
	Status  string
	Message string
	// Advice is what to do, first things first.
	Advice []string
	// Key and Account are the details; a fact with Missing set explains
	// why its value is unknown.
	Key     []fact
	Account []fact
}

// fact is one named value of the details.
type fact struct {
	Name  string
	Value string
	// When is set for a date: rendered in the reader's locale on the page,
	// with UTC on hover, and in UTC by the CLI.
	When    *when
	Missing bool
}

// when is a moment in the forms people read.
type when struct {
	ISO      string // RFC 3339, for <time datetime>
	UTC      string // "2026-12-13 14:00 UTC"
	Relative string // "in 20 days", "2 days ago"
}

// text is the fact's value as one line of text.
func (f fact) text() string {
	if f.When != nil {
		return f.When.UTC + " (" + f.When.Relative + ")"
	}
	return f.Value
}

func whenOf(t, now time.Time) *when {
	t = t.UTC()
	return &when{ISO: t.Format(time.RFC3339), UTC: t.Format("2006-01-02 15:04 UTC"), Relative: relativeTime(t, now)}
}

// viewOf puts a report in words, as of now.
func viewOf(r *report, now time.Time) *reportView {
	v := &reportView{Headline: r.Headline, Status: r.Status, Message: r.Message, Advice: r.Advice}
	switch r.Status {
	case statusValid:
		v.Tone = "ok"
	case statusUnknown:
		v.Tone = "unknown"
	default:
		v.Tone = "bad"
	}
	if v.Headline == "" {
		v.Headline = r.Status
	}
	if k := r.Key; k != nil {
		v.Key = keyFacts(k, now)
	} else if r.KeyUnavailable != "" {
		v.Key = []fact{{Name: "Key details", Value: sentence(r.KeyUnavailable), Missing: true}}
	}
	if c := r.Credits; c != nil {
		v.Account = append(v.Account, fact{Name: "Credits", Value: money(c.Remaining) + " left of " + money(c.TotalCredits) + " (" + money(c.TotalUsage) + " used)"})
	} else if r.CreditsUnavailable != "" && r.CreditsUnavailable != r.KeyUnavailable {
		v.Account = append(v.Account, fact{Name: "Credits", Value: sentence(r.CreditsUnavailable), Missing: true})
	}
	if m := r.Models; m != nil {
		s := strconv.Itoa(m.Count) + " available"
		if len(m.Sample) > 0 {
			s += ", such as " + strings.Join(m.Sample, ", ")
		}
		v.Account = append(v.Account, fact{Name: "Models", Value: s})
	} else if r.ModelsUnavailable != "" {
		v.Account = append(v.Account, fact{Name: "Models", Value: sentence(r.ModelsUnavailable), Missing: true})
	}
	for _, m := range r.RetiringModels {
		v.Account = append(v.Account, fact{Name: "Retiring model in use", Value: m.ID + " may be removed after " + m.ExpirationDate + "; move to its successor before then"})
	}
	return v
}

// requestRateText is what is known of a key's request rate: OpenRouter
// sets no limit per key and governs capacity as a whole; :free models
// are capped per account.
var requestRateText = "no limit per key (OpenRouter governs capacity as a whole); :free models " +
	strconv.Itoa(openrouter.FreePerMinute) + " requests a minute for the whole account"

// keyFacts are the key's details in words. What OpenRouter reports for a
// working key (Usage is set then) is complete: a missing limit or expiry
// means there is none. For a refused key only what is known is shown.
func keyFacts(k *keyReport, now time.Time) []fact {
	facts := []fact{{Name: "Key", Value: k.Label}}
	if k.Name != "" {
		facts = append(facts, fact{Name: "Name", Value: k.Name})
	}
	switch {
	case k.WorkspaceDeleted:
		facts = append(facts, fact{Name: "Workspace", Value: "deleted (OpenRouter says the key's workspace no longer exists)"})
	case k.Workspace != "":
		facts = append(facts, fact{Name: "Workspace", Value: k.Workspace})
	}
	if k.IsManagementKey != nil {
		kind := "API key"
		if *k.IsManagementKey {
			kind = "Management key"
		}
		if k.IsFreeTier != nil && *k.IsFreeTier {
			kind += ", free tier"
		}
		facts = append(facts, fact{Name: "Type", Value: kind})
	}
	complete := k.Usage != nil
	switch {
	case k.Limit != nil:
		s := money(*k.Limit)
		if k.LimitReset != nil && *k.LimitReset != "" {
			s += ", resets " + *k.LimitReset
		}
		facts = append(facts, fact{Name: "Spending limit", Value: s})
		if k.LimitRemaining != nil {
			facts = append(facts, fact{Name: "Limit left", Value: money(*k.LimitRemaining)})
		}
		switch {
		case k.ResetsAt != nil:
			facts = append(facts, fact{Name: "Limit resets", When: whenOf(*k.ResetsAt, now)})
		case k.NeverResets:
			facts = append(facts, fact{Name: "Limit resets", Value: "never (a total limit)"})
		}
	case complete:
		facts = append(facts, fact{Name: "Spending limit", Value: "no limit"})
	}
	if u := k.Usage; u != nil {
		facts = append(facts, fact{Name: "Usage", Value: fmt.Sprintf("%s in total: %s today, %s this week, %s this month",
			money(u.Total), money(u.Daily), money(u.Weekly), money(u.Monthly))})
	}
	if f := k.FreeModelRequests; f != nil {
		facts = append(facts, fact{Name: "Free models", Value: fmt.Sprintf("%d of %d requests left today (%d used), for the whole account; back at 00:00 UTC (%s)",
			f.Remaining, f.Limit, f.Used, relativeTime(f.ResetsAt, now))})
	}
	switch {
	case k.ExpiresAt != nil:
		facts = append(facts, fact{Name: "Expires", When: whenOf(*k.ExpiresAt, now)})
	case complete:
		facts = append(facts, fact{Name: "Expires", Value: "never"})
	}
	if complete {
		// GET /key's rate_limit is legacy, always -1: OpenRouter has no
		// per-key request limit. What limits a key's rate is known.
		facts = append(facts, fact{Name: "Request rate", Value: requestRateText})
	}
	if k.LastUsedAt != nil {
		facts = append(facts, fact{Name: "Last used", When: whenOf(*k.LastUsedAt, now)})
	}
	return facts
}

// relativeTime is t as seen from now: "in 20 days", "2 hours ago".
func relativeTime(t, now time.Time) string {
	d := t.Sub(now)
	future := d >= 0
	if !future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = "less than a minute"
	case d.Round(time.Minute) < time.Hour:
		s = plural(int(d.Round(time.Minute)/time.Minute), "minute")
	case d < 36*time.Hour:
		s = plural(int(d.Round(time.Hour)/time.Hour), "hour")
	default:
		s = plural(int(d.Round(24*time.Hour)/(24*time.Hour)), "day")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

// sentence capitalises an explanation that the report words as a clause.
func sentence(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

var pageTemplate = template.Must(template.New("keycheck").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>OpenRouter key check</title>
<style>{{.Style}}</style>
</head>
<body>
<main>
<h1>OpenRouter key check</h1>
<p class="lead">Paste an OpenRouter key to see whether it works and, if it does not, why. The key is sent only to OpenRouter; this server neither stores nor logs it.</p>
<form id="check" method="post" action="" autocomplete="off">
<label for="key">OpenRouter key</label>
<div class="row">
<input id="key" type="password" name="key" placeholder="sk-or-v1-..." required autocomplete="off" spellcheck="false" aria-describedby="key-hint">
<button id="submit" type="submit">Check key</button>
</div>
<p id="key-hint" class="hint">It starts with sk-or-v1-. The field hides what you paste.</p>
</form>
<section id="result" aria-live="polite" aria-label="Result">
{{- with .Error}}{{template "error" .}}{{end}}
{{- with .Result}}{{template "result" .}}{{end}}
</section>
{{- if not .Error}}
<section id="common" class="card" aria-labelledby="common-title">
<h2 id="common-title">Common failures and what fixes them</h2>
<p>{{.CommonIntro}}</p>
{{- range .Common}}
<details><summary>{{.Title}}</summary><dl>
{{- range .Items}}
<dt>{{.Headline}}{{with .Code}} <code class="reason">{{.}}</code>{{end}}</dt><dd>{{.Advice}}{{with .Retry}} {{.}}{{end}}</dd>
{{- end}}
</dl></details>
{{- end}}
</section>
{{- end}}
</main>
<template id="empty-key">{{template "error" .EmptyKey}}</template>
<template id="checking"><p class="muted">Checking the key…</p></template>
<template id="unsent">{{template "error" .Unsent}}</template>
<script>{{.Script}}</script>
</body>
</html>
{{- define "error"}}
<div class="card bad"><h2 id="status" class="status" tabindex="-1">{{.Headline}}</h2><p>{{.Message}}</p></div>
{{- end}}
{{- define "result"}}
<div class="card {{.Tone}}">
<h2 id="status" class="status" tabindex="-1"><span id="headline">{{.Headline}}</span> <code class="reason" title="Status code">{{.Status}}</code></h2>
<p>{{.Message}}</p>
</div>
{{- with .Advice}}
<div class="card"><h3>What to do</h3><ol>{{range .}}<li>{{.}}</li>{{end}}</ol></div>
{{- end}}
{{- with .Key}}
<div class="card"><h3>Key</h3><dl>{{range .}}{{template "fact" .}}{{end}}</dl></div>
{{- end}}
{{- with .Account}}
<div class="card"><h3>Account and models</h3><dl>{{range .}}{{template "fact" .}}{{end}}</dl></div>
{{- end}}
{{- end}}
{{- define "fact"}}
<dt>{{.Name}}</dt><dd{{if .Missing}} class="muted"{{end}}>{{with .When}}<time datetime="{{.ISO}}" title="{{.UTC}}">{{.UTC}}</time> ({{.Relative}}){{else}}{{.Value}}{{end}}</dd>
{{- end}}
`))

// The messages the script shows without asking the server, rendered by
// the same template as the server's.
var (
	emptyKeyError = &pageError{Headline: headlineNoKey, Message: msgNoKeyForm}
	unsentError   = &pageError{Headline: headlineNotChecked, Message: "The check could not be sent: the connection to this server failed. Try again."}
)

// EmptyKey and Unsent are for the template.
func (pageData) EmptyKey() *pageError { return emptyKeyError }
func (pageData) Unsent() *pageError   { return unsentError }
