#!/usr/bin/env python3
"""Gateway overhead: the same JupyterLab measured through the gateway (TCP, token checked)
and directly on its Unix socket, with target/release/atelier-loadgen.

  http c=1 and c=32: GET /api/status (Host {id}.localhost) on keep-alive connections
  websocket: kernel_info_request round trips on the kernel channel, 8 in flight (messages/s)
  kernel execute: `1+1` round trip, one at a time (p50), in the v1 WebSocket protocol
    JupyterLab speaks
  echo upstream: the notebook's socket moved aside and `atelier-loadgen echo` put in its
    place, so that the proxy is measured in front of an upstream that costs nothing (as the
    issue's configurable-http-proxy figures were); with socat installed, a plain TCP-to-socket
    byte relay is measured the same way, as a plain extra hop on the machine

RUNS interleaved rounds of SECONDS each; min/median/max. usage: bench/gateway.py [--smoke]
env: ATELIER_BIN, LOADGEN, IMAGE_DIR, RUNS, SECONDS
"""
import json
import os
import shutil
import socket as sockets
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import start  # noqa: E402  (the Server helper)

SMOKE = "--smoke" in sys.argv
REPO = start.REPO
LOADGEN = os.environ.get("LOADGEN") or os.path.join(REPO, "target/release/atelier-loadgen")
RUNS = int(os.environ.get("RUNS", "1" if SMOKE else "3"))
SECONDS = float(os.environ.get("SECONDS", "1" if SMOKE else "5"))


def loadgen(target, *args):
    out = subprocess.check_output([LOADGEN, *target, *args], text=True)
    return json.loads(out)


def interleaved(results, measurements, targets, busy_poll=None):
    """RUNS rounds of every measurement on every target in turn, so that the machine's drift
    over a few minutes (large on a shared VM) lands on all targets alike. With `busy_poll` (a
    function reading the gateway's busy-poll seconds), each result also records the seconds the
    gateway spent polling during it."""
    for _ in range(RUNS):
        for key, args in measurements:
            for name, target in targets:
                before = busy_poll() if busy_poll else 0.0
                result = loadgen(target, *args, "-d", str(SECONDS))
                if busy_poll:
                    result["busy_poll_s"] = busy_poll() - before
                results.setdefault(f"{key} {name}", []).append(result)


def busy_poll_seconds(api):
    """atelier_gateway_busy_poll_seconds_total from the server's /metrics."""
    def read():
        text = urllib.request.urlopen(f"{api}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith("atelier_gateway_busy_poll_seconds_total "):
                return float(line.split()[1])
        raise RuntimeError("no atelier_gateway_busy_poll_seconds_total in /metrics")
    return read


def mmm(values, fmt="{:.0f}"):
    values = sorted(values)
    return "/".join(fmt.format(v) for v in (values[0], statistics.median(values), values[-1]))


def wait_for_socket(path):
    for _ in range(500):
        if os.path.exists(path):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{path} did not appear")


def free_port():
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port):
    for _ in range(500):
        try:
            sockets.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listens on {port}")


def main():
    server = start.Server()
    results = {}
    try:
        nb_id = server.create("gateway-bench")
        nb = server.wait(nb_id, "RUNNING")
        token = nb["token"]
        socket = os.path.join(server.tmp, "data", "run", nb_id, "jupyter.sock")
        gateway = server.gateway.replace("http://", "")
        # Each notebook is its own origin: the gateway routes by the Host a browser sends.
        via_gateway = ["--tcp", gateway, "--header", f"Host: {start.notebook_host(server, nb_id)}",
                       "--header", f"Authorization: token {token}"]
        # JupyterLab checks the token itself as well.
        direct = ["--unix", socket, "--header", f"Authorization: token {token}"]
        kernel = json.loads(start.notebook_get(server, nb_id, "/api/kernels", token,
                                               body=b'{"name": "python3"}'))["id"]
        channels = f"/api/kernels/{kernel}/channels"
        status = "/api/status"
        measurements = [(f"http c={c}", ("http", "--path", status, "-c", str(c))) for c in (1, 32)]
        measurements += [
            ("websocket", ("kernel", "--path", channels, "--window", "8")),
            ("execute", ("kernel", "--path", channels, "--message", "execute")),
        ]
        interleaved(results, measurements, [("gateway", via_gateway), ("direct", direct)],
                    busy_poll_seconds(server.api))
        # The same gateway in front of an upstream that costs nothing: a second notebook (whose
        # socket the gateway has no pooled connections to yet) with the echo in its place.
        echo_id = server.create("gateway-echo")
        echo_nb = server.wait(echo_id, "RUNNING")
        socket = os.path.join(server.tmp, "data", "run", echo_id, "jupyter.sock")
        via_gateway = ["--tcp", gateway, "--header", f"Host: {start.notebook_host(server, echo_id)}",
                       "--header", f"Authorization: token {echo_nb['token']}"]
        direct = ["--unix", socket]
        status = "/api/status"
        os.rename(socket, socket + ".jupyter")
        echo = subprocess.Popen([LOADGEN, "--unix", socket, "echo"])
        relay = None
        try:
            wait_for_socket(socket)
            targets = [("gateway", via_gateway), ("direct", direct)]
            if shutil.which("socat"):
                port = free_port()
                relay = subprocess.Popen(
                    ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay",
                     f"UNIX-CONNECT:{socket}"])
                wait_for_port(port)
                targets.append(("socat", ["--tcp", f"127.0.0.1:{port}"]))
            interleaved(results, [(f"echo c={c}", ("http", "--path", status, "-c", str(c)))
                                  for c in (1, 32)], targets)
        finally:
            for process in (echo, relay):
                if process:
                    process.kill()
                    process.wait()
    finally:
        server.close()

    print(f"# gateway vs direct (same JupyterLab socket), {RUNS} runs x {SECONDS:g} s, "
          "min/median/max")
    print(f"{'measurement':<26} {'through the gateway':<34} {'direct':<34} ratio")

    def row(label, key, field, fmt):
        g = [r[field] for r in results[f"{key} gateway"]]
        d = [r[field] for r in results[f"{key} direct"]]
        ratio = statistics.median(g) / statistics.median(d) if statistics.median(d) else 0
        print(f"{label:<26} {mmm(g, fmt):<34} {mmm(d, fmt):<34} {ratio:.2f}")
        return statistics.median(g), statistics.median(d)

    row("http c=1 req/s", "http c=1", "per_second", "{:.0f}")
    g, d = row("http c=1 p50 ms", "http c=1", "p50_ms", "{:.3f}")
    print(f"{'  added p50 (ms)':<26} {g - d:.3f}")
    row("http c=32 req/s", "http c=32", "per_second", "{:.0f}")
    row("http c=32 p99 ms", "http c=32", "p99_ms", "{:.2f}")
    row("websocket msgs/s", "websocket", "per_second", "{:.0f}")
    row("kernel 1+1 p50 ms", "execute", "p50_ms", "{:.2f}")
    spent = {key: statistics.median(r["busy_poll_s"] for r in results[f"{key} gateway"]) / SECONDS
             for key in ("http c=1", "http c=32", "websocket", "execute")}
    print("gateway busy polling, share of the time in polling windows while loaded (median): "
          + ", ".join(f"{key} {share:.0%}" for key, share in spent.items()))
    print()
    print("# in front of an echo upstream (no cost of its own): gateway, direct, and socat's "
          "TCP-to-socket relay as a plain extra hop")
    print(f"{'measurement':<26} {'through the gateway':<34} {'direct':<34} ratio")
    row("echo c=1 req/s", "echo c=1", "per_second", "{:.0f}")
    g, d = row("echo c=1 p50 ms", "echo c=1", "p50_ms", "{:.3f}")
    print(f"{'  added p50 (ms)':<26} {g - d:.3f}")
    row("echo c=32 req/s", "echo c=32", "per_second", "{:.0f}")
    if "echo c=1 socat" in results:
        s = statistics.median(r["p50_ms"] for r in results["echo c=1 socat"])
        t = statistics.median(r["per_second"] for r in results["echo c=32 socat"])
        print(f"{'socat relay: added p50 (ms)':<34} {s - d:.3f}; c=32 req/s {t:.0f}")
    json.dump(results, open(os.path.join(start.REPO, "target", "bench-gateway.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
