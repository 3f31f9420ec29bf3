#!/usr/bin/env python3
"""Checks dashboard.json: valid JSON, panels that import anywhere, and PromQL
that parses.

Every panel must take its data source from the ${DS_PROMETHEUS} variable (no
data source uid of one Grafana), panel ids must be unique, and every query,
with Grafana's variables replaced by plain values, must pass
`promtool check rules` as a recording rule.

Usage: check_dashboard.py [dashboard.json]   (needs promtool on PATH)
"""
import json
import os
import subprocess
import sys
import tempfile

# Grafana's variables, replaced by values PromQL accepts in the same place.
VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$workspace": ".*",
}


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "dashboard.json")
    with open(path) as f:
        dash = json.load(f)
    problems = []
    names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if "DS_PROMETHEUS" not in names:
        problems.append("no DS_PROMETHEUS data source variable")
    seen = set()
    exprs = []
    for p in panels(dash["panels"]):
        if p["id"] in seen:
            problems.append(f"panel id {p['id']} used twice")
        seen.add(p["id"])
        if p["type"] == "row":
            continue
        where = f"panel {p['id']} ({p['title']})"
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
            if ds != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
                problems.append(f"{where}: data source {ds!r} is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            problems.append(f"{where}: no query")
        for t in p.get("targets", []):
            expr = t["expr"]
            # Longest names first: $instance before $i..., $__rate_interval
            # before $__interval.
            for var in sorted(VARIABLES, key=len, reverse=True):
                expr = expr.replace(var, VARIABLES[var])
            if "$" in expr:
                problems.append(f"{where}: unknown variable in {t['expr']!r}")
            exprs.append((where, t["refId"], expr))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        rules = [{"record": f"dashboard:panel:query{i}", "expr": e} for i, (_, _, e) in enumerate(exprs)]
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
    try:
        out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        problems.append("promtool rejects a query:\n" + out.stdout + out.stderr)
        # Say which panel: check each query alone.
        for where, ref, e in exprs:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as g:
                json.dump({"groups": [{"name": "q", "rules": [{"record": "q:q:q", "expr": e}]}]}, g)
            one = subprocess.run(["promtool", "check", "rules", g.name], capture_output=True, text=True)
            os.unlink(g.name)
            if one.returncode != 0:
                problems.append(f"{where} query {ref}: {e}")
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{path}: {len(seen)} panels, {len(exprs)} queries parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
