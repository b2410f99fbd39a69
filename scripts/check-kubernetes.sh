#!/usr/bin/env bash
# Offline checks of the Kubernetes base in deploy/kubernetes (no cluster needed):
#
#   scripts/check-kubernetes.sh
#
# 1. the PrometheusRule is in step with config/alerts.yml (scripts/gen-prometheus-rule --check);
# 2. `kubectl kustomize deploy/kubernetes` renders;
# 3. every core object validates against the Kubernetes OpenAPI schemas (PyPI
#    kubernetes-validate, strict), and the base keeps its promises (scripts/kubernetes/
#    check_manifests.py: replicas = --shard.count, hardening, health checks, config files,
#    selectors, rules), with a self-test that breaks each promise once;
# 4. the PodMonitor and PrometheusRule validate against the Prometheus Operator CRD schemas
#    (npm @kubernetes-models/prometheus-operator), and promtool accepts the rule groups.
#
# Needs kubectl (installed from Debian's kubernetes-client when missing), python3 with pip,
# node with npm, promtool. The Python and npm packages go to a cache outside the clone,
# $WEBHOOK_EXPORTER_TOOLS (default ~/.cache/webhook-exporter/ops-tools), installed once
# and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
PROMETHEUS_OPERATOR_MODELS_VERSION=6.0.0

tools="${WEBHOOK_EXPORTER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/webhook-exporter/ops-tools}"
pylib="$tools/python-$KUBERNETES_VALIDATE_VERSION"
npmdir="$tools/npm-$PROMETHEUS_OPERATOR_MODELS_VERSION"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

if ! command -v kubectl >/dev/null; then
  step "kubectl not found: apt-get install kubernetes-client"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends kubernetes-client \
    || { as_root apt-get update && as_root apt-get install -y --no-install-recommends kubernetes-client; }
fi
if [ ! -f "$pylib/.installed" ]; then
  step "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $pylib"
  rm -rf "$pylib"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$pylib" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "pyyaml==$PYYAML_VERSION"
  touch "$pylib/.installed"
fi
if [ ! -f "$npmdir/.installed" ]; then
  step "npm install @kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION into $npmdir"
  rm -rf "$npmdir"
  mkdir -p "$npmdir"
  npm install --prefix "$npmdir" --no-save --no-audit --no-fund --loglevel=error \
    "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION"
  touch "$npmdir/.installed"
fi
python() { PYTHONPATH="$pylib${PYTHONPATH:+:$PYTHONPATH}" python3 "$@"; }

step "scripts/gen-prometheus-rule --check"
python scripts/gen-prometheus-rule --check

step "kubectl kustomize deploy/kubernetes"
kubectl kustomize deploy/kubernetes >"$tmp/rendered.yaml"
grep -c '^kind:' "$tmp/rendered.yaml" | sed 's/$/ objects rendered/'

step "Kubernetes schemas (kubernetes-validate) and the base's promises"
python scripts/kubernetes/check_manifests.py "$tmp/rendered.yaml" "$tmp"
python scripts/kubernetes/check_manifests.py --self-test "$tmp/rendered.yaml"

step "Prometheus Operator CRD schemas (@kubernetes-models/prometheus-operator)"
node scripts/kubernetes/check_crds.mjs "$npmdir/node_modules" "$tmp"/crd-*.json
# The CRD check itself must reject a broken object.
python3 - "$tmp/crd-0.json" "$tmp/broken.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
if o["kind"] == "PodMonitor":
    o["spec"]["podMetricsEndpoints"][0]["port"] = 8916   # a port name must be a string
else:
    o["spec"]["groups"][0]["rules"][0]["expr"] = {"not": "a string"}
json.dump(o, open(sys.argv[2], "w"))
PY
if node scripts/kubernetes/check_crds.mjs "$npmdir/node_modules" "$tmp/broken.json" >/dev/null 2>&1; then
  echo "the CRD check accepted a broken object" >&2
  exit 1
fi
echo "a broken object is rejected"

step "promtool check rules (the PrometheusRule's groups)"
promtool check rules "$tmp/prometheusrule-groups.yml"
