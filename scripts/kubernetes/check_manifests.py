#!/usr/bin/env python3
"""Checks the rendered Kubernetes base offline (no cluster): every core object against the
Kubernetes OpenAPI schemas (PyPI kubernetes-validate, strict: unknown fields are errors),
and the promises the README makes about the base, which no schema knows:

- replicas = --shard.count, the shard taken from the pod name, a headless governing Service;
- non-root, read-only root filesystem, no capabilities, seccomp RuntimeDefault;
- liveness on /-/healthy, readiness on /-/ready, resource requests set;
- the config file, its tenant files (include) and the hash-named ConfigMap line up, and
  every code_file lies in the Secret's mount;
- Service, PodDisruptionBudget and PodMonitor select the pods, on a port they have;
- the PrometheusRule holds exactly the groups of the shipped rule files.

    check_manifests.py RENDERED.yaml OUT_DIR
    check_manifests.py --self-test RENDERED.yaml    # each promise broken once must be caught

Writes the Prometheus Operator objects to OUT_DIR/crd-N.json (validated by
check_crds.mjs against the operator's CRD schemas) and their rule groups to
OUT_DIR/prometheusrule-groups.yml (for promtool check rules). Exits 1 with every problem.
"""

import fnmatch
import json
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The oldest Kubernetes release still maintained when this was written, and the newest
# the schemas know: a field removed or added in between shows up.
KUBERNETES_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
RULE_FILES = ["config/alerts.yml", "config/slo.yml"]

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0] if found else None


def selects(selector, labels):
    """Whether a matchLabels selector picks pods with `labels` (the base uses only those)."""
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def flag(args, name):
    for arg in args:
        if arg == name:
            return True
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(rendered, out_dir):
    objects = [o for o in yaml.safe_load_all(Path(rendered).read_text()) if o]
    crds = check_objects(objects)
    out = Path(out_dir)
    for i, crd in enumerate(crds):
        (out / f"crd-{i}.json").write_text(json.dumps(crd))
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    (out / "prometheusrule-groups.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    print(
        f"{len(objects) - len(crds)} Kubernetes objects valid against the schemas of "
        f"{' and '.join(KUBERNETES_VERSIONS)} (strict); sharding, hardening, probes, config, "
        f"selectors and rules consistent; {len(crds)} Prometheus Operator objects written"
    )


def check_objects(objects):
    """Appends every problem of the rendered `objects` to `problems`; returns the
    Prometheus Operator objects (their schemas are not in kubernetes-validate)."""
    crds = []
    for o in objects:
        where = f'{o.get("kind")} {o.get("metadata", {}).get("name")}'
        if o.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            crds.append(o)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                problems.append(f"{where}: Kubernetes {version} schema: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no Kubernetes {version} schema for {o.get('apiVersion')}")

    sts = one(objects, "StatefulSet")
    svc = one(objects, "Service")
    pdb = one(objects, "PodDisruptionBudget")
    configmap = one(objects, "ConfigMap")
    podmonitor = one(objects, "PodMonitor")
    rule = one(objects, "PrometheusRule")
    if None in (sts, svc, pdb, configmap, podmonitor, rule):
        return crds

    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    containers = spec["containers"]
    check(len(containers) == 1, "the pod should have one container")
    container = containers[0]
    args = container.get("args", [])

    # Sharding
    count = flag(args, "--shard.count")
    check(count is not None, "StatefulSet: --shard.count is missing")
    check(
        count is None or int(count) == sts["spec"]["replicas"],
        f"StatefulSet: replicas {sts['spec']['replicas']} but --shard.count={count}: a shard "
        "would run nowhere or two pods would share one",
    )
    check(flag(args, "--shard.index-from-hostname") is True, "StatefulSet: --shard.index-from-hostname is missing")
    # The README's scale procedure patches args/3.
    check(len(args) > 3 and args[3].startswith("--shard.count="), "StatefulSet: --shard.count is not args[3], where the README's scale procedure patches it")
    check(svc["spec"].get("clusterIP") == "None", "Service: not headless (clusterIP: None)")
    check(sts["spec"]["serviceName"] == svc["metadata"]["name"], "StatefulSet: serviceName is not the headless Service")

    # Hardening
    pod_sc = spec.get("securityContext", {})
    sc = container.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True, "pod: runAsNonRoot is not true")
    check(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod: seccompProfile is not RuntimeDefault")
    check(sc.get("readOnlyRootFilesystem") is True, "container: readOnlyRootFilesystem is not true")

    # State across restarts: the store is on the pod's own claim (the root is read-only).
    storage = flag(args, "--storage.path")
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    state_mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
    if check(storage is not None, "StatefulSet: --storage.path is missing"):
        check(
            state_mounts.get(storage.rstrip("/")) in claims,
            f"StatefulSet: --storage.path={storage} is not a mounted volumeClaimTemplate",
        )
    check(sc.get("allowPrivilegeEscalation") is False, "container: allowPrivilegeEscalation is not false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "container: capabilities do not drop ALL")
    check(spec.get("automountServiceAccountToken") is False, "pod: the service account token is mounted")

    # Health and resources
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    listen = flag(args, "--web.listen-address")
    check(listen and listen.rsplit(":", 1)[1] == str(ports.get("http")), "container: --web.listen-address is not the http port")
    for probe, path in [("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")]:
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("http", ports.get("http")), f"container: {probe} is not GET {path} on the http port")
    requests = container.get("resources", {}).get("requests", {})
    check({"cpu", "memory"} <= requests.keys(), "container: cpu and memory requests are not both set")

    # Config, tenant files, Secret
    mounts = {m["name"]: m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_file = flag(args, "--config.file")
    config_volume = next((n for n, v in volumes.items() if "configMap" in v), None)
    secret_volume = next((n for n, v in volumes.items() if "secret" in v), None)
    if check(config_volume and config_volume in mounts, "pod: no mounted ConfigMap volume"):
        check(volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"], "pod: the config volume is not the rendered ConfigMap")
        folder, main_name = config_file.rsplit("/", 1)
        check(folder == mounts[config_volume], f"--config.file={config_file} is not in the ConfigMap mount {mounts[config_volume]}")
        files = configmap.get("data", {})
        if check(main_name in files, f"ConfigMap: no key {main_name} (the --config.file)"):
            main = yaml.safe_load(files[main_name])
            included = set()
            for pattern in main.get("include", []):
                matched = fnmatch.filter(files, pattern)
                check(matched, f"ConfigMap: include pattern {pattern!r} matches no file")
                included.update(matched)
            for name in files:
                check(name == main_name or name in included, f"ConfigMap: {name} is not included by {main_name}")
            secret_dir = mounts.get(secret_volume, "<no Secret mount>")
            for name, text in files.items():
                for probe in (yaml.safe_load(text) or {}).get("probes", []):
                    code_file = probe.get("code_file")
                    if code_file is not None:
                        check(code_file.rsplit("/", 1)[0] == secret_dir, f"{name}: probe {probe['name']}: code_file {code_file} is not in the Secret mount {secret_dir}")
                    check("code" not in probe, f"{name}: probe {probe['name']}: a literal code in a ConfigMap; use code_file")

    # Selectors and ports
    for obj, selector in [
        (svc, svc["spec"]["selector"]),
        (sts, sts["spec"]["selector"]),
        (pdb, pdb["spec"]["selector"]),
        (podmonitor, podmonitor["spec"]["selector"]),
    ]:
        check(selects(selector, labels), f"{obj['kind']}: its selector does not pick the StatefulSet's pods")
    for port in svc["spec"]["ports"]:
        check(port.get("targetPort") in ports or port.get("targetPort") in ports.values(), f"Service: targetPort {port.get('targetPort')} is not a container port")
    for endpoint in podmonitor["spec"]["podMetricsEndpoints"]:
        check(endpoint.get("port") in ports, f"PodMonitor: port {endpoint.get('port')} is not a named container port")
        check(endpoint.get("path", "/metrics") == "/metrics", "PodMonitor: path is not /metrics")

    # The rules
    groups = []
    for source in RULE_FILES:
        if (ROOT / source).exists():
            groups.extend(yaml.safe_load((ROOT / source).read_text())["groups"])
    check(rule["spec"]["groups"] == groups, "PrometheusRule: its groups differ from the rule files (run scripts/gen-prometheus-rule)")

    return crds


def container_of(objects):
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    return sts["spec"]["template"]["spec"]["containers"][0]


def kind(objects, name):
    return next(o for o in objects if o["kind"] == name)


# Each breaks one promise of the base; the checker must name it.
MUTATIONS = [
    ("replicas != --shard.count", lambda o: kind(o, "StatefulSet")["spec"].update(replicas=4), "replicas 4 but --shard.count=3"),
    ("an unknown field", lambda o: container_of(o).update(imagePullPolicyy="Always"), "schema"),
    ("a wrong type", lambda o: kind(o, "PodDisruptionBudget")["spec"].update(maxUnavailable=[1]), "schema"),
    ("root allowed", lambda o: kind(o, "StatefulSet")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    ("writable root", lambda o: container_of(o)["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    ("capabilities kept", lambda o: container_of(o)["securityContext"].pop("capabilities"), "drop ALL"),
    ("no seccomp", lambda o: kind(o, "StatefulSet")["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"), "seccompProfile"),
    ("liveness elsewhere", lambda o: container_of(o)["livenessProbe"]["httpGet"].update(path="/"), "livenessProbe"),
    ("no requests", lambda o: container_of(o)["resources"].pop("requests"), "requests"),
    ("index not from the pod name", lambda o: container_of(o)["args"].remove("--shard.index-from-hostname"), "index-from-hostname"),
    ("store not on a claim", lambda o: kind(o, "StatefulSet")["spec"].pop("volumeClaimTemplates"), "volumeClaimTemplate"),
    ("Service not headless", lambda o: kind(o, "Service")["spec"].pop("clusterIP"), "headless"),
    ("PodMonitor on a wrong port", lambda o: kind(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(port="metrics"), "PodMonitor: port"),
    ("PDB selecting nothing", lambda o: kind(o, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(app="x"), "PodDisruptionBudget: its selector"),
    ("a tenant file not included", lambda o: kind(o, "ConfigMap")["data"].update({"other.yaml": "probes: []"}), "not included"),
    ("a code outside the Secret", lambda o: kind(o, "ConfigMap")["data"].update({"tenant-x.yaml": "probes: [{name: x, server: s, code_file: /etc/x}]"}), "not in the Secret mount"),
    ("a rule edited by hand", lambda o: kind(o, "PrometheusRule")["spec"]["groups"][0]["rules"].pop(), "differ from the rule files"),
]


def self_test(rendered):
    """Breaks each promise in turn and fails unless the checker names it: a checker that
    passes everything would otherwise look just like a clean base."""
    text = Path(rendered).read_text()
    failures = []
    for what, mutate, expected in MUTATIONS:
        objects = [o for o in yaml.safe_load_all(text) if o]
        mutate(objects)
        problems.clear()
        check_objects(objects)
        if not any(expected in p for p in problems):
            failures.append(f"{what}: not caught (expected a problem mentioning {expected!r}; got {problems})")
    problems.clear()
    if failures:
        sys.exit("checker self-test failed:\n  " + "\n  ".join(failures))
    print(f"checker self-test: all {len(MUTATIONS)} broken bases caught")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    if sys.argv[1] == "--self-test":
        self_test(sys.argv[2])
        sys.exit(0)
    main(*sys.argv[1:])
    if problems:
        sys.exit("Kubernetes base: " + "\n  ".join(["problems found:"] + problems))
