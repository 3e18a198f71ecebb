#!/usr/bin/env python3
"""Control-plane figures: boot time and idle RSS with NOTEBOOKS stored, lease-expiry lateness
with LEASES leases due at the same instant, and RSS with RUNNING real notebooks.

  boot:  SIGTERM, then `atelier serve` again on the same data dir: spawn -> first 200 on an
         authenticated API read. RUNS restarts.
  rss:   VmRSS of the idle server with NOTEBOOKS stored (placeholder runtime, all RUNNING).
  lease: LEASES running notebooks whose TIMING leases are all made due 5 s after a restart
         (their lease start is moved back in the database while the server is down); lateness
         = the stored StopNotebookLeaseExpired event's time - the deadline.
  running: RSS before and after starting RUNNING real notebooks (local runtime): MiB each.

usage: bench/control.py [--smoke]   env: ATELIER_BIN, IMAGE_DIR, NOTEBOOKS, LEASES, RUNNING, RUNS
"""
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import start  # noqa: E402

SMOKE = "--smoke" in sys.argv
BIN = start.BIN
NOTEBOOKS = int(os.environ.get("NOTEBOOKS", "200" if SMOKE else "10000"))
LEASES = int(os.environ.get("LEASES", "50" if SMOKE else "1000"))
RUNNING = int(os.environ.get("RUNNING", "2" if SMOKE else "100"))
RUNS = int(os.environ.get("RUNS", "1" if SMOKE else "5"))
HOUR = 3_600_000


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """`atelier serve` on a data dir of its own, restartable."""

    def __init__(self, kind="placeholder"):
        self.tmp = tempfile.mkdtemp(prefix="atelier-control-")
        os.chmod(self.tmp, 0o711)  # the notebooks' uids pass through it to their volumes
        self.data = os.path.join(self.tmp, "data")
        self.kind = kind
        self.process = None
        self.spawn()
        creds = json.load(open(os.path.join(self.data, "admin-credentials.json")))
        self.project = creds["project_id"]
        self.token = subprocess.check_output(
            [BIN, "token", "create", "--data-dir", self.data], text=True).strip()

    def spawn(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_RUNTIME__")}
        env.update(ATELIER_LOG="warn", ATELIER_RUNTIME__KIND=self.kind,
                   XDG_CONFIG_HOME=os.path.join(self.tmp, "xdg"))
        # Each runtime kind takes only its own settings.
        if self.kind == "local":
            env["ATELIER_RUNTIME__IMAGE_DIR"] = start.IMAGE_DIR
        else:
            env["ATELIER_RUNTIME__STEP_DELAY"] = "0s"
        began = time.monotonic()
        self.process = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.data, "--api-listen", "127.0.0.1:0",
             "--gateway-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        for line in self.process.stdout:
            if line.startswith("api listening on "):
                self.api = line.split()[-1]
            if line.startswith("gateway listening on "):
                break
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        return began

    def boot(self):
        """Seconds from spawn to the first authenticated 200."""
        began = self.spawn()
        url = f"{self.api}/v1/{self.project}/notebooks?limit=1"
        while True:
            status, _ = start.request("GET", url, self.token)
            if status == 200:
                return time.monotonic() - began
            time.sleep(0.001)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    @property
    def base(self):
        return f"{self.api}/v1/{self.project}/notebooks"

    def create_many(self, count, body, threads=8):
        state = {"next": 0}
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    if state["next"] >= count:
                        return
                    state["next"] += 1
                    index = state["next"]
                status, _ = start.request("POST", self.base, self.token, dict(body, name=f"nb{index}"))
                assert status == 200, status

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def count(self, status):
        return start.request("GET", f"{self.base}?limit=1&status={status}", self.token)[1]["total"]

    def wait_count(self, status, count, timeout=1800):
        deadline = time.monotonic() + timeout
        while self.count(status) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count(status)} of {count} are {status}")
            time.sleep(0.5)


BODY = {"flavor": "modelarts.vm.cpu.2u", "image_id": "e1a07296-22a8-4f05-8bc8-e936c8e54090",
        "volume": {"category": "EFS", "ownership": "MANAGED"}}


def mmm(values, fmt="{:.3f}"):
    values = sorted(values)
    return " ".join(fmt.format(v) for v in (values[0], statistics.median(values), values[-1]))


def boot_and_rss():
    server = Server()
    try:
        server.create_many(NOTEBOOKS, dict(BODY, duration=-1))
        server.wait_count("RUNNING", NOTEBOOKS)
        boots, rss = [], []
        for _ in range(RUNS):
            server.stop()
            boots.append(server.boot())
            time.sleep(2)  # idle
            rss.append(rss_mib(server.process.pid))
        return boots, rss
    finally:
        server.stop()


def lease_lateness():
    server = Server()
    try:
        server.create_many(LEASES, dict(BODY, duration=HOUR))
        server.wait_count("RUNNING", LEASES)
        server.stop()
        due = int(time.time() * 1000) + 8_000
        db = sqlite3.connect(os.path.join(server.data, "atelier.db"))
        db.execute("UPDATE notebooks SET body = json_set(body, '$.lease.create_at', ?)", (due - HOUR,))
        db.commit()
        db.close()
        server.boot()
        server.wait_count("STOPPED", LEASES, timeout=120)
        db = sqlite3.connect(os.path.join(server.data, "atelier.db"))
        ats = [row[0] for row in db.execute(
            "SELECT at FROM notebook_events WHERE reason = 'StopNotebookLeaseExpired'")]
        db.close()
        assert len(ats) == LEASES, len(ats)
        late = sorted((at - due) / 1000 for at in ats)
        return late
    finally:
        server.stop()


def running_rss():
    server = Server(kind="local")
    try:
        time.sleep(2)
        idle = rss_mib(server.process.pid)
        server.create_many(RUNNING, dict(BODY, duration=-1), threads=4)
        server.wait_count("RUNNING", RUNNING)
        time.sleep(2)
        busy = rss_mib(server.process.pid)
        return idle, busy
    finally:
        for nb in start.request("GET", f"{server.base}?limit=1000", server.token)[1]["data"]:
            start.request("DELETE", f"{server.base}/{nb['id']}", server.token)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and start.request(
                "GET", f"{server.base}?limit=1", server.token)[1]["total"]:
            time.sleep(0.5)
        server.stop()


def main():
    boots, rss = boot_and_rss()
    late = lease_lateness()
    idle, busy = running_rss()
    print(f"# control plane, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')} "
          "(min median max)")
    print(f"boot to first 200, {NOTEBOOKS} notebooks stored (s)   {mmm(boots)}   (n={len(boots)})")
    print(f"RSS idle, {NOTEBOOKS} notebooks stored (MiB)          {mmm(rss, '{:.1f}')}")
    p99 = late[int((len(late) - 1) * 0.99)]
    print(f"lease-expiry lateness, {LEASES} leases due at once (s)  {mmm(late)}   p99 {p99:.3f}")
    print(f"RSS with {RUNNING} running notebooks (MiB)          idle {idle:.1f} -> {busy:.1f}, "
          f"{(busy - idle) / max(RUNNING, 1):.3f} MiB per notebook")


if __name__ == "__main__":
    main()
