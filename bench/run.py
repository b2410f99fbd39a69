#!/usr/bin/env python3
"""Benchmark of webhook-exporter on this machine, side by side with blackbox_exporter.

    bench/run.py                      # N = 1,000 and 10,000 at 1,000 probes/s, blackbox ratio
    bench/run.py --saturation         # also: highest probes/s with p99 schedule lag < 100 ms
    bench/run.py --probes 10000 --window 600   # a 10-minute soak
    bench/run.py --repeat 3           # every figure three times, then medians [min-max]

Public tools only: the exporter's release binary (built by this script with
`cargo build --release --locked`), the floor client `bench/floor` (a dependency-free crate
built here too: one thread, blocking std::net, a fresh connection per request, paced at
the same rate, the probes' path), nginx (Debian `nginx-light`) as the webhook target,
blackbox_exporter (Debian `prometheus-blackbox-exporter`) for the comparison, and /proc
for CPU and memory. Every figure is printed; nothing is asserted.
"""

import argparse
import gzip
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/webhook-exporter/target"))
BINARY = TARGET_DIR / "release/webhook-exporter"
# The floor client (bench/floor) is its own crate, built into its own target dir.
FLOOR_TARGET_DIR = TARGET_DIR / "bench-floor"
FLOOR_BINARY = FLOOR_TARGET_DIR / "release/floor"
# The path every exporter probe of the benchmark calls (webhook-00000's), so the floor
# asks nginx exactly what the probes ask.
PROBE_PATH = "/erp/api/v1/WebHook/BENCHWEBHOOKACADEMY00000000?dos=998"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODY = '{"code":"0","message":"OK"}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU of a process (all threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid, name):
    """User + system CPU of the threads of a process called `name` (0 when none is)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() != name:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def memory_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1))
    return get("VmRSS"), get("VmHWM")


def request(port, method, path, headers=None, timeout=60):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def wait_until(check, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.01)
    sys.exit(f"timed out waiting for {what}")


def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def phase_offset_ns(name, period_ns):
    """The exporter's phase of an interval probe (src/schedule.rs, phase_offset): whole steps
    of 10 ms, or of a hundredth of the period if that is shorter."""
    grid = max(1, min(10_000_000, period_ns // 100))
    return fnv1a(name) % max(1, period_ns // grid) * grid


def start_nginx(workdir):
    port = free_port()
    conf = workdir / "nginx.conf"
    log = workdir / "access.log"
    conf.write_text(f"""
worker_processes 1;
error_log {workdir}/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 65535; }}
http {{
    access_log off;
    log_format probe '$msec $uri';
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=65535;
        location /erp/api/v1/WebHook/ {{
            access_log {log} probe buffer=256k flush=1s;
            default_type application/json;
            return 200 '{BODY}';
        }}
        location / {{ default_type application/json; return 200 '{BODY}'; }}
    }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])
    wait_until(lambda: request(port, "GET", "/")[0] == 200, 10, "nginx")
    return process, port, log


def exporter_config(nginx_port, probes, rate):
    interval = int(probes / rate * 1000) / 1000  # as written in the config, in whole ms
    timeout = min(interval * 0.9, 5.0)
    lines = [
        "max_concurrent_probes: 4096",
        "servers:",
        f"  nginx: {{base_url: 'http://127.0.0.1:{nginx_port}/erp'}}",
        "defaults:",
        f"  interval: {int(interval * 1000)}ms",
        f"  timeout: {int(timeout * 1000)}ms",
        "probes:",
    ]
    for i in range(probes):
        lines.append(f"  - {{name: webhook-{i:05d}, server: nginx, code: BENCHWEBHOOKACADEMY{i:08d}, params: {{dos: '998'}}}}")
    return "\n".join(lines) + "\n", interval


EXTRA_ARGS = []


class Exporter:
    def __init__(self, config_path):
        self.port = free_port()
        started = time.time()
        self.process = subprocess.Popen(
            [str(BINARY), f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=error", *EXTRA_ARGS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: request(self.port, "GET", "/-/ready")[0] == 200, 60, "the exporter")
        self.startup = time.time() - started

    def metrics(self, gzip_ok=True):
        headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
        started = time.perf_counter()
        status, response_headers, body = request(self.port, "GET", "/metrics", headers)
        elapsed = time.perf_counter() - started
        size = len(body)
        if response_headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode(), elapsed, size

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def sample_sum(text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def histogram(text, name):
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return buckets


def quantile_from(delta, q):
    """Upper bound of the bucket holding quantile q (Prometheus-style, no interpolation)."""
    total = delta[-1][1]
    if total == 0:
        return float("nan")
    for bound, count in delta:
        if count >= q * total:
            return bound
    return float("inf")


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def nginx_lags(log, since, until, interval):
    """Lag of each request seen by nginx: arrival minus the probe's planned slot."""
    period_ns = int(interval * 1e9)
    lags = []
    for line in log.read_text().splitlines():
        stamp, uri = line.split(" ", 1)
        t = float(stamp)
        if not since <= t <= until:
            continue
        code = uri.rsplit("/", 1)[1]
        name = f"webhook-{int(code[-8:]):05d}"
        offset = phase_offset_ns(name, period_ns)
        t_ns = int(t * 1e9)
        # Distance to the nearest planned slot: nginx's clock (millisecond $msec) and the
        # exporter's may put an on-time arrival a hair before its slot.
        into = (t_ns - offset) % period_ns
        lags.append((into if into <= period_ns // 2 else into - period_ns) / 1e9)
    return lags


def fmt_ms(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds == seconds else "n/a"


def measure_exporter(workdir, nginx_port, nginx_log, probes, rate, warmup, window):
    config_text, interval = exporter_config(nginx_port, probes, rate)
    config_path = workdir / f"exporter-{probes}.yaml"
    config_path.write_text(config_text)
    exporter = Exporter(config_path)
    result = {"probes": probes, "interval_s": interval, "startup_s": exporter.startup}
    start_wall = time.time()
    # First-interval spread: requests per tenth of the interval, from nginx's log.
    time.sleep(interval + 1.5)
    first = [float(l.split(" ", 1)[0]) for l in nginx_log.read_text().splitlines() if float(l.split(" ", 1)[0]) >= start_wall]
    first = [t for t in first if t < start_wall + interval]
    tenths = [0] * 10
    for t in first:
        tenths[min(9, int((t - start_wall) / interval * 10))] += 1
    result["first_interval_tenths"] = tenths
    time.sleep(max(0, warmup - interval - 1.5))

    text, _, _ = exporter.metrics()
    runs0 = sample_sum(text, "webhook_probe_runs_total")
    lag0 = histogram(text, "webhook_exporter_schedule_lag_seconds")
    cpu0, t0 = cpu_seconds(exporter.process.pid), time.time()
    writer0 = thread_cpu_seconds(exporter.process.pid, "storage-writer")
    scrapes = 0
    while time.time() - t0 < window:
        time.sleep(min(15, window - (time.time() - t0)))
        exporter.metrics()
        scrapes += 1
    cpu1, t1 = cpu_seconds(exporter.process.pid), time.time()
    writer1 = thread_cpu_seconds(exporter.process.pid, "storage-writer")
    text, _, _ = exporter.metrics()
    runs1 = sample_sum(text, "webhook_probe_runs_total")
    lag1 = histogram(text, "webhook_exporter_schedule_lag_seconds")
    delta = [(b, c1 - c0) for (b, c0), (_, c1) in zip(lag0, lag1)]
    time.sleep(1.2)  # nginx flushes its log buffer every second
    lags = nginx_lags(nginx_log, t0, t1, interval)
    rss, peak = memory_kib(exporter.process.pid)
    runs = runs1 - runs0
    result.update(
        window_s=t1 - t0,
        scrapes=scrapes,
        runs=runs,
        probes_per_s=runs / (t1 - t0),
        cpu_s=cpu1 - cpu0,
        cpu_us_per_probe=(cpu1 - cpu0) / runs * 1e6 if runs else float("nan"),
        writer_us_per_probe=(writer1 - writer0) / runs * 1e6 if runs else float("nan"),
        lag_hist_p50=quantile_from(delta, 0.5),
        lag_hist_p99=quantile_from(delta, 0.99),
        lag_nginx_p50=percentile(lags, 0.5),
        lag_nginx_p99=percentile(lags, 0.99),
        lag_nginx_max=max(lags) if lags else float("nan"),
        rss_kib=rss,
        peak_rss_kib=peak,
    )
    renders = []
    for _ in range(5):
        plain, elapsed, size_plain = exporter.metrics(gzip_ok=False)
        renders.append(elapsed)
    _, elapsed_gzip, size_gzip = exporter.metrics(gzip_ok=True)
    result.update(render_s=min(renders), render_gzip_s=elapsed_gzip, size_plain=size_plain, size_gzip=size_gzip,
                  series=sum(1 for l in plain.splitlines() if l and not l.startswith("#")))
    result["surfaces"] = measure_surfaces(exporter)
    result["healthy_under_load"] = healthy_under_load(exporter)
    # Reload of N probes: one probe changed.
    config_path.write_text(config_text.replace("webhook-00000, server: nginx", "webhook-00000, timeout: 400ms, server: nginx"))
    started = time.perf_counter()
    status, _, body = request(exporter.port, "POST", "/-/reload")
    result["reload_s"] = time.perf_counter() - started
    result["reload_answer"] = body.decode().strip()
    exporter.stop()
    return result


SURFACES = ["/", "/status.json", "/?server=nginx", "/status.json?server=nginx",
            "/?q=webhook-0004", "/status.json?q=webhook-0004",
            "/api/v1/probes", "/api/v1/probes?history=100", "/api/v1/probes?state=failing", "/metrics"]
# Issue 14's budgets at 10,000 probes, printed beside the figures (never asserted): page
# HTML <= 2 MB and <= 100 ms; one poll of the page (its JSON) <= 200 KB.
BUDGETS = {("/", False): (2_000_000, 0.100), ("/status.json", False): (200_000, None),
           ("/?server=nginx", False): (2_000_000, 0.100), ("/status.json?server=nginx", False): (200_000, None)}


def measure_surfaces(exporter):
    """Size and fastest of three fetches of each HTTP surface (plain and gzip)."""
    out = {}
    for path in SURFACES:
        for gzip_ok in (False, True):
            headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
            times, size = [], 0
            for _ in range(3):
                started = time.perf_counter()
                _, _, body = request(exporter.port, "GET", path, headers)
                times.append(time.perf_counter() - started)
                size = len(body)
            out[(path, gzip_ok)] = (min(times), size)
    return out


def healthy_under_load(exporter, seconds=10):
    """Latency of GET /-/healthy every 20 ms while two clients fetch the status page, its
    JSON, the API with histories and /metrics in a loop (what one open page and one click on
    "JSON API" do to everyone else)."""
    stop = threading.Event()
    heavy = ["/", "/status.json", "/api/v1/probes?history=100", "/metrics"]

    def load(offset):
        i = offset
        while not stop.is_set():
            request(exporter.port, "GET", heavy[i % len(heavy)])
            i += 1

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    latencies = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        started = time.perf_counter()
        request(exporter.port, "GET", "/-/healthy")
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "max": max(latencies),
            "samples": len(latencies)}


def drive_blackbox(port, target, rate, duration, stats):
    """Calls blackbox's /probe at `rate` per second on keep-alive connections."""
    threads = 8
    per_thread = rate / threads
    path = f"/probe?module=http_2xx&target={target}"
    stop = time.time() + duration

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        next_at = time.time()
        while True:
            now = time.time()
            if now >= stop:
                break
            if now < next_at:
                time.sleep(next_at - now)
            next_at += 1 / per_thread
            connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
            body = connection.getresponse().read()
            stats["done"] += 1
            if b"probe_success 1" not in (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body):
                stats["failed"] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    return pool


def measure_blackbox(workdir, nginx_port, rate, warmup, window):
    config = workdir / "blackbox.yml"
    config.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n")
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-blackbox-exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: request(port, "GET", "/-/healthy")[0] == 200, 30, "blackbox_exporter")
    target = f"http://127.0.0.1:{nginx_port}/erp/api/v1/WebHook/BLACKBOXACADEMY00000001"
    stats = {"done": 0, "failed": 0}
    pool = drive_blackbox(port, target, rate, warmup + window, stats)
    time.sleep(warmup)
    done0, cpu0, t0 = stats["done"], cpu_seconds(process.pid), time.time()
    time.sleep(window)
    done1, cpu1, t1 = stats["done"], cpu_seconds(process.pid), time.time()
    for t in pool:
        t.join()
    rss, peak = memory_kib(process.pid)
    process.terminate()
    process.wait()
    probes = done1 - done0
    return {
        "probes_per_s": probes / (t1 - t0),
        "cpu_s": cpu1 - cpu0,
        "cpu_us_per_probe": (cpu1 - cpu0) / probes * 1e6,
        "failed": stats["failed"],
        "rss_kib": rss,
    }


def wrk_floor(nginx_port, seconds=10):
    """CPU per request of wrk, one fresh connection per request, saturating (no pacing)."""
    if not shutil.which("wrk"):
        return None
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-c", "1", "-t", "1", "-d", f"{seconds}s", "-H", "Connection: close",
                          f"http://127.0.0.1:{nginx_port}/"], capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / requests * 1e6, requests / seconds


def measure_floor(nginx_port, rate, window):
    """CPU per request of bench/floor: one thread, blocking, a fresh connection per request,
    paced at `rate`, the probes' path. Its whole life is measured (start-up is a few
    hundred microseconds against seconds of requests)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([str(FLOOR_BINARY), f"127.0.0.1:{nginx_port}", PROBE_PATH, str(rate), str(window)],
                         capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fields = dict(item.split("=") for item in out.split())
    requests, seconds = int(fields["requests"]), float(fields["seconds"])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_us_per_request": cpu / requests * 1e6, "requests_per_s": requests / seconds,
            "failed": int(fields["failed"]), "cpu_s": cpu}


def spread(values):
    """`median [min–max]` of the repetitions' figures (just the figure for one)."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    ordered = sorted(values)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    if len(ordered) == 1:
        return f"{median:.3g}"
    return f"{median:.3g} [{ordered[0]:.3g}-{ordered[-1]:.3g}]"


def wrk_rate(nginx_port, connections=32, seconds=10):
    """Requests/s of wrk on fresh connections (`-t1 -c32 -H 'Connection: close'`): the
    saturation the exporter is compared with."""
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "-c", str(connections), "-t", "1", "-d", f"{seconds}s", "-H", "Connection: close",
                          f"http://127.0.0.1:{nginx_port}/erp/api/v1/WebHook/BENCHWEBHOOKACADEMY00000000"],
                         capture_output=True, text=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1)) / seconds


def saturation(workdir, nginx_port, nginx_log, probes, rates, step):
    print(f"\n== saturation: {probes} probes, {step:.0f} s per step")
    wrk = wrk_rate(nginx_port)
    if wrk:
        print(f"  wrk -t1 -c32, Connection: close: {wrk:.0f} requests/s")
    best = None
    for rate in rates:
        r = measure_exporter(workdir, nginx_port, nginx_log, probes, rate, warmup=max(3, probes / rate + 2), window=step)
        ok = r["lag_hist_p99"] < 0.1 and r["probes_per_s"] > 0.97 * rate
        print(f"  target {rate:>6} probes/s: achieved {r['probes_per_s']:8.0f}/s, lag p99 {fmt_ms(r['lag_hist_p99'])} (exporter), "
              f"{fmt_ms(r['lag_nginx_p99'])} (nginx), CPU {r['cpu_us_per_probe']:.1f} us/probe {'OK' if ok else 'OVER'}")
        if ok:
            best = r["probes_per_s"]
        else:
            break
    print(f"  saturation: {best:.0f} probes/s with p99 lag < 100 ms" if best else "  saturation: below the first step")
    if best and wrk:
        print(f"  ratio saturation/wrk  {best / wrk:.2f} (goal >= 0.9; the steps bound it from below)")

def repetition(args, workdir, nginx_port, nginx_log):
    """One run of every measurement; returns the figures the repetitions summarise."""
    results = []
    for probes in [int(p) for p in args.probes.split(",")]:
        print(f"\n== webhook-exporter, {probes} probes at {args.rate:.0f} probes/s "
              f"(warm-up {args.warmup:.0f} s, window {args.window:.0f} s, gzip scrapes every 15 s)")
        r = measure_exporter(workdir, nginx_port, nginx_log, probes, args.rate, args.warmup, args.window)
        results.append(r)
        print(f"  start-up              {r['startup_s'] * 1000:.0f} ms; first interval per tenth: {r['first_interval_tenths']}")
        print(f"  probes/s achieved     {r['probes_per_s']:.0f} ({r['runs']:.0f} runs in {r['window_s']:.1f} s)")
        print(f"  CPU                   {r['cpu_s']:.2f} s = {r['cpu_us_per_probe']:.1f} us per probe "
              f"= {r['cpu_us_per_probe'] / 1000:.3f} CPU-s per 1000 probes (scrapes included)")
        if r["writer_us_per_probe"] > 0:
            print(f"  of which the store     {r['writer_us_per_probe']:.1f} us per probe on the storage-writer thread")
        print(f"  schedule lag          exporter histogram p50 <= {fmt_ms(r['lag_hist_p50'])}, p99 <= {fmt_ms(r['lag_hist_p99'])}")
        print(f"                        nginx arrival - plan p50 {fmt_ms(r['lag_nginx_p50'])}, p99 {fmt_ms(r['lag_nginx_p99'])}, "
              f"max {fmt_ms(r['lag_nginx_max'])}")
        print(f"  memory                RSS {r['rss_kib'] / 1024:.1f} MiB, peak {r['peak_rss_kib'] / 1024:.1f} MiB")
        print(f"  /metrics              {r['series']} series, {r['size_plain'] / 1024:.0f} KiB plain in "
              f"{r['render_s'] * 1000:.1f} ms, {r['size_gzip'] / 1024:.0f} KiB gzip in {r['render_gzip_s'] * 1000:.1f} ms")
        for (path, gzip_ok), (elapsed, size) in r["surfaces"].items():
            budget = BUDGETS.get((path, gzip_ok))
            note = ""
            if budget:
                max_size, max_time = budget
                within = size <= max_size and (max_time is None or elapsed <= max_time)
                note = (f"  budget <= {max_size / 1e6:g} MB" + (f", <= {max_time * 1000:.0f} ms" if max_time else "")
                        + (": within" if within else ": OVER"))
            print(f"  {'GET ' + path + (' gzip' if gzip_ok else ''):<44} {size / 1024:>9.0f} KiB in {elapsed * 1000:7.1f} ms{note}")
        h = r["healthy_under_load"]
        print(f"  /-/healthy under load p50 {fmt_ms(h['p50'])}, p99 {fmt_ms(h['p99'])}, max {fmt_ms(h['max'])} "
              f"({h['samples']} samples while 2 clients loop over the page, its JSON, the API with histories, /metrics)")
        print(f"  reload                {r['reload_s'] * 1000:.0f} ms ({r['reload_answer']})")
    summary = {}
    for r in results:
        summary[f"ours CPU us/probe, {r['probes']} probes"] = r["cpu_us_per_probe"]
    f = measure_floor(nginx_port, args.rate, args.window)
    print(f"\n== floor: bench/floor at {args.rate:.0f} requests/s (one thread, blocking std::net, a fresh connection per "
          f"request, GET {PROBE_PATH.split('?')[0].rsplit('/', 1)[0]}/..., whole answer read), {args.window:.0f} s")
    print(f"  requests/s achieved   {f['requests_per_s']:.0f} ({f['failed']} failed)")
    print(f"  CPU                   {f['cpu_s']:.2f} s = {f['cpu_us_per_request']:.1f} us per request")
    summary["floor CPU us/request"] = f["cpu_us_per_request"]
    for r in results:
        ratio = r["cpu_us_per_probe"] / f["cpu_us_per_request"]
        print(f"  ratio ours/floor      {ratio:.2f} at {r['probes']} probes (goal <= 1.15 at 1,000 probes/s)")
        summary[f"ours/floor, {r['probes']} probes"] = ratio
    floor = wrk_floor(nginx_port)
    if floor:
        print(f"\n== wrk, one fresh connection per request, saturating: {floor[0]:.1f} us per request "
              f"({floor[1]:.0f} requests/s)")
        summary["wrk CPU us/request"] = floor[0]
        for r in results:
            print(f"  ratio ours/wrk        {r['cpu_us_per_probe'] / floor[0]:.2f} at {r['probes']} probes")
    if not args.no_blackbox:
        print(f"\n== blackbox_exporter 0.23 at {args.rate:.0f} probes/s (same nginx, fresh connection each)")
        b = measure_blackbox(workdir, nginx_port, args.rate, args.warmup, args.window)
        print(f"  probes/s achieved     {b['probes_per_s']:.0f} ({b['failed']} failed)")
        print(f"  CPU                   {b['cpu_s']:.2f} s = {b['cpu_us_per_probe']:.1f} us per probe "
              f"= {b['cpu_us_per_probe'] / 1000:.3f} CPU-s per 1000 probes")
        summary["blackbox CPU us/probe"] = b["cpu_us_per_probe"]
        for r in results:
            print(f"  ratio ours/blackbox   {r['cpu_us_per_probe'] / b['cpu_us_per_probe']:.3f} of the CPU per probe "
                  f"at {r['probes']} probes ({b['cpu_us_per_probe'] / r['cpu_us_per_probe']:.1f}x less; goal <= 0.10)")
            summary[f"ours/blackbox, {r['probes']} probes"] = r["cpu_us_per_probe"] / b["cpu_us_per_probe"]
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", default="1000,10000", help="comma-separated probe counts")
    parser.add_argument("--rate", type=float, default=1000, help="probes per second")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of every measurement (medians and spread printed)")
    parser.add_argument("--saturation", action="store_true")
    parser.add_argument("--saturation-rates", default="2000,4000,8000,12000,15000,18000,22000")
    parser.add_argument("--exporter-arg", action="append", default=[], help="extra flag for the exporter")
    args = parser.parse_args()
    EXTRA_ARGS.extend(args.exporter_arg)

    for tool in ["nginx"] + ([] if args.no_blackbox else ["prometheus-blackbox-exporter"]):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install nginx-light prometheus-blackbox-exporter")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(TARGET_DIR)})
    # The floor client is tiny: built even with --no-build when it is missing.
    if not args.no_build or not FLOOR_BINARY.exists():
        subprocess.run(["cargo", "build", "--release", "--manifest-path", str(ROOT / "bench/floor/Cargo.toml")], cwd=ROOT,
                       check=True, env={**os.environ, "CARGO_TARGET_DIR": str(FLOOR_TARGET_DIR)})
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    print(f"machine: {os.cpu_count()} cores, {cpu}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"Linux {platform.release()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"exporter: {BINARY} ({subprocess.run([str(BINARY), '--version'], capture_output=True, text=True).stdout.strip()})")

    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        workdir = Path(tmp)
        nginx, nginx_port, nginx_log = start_nginx(workdir)
        try:
            summaries = []
            for k in range(args.repeat):
                if args.repeat > 1:
                    print(f"\n######## repetition {k + 1} of {args.repeat}")
                summaries.append(repetition(args, workdir, nginx_port, nginx_log))
            if args.repeat > 1:
                print(f"\n== {args.repeat} repetitions: median [min-max]")
                for key in summaries[0]:
                    print(f"  {key:<36} {spread([s[key] for s in summaries if key in s])}")
            if args.saturation:
                saturation(workdir, nginx_port, nginx_log, 10000, [int(r) for r in args.saturation_rates.split(",")], 20)
        finally:
            nginx.terminate()
            nginx.wait()

if __name__ == "__main__":
    main()
