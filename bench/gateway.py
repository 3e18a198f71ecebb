#!/usr/bin/env python3
"""Gateway overhead: the same JupyterLab measured through the gateway (TCP, token checked)
and directly on its Unix socket, with target/release/atelier-loadgen.

  http c=1 and c=32: GET /{id}/api/status on keep-alive connections
  websocket: kernel_info_request round trips on the kernel channel, 8 in flight (messages/s)
  kernel execute: `1+1` round trip, one at a time (p50)

RUNS runs of SECONDS each; min/median/max. usage: bench/gateway.py [--smoke]
env: ATELIER_BIN, LOADGEN, IMAGE_DIR, RUNS, SECONDS
"""
import json
import os
import statistics
import subprocess
import sys
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


def runs(target, *args):
    return [loadgen(target, *args) for _ in range(RUNS)]


def mmm(values, fmt="{:.0f}"):
    values = sorted(values)
    return "/".join(fmt.format(v) for v in (values[0], statistics.median(values), values[-1]))


def main():
    server = start.Server()
    results = {}
    try:
        nb_id = server.create("gateway-bench")
        nb = server.wait(nb_id, "RUNNING")
        token = nb["token"]
        socket = os.path.join(server.tmp, "data", "run", nb_id, "jupyter.sock")
        gateway = server.gateway.replace("http://", "")
        via_gateway = ["--tcp", gateway, "--header", f"Authorization: token {token}"]
        direct = ["--unix", socket]
        request = urllib.request.Request(f"{server.gateway}/{nb_id}/api/kernels", method="POST",
                                         data=b'{"name": "python3"}',
                                         headers={"Authorization": f"token {token}",
                                                  "Content-Type": "application/json"})
        kernel = json.load(urllib.request.urlopen(request, timeout=60))["id"]
        channels = f"/{nb_id}/api/kernels/{kernel}/channels"
        status = f"/{nb_id}/api/status"
        for name, target in (("gateway", via_gateway), ("direct", direct)):
            for c in (1, 32):
                results[f"http c={c} {name}"] = runs(
                    target, "http", "--path", status, "-c", str(c), "-d", str(SECONDS))
            results[f"websocket {name}"] = runs(
                target, "kernel", "--path", channels, "--window", "8", "-d", str(SECONDS))
            results[f"execute {name}"] = runs(
                target, "kernel", "--path", channels, "--message", "execute", "-d", str(SECONDS))
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
    json.dump(results, open(os.path.join(start.REPO, "target", "bench-gateway.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
