package caddymodule

// The queries of monitoring/ (alert rules and dashboard) must name metrics
// this module exports: a renamed metric would otherwise leave an alert that
// can never fire and a panel that stays empty, and nothing would say so.

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// promqlWords are PromQL's keywords, aggregation operators and the like:
// words of a query that are not metric names.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true, "inf": true, "nan": true,
}

// groupingWords take a parenthesized list of label names.
var groupingWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// metricNames are the metric names a PromQL query reads. It is a
// tokenizer, not a parser: it skips strings, label matchers ({...}),
// ranges ([...]), numbers and durations, Grafana variables ($x), label
// lists of by/on/..., function names (a word before "(") and keywords.
func metricNames(expr string) []string {
	var names []string
	isWordStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isWord := func(c byte) bool { return isWordStart(c) || c >= '0' && c <= '9' }
	// skipTo returns the index after the closing byte, skipping strings.
	skipTo := func(i int, closing byte) int {
		for i < len(expr) && expr[i] != closing {
			if q := expr[i]; q == '"' || q == '\'' || q == '`' {
				for i++; i < len(expr) && expr[i] != q; i++ {
					if expr[i] == '\\' && q != '`' {
						i++
					}
				}
			}
			i++
		}
		return i + 1
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipTo(i+1, c)
		case c == '{':
			i = skipTo(i+1, '}')
		case c == '[':
			i = skipTo(i+1, ']')
		case c == '$': // a Grafana variable
			for i++; i < len(expr) && isWord(expr[i]); i++ {
			}
		case c >= '0' && c <= '9' || c == '.':
			// A number, or a duration (5m, 1h30m).
			for i++; i < len(expr) && (isWord(expr[i]) || expr[i] == '.'); i++ {
			}
		case isWordStart(c):
			j := i
			for i < len(expr) && isWord(expr[i]) {
				i++
			}
			word := expr[j:i]
			k := i
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\t' || expr[k] == '\n') {
				k++
			}
			switch {
			case groupingWords[word] && k < len(expr) && expr[k] == '(':
				i = skipTo(k+1, ')') // label names
			case promqlWords[strings.ToLower(word)]:
			case k < len(expr) && expr[k] == '(': // a function
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names
}

func TestMetricNamesTokenizer(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (endpoint, le) (rate(caddy_x_bucket{job=~"$job",a="}"}[$__rate_interval])))`: {"caddy_x_bucket"},
		`time() - max by (workspace) (a_b) > 3 * c:d offset 5m and on (job) e unless ignoring(x) group_left(y) f`:     {"a_b", "c:d", "e", "f"},
		`count(x < bool 7 * 86400) / sum without(le) (rate(y[1h30m]))`:                                                {"x", "y"},
		`{__name__="ignored"} or label_replace(z, "dst", "$1", "src", "(.*)")`:                                        {"z"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// exportedMetrics is every series name the module can export, and the
// names of the key watch's metrics.
func exportedMetrics(t *testing.T) (all map[string]bool, watch []string) {
	t.Helper()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	nameOf := func(d *prometheus.Desc) string {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		return m[1]
	}
	describe := func(c prometheus.Collector) []string {
		ch := make(chan *prometheus.Desc, 32)
		c.Describe(ch)
		close(ch)
		var names []string
		for d := range ch {
			names = append(names, nameOf(d))
		}
		return names
	}
	all = map[string]bool{}
	for _, c := range gatewayMetrics.collectors() {
		for _, name := range describe(c) {
			switch c.(type) {
			case *prometheus.HistogramVec:
				all[name+"_bucket"], all[name+"_sum"], all[name+"_count"] = true, true, true
			default:
				all[name] = true
			}
		}
	}
	watch = describe(watchMetrics{})
	for _, name := range watch {
		all[name] = true
	}
	if len(watch) == 0 || len(all) <= len(watch) {
		t.Fatalf("exported metrics not found: %v %v", all, watch)
	}
	return all, watch
}

// monitoringRules are the rules of monitoring/alerts.yml.
type monitoringRule struct {
	Record string `yaml:"record"`
	Alert  string `yaml:"alert"`
	Expr   string `yaml:"expr"`
}

func readRules(t *testing.T) []monitoringRule {
	t.Helper()
	b, err := os.ReadFile("../monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []monitoringRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var rules []monitoringRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("alerts.yml has no rules")
	}
	return rules
}

// dashboardQuery is one query of monitoring/dashboard.json.
type dashboardQuery struct {
	where, expr string
	panel       bool // a panel's target (not a variable's query)
}

func readDashboard(t *testing.T) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile("../monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var out []dashboardQuery
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("dashboard.json: panel: %v", err)
			}
			for _, target := range p.Targets {
				out = append(out, dashboardQuery{where: "panel " + p.Title, expr: target.Expr, panel: true})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	// Variables: label_values(<query>, <label>) reads <query>.
	labelValues := regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older form: a plain string
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("dashboard variable %s: query %q is not label_values(<query>, <label>)", v.Name, q.Query)
			continue
		}
		out = append(out, dashboardQuery{where: "variable " + v.Name, expr: m[1]})
	}
	return out
}

func TestMonitoringNamesExportedMetrics(t *testing.T) {
	exported, watch := exportedMetrics(t)
	rules := readRules(t)
	recorded := map[string][]string{} // recording rule -> names its expr reads
	for _, r := range rules {
		if r.Record != "" {
			recorded[r.Record] = metricNames(r.Expr)
		}
	}
	// used is where each name is read from, by an alert (through the
	// recording rules it reads) or a dashboard panel.
	used := map[string][]string{}
	var reads func(names []string, seen map[string]bool) []string
	reads = func(names []string, seen map[string]bool) []string {
		var out []string
		for _, n := range names {
			if seen[n] {
				continue
			}
			seen[n] = true
			out = append(out, n)
			out = append(out, reads(recorded[n], seen)...)
		}
		return out
	}
	check := func(where, expr string) []string {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", where, expr)
		}
		for _, n := range names {
			if _, ok := recorded[n]; !ok && !exported[n] {
				t.Errorf("%s reads %s, which the module does not export and alerts.yml does not record", where, n)
			}
		}
		return names
	}
	for _, r := range rules {
		where := "alerts.yml: " + r.Record + r.Alert
		names := check(where, r.Expr)
		if r.Alert != "" {
			for _, n := range reads(names, map[string]bool{}) {
				used[n] = append(used[n], "alert "+r.Alert)
			}
		}
	}
	queries := readDashboard(t)
	if len(queries) < 10 {
		t.Fatalf("dashboard.json: only %d queries found", len(queries))
	}
	for _, q := range queries {
		names := check("dashboard.json: "+q.where, q.expr)
		if q.panel {
			for _, n := range reads(names, map[string]bool{}) {
				used[n] = append(used[n], q.where)
			}
		}
	}
	// Every key and watch metric is on the dashboard or in an alert.
	sort.Strings(watch)
	for _, n := range watch {
		if len(used[n]) == 0 {
			t.Errorf("%s is exported but no alert or dashboard panel reads it", n)
		}
	}
}
