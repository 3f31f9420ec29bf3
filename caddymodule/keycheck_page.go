package caddymodule

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
)

// The page is one self-contained document: its style and script are inline
// and allowed by hash in a strict Content-Security-Policy, so nothing else
// can run or load. Without JavaScript the form posts and the server renders
// the report into the same page.

const pageStyle = `
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:44rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}
p.lead{margin:0 0 1.5rem;color:#4a5263}
form{display:flex;gap:.5rem}
input{flex:1;font:inherit;padding:.55rem .7rem;border:1px solid #b8bfcc;border-radius:6px}
button{font:inherit;padding:.55rem 1.2rem;border:0;border-radius:6px;background:#3451d1;color:#fff;cursor:pointer}
button:disabled{background:#8a97d8}
#result{margin-top:1.5rem}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:1rem 1.25rem;margin-bottom:1rem}
.status{font-size:1.25rem;font-weight:600;margin:0}
.ok{color:#137333}.bad{color:#b3261e}.unknown{color:#8a5a00}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0 0}
dt{color:#4a5263}dd{margin:0}
ul{margin:.25rem 0 0;padding-left:1.25rem}
.muted{color:#6b7385}
`

const pageScript = `
(function () {
  var form = document.getElementById("check");
  var result = document.getElementById("result");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function row(dl, name, value) {
    if (value === null || value === undefined) return;
    dl.appendChild(el("dt", "", name));
    dl.appendChild(el("dd", "", String(value)));
  }
  function render(r) {
    result.textContent = "";
    var head = el("div", "card");
    var cls = r.status === "valid" ? "ok" : (r.status === "unknown" ? "unknown" : "bad");
    var status = el("p", "status " + cls, r.status === "valid" ? "Valid" : r.status);
    status.id = "status";
    head.appendChild(status);
    head.appendChild(el("p", "", r.message));
    result.appendChild(head);
    var k = r.key;
    if (k) {
      var card = el("div", "card"), dl = el("dl");
      card.appendChild(el("strong", "", "Key"));
      row(dl, "Label", k.label);
      row(dl, "Management key", k.is_management_key);
      row(dl, "Free tier", k.is_free_tier);
      row(dl, "Limit", k.limit);
      row(dl, "Limit remaining", k.limit_remaining);
      row(dl, "Limit reset", k.limit_reset);
      if (k.usage) row(dl, "Usage", "total " + k.usage.total + ", today " + k.usage.daily + ", this week " + k.usage.weekly + ", this month " + k.usage.monthly);
      row(dl, "Expires at", k.expires_at);
      if (k.expires_in_seconds !== null && k.expires_in_seconds !== undefined) row(dl, "Expires in", Math.round(k.expires_in_seconds / 3600) + " h");
      if (k.rate_limit) row(dl, "Rate limit", k.rate_limit.requests + " per " + k.rate_limit.interval);
      card.appendChild(dl);
      result.appendChild(card);
    }
    var more = el("div", "card"), dl2 = el("dl");
    if (r.credits) row(dl2, "Credits", r.credits.remaining + " remaining of " + r.credits.total_credits);
    else row(dl2, "Credits", r.credits_unavailable);
    if (r.models) row(dl2, "Models", r.models.count + " (" + r.models.sample.join(", ") + ")");
    else row(dl2, "Models", r.models_unavailable);
    more.appendChild(dl2);
    result.appendChild(more);
    var adv = el("div", "card"), ul = el("ul");
    adv.appendChild(el("strong", "", "What to do"));
    (r.advice || []).forEach(function (a) { ul.appendChild(el("li", "", a)); });
    adv.appendChild(ul);
    result.appendChild(adv);
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var button = form.querySelector("button"), input = form.querySelector("input");
    button.disabled = true;
    result.textContent = "";
    result.appendChild(el("p", "muted", "Checking..."));
    fetch(window.location.pathname, {
      method: "POST",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({key: input.value}),
      credentials: "omit",
      cache: "no-store"
    }).then(function (resp) {
      return resp.json();
    }).then(function (r) {
      if (r.error) {
        result.textContent = "";
        var card = el("div", "card"), s = el("p", "status bad", "Error " + r.error.code);
        s.id = "status";
        card.appendChild(s);
        card.appendChild(el("p", "", r.error.message));
        result.appendChild(card);
      } else {
        render(r);
      }
    }).catch(function (e) {
      result.textContent = "";
      result.appendChild(el("p", "bad", "The check failed: " + e));
    }).finally(function () { button.disabled = false; });
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

// pageData is what the page template renders: a report after a form post
// without JavaScript, or an error.
type pageData struct {
	Report *report
	Error  string
	Style  template.CSS
	Script template.JS
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
<p class="lead">Paste a key to see whether it works and, if not, why. The key goes only to OpenRouter; it is not stored or logged.</p>
<form id="check" method="post" action="" autocomplete="off">
<input type="password" name="key" aria-label="OpenRouter key" placeholder="sk-or-v1-..." required autocomplete="off" spellcheck="false">
<button type="submit">Check</button>
</form>
<div id="result" aria-live="polite">
{{- with .Error}}
<div class="card"><p class="status bad" id="status">Error</p><p>{{.}}</p></div>
{{- end}}
{{- with .Report}}
<div class="card">
<p class="status {{if eq .Status "valid"}}ok{{else if eq .Status "unknown"}}unknown{{else}}bad{{end}}" id="status">{{if eq .Status "valid"}}Valid{{else}}{{.Status}}{{end}}</p>
<p>{{.Message}}</p>
</div>
{{- with .Key}}
<div class="card"><strong>Key</strong><dl>
<dt>Label</dt><dd>{{.Label}}</dd>
{{- with .IsManagementKey}}<dt>Management key</dt><dd>{{.}}</dd>{{end}}
{{- with .IsFreeTier}}<dt>Free tier</dt><dd>{{.}}</dd>{{end}}
{{- with .Limit}}<dt>Limit</dt><dd>{{.}}</dd>{{end}}
{{- with .LimitRemaining}}<dt>Limit remaining</dt><dd>{{.}}</dd>{{end}}
{{- with .LimitReset}}<dt>Limit reset</dt><dd>{{.}}</dd>{{end}}
{{- with .Usage}}<dt>Usage</dt><dd>total {{.Total}}, today {{.Daily}}, this week {{.Weekly}}, this month {{.Monthly}}</dd>{{end}}
{{- with .ExpiresAt}}<dt>Expires at</dt><dd>{{.Format "2006-01-02T15:04:05Z07:00"}}</dd>{{end}}
{{- with .RateLimit}}<dt>Rate limit</dt><dd>{{.Requests}} per {{.Interval}}</dd>{{end}}
</dl></div>
{{- end}}
<div class="card"><dl>
<dt>Credits</dt><dd>{{with .Credits}}{{.Remaining}} remaining of {{.TotalCredits}}{{else}}{{.CreditsUnavailable}}{{end}}</dd>
<dt>Models</dt><dd>{{with .Models}}{{.Count}} ({{range $i, $id := .Sample}}{{if $i}}, {{end}}{{$id}}{{end}}){{else}}{{.ModelsUnavailable}}{{end}}</dd>
</dl></div>
<div class="card"><strong>What to do</strong><ul>{{range .Advice}}<li>{{.}}</li>{{end}}</ul></div>
{{- end}}
</div>
</main>
<script>{{.Script}}</script>
</body>
</html>
`))
