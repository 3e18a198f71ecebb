#!/usr/bin/env python3
"""What a running, idle notebook costs the host, by process: its sandbox (bubblewrap,
JupyterLab) and its network helper (slirp4netns), measured from the notebook's cgroup.

RSS counts shared pages (the image's libraries) in full for every process; PSS splits them
between the processes that map them, so PSS summed over notebooks is what they really take.
Runs N notebooks (EFS, the built-in image) against its own `atelier serve`, waits for them
to settle, then reads /proc/{pid}/smaps_rollup of every process of each notebook's cgroup.

usage: bench/sandbox.py [--smoke]      env: ATELIER_BIN, IMAGE_DIR, N, SETTLE
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import start  # noqa: E402  (the Server helper)

SMOKE = "--smoke" in sys.argv
N = int(os.environ.get("N", "1" if SMOKE else "5"))
SETTLE = float(os.environ.get("SETTLE", "1" if SMOKE else "5"))


def cgroup_pids(nb_id):
    for parent in ("/sys/fs/cgroup/memory/atelier", "/sys/fs/cgroup/atelier"):
        try:
            with open(f"{parent}/{nb_id}/cgroup.procs") as procs:
                return [int(p) for p in procs.read().split()]
        except OSError:
            continue
    return []


def memory(pid):
    """(command, RSS KiB, PSS KiB) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            name = comm.read().strip()
        fields = {}
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    fields[parts[0][:-1]] = int(parts[1])
        return name, fields.get("Rss", 0), fields.get("Pss", 0)
    except OSError:
        return None


def main():
    server = start.Server()
    try:
        ids = [server.create(f"mem{i}") for i in range(N)]
        for nb_id in ids:
            server.wait(nb_id, "RUNNING")
        time.sleep(SETTLE)
        totals, networks = [], []
        for nb_id in ids:
            rss = pss = net_rss = net_pss = 0
            for pid in cgroup_pids(nb_id):
                found = memory(pid)
                if found is None:
                    continue
                name, r, p = found
                rss, pss = rss + r, pss + p
                if name == "slirp4netns":
                    net_rss, net_pss = net_rss + r, net_pss + p
            totals.append((rss / 1024, pss / 1024))
            networks.append((net_rss / 1024, net_pss / 1024))
        print(f"# idle memory per running notebook, MiB (median of {N}), {os.cpu_count()} cores, "
              f"{time.strftime('%Y-%m-%d')}, egress={os.environ.get('ATELIER_RUNTIME__EGRESS', 'default')}")
        med = lambda values, i: statistics.median(v[i] for v in values)  # noqa: E731
        print(f"{'whole notebook (RSS / PSS)':<34} {med(totals, 0):7.1f} {med(totals, 1):7.1f}")
        print(f"{'of which slirp4netns (RSS / PSS)':<34} {med(networks, 0):7.1f} {med(networks, 1):7.1f}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
