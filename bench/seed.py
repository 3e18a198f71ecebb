#!/usr/bin/env python3
"""Creates N notebooks through the API as fast as a few threads can, re-using one signed request.

The signature covers method, path, headers and body; every create here sends the same bytes, so
one signature (valid 15 minutes) serves them all. Standard library only.

usage: seed.py URL N 'Header: value' ['Header: value' ...]   (body: bench/create-body.json)
"""
import json
import sys
import threading
import urllib.request

url, count, headers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
body = open(__file__.replace("seed.py", "create-body.json"), "rb").read().strip()
header_map = dict(h.split(": ", 1) for h in headers)
lock = threading.Lock()
state = {"next": 0, "ok": 0, "failed": 0, "first_error": None}


def worker():
    while True:
        with lock:
            if state["next"] >= count:
                return
            state["next"] += 1
        request = urllib.request.Request(url, data=body, method="POST", headers=header_map)
        try:
            with urllib.request.urlopen(request) as response:
                json.load(response)
            with lock:
                state["ok"] += 1
        except Exception as error:  # noqa: BLE001 - report and go on
            with lock:
                state["failed"] += 1
                state["first_error"] = state["first_error"] or repr(error)


threads = [threading.Thread(target=worker) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(f"seeded {state['ok']} notebooks, {state['failed']} failed", file=sys.stderr)
if state["failed"]:
    print(f"first error: {state['first_error']}", file=sys.stderr)
    sys.exit(1)
