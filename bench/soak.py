#!/usr/bin/env python3
"""Soak of webhook-exporter with failing targets: does anything creep?

    bench/soak.py                         # 10,000 probes at 1,000 probes/s for 30 minutes
    bench/soak.py --minutes 10 --failing 0   # the plain 10-minute soak

90 % of the probes call nginx (200, as in bench/run.py). The other 10 % (`--failing`) call a
chaos server over HTTPS whose answer to each probe rotates every minute through the failures
an ERP front really shows: a 500, an answer slower than the probe's timeout, a connection
reset after the request, a TLS error (garbage instead of a handshake), and a good answer.
Every minute it prints the exporter's RSS, peak RSS, open file descriptors, threads, runs in
flight, the runs of the minute by result and the failures by reason, and the schedule lag's
p99: all of them must stay flat. Nothing is asserted; the figures are the output.
"""

import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: nginx, the exporter, /proc readers)

BEHAVIOURS = ["ok", "http500", "timeout", "reset", "tls"]


def make_certificate(workdir):
    key, cert = workdir / "chaos.key", workdir / "chaos.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def behaviour_of(path):
    """Rotates every minute, and differs from probe to probe within a minute."""
    number = int(path.rsplit("-", 1)[-1].split("?")[0] or 0)
    # Chaos probes are every CHAOS_EVERY-th probe: number them 0, 1, 2, ... first.
    return BEHAVIOURS[(number // CHAOS_EVERY + int(time.time() // 60)) % len(BEHAVIOURS)]


CHAOS_EVERY = 10


def serve_one(raw, context, timeout):
    current = raw  # the socket to close: the TLS one once wrapped (wrapping detaches raw)
    try:
        raw.settimeout(10)
        peek = raw.recv(5, socket.MSG_PEEK)
        if not peek:
            return
        # The behaviour needs the path, which is inside TLS: do the handshake first, except
        # for the TLS error, chosen by the connection's own count (one in five).
        if serve_one.count % len(BEHAVIOURS) == BEHAVIOURS.index("tls"):
            raw.sendall(b"this is not TLS\r\n\r\n")
            return
        conn = context.wrap_socket(raw, server_side=True)
        current = conn
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode()
        what = behaviour_of(path)
        if what == "ok":
            body = b'{"code":"0","message":"OK"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
        elif what == "http500" or what == "tls":
            body = b'{"code":"500","message":"Erreur interne"}'
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        elif what == "timeout":
            time.sleep(timeout + 1)
        elif what == "reset":
            # SO_LINGER on, 0 s: close sends RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            current.close()
        except OSError:
            pass


serve_one.count = 0


def start_chaos(workdir, timeout):
    cert, key = make_certificate(workdir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)

    def accept():
        while True:
            raw, _ = listener.accept()
            serve_one.count += 1
            threading.Thread(target=serve_one, args=(raw, context, timeout), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def config_text(nginx_port, chaos_port, probes, rate, failing):
    interval = probes / rate
    timeout = min(interval * 0.5, 2.0)
    lines = [
        "max_concurrent_probes: 4096",
        "servers:",
        f"  nginx: {{base_url: 'http://127.0.0.1:{nginx_port}/erp'}}",
        "defaults:",
        f"  interval: {int(interval * 1000)}ms",
        f"  timeout: {int(timeout * 1000)}ms",
        "probes:",
    ]
    global CHAOS_EVERY
    chaos_every = round(1 / failing) if failing > 0 else 0
    CHAOS_EVERY = max(chaos_every, 1)
    for i in range(probes):
        if chaos_every and i % chaos_every == 0:
            lines.append(f"  - {{name: chaos-{i:05d}, url: 'https://127.0.0.1:{chaos_port}/erp/chaos-{i}',"
                         " tls: {insecure_skip_verify: true}}")
        else:
            lines.append(f"  - {{name: webhook-{i:05d}, server: nginx, code: BENCHWEBHOOKACADEMY{i:08d}}}")
    return "\n".join(lines) + "\n", timeout


def sample(exporter):
    pid = exporter.process.pid
    rss, peak = run.memory_kib(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    text, _, _ = exporter.metrics()
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        values[name_labels] = float(value)
    runs = {r: sum(v for k, v in values.items() if k.startswith("webhook_probe_runs_total{") and f'result="{r}"' in k)
            for r in ("success", "failure")}
    reasons = {}
    for k, v in values.items():
        if k.startswith("webhook_probe_failures_total{"):
            reason = k.split('reason="', 1)[1].split('"', 1)[0]
            reasons[reason] = reasons.get(reason, 0) + v
    in_flight = values.get("webhook_exporter_probes_in_flight", float("nan"))
    lag = run.histogram(text, "webhook_exporter_schedule_lag_seconds")
    return {"rss": rss, "peak": peak, "fds": fds, "threads": threads, "in_flight": in_flight,
            "runs": runs, "reasons": reasons, "lag": lag}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--failing", type=float, default=0.10, help="share of probes calling the chaos server")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=run.ROOT, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(run.TARGET_DIR)})
    with tempfile.TemporaryDirectory(prefix="webhook-soak-") as tmp:
        workdir = Path(tmp)
        nginx, nginx_port, _ = run.start_nginx(workdir)
        try:
            text, timeout = config_text(nginx_port, 0, args.probes, args.rate, args.failing)
            chaos_port = start_chaos(workdir, timeout)
            text, timeout = config_text(nginx_port, chaos_port, args.probes, args.rate, args.failing)
            config = workdir / "soak.yaml"
            config.write_text(text)
            exporter = run.Exporter(config)
            print(f"soak: {args.probes} probes at {args.rate:.0f}/s, {args.failing:.0%} failing in rotation "
                  f"({', '.join(BEHAVIOURS)}), timeout {timeout:.1f} s, {args.minutes} min")
            print(f"{'min':>3} {'RSS MiB':>8} {'peak':>6} {'fds':>5} {'thr':>4} {'inflight':>8} "
                  f"{'runs/min ok':>11} {'fail':>6}  lag p99  failures of the minute by reason")
            previous = sample(exporter)
            for minute in range(1, args.minutes + 1):
                time.sleep(60)
                now = sample(exporter)
                ok = now["runs"]["success"] - previous["runs"]["success"]
                failed = now["runs"]["failure"] - previous["runs"]["failure"]
                delta = [(b, c1 - c0) for (b, c0), (_, c1) in zip(previous["lag"], now["lag"])]
                reasons = {r: now["reasons"].get(r, 0) - previous["reasons"].get(r, 0) for r in now["reasons"]}
                shown = ", ".join(f"{r} {n:.0f}" for r, n in sorted(reasons.items()) if n)
                print(f"{minute:>3} {now['rss'] / 1024:>8.1f} {now['peak'] / 1024:>6.1f} {now['fds']:>5} "
                      f"{now['threads']:>4} {now['in_flight']:>8.0f} {ok:>11.0f} {failed:>6.0f}  "
                      f"{run.fmt_ms(run.quantile_from(delta, 0.99)):>8}  {shown}", flush=True)
                previous = now
            exporter.stop()
        finally:
            nginx.terminate()
            nginx.wait()


if __name__ == "__main__":
    main()
