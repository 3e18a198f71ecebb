#!/usr/bin/env python3
"""Dynamic storage driven by the official Huawei Cloud Python SDK, against a real Garage.

Starts Garage (one node, SQLite metadata, loopback), then `atelier serve` with a [storage]
grant for one bucket, and with ModelArtsClient:

  create a notebook -> RUNNING -> attach_dynamic_storage (OBS, /data/in/, obs://bucket/in/)
  -> MOUNTING -> show_dynamic_storage until MOUNTED -> list_dynamic_storages finds it ->
  show_notebook lists it in data_volumes -> a bucket not granted = 403 ModelArts.6407 ->
  a uri without its trailing slash = 400 ModelArts.6318 -> detach_dynamic_storage -> UNMOUNTING
  -> gone (404 ModelArts.6404) -> delete the notebook.

Environment: ATELIER_BIN (server binary), GARAGE_BIN (default: garage on PATH).
Prints `storage e2e: N passed, M failed`; exits 1 when M > 0.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_e2e import (  # noqa: E402  (the SDK test's server and client)
    REPO_ROOT,
    CheckFailed,
    E2E,
    Server,
    build_client,
    expect,
    log,
)

from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException  # noqa: E402
from huaweicloudsdkmodelarts.v1 import (  # noqa: E402
    AttachDynamicStorageRequest,
    DataVolumesReq,
    DetachDynamicStorageRequest,
    ListDynamicStoragesRequest,
    ShowDynamicStorageRequest,
)

BUCKET = "e2e-data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Garage:
    def __init__(self, root: Path):
        self.bin = os.environ.get("GARAGE_BIN") or shutil.which("garage")
        if not self.bin:
            raise RuntimeError("garage is not installed (cargo install garage)")
        self.root = root
        self.s3 = free_port()
        rpc, admin = free_port(), free_port()
        self.config = root / "garage.toml"
        self.config.write_text(
            f'metadata_dir = "{root / "meta"}"\n'
            f'data_dir = "{root / "data"}"\n'
            'db_engine = "sqlite"\nreplication_factor = 1\n'
            f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_secret = "{secrets.token_hex(32)}"\n'
            f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{self.s3}"\n'
            'root_domain = ".s3.garage.localhost"\n'
            f'[admin]\napi_bind_addr = "127.0.0.1:{admin}"\nadmin_token = "{secrets.token_hex(16)}"\n'
        )
        self.key = "GK" + secrets.token_hex(12)
        self.secret = secrets.token_hex(32)
        self.proc = subprocess.Popen([self.bin, "-c", str(self.config), "server"],
                                     stdout=open(root / "garage.log", "wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "RUST_LOG": "garage=warn"})

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.s3

    def cli(self, *args: str) -> str:
        out = subprocess.run([self.bin, "-c", str(self.config), *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("garage %s: %s%s" % (" ".join(args), out.stdout, out.stderr))
        return out.stdout

    def setup(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                node = self.cli("node", "id", "-q").strip().split("@")[0]
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # The key file comes before the RPC listener: the first command may be early.
        while True:
            try:
                self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "e2e", self.key, self.secret)
        self.cli("bucket", "create", BUCKET)
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", self.key)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Storage(E2E):
    def storage_id(self) -> str:
        return self.mount_id

    def check_attach(self):
        body = DataVolumesReq(category="OBS", mount_path="/data/in/", uri="obs://%s/in/" % BUCKET)
        res = self.c.attach_dynamic_storage(AttachDynamicStorageRequest(instance_id=self.nb_id, body=body))
        expect(res.status == "MOUNTING", "attach answered %s" % res.status)
        expect(res.id, "no mount id")
        self.mount_id = res.id

    def check_mounted(self):
        deadline = time.monotonic() + 60
        while True:
            res = self.c.show_dynamic_storage(
                ShowDynamicStorageRequest(instance_id=self.nb_id, storage_id=self.mount_id))
            if res.status != "MOUNTING":
                break
            expect(time.monotonic() < deadline, "still MOUNTING after 60 s")
            time.sleep(0.2)
        expect(res.status == "MOUNTED", "mount ended %s: %s" % (res.status, getattr(res, "failure_reason", "")))
        expect(res.mount_path == "/data/in/" and res.uri == "obs://%s/in/" % BUCKET, str(res))

    def check_listed(self):
        res = self.c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=self.nb_id))
        ids = [v.id for v in (res.data or [])]
        expect(ids == [self.mount_id], "list has %s" % ids)
        nb = self.show()
        volumes = nb.data_volumes or []
        expect(len(volumes) == 1 and volumes[0].mount_path == "/data/in/"
               and volumes[0].status == "MOUNTED", "data_volumes: %s" % volumes)

    def expect_refused(self, body, status: int, code: str):
        try:
            self.c.attach_dynamic_storage(AttachDynamicStorageRequest(instance_id=self.nb_id, body=body))
        except ClientRequestException as e:
            expect(e.status_code == status and e.error_code == code,
                   "expected %d %s, got %d %s" % (status, code, e.status_code, e.error_code))
            return
        raise CheckFailed("accepted %s" % body)

    def check_refusals(self):
        self.expect_refused(DataVolumesReq(category="OBS", mount_path="/data/x/", uri="obs://not-granted/in/"),
                            403, "ModelArts.6407")
        self.expect_refused(DataVolumesReq(category="OBS", mount_path="/data/x/", uri="obs://%s/in" % BUCKET),
                            400, "ModelArts.6318")
        res = self.c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=self.nb_id))
        expect(len(res.data or []) == 1, "a refusal changed the list: %s" % res.data)

    def check_detach(self):
        res = self.c.detach_dynamic_storage(
            DetachDynamicStorageRequest(instance_id=self.nb_id, storage_id=self.mount_id))
        expect(res.status == "UNMOUNTING", "detach answered %s" % res.status)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.c.show_dynamic_storage(
                    ShowDynamicStorageRequest(instance_id=self.nb_id, storage_id=self.mount_id))
            except ClientRequestException as e:
                expect(e.status_code == 404 and e.error_code == "ModelArts.6404", str(e))
                return
            expect(time.monotonic() < deadline, "still there 60 s after the detach")
            time.sleep(0.2)


def main() -> int:
    binary = os.environ.get("ATELIER_BIN") or str(REPO_ROOT / "target" / "debug" / "atelier")
    tmp = Path(tempfile.mkdtemp(prefix="atelier-storage-e2e-"))
    os.chmod(tmp, 0o711)  # the notebooks' uids pass through it to their volumes
    passed = failed = 0
    garage = server = None
    try:
        (tmp / "garage").mkdir()
        garage = Garage(tmp / "garage")
        garage.setup()
        config = tmp / "atelier.toml"
        config.write_text(
            "[[storage.object_stores]]\n"
            f'endpoint = "{garage.endpoint}"\nregion = "garage"\n'
            f'access_key_id = "{garage.key}"\nsecret_access_key = "{garage.secret}"\n'
            f'buckets = ["{BUCKET}"]\n'
        )
        (tmp / "data").mkdir()
        server = Server(binary, tmp / "data", config)
        server.start()
        creds = server.credentials()
        client = build_client(server.url, creds["access_key"], creds["secret_key"], creds["project_id"])
        t = Storage(client, server.url, creds)
        steps = [
            ("create a notebook -> RUNNING", lambda: (t.check_create(), t.wait_status({"RUNNING"}, timeout=300))),
            ("attach_dynamic_storage OBS /data/in/ -> MOUNTING", t.check_attach),
            ("show_dynamic_storage -> MOUNTED", t.check_mounted),
            ("list_dynamic_storages and show_notebook.data_volumes list it", t.check_listed),
            ("not granted -> 403 ModelArts.6407; no slash -> 400 ModelArts.6318", t.check_refusals),
            ("detach_dynamic_storage -> UNMOUNTING -> 404 ModelArts.6404", t.check_detach),
            ("delete the notebook", t.check_delete),
        ]
        for i, (title, fn) in enumerate(steps, 1):
            log("[%2d] %s" % (i, title))
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report, count, and stop: later steps need it
                failed += 1
                log("     FAIL: %s: %s" % (type(e).__name__, e))
                traceback.print_exc()
                failed += len(steps) - i
                break
            passed += 1
            log("     ok")
    except Exception as e:  # noqa: BLE001
        log("setup failed: %s: %s" % (type(e).__name__, e))
        traceback.print_exc()
        failed = max(failed, 1)
    finally:
        if server:
            server.stop()
            if failed:
                log("---- server output (tail) ----\n%s" % server.tail())
        if garage:
            garage.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("storage e2e: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
