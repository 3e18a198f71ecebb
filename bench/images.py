#!/usr/bin/env python3
"""Custom container images, end to end: start from one, and save a notebook as one.

A loopback `docker-registry` (filesystem storage in a temp dir) gets the built-in image under
another name: an untouched built-in notebook saved with create-image (`[registry] push` = the
registry), as `bench/lab:1`. Then, each against its own `atelier serve` (release build):

  cold pull   a server with an empty image dir of its own: create a notebook of the registered
              image -> RUNNING, and -> first 200 on /api/status through the gateway; the layers
              are really downloaded and unpacked (pull MB/s from the step's progress detail)
  cold start  the cached image dir, warm pool off: start -> RUNNING / -> JupyterLab answers,
              alternating with a notebook of the built-in image on the same server
  warm start  warm pool 1, after the pool has refilled
  save        a notebook of `bench/lab:1` that installed packages into /opt/jupyterlab
              (`pip install` from PyPI; --smoke: a few MiB of files written by the kernel):
              create-image -> image ACTIVE, pushed to the registry; against `buildah commit` +
              `skopeo copy` to the same registry of a buildah working container of
              `bench/lab:1` holding the same files (the notebook's upper directory). Each run
              adds a file of its own on both sides, so no run can reuse an earlier run's layer.

usage: bench/images.py [--smoke]      env: ATELIER_BIN, IMAGE_DIR, RUNS, PACKAGES
"""
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from start import BUILTIN_IMAGE, IMAGE_DIR, Server, notebook_get, request  # noqa: E402

SMOKE = "--smoke" in sys.argv
RUNS = int(os.environ.get("RUNS", "1" if SMOKE else "5"))
PULL_RUNS = int(os.environ.get("PULL_RUNS", "1" if SMOKE else "3"))
WARMUP = 1 if SMOKE else 0  # the first save of each side is not counted (full runs)
PACKAGES = os.environ.get("PACKAGES", "numpy pandas").split()
REGISTRY_BIN = "/usr/bin/docker-registry"


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, work):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = os.path.join(work, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {work}/registry\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.host}\n")
        self.process = subprocess.Popen([REGISTRY_BIN, "serve", config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer")

    def manifest(self, repository, tag):
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                               "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def close(self):
        self.process.terminate()
        self.process.wait()


# --- images through the API -------------------------------------------------------------------

def images_url(server):
    return f"{server.api}/v1/{server.project}/images"


def wait_image(server, image_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, image = request("GET", f"{images_url(server)}/{image_id}", server.token)
        assert status == 200, status
        if image["status"] == "ACTIVE":
            return image
        if image["status"] in ("CREATE_FAILED", "ERROR"):
            raise RuntimeError(f"image {image_id}: {image['status']} {image.get('status_message')}")
        time.sleep(0.01)
    raise RuntimeError(f"image {image_id} did not become ACTIVE")


def save(server, nb_id, name, tag):
    """create-image -> ACTIVE: (seconds, the image)."""
    began = time.monotonic()
    status, image = request("POST", f"{server.base}/{nb_id}/create-image", server.token,
                            {"name": name, "namespace": "bench", "tag": tag})
    assert status == 200, (status, image)
    image = wait_image(server, image["id"])
    took = time.monotonic() - began
    server.wait(nb_id, "RUNNING", timeout=60)
    return took, image


def register(server, swr_path):
    status, image = request("POST", images_url(server), server.token,
                            {"swr_path": swr_path, "arch": "X86_64"})
    assert status == 200, (status, image)
    return image["id"]


# --- timing a start ---------------------------------------------------------------------------

def until_ready(server, nb_id, token, began, detail=None):
    """(→RUNNING, →JupyterLab answering) in seconds since `began`; polls Show and the gateway
    alternately. `detail`, if given, gets the time the start first said it was unpacking."""
    running = ready = None
    path = f"/api/status?token={token}"
    while running is None or ready is None:
        now = time.monotonic() - began
        if now > 600:
            raise RuntimeError(f"{nb_id}: not ready: {server.show(nb_id)['fail_reason']}")
        if running is None:
            nb = server.show(nb_id)
            if nb["status"] == "RUNNING":
                running = time.monotonic() - began
            elif nb["status"] in ("START_FAILED", "CREATE_FAILED", "ERROR"):
                raise RuntimeError(f"{nb_id}: {nb['status']} {nb['fail_reason']}")
            elif detail is not None and "unpack" not in detail:
                if any("Unpacking" in (p.get("description") or "") for p in nb["action_progress"]):
                    detail["unpack"] = time.monotonic() - began
        if ready is None:
            try:
                notebook_get(server, nb_id, path, timeout=5)
                ready = time.monotonic() - began
            except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError,
                    TimeoutError, OSError):
                pass
        time.sleep(0.002)
    return running, ready


def start(server, nb_id):
    began = time.monotonic()
    status, nb = request("POST", f"{server.base}/{nb_id}/start", server.token)
    assert status == 200, (status, nb)
    return until_ready(server, nb_id, nb["token"], began)


# --- a kernel, through the gateway, on a minimal WebSocket client ------------------------------

def kernel_exec(server, nb_id, token, code, timeout=900):
    """Runs `code` in a new kernel of the notebook; returns its stdout. Raises on an error."""
    kernel = json.loads(notebook_get(server, nb_id, "/api/kernels", token=token, body="{}"))
    address = server.gateway.replace("http://", "")
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /api/kernels/{kernel['id']}/channels HTTP/1.1\r\n"
                      f"Host: {nb_id}.localhost:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nAuthorization: token {token}\r\n\r\n").encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("the kernel WebSocket closed during the handshake")
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"no WebSocket: {head[:200]!r}")

        def read(n):
            nonlocal buffer
            while len(buffer) < n:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("the kernel WebSocket closed")
                buffer += chunk
            data, buffer = buffer[:n], buffer[n:]
            return data

        def frame():
            b0, b1 = read(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(read(2), "big")
            elif length == 127:
                length = int.from_bytes(read(8), "big")
            mask = read(4) if b1 & 0x80 else None
            payload = read(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            return b0 & 0x0F, b0 & 0x80, payload

        msg_id = uuid.uuid4().hex
        message = json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(message) < 126:
            header += bytes([0x80 | len(message)])
        elif len(message) < 65536:
            header += bytes([0x80 | 126]) + len(message).to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + len(message).to_bytes(8, "big")
        sock.sendall(header + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(message)))
        out, partial = [], b""
        while True:
            opcode, fin, payload = frame()
            if opcode == 8:
                raise RuntimeError("the kernel WebSocket closed")
            if opcode not in (0, 1, 2):
                continue
            partial += payload
            if not fin:
                continue
            reply, partial = json.loads(partial), b""
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply.get("msg_type")
            if kind == "stream":
                out.append(reply["content"]["text"])
            elif kind == "error":
                raise RuntimeError("\n".join(reply["content"]["traceback"])[-3000:])
            elif kind == "execute_reply":
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"execute: {reply['content']}")
                return "".join(out)
    finally:
        sock.close()
        notebook_get_delete(server, nb_id, f"/api/kernels/{kernel['id']}", token)


def notebook_get_delete(server, nb_id, path, token):
    import http.client
    host, port = server.gateway.replace("http://", "").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("DELETE", path, headers={
            "Host": f"{nb_id}.localhost:{port}", "Authorization": f"token {token}"})
        connection.getresponse().read()
    finally:
        connection.close()


INSTALL = """
import subprocess, sys
r = subprocess.run(["/opt/jupyterlab/bin/pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                    "-q", *{packages!r}], capture_output=True, text=True)
print(r.returncode)
print(r.stdout[-1500:], r.stderr[-1500:])
"""

# --smoke: a few MiB of files where packages go, without the network.
WRITE = """
import os, random
root = "/opt/jupyterlab/lib/python3.11/site-packages/benchpkg"
os.makedirs(root, exist_ok=True)
rng = random.Random(1)
for i in range(200):
    with open(f"{root}/mod{i}.py", "w") as f:
        f.write("".join(f"def f{i}_{j}(x):\\n    return x * {rng.random()!r}\\n" for j in range(600)))
print(0)
"""


def du(path):
    return int(subprocess.check_output(["du", "-sb", path], text=True).split()[0])


def summary(name, values, unit="s"):
    values = sorted(values)
    return (f"{name:<44} {min(values):7.3f} {statistics.median(values):7.3f} "
            f"{max(values):7.3f} {unit}  (n={len(values)})")


# --- the parts --------------------------------------------------------------------------------

def cold_pull(registry, swr_path, work):
    """Create -> RUNNING / ready on a server whose image dir starts empty, PULL_RUNS times."""
    rows = {"running": [], "ready": [], "pull": [], "unpack": [], "mbps": []}
    for run in range(PULL_RUNS):
        image_dir = tempfile.mkdtemp(prefix="images-", dir=work)
        os.chmod(image_dir, 0o711)
        server = Server(warm_pool=0, image_dir=image_dir)
        try:
            image_id = register(server, swr_path)
            _, image = request("GET", f"{images_url(server)}/{image_id}", server.token)
            megabytes = image["size"] * 1024 / 1e6
            detail = {}
            began = time.monotonic()
            nb = server.create(f"pull{run}", image_id=image_id, full=True)
            running, ready = until_ready(server, nb["id"], nb["token"], began, detail)
            rows["running"].append(running)
            rows["ready"].append(ready)
            if "unpack" in detail:
                rows["pull"].append(detail["unpack"])
                rows["unpack"].append(running - detail["unpack"])
                rows["mbps"].append(megabytes / detail["unpack"])
            print(f"  cold pull run {run}: RUNNING {running:.2f} s, ready {ready:.2f} s, "
                  f"{megabytes:.0f} MB compressed, load {loadavg()}", flush=True)
        finally:
            server.close()
            shutil.rmtree(image_dir, ignore_errors=True)
    return rows, megabytes


def cold_starts(server, custom, builtin):
    """Alternating cold starts of a notebook of each image, warm pool off."""
    rows = {k: [] for k in ("custom running", "custom ready", "builtin running", "builtin ready")}
    for _ in range(RUNS):
        for name, nb_id in (("custom", custom), ("builtin", builtin)):
            running, ready = start(server, nb_id)
            rows[f"{name} running"].append(running)
            rows[f"{name} ready"].append(ready)
            server.stop_to_stopped(nb_id)
    return rows


def warm_starts(image_id):
    server = Server(warm_pool=1)
    try:
        image_id = register(server, image_id)
        nb_id = server.create("warm", image_id=image_id)
        server.wait(nb_id, "RUNNING")
        server.stop_to_stopped(nb_id)
        rows = {"running": [], "ready": []}
        for _ in range(RUNS):
            server.wait_warm()
            time.sleep(0.5)  # the refill's own start-up is over
            running, ready = start(server, nb_id)
            rows["running"].append(running)
            rows["ready"].append(ready)
            server.stop_to_stopped(nb_id)
        return rows
    finally:
        server.close()


def layer_size(registry, swr_path):
    """The size of the top (saved) layer of `swr_path`, compressed, as the registry has it."""
    repository, tag = swr_path.split("/", 1)[1].rsplit(":", 1)
    return registry.manifest(repository, tag)["layers"][-1]["size"]


def atelier_saves(server, registry, nb_id):
    token = server.show(nb_id)["token"]
    times, sizes = [], []
    for run in range(WARMUP, RUNS + 1):  # run 0 warms the page cache and is not counted
        kernel_exec(server, nb_id, token, f"open('/opt/jupyterlab/run-{run}', 'w').write('{run}')")
        took, image = save(server, nb_id, "lab", f"atelier-{run}")
        size = layer_size(registry, image["swr_path"])
        print(f"  atelier save run {run}: {took:.2f} s, layer {size / 1e6:.1f} MB, "
              f"image {image['size'] / 1024:.0f} MiB, load {loadavg()}", flush=True)
        if run:
            times.append(took)
            sizes.append(size)
    return times, sizes


def buildah_saves(registry, swr_path, files, work):
    """`buildah commit` + `skopeo copy` of a working container of `swr_path` holding `files`
    (a directory copied to /), in a containers-storage of its own."""
    root, runroot = os.path.join(work, "storage"), os.path.join(work, "runroot")
    store = ["--root", root, "--runroot", runroot, "--storage-driver", "overlay"]
    spec = f"containers-storage:[overlay@{root}+{runroot}]"

    def buildah(*args):
        return subprocess.run(["buildah", *store, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    container = buildah("from", "--quiet", "--tls-verify=false", f"docker://{swr_path}")
    try:
        buildah("copy", "--chown", "1000:100", container, files, "/")
        times, sizes = [], []
        marker = os.path.join(work, "marker")
        for run in range(WARMUP, RUNS + 1):
            with open(marker, "w") as f:
                f.write(str(run))
            buildah("copy", "--chown", "1000:100", container, marker, f"/opt/jupyterlab/run-{run}")
            image = f"localhost/bench-save:{run}"
            began = time.monotonic()
            buildah("commit", "--quiet", container, image)
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                            f"{spec}{image}", f"docker://{registry.host}/bench/lab:buildah-{run}"],
                           check=True, capture_output=True, text=True)
            took = time.monotonic() - began
            size = layer_size(registry, f"{registry.host}/bench/lab:buildah-{run}")
            print(f"  buildah commit + skopeo copy run {run}: {took:.2f} s, layer "
                  f"{size / 1e6:.1f} MB, load {loadavg()}", flush=True)
            buildah("rmi", image)
            if run:
                times.append(took)
                sizes.append(size)
        return times, sizes
    finally:
        subprocess.run(["buildah", *store, "rm", "--all"], capture_output=True)
        subprocess.run(["buildah", *store, "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", os.path.join(root, "overlay")], capture_output=True)


def main():
    tools = (REGISTRY_BIN,) if SMOKE else (REGISTRY_BIN, "skopeo", "buildah")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        print(f"images: skipped ({', '.join(missing)} missing; apt-get install docker-registry skopeo buildah)")
        return
    work = tempfile.mkdtemp(prefix="atelier-images-bench-")
    os.chmod(work, 0o711)
    registry = Registry(work)
    server = None
    out = []
    try:
        print(f"# custom images: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"load {loadavg()} at the start", flush=True)
        server = Server(warm_pool=0, config=f'[registry]\npush = "{registry.host}"\n')
        source = server.create("source")
        server.wait(source, "RUNNING")
        took, image = save(server, source, "lab", "1")
        swr_path = image["swr_path"]
        out.append(f"{'save of an untouched built-in notebook, base layers uploaded':<60} "
                   f"{took:6.2f} s  ({image['size'] / 1024:.0f} MiB, load {loadavg()})")
        server.stop_to_stopped(source)

        custom = server.create("custom", image_id=image["id"])
        server.wait(custom, "RUNNING")
        server.stop_to_stopped(custom)
        rows = cold_starts(server, custom, source)
        out.append(f"cold start, warm pool off (load {loadavg()}), min median max:")
        for name, values in rows.items():
            out.append(summary(f"  {name}", values))

        # Save as image: packages installed in the notebook of the custom image.
        _, nb = request("POST", f"{server.base}/{custom}/start", server.token)
        server.wait(custom, "RUNNING")
        token = server.show(custom)["token"]
        code = WRITE if SMOKE else INSTALL.format(packages=PACKAGES)
        began = time.monotonic()
        result = kernel_exec(server, custom, token, code)
        if not result.startswith("0"):
            raise RuntimeError(f"installing in the notebook failed: {result}")
        installed = time.monotonic() - began
        upper = os.path.join(server.tmp, "data/roots", custom, "fs/upper")
        files = os.path.join(work, "files")
        shutil.copytree(os.path.join(upper, "opt"), os.path.join(files, "opt"), symlinks=True)
        what = "files written by the kernel" if SMOKE else "pip install " + " ".join(PACKAGES)
        out.append(f"save as image: {what} ({installed:.0f} s), {du(files) / 1e6:.0f} MB "
                   f"in /opt of the notebook's upper layer ({sum(len(f) for _, _, f in os.walk(files))} files)")
        ours, our_sizes = atelier_saves(server, registry, custom)
        out.append(summary("  create-image -> ACTIVE (pushed)", ours)
                   + f"  layer {statistics.median(our_sizes) / 1e6:.1f} MB")
        if not SMOKE:
            theirs, their_sizes = buildah_saves(registry, swr_path, files, work)
            out.append(summary("  buildah commit + skopeo copy", theirs)
                       + f"  layer {statistics.median(their_sizes) / 1e6:.1f} MB")
        server.close()
        server = None

        warm = warm_starts(swr_path)
        out.append(f"warm start, pool of 1 refilled (load {loadavg()}):")
        for name, values in warm.items():
            out.append(summary(f"  custom {name}", values))

        if SMOKE:
            out.append("(--smoke: no buildah comparison and no cold pull: each unpacks the whole "
                       "image, half a minute)")
            return
        pull, megabytes = cold_pull(registry, swr_path, work)
        out.append(f"cold pull into an empty image dir, {megabytes:.0f} MB compressed "
                   f"(load {loadavg()}):")
        for name, values in pull.items():
            if values:
                out.append(summary(f"  {name}", values, "MB/s" if name == "mbps" else "s"))
    finally:
        if server:
            server.close()
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(out))


if __name__ == "__main__":
    main()
