#!/usr/bin/env python3
"""Start/stop latency of real notebooks (local runtime), end to end.

start: POST .../start -> first 200 on http://{id}.localhost:PORT/api/status with the new token.
stop:  POST .../stop  -> the notebook shows STOPPED.
Runs one at a time (RUNS times) and TEN at once (RUNS times) with the warm pool off, then
RUNS starts served by the warm pool (size 1, refilled between runs), against its own
`atelier serve` (release build) in a temp data dir. The JupyterLab image is provisioned
once into IMAGE_DIR (default target/atelier-images) and reused.

usage: bench/start.py [--smoke]      env: ATELIER_BIN, IMAGE_DIR, RUNS, TEN
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--smoke" in sys.argv
BIN = os.environ.get("ATELIER_BIN") or os.path.join(REPO, "target/release/atelier")
IMAGE_DIR = os.environ.get("IMAGE_DIR") or os.path.join(REPO, "target/atelier-images")
RUNS = int(os.environ.get("RUNS", "1" if SMOKE else "5"))
TEN = int(os.environ.get("TEN", "2" if SMOKE else "10"))
BUILTIN_IMAGE = "e1a07296-22a8-4f05-8bc8-e936c8e54090"


def request(method, url, token=None, body=None, timeout=30):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, None


def notebook_host(server, nb_id):
    """`{id}.localhost:PORT`: the notebook's own origin on the gateway, as browsers name it."""
    return f"{nb_id}.localhost:{server.gateway.rsplit(':', 1)[1]}"


def notebook_get(server, nb_id, path, token=None, body=None, timeout=30):
    """GET (or POST `body` to) `path` of a notebook through the gateway, with its Host;
    returns the body. Raises on anything but 2xx."""
    import http.client
    address = server.gateway.replace("http://", "")
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Host": notebook_host(server, nb_id), "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"token {token}"
        connection.request("POST" if body is not None else "GET", path, body=body,
                           headers=headers)
        response = connection.getresponse()
        data = response.read()
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(path, response.status, response.reason, None, None)
        return data
    finally:
        connection.close()


class Server:
    def __init__(self, warm_pool=0, image_dir=None, env=None, config=None):
        """`config`: TOML for `--config` (e.g. `[registry]`, which no variable sets)."""
        self.tmp = tempfile.mkdtemp(prefix="atelier-bench-")
        os.chmod(self.tmp, 0o711)  # the notebooks' uids pass through it to their volumes
        env = dict(os.environ, ATELIER_LOG="warn", ATELIER_RUNTIME__KIND="local",
                   ATELIER_RUNTIME__IMAGE_DIR=image_dir or IMAGE_DIR,
                   XDG_CONFIG_HOME=self.tmp + "/xdg",
                   ATELIER_RUNTIME__WARM_POOL=str(warm_pool), **(env or {}))
        args = []
        if config:
            with open(self.tmp + "/config.toml", "w") as f:
                f.write(config)
            args = ["--config", self.tmp + "/config.toml"]
        self.process = subprocess.Popen(
            [BIN, "serve", *args, "--data-dir", self.tmp + "/data", "--api-listen", "127.0.0.1:0",
             "--gateway-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.api = self.gateway = None
        for line in self.process.stdout:
            if line.startswith("api listening on "):
                self.api = line.split()[-1]
            if line.startswith("gateway listening on "):
                self.gateway = line.split()[-1]
                break
        creds = json.load(open(self.tmp + "/data/admin-credentials.json"))
        self.project = creds["project_id"]
        self.token = subprocess.check_output(
            [BIN, "token", "create", "--data-dir", self.tmp + "/data"], text=True).strip()
        self.base = f"{self.api}/v1/{self.project}/notebooks"

    def show(self, nb_id):
        return request("GET", f"{self.base}/{nb_id}", self.token)[1]

    def wait(self, nb_id, wanted, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nb = self.show(nb_id)
            if nb["status"] == wanted:
                return nb
            if nb["status"] in ("START_FAILED", "CREATE_FAILED", "ERROR"):
                raise RuntimeError(f"{nb_id}: {nb['status']} {nb['fail_reason']}")
            time.sleep(0.005)
        raise RuntimeError(f"{nb_id} did not reach {wanted}")

    def create(self, name, image_id=BUILTIN_IMAGE, full=False):
        """Creates (and so starts) a notebook; its id, or with `full` the whole answer."""
        body = {"name": name, "flavor": "modelarts.vm.cpu.2u", "image_id": image_id,
                "volume": {"category": "EFS", "ownership": "MANAGED"}, "duration": -1}
        status, nb = request("POST", self.base, self.token, body)
        assert status == 200, (status, nb)
        return nb if full else nb["id"]

    def start_to_ready(self, nb_id, poll=0.002):
        """Seconds from POST start to the first 200 on /api/status through the gateway.

        Polls every `poll` s: ten pollers at 2 ms would take CPU from the starts themselves."""
        began = time.monotonic()
        status, nb = request("POST", f"{self.base}/{nb_id}/start", self.token)
        assert status == 200, (status, nb)
        path = f"/api/status?token={nb['token']}"
        while True:
            # The runtime binds JupyterLab's socket before JupyterLab starts: a request made
            # early waits in its backlog and is answered as soon as JupyterLab serves.
            try:
                notebook_get(self, nb_id, path)
                return time.monotonic() - began
            except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError, TimeoutError,
                    OSError):
                pass
            if time.monotonic() - began > 120:
                raise RuntimeError(f"{nb_id}: not ready: {self.show(nb_id)['fail_reason']}")
            time.sleep(poll)

    def stop_to_stopped(self, nb_id):
        began = time.monotonic()
        status, _ = request("POST", f"{self.base}/{nb_id}/stop", self.token)
        assert status == 200, status
        self.wait(nb_id, "STOPPED", timeout=60)
        return time.monotonic() - began

    def warm_sandboxes(self):
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("atelier_warm_pool_sandboxes "):
                    return float(line.split()[-1])
        return 0.0

    def wait_warm(self, timeout=120):
        deadline = time.monotonic() + timeout
        while self.warm_sandboxes() < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the warm pool did not refill")
            time.sleep(0.05)

    def close(self):
        for nb in request("GET", f"{self.base}?limit=100", self.token)[1]["data"]:
            request("DELETE", f"{self.base}/{nb['id']}", self.token)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and request("GET", f"{self.base}?limit=1", self.token)[1]["total"]:
            time.sleep(0.1)
        self.process.terminate()
        self.process.wait(timeout=20)
        shutil.rmtree(self.tmp, ignore_errors=True)


def summary(name, values):
    values = sorted(values)
    return f"{name:<34} {min(values):7.3f} {statistics.median(values):7.3f} {max(values):7.3f}   (n={len(values)})"


def warm_starts():
    """Starts served from the warm pool (size 1): the pool refills between runs."""
    server = Server(warm_pool=1)
    try:
        nb_id = server.create("warm")
        server.wait(nb_id, "RUNNING")  # cold: the first of its image and flavor
        server.stop_to_stopped(nb_id)
        warm = []
        for _ in range(RUNS):
            server.wait_warm()
            warm.append(server.start_to_ready(nb_id))
            server.stop_to_stopped(nb_id)
        return warm
    finally:
        server.close()


def main():
    server = Server()
    try:
        ids = [server.create(f"bench{i}") for i in range(TEN)]
        for nb_id in ids:  # the first create provisions the image if needed
            server.wait(nb_id, "RUNNING")
        for nb_id in ids:
            server.stop_to_stopped(nb_id)
        one, stop = [], []
        for _ in range(RUNS):
            one.append(server.start_to_ready(ids[0]))
            stop.append(server.stop_to_stopped(ids[0]))
        first, median, last = [], [], []
        for _ in range(RUNS if not SMOKE else 1):
            results = [None] * len(ids)

            def run(index):
                results[index] = server.start_to_ready(ids[index], poll=0.02)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ids))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            first.append(min(results))
            median.append(statistics.median(results))
            last.append(max(results))
            for nb_id in ids:
                server.stop_to_stopped(nb_id)
        print(f"# start/stop latency, seconds (min median max), {os.cpu_count()} cores, "
              f"{time.strftime('%Y-%m-%d')}")
        print(summary("start, one at a time", one))
        print(summary(f"start, {len(ids)} at once: first ready", first))
        print(summary(f"start, {len(ids)} at once: median", median))
        print(summary(f"start, {len(ids)} at once: all ready", last))
        print(summary("stop", stop))
    finally:
        server.close()
    print(summary("start from the warm pool", warm_starts()))


if __name__ == "__main__":
    main()
