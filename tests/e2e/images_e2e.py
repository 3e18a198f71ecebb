#!/usr/bin/env python3
"""End-to-end test of container images with the real Huawei Cloud Python SDK
(huaweicloudsdkmodelarts) against `atelier serve` with the real local runtime and Debian's
distribution registry (`docker-registry`) on a loopback port as the push registry.

  notebook A on the built-in image -> RUNNING; in its kernel, a module is installed into the
  image's site-packages (outside the work volume) and a marker is written to the work dir ->
  create_image -> INIT/IMAGE_SAVE; A goes SNAPSHOTTING -> RUNNING; show_image -> ACTIVE;
  the same tag again -> ModelArts.6737 -> notebook B on the saved image -> RUNNING; its kernel
  imports the module, the marker is not there (the work volume is no part of an image) ->
  B saved as tag v2 (v1's layers plus B's own) -> skopeo copies v1 within the registry ->
  register_image of the copy -> ACTIVE/DEDICATED -> list_image(DEDICATED) has all three,
  list_image_group makes v1 and v2 one group -> delete_image(is_force) of the copy: gone from
  the list, the registry answers 404 for its manifest -> the notebooks are deleted.

Usage (from the repository root, with the venv that has huaweicloudsdkmodelarts):
    .venv-e2e/bin/python tests/e2e/images_e2e.py
Environment:
    ATELIER_BIN                 server binary (default: <repo>/target/debug/atelier)
    ATELIER_RUNTIME__IMAGE_DIR  where the built-in JupyterLab image is cached (scripts/test.sh)
    ATELIER_E2E_KEEP            if set, keep the temp dir and print its path
Needs /usr/bin/docker-registry and skopeo (.ci/run installs both).
Prints `images e2e: N passed, M failed`; exits 1 when M > 0.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_e2e import (  # noqa: E402  (the SDK test's server, client and checks)
    FLAVOR,
    REPO_ROOT,
    CheckFailed,
    Server,
    build_client,
    expect,
    log,
)

from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException  # noqa: E402
from huaweicloudsdkmodelarts.v1 import (  # noqa: E402
    CreateImageRequest,
    CreateNotebookRequest,
    DeleteImageRequest,
    DeleteImageRequestBody,
    DeleteNotebookRequest,
    ImageCreateReq,
    ImageRegRequest,
    ListImageGroupRequest,
    ListImageRequest,
    ModelArtsClient,
    NotebookCreateRequest,
    RegisterImageRequest,
    ShowImageRequest,
    ShowNotebookRequest,
    VolumeMountRequest,
)

REGISTRY_BIN = "/usr/bin/docker-registry"
STATE_TIMEOUT_S = 90.0
# Saving pushes the notebook's upper layer (and, the first time, the base layers) to the registry.
SAVE_TIMEOUT_S = 120.0
PROBE = "atelier_e2e_probe"
MARKER = "atelier-e2e-marker.txt"
WORK = "/home/ma-user/work"


# --------------------------------------------------------------------------------------------
# Debian's distribution registry on a loopback port (as crates/oci/src/testing.rs starts it)
# --------------------------------------------------------------------------------------------

class Registry:
    def __init__(self, root: Path):
        self.root = root
        self.log_path = root / "registry.log"
        self.proc: subprocess.Popen | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.host = "127.0.0.1:%d" % s.getsockname()[1]

    def start(self, timeout: float = 20.0) -> None:
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
            "  delete:\n    enabled: true\nhttp:\n  addr: %s\n" % (self.root / "data", self.host))
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen("http://%s/v2/" % self.host, timeout=2) as r:
                    if r.status == 200:
                        log("registry on %s (pid %d)" % (self.host, self.proc.pid))
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not answer on %s: %s"
                                   % (self.host, self.log_path.read_text(errors="replace")[-2000:]))
            time.sleep(0.05)

    def manifest_status(self, repository: str, reference: str) -> int:
        accept = ", ".join([
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ])
        request = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (self.host, repository, reference),
                                         method="HEAD", headers={"Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# A notebook's JupyterLab as a non-browser client reaches it: REST with the token, and the kernel
# WebSocket (a minimal RFC 6455 client: the venv has no WebSocket library)
# --------------------------------------------------------------------------------------------

class Lab:
    def __init__(self, url: str, token: str):
        parts = urlsplit(url)
        self.host = parts.netloc  # ID.localhost:PORT: the gateway routes by Host
        self.port = parts.port or 80
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data,
                                         method=method, headers={
                                             "Host": self.host, "Authorization": "token %s" % self.token,
                                             "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/api/status")
                return
            except (OSError, ValueError) as e:
                expect(time.monotonic() < deadline, "JupyterLab at %s never answered: %s" % (self.host, e))
                time.sleep(0.3)

    def new_kernel(self) -> str:
        return self.request("POST", "/api/kernels", {"name": "python3"})["id"]

    def execute(self, kernel: str, code: str, timeout: float = 60.0) -> str:
        """Runs `code` in the kernel; returns its stdout, or raises with the traceback."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((
                "GET /api/kernels/%s/channels HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                "Origin: http://%s\r\nAuthorization: token %s\r\n\r\n"
                % (kernel, self.host, key, self.host, self.token)).encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(4096)
                expect(chunk, "kernel WebSocket closed during the handshake: %r" % buf)
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            expect(head.startswith(b"HTTP/1.1 101"), "kernel WebSocket handshake: %r"
                   % head.decode(errors="replace"))
            reader = _Frames(sock, buf)
            msg_id = uuid.uuid4().hex
            _send_text(sock, json.dumps({
                "header": {"msg_id": msg_id, "username": "e2e", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            out, error = [], None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = json.loads(reader.next_text())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message.get("msg_type"), message.get("content", {})
                if kind == "stream":
                    out.append(content.get("text", ""))
                elif kind == "error":
                    error = "%s: %s\n%s" % (content.get("ename"), content.get("evalue"),
                                            "\n".join(content.get("traceback", [])))
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
            else:
                raise CheckFailed("kernel did not finish within %.0fs (output so far %r)" % (timeout, "".join(out)))
            if error is not None:
                raise CheckFailed("kernel raised %s (stdout %r)" % (error, "".join(out)))
            _send_frame(sock, 0x8, b"")
            return "".join(out)
        finally:
            sock.close()


def _send_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _send_text(sock: socket.socket, text: str) -> None:
    _send_frame(sock, 0x1, text.encode())


class _Frames:
    def __init__(self, sock: socket.socket, buf: bytes):
        self.sock, self.buf = sock, buf

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CheckFailed("kernel WebSocket closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def next_text(self) -> str:
        message = b""
        while True:
            b0, b1 = self._take(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise CheckFailed("kernel WebSocket closed by the server: %r" % payload)
            if opcode == 0x9:
                _send_frame(self.sock, 0xA, payload)
                continue
            if opcode in (0x1, 0x2, 0x0):
                message += payload
                if fin:
                    return message.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------

class ImagesE2E:
    def __init__(self, client: ModelArtsClient, registry: Registry):
        self.c = client
        self.registry = registry
        suffix = uuid.uuid4().hex[:6]
        self.image_name = "e2e-saved-" + suffix
        self.namespace = "e2e"
        self.tag = "v1"
        self.copy_repo, self.copy_tag = "team/copy-" + suffix, "1"
        self.nb_a: str | None = None
        self.nb_b: str | None = None
        self.saved_id: str | None = None
        self.v2_id: str | None = None
        self.saved_layers: list[str] = []
        self.copy_id: str | None = None
        self.probe_value = "probe-" + suffix
        self.marker_value = "marker-" + suffix

    # helpers
    def create_notebook(self, name: str, image_id: str) -> str:
        body = NotebookCreateRequest(name=name, flavor=FLAVOR, image_id=image_id,
                                     volume=VolumeMountRequest(category="EFS", ownership="MANAGED"),
                                     description="images e2e")
        resp = self.c.create_notebook(CreateNotebookRequest(body=body))
        expect(resp.id, "create notebook: no id")
        log("    notebook %s (%s) on image %s: %s" % (name, resp.id, image_id, resp.status))
        return resp.id

    def wait_notebook(self, nb_id: str, targets, timeout=STATE_TIMEOUT_S):
        deadline, seen = time.monotonic() + timeout, []
        while True:
            nb = self.c.show_notebook(ShowNotebookRequest(id=nb_id))
            if not seen or seen[-1] != nb.status:
                seen.append(nb.status)
                log("    %s status: %s" % (nb_id[:8], nb.status))
            if nb.status in targets:
                return nb
            expect(nb.status not in ("CREATE_FAILED", "START_FAILED", "ERROR"),
                   "notebook went to %s (seen %s)" % (nb.status, " -> ".join(seen)))
            expect(time.monotonic() < deadline, "timeout %.0fs waiting for %s (seen %s)"
                   % (timeout, "/".join(targets), " -> ".join(seen)))
            time.sleep(0.3)

    def lab(self, nb_id: str) -> Lab:
        nb = self.wait_notebook(nb_id, {"RUNNING"})
        expect(nb.url and nb.token, "RUNNING notebook without url/token: %r %r" % (nb.url, nb.token))
        lab = Lab(nb.url, nb.token)
        lab.wait_ready()
        return lab

    def image_ids(self, **filters) -> list[str]:
        resp = self.c.list_image(ListImageRequest(limit=100, **filters))
        return [i.id for i in (resp.data or [])]

    # 1
    def check_notebook_a(self):
        builtin = self.c.list_image(ListImageRequest(type="BUILD_IN")).data
        expect(builtin, "list_image(type=BUILD_IN) returned no images")
        log("    built-in image: %s (%s)" % (builtin[0].id, builtin[0].swr_path))
        self.nb_a = self.create_notebook("e2e-img-a", builtin[0].id)
        self.lab_a = self.lab(self.nb_a)

    # 2
    def check_install_into_image(self):
        kernel = self.lab_a.new_kernel()
        out = self.lab_a.execute(kernel, (
            "import os, site, pathlib\n"
            "sp = pathlib.Path(site.getsitepackages()[0])\n"
            "pkg = sp / %r\n"
            "pkg.mkdir()\n"
            "(pkg / '__init__.py').write_text('VALUE = %%r\\n' %% %r)\n"
            "pathlib.Path(%r, %r).write_text(%r)\n"
            "print(sp, os.getuid(), sep='\\n')\n"
        ) % (PROBE, self.probe_value, WORK, MARKER, self.marker_value))
        site_packages, uid = out.split()[:2]
        log("    wrote %s/%s/__init__.py as uid %s, and %s/%s" % (site_packages, PROBE, uid, WORK, MARKER))
        expect(not site_packages.startswith(WORK), "site-packages %s is inside the work volume" % site_packages)
        expect(site_packages.startswith("/opt/jupyterlab/"), "site-packages %s is not the image's /opt/jupyterlab"
               % site_packages)

    def save(self, nb_id: str, tag: str):
        """create_image of `nb_id` as NAMESPACE/IMAGE_NAME:tag, checks the response, and waits
        until the image is ACTIVE and the notebook RUNNING again; returns (image, notebook states)."""
        resp = self.c.create_image(CreateImageRequest(id=nb_id, body=ImageCreateReq(
            name=self.image_name, namespace=self.namespace, tag=tag, description="saved by images e2e")))
        # Right away: the notebook is busy saving.
        seen = [self.c.show_notebook(ShowNotebookRequest(id=nb_id)).status]
        log("    create_image -> %s status %s origin %s type %s swr_path %s; notebook %s"
            % (resp.id, resp.status, resp.origin, resp.type, resp.swr_path, seen[0]))
        expect(resp.id, "create_image: no id")
        expect(resp.status == "INIT", "create_image: status %r != INIT" % resp.status)
        expect(resp.origin == "IMAGE_SAVE", "create_image: origin %r != IMAGE_SAVE" % resp.origin)
        expect(resp.type == "DEDICATED", "create_image: type %r != DEDICATED" % resp.type)
        swr_path = "%s/%s/%s:%s" % (self.registry.host, self.namespace, self.image_name, tag)
        expect(resp.swr_path == swr_path, "create_image: swr_path %r != %r" % (resp.swr_path, swr_path))
        t0 = time.monotonic()
        deadline = t0 + SAVE_TIMEOUT_S
        image_statuses = [resp.status]
        while True:
            nb_status = self.c.show_notebook(ShowNotebookRequest(id=nb_id)).status
            if seen[-1] != nb_status:
                seen.append(nb_status)
                log("    notebook: %s" % nb_status)
            image = self.c.show_image(ShowImageRequest(id=resp.id))
            if image_statuses[-1] != image.status:
                image_statuses.append(image.status)
                log("    image: %s %s" % (image.status, image.status_message or ""))
            expect(image.status not in ("CREATE_FAILED", "ERROR"), "image went to %s: %s"
                   % (image.status, image.status_message))
            if image.status == "ACTIVE" and nb_status == "RUNNING":
                break
            expect(time.monotonic() < deadline, "timeout %.0fs: notebook %s, image %s (%s)"
                   % (SAVE_TIMEOUT_S, " -> ".join(seen), " -> ".join(image_statuses), image.status_message))
            time.sleep(0.2)
        log("    saved in %.1fs: notebook %s; image %s, size %s"
            % (time.monotonic() - t0, " -> ".join(seen), " -> ".join(image_statuses), image.size))
        expect("SNAPSHOTTING" in seen, "the notebook never showed SNAPSHOTTING (seen %s)" % " -> ".join(seen))
        status = self.registry.manifest_status("%s/%s" % (self.namespace, self.image_name), tag)
        expect(status == 200, "registry: HEAD manifest of the saved image -> %s" % status)
        return image, seen

    def registry_layers(self, repository: str, tag: str) -> list[str]:
        done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                               "docker://%s/%s:%s" % (self.registry.host, repository, tag)],
                              capture_output=True, text=True, timeout=60)
        expect(done.returncode == 0, "skopeo inspect %s:%s: %s" % (repository, tag, done.stderr))
        manifest = json.loads(done.stdout)
        expect("layers" in manifest, "%s:%s is not a single image manifest: %s" % (repository, tag, done.stdout[:300]))
        return [layer["digest"] for layer in manifest["layers"]]

    # 3
    def check_create_image(self):
        image, _ = self.save(self.nb_a, self.tag)
        self.saved_id = image.id
        # The registry holds the whole image (the built-in image's layers and the notebook's own),
        # not just the change: anyone can pull it.
        self.saved_layers = self.registry_layers("%s/%s" % (self.namespace, self.image_name), self.tag)
        log("    registry: %s/%s:%s has %d layers" % (self.namespace, self.image_name, self.tag, len(self.saved_layers)))
        expect(len(self.saved_layers) >= 2, "the saved image has %d layer(s): no base under the notebook's own"
               % len(self.saved_layers))
        # The notebook's kernel lives on through the save.
        out = self.lab_a.execute(self.lab_a.new_kernel(), "import %s; print(%s.VALUE)" % (PROBE, PROBE))
        expect(out.strip() == self.probe_value, "notebook A after saving: probe says %r" % out)

    # 4
    def check_duplicate_tag(self):
        try:
            resp = self.c.create_image(CreateImageRequest(id=self.nb_a, body=ImageCreateReq(
                name=self.image_name, namespace=self.namespace, tag=self.tag)))
        except ClientRequestException as e:
            log("    same tag again -> %s %s: %s" % (e.status_code, e.error_code, e.error_msg))
            expect(e.error_code == "ModelArts.6737", "same tag: error_code %s != ModelArts.6737" % e.error_code)
            expect(400 <= e.status_code < 500, "same tag: HTTP %s" % e.status_code)
            return
        raise CheckFailed("a second create_image with the same tag succeeded: %s %s" % (resp.id, resp.status))

    # 5
    def check_notebook_b(self):
        self.nb_b = self.create_notebook("e2e-img-b", self.saved_id)
        nb = self.c.show_notebook(ShowNotebookRequest(id=self.nb_b))
        expect(nb.image is not None and nb.image.id == self.saved_id, "notebook B: image %r"
               % (nb.image.id if nb.image else None))
        lab = self.lab(self.nb_b)
        out = lab.execute(lab.new_kernel(), (
            "import os, %s\n"
            "print(%s.VALUE, %s.__file__, os.path.exists(%r), sorted(os.listdir(%r)), sep='\\n')\n"
        ) % (PROBE, PROBE, PROBE, "%s/%s" % (WORK, MARKER), WORK))
        value, path, marker, listing = out.strip().split("\n")
        log("    B imports %s from %s (VALUE %s); marker in work dir: %s; work dir %s"
            % (PROBE, path, value, marker, listing))
        expect(value == self.probe_value, "notebook B: probe VALUE %r != %r" % (value, self.probe_value))
        expect(marker == "False", "notebook B: the marker from A's work volume is in B's work dir")

    # 6
    def check_save_b_as_v2(self):
        image, _ = self.save(self.nb_b, "v2")
        self.v2_id = image.id
        layers = self.registry_layers("%s/%s" % (self.namespace, self.image_name), "v2")
        log("    registry: %s/%s:v2 has %d layers" % (self.namespace, self.image_name, len(layers)))
        expect(layers[:len(self.saved_layers)] == self.saved_layers and len(layers) > len(self.saved_layers),
               "v2 is not v1's layers plus B's own: %s over %s" % (layers, self.saved_layers))

    # 7
    def check_register_copy(self):
        src = "docker://%s/%s/%s:%s" % (self.registry.host, self.namespace, self.image_name, self.tag)
        dst = "docker://%s/%s:%s" % (self.registry.host, self.copy_repo, self.copy_tag)
        done = subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                               src, dst], capture_output=True, text=True, timeout=120)
        expect(done.returncode == 0, "skopeo copy %s %s: %s%s" % (src, dst, done.stdout, done.stderr))
        swr_path = "%s/%s:%s" % (self.registry.host, self.copy_repo, self.copy_tag)
        resp = self.c.register_image(RegisterImageRequest(body=ImageRegRequest(
            swr_path=swr_path, description="a copy made by skopeo")))
        log("    register_image %s -> %s %s/%s origin %s name %s namespace %s tag %s"
            % (swr_path, resp.id, resp.status, resp.type, resp.origin, resp.name, resp.namespace, resp.tag))
        self.copy_id = resp.id
        expect(resp.status == "ACTIVE", "register: status %r" % resp.status)
        expect(resp.type == "DEDICATED", "register: type %r" % resp.type)
        expect(resp.origin == "CUSTOMIZE", "register: origin %r" % resp.origin)
        name = self.copy_repo.split("/", 1)[1]
        expect((resp.namespace, resp.name, resp.tag) == ("team", name, self.copy_tag),
               "register: namespace/name/tag %r" % ((resp.namespace, resp.name, resp.tag),))
        expect(resp.swr_path == swr_path, "register: swr_path %r" % resp.swr_path)

    # 8
    def check_lists(self):
        ids = self.image_ids(type="DEDICATED")
        for image_id in (self.saved_id, self.v2_id, self.copy_id):
            expect(image_id in ids, "list_image(DEDICATED) %s lacks %s" % (ids, image_id))
        builtin = self.image_ids(type="BUILD_IN")
        expect(self.saved_id not in builtin and self.copy_id not in builtin,
               "list_image(BUILD_IN) lists a DEDICATED image: %s" % builtin)
        groups = self.c.list_image_group(ListImageGroupRequest(limit=100)).data or []
        by_name = {g.name: g for g in groups}
        log("    groups: %s" % ", ".join("%s/%s x%s" % (g.namespace, g.name, g.version_count) for g in groups))
        name = self.copy_repo.split("/", 1)[1]
        for group_name, namespace, versions in ((self.image_name, self.namespace, 2), (name, "team", 1)):
            g = by_name.get(group_name)
            expect(g is not None, "list_image_group has no group %s" % group_name)
            expect(g.namespace == namespace, "group %s: namespace %r" % (group_name, g.namespace))
            expect(g.version_count == versions, "group %s: version_count %r != %d"
                   % (group_name, g.version_count, versions))
        expect(len([g for g in groups if g.name == self.image_name]) == 1,
               "list_image_group: %s is not one group" % self.image_name)

    # 9
    def check_delete_copy(self):
        repo_tag = (self.copy_repo, self.copy_tag)
        expect(self.registry.manifest_status(*repo_tag) == 200, "the copy is not in the registry before delete")
        resp = self.c.delete_image(DeleteImageRequest(id=self.copy_id, body=DeleteImageRequestBody(is_force=True)))
        log("    delete_image(is_force) -> HTTP %s status %s" % (resp.status_code, getattr(resp, "status", None)))
        deadline = time.monotonic() + 30
        while True:
            ids = self.image_ids(type="DEDICATED")
            status = self.registry.manifest_status(*repo_tag)
            if self.copy_id not in ids and status == 404:
                break
            expect(time.monotonic() < deadline, "30s after delete: listed %s, registry HEAD manifest -> %s"
                   % (self.copy_id in ids, status))
            time.sleep(0.3)
        log("    copy gone from list_image; registry: HEAD /v2/%s/manifests/%s -> 404" % repo_tag)
        expect(self.saved_id in ids, "deleting the copy removed the saved image from the list")
        expect(self.registry.manifest_status("%s/%s" % (self.namespace, self.image_name), self.tag) == 200,
               "deleting the copy removed the saved image from the registry")

    # 10 (always)
    def check_delete_notebooks(self):
        for nb_id in [n for n in (self.nb_b, self.nb_a) if n]:
            self.c.delete_notebook(DeleteNotebookRequest(id=nb_id))
        deadline = time.monotonic() + 60
        for nb_id in [n for n in (self.nb_b, self.nb_a) if n]:
            while True:
                try:
                    st = self.c.show_notebook(ShowNotebookRequest(id=nb_id)).status
                except ClientRequestException as e:
                    expect(e.status_code == 404, "show after delete: %s %s" % (e.status_code, e.error_code))
                    break
                expect(st != "DELETE_FAILED", "delete of %s failed" % nb_id)
                expect(time.monotonic() < deadline, "%s still %s 60s after delete" % (nb_id, st))
                time.sleep(0.3)
        self.nb_a = self.nb_b = None


def kill_leftovers(data_dir: Path) -> None:
    """Sandboxes outlive the server by design: a failed run must not leave its own behind
    (found by the run's unique data dir, killed by pid)."""
    done = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def main() -> int:
    binary = os.environ.get("ATELIER_BIN") or str(REPO_ROOT / "target" / "debug" / "atelier")
    if not os.path.isabs(binary):
        binary = str((REPO_ROOT / binary).resolve())
    for tool in (binary, REGISTRY_BIN, shutil.which("skopeo") or "skopeo"):
        if not os.access(tool, os.X_OK):
            print("%s not found or not executable (ATELIER_BIN; apt-get install docker-registry skopeo)" % tool,
                  file=sys.stderr)
            print("images e2e: 0 passed, 1 failed")
            return 1

    tmp = Path(tempfile.mkdtemp(prefix="atelier-images-e2e-"))
    os.chmod(tmp, 0o711)  # the notebooks' uids pass through it to their volumes
    (tmp / "data").mkdir()
    (tmp / "registry").mkdir()
    registry = Registry(tmp / "registry")
    config = tmp / "atelier.toml"
    config.write_text('[registry]\npush = "%s"\n' % registry.host)
    server = Server(binary, tmp / "data", config=config)
    t = None
    passed = failed = 0
    started = time.monotonic()
    try:
        registry.start()
        server.start()
        creds = server.credentials()
        client = build_client(server.url, creds["access_key"], creds["secret_key"], creds["project_id"])
        t = ImagesE2E(client, registry)
        sequence = [
            ("notebook A on the built-in image -> RUNNING", t.check_notebook_a),
            ("A's kernel installs %s into the image's site-packages, a marker into the work dir" % PROBE,
             t.check_install_into_image),
            ("create_image -> INIT/IMAGE_SAVE; A SNAPSHOTTING -> RUNNING; show_image -> ACTIVE",
             t.check_create_image),
            ("create_image with the same tag -> ModelArts.6737", t.check_duplicate_tag),
            ("notebook B on the saved image imports %s; no marker in its work dir" % PROBE, t.check_notebook_b),
            ("create_image of B as tag v2: v1's layers plus B's own", t.check_save_b_as_v2),
            ("skopeo copy; register_image -> ACTIVE/DEDICATED", t.check_register_copy),
            ("list_image(DEDICATED) has all three; list_image_group: v1+v2 one group of 2", t.check_lists),
            ("delete_image(is_force) of the copy: gone from the list, registry 404", t.check_delete_copy),
        ]
        i, broken = 0, False
        for title, fn in sequence + [("delete the notebooks -> 404", t.check_delete_notebooks)]:
            i += 1
            log("[%2d] %s" % (i, title))
            if broken and fn is not t.check_delete_notebooks:
                failed += 1
                log("     FAIL: not run (an earlier step failed)")
                continue
            t0 = time.monotonic()
            try:
                fn()
            except CheckFailed as e:
                failed, broken = failed + 1, True
                log("     FAIL: %s" % e)
                continue
            except Exception as e:  # noqa: BLE001 - report and continue counting
                failed, broken = failed + 1, True
                log("     FAIL: %s: %s" % (type(e).__name__, e))
                traceback.print_exc()
                continue
            passed += 1
            log("     ok (%.1fs)" % (time.monotonic() - t0))
    except Exception as e:  # registry or server did not come up, credentials unreadable, ...
        log("setup failed: %s: %s" % (type(e).__name__, e))
        failed += 1
    finally:
        server.stop()
        kill_leftovers(tmp / "data")
        registry.stop()
        if failed:
            log("---- server output (tail) ----\n%s\n------------------------------" % server.tail(60))
            if registry.log_path.exists():
                log("---- registry log (tail) ----\n%s" % registry.log_path.read_text(errors="replace")[-3000:])
        if os.environ.get("ATELIER_E2E_KEEP"):
            log("kept %s" % tmp)
        else:
            subprocess.run(["umount", "-R", str(tmp / "data" / "mounts")], check=False, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)

    print("images e2e: %d passed, %d failed (%.0fs)" % (passed, failed, time.monotonic() - started), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
