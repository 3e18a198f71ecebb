#!/usr/bin/env python3
"""End-to-end test of Atelier with the real Huawei Cloud Python SDK (huaweicloudsdkmodelarts).

Starts `atelier serve` in a fresh temporary data dir, reads DIR/admin-credentials.json, and drives
a notebook through its life cycle with ModelArtsClient:

  create -> list -> show -> (settle, stop) -> start(3600000, TIMING) -> RUNNING -> show_lease ->
  renew_lease(7200000) -> stop -> STOPPED -> start -> RUNNING -> start again = 400 ModelArts.6357 ->
  delete -> show = 404 ModelArts.6309; finally a request signed with a wrong SK = 401.

Usage (from the repository root, with the venv that has huaweicloudsdkmodelarts):
    /work/py/venv/bin/python tests/e2e/sdk_e2e.py
Environment:
    ATELIER_BIN        server binary (default: <repo>/target/debug/atelier)
    ATELIER_E2E_KEEP   if set, keep the temp data dir and print its path
Prints `sdk e2e: N passed, M failed`; exits 1 when M > 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmodelarts.v1 import (
    CreateNotebookRequest,
    DeleteNotebookRequest,
    LeaseReq,
    ListImageRequest,
    ListNotebooksRequest,
    ModelArtsClient,
    NotebookCreateRequest,
    RenewLeaseRequest,
    ShowLeaseRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    StopNotebookRequest,
    VolumeMountRequest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FLAVOR = "modelarts.vm.cpu.2u"
HOUR_MS = 3_600_000
STATE_TIMEOUT_S = 60.0
DELETE_TIMEOUT_S = 60.0
# Slack for the lease deadline arithmetic (clock granularity, request latency).
LEASE_SLACK_MS = 5_000

_LISTEN_RE = re.compile(r"api listening on (https?://[^\s\"',]+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def now_ms() -> int:
    return int(time.time() * 1000)


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------

class Server:
    def __init__(self, binary: str, data_dir: Path, config: Path | None = None):
        self.binary = binary
        self.data_dir = data_dir
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.lines: list[str] = []
        self._found = threading.Event()
        self._lock = threading.Lock()

    def _pump(self, stream, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = _ANSI_RE.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
            with self._lock:
                self.lines.append("[%s] %s" % (name, line))
            m = _LISTEN_RE.search(line)
            if m and not self._found.is_set():
                self.url = m.group(1).rstrip("/")
                self._found.set()
        stream.close()

    def start(self, timeout: float = 30.0) -> None:
        cmd = [self.binary, "serve", "--data-dir", str(self.data_dir),
               "--api-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        log("starting: %s" % " ".join(cmd))
        # Its own config home: the first start writes the admin's CLI profile, and a test must
        # never leave one (pointing at a dead ephemeral port) in the user's ~/.config.
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.data_dir / "xdg"))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
        for stream, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            threading.Thread(target=self._pump, args=(stream, name), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._found.wait(0.1):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("atelier exited with %s before listening\n%s"
                                   % (self.proc.returncode, self.tail()))
        else:
            raise RuntimeError("no 'api listening on http://...' line within %.0fs\n%s" % (timeout, self.tail()))
        creds = self.data_dir / "admin-credentials.json"
        while not creds.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not creds.exists():
            raise RuntimeError("%s was not written\n%s" % (creds, self.tail()))
        log("server listening on %s (pid %d)" % (self.url, self.proc.pid))

    def credentials(self) -> dict:
        path = self.data_dir / "admin-credentials.json"
        for _ in range(50):  # tolerate reading while it is being written
            try:
                data = json.loads(path.read_text())
                if all(data.get(k) for k in ("project_id", "access_key", "secret_key")):
                    return data
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("unreadable %s" % path)

    def tail(self, n: int = 40) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

class CheckFailed(AssertionError):
    pass


def expect(cond, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def expect_client_error(fn, status: int, code: str | None, what: str) -> ClientRequestException:
    try:
        resp = fn()
    except ClientRequestException as e:
        expect(e.status_code == status,
               "%s: expected HTTP %d, got %s (error_code=%s, error_msg=%s)"
               % (what, status, e.status_code, e.error_code, e.error_msg))
        if code is not None:
            expect(e.error_code == code, "%s: expected error_code %s, got %s (error_msg=%s)"
                   % (what, code, e.error_code, e.error_msg))
        return e
    raise CheckFailed("%s: expected ClientRequestException %d %s, call succeeded with %r"
                      % (what, status, code or "", getattr(resp, "status_code", resp)))


def build_client(endpoint: str, ak: str, sk: str, project_id: str) -> ModelArtsClient:
    config = HttpConfig.get_default_config()
    config.timeout = (10, 30)
    return (ModelArtsClient.new_builder()
            .with_http_config(config)
            .with_credentials(BasicCredentials(ak, sk, project_id))
            .with_endpoint(endpoint)
            .build())


class E2E:
    def __init__(self, client: ModelArtsClient, endpoint: str, creds: dict):
        self.c = client
        self.endpoint = endpoint
        self.creds = creds
        self.nb_id: str | None = None
        self.name = "e2e-" + uuid.uuid4().hex[:8]
        self.image_id: str | None = None
        self.deadline_1h: int | None = None

    # helpers
    def show(self):
        return self.c.show_notebook(ShowNotebookRequest(id=self.nb_id))

    def wait_status(self, targets, timeout=STATE_TIMEOUT_S, fail_on=("CREATE_FAILED", "START_FAILED",
                                                                      "DELETE_FAILED", "ERROR")):
        targets = set(targets)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            st = self.show().status
            if not seen or seen[-1] != st:
                seen.append(st)
                log("    status: %s" % st)
            if st in targets:
                return st
            expect(st not in fail_on, "notebook went to %s (seen %s)" % (st, " -> ".join(map(str, seen))))
            expect(time.monotonic() < deadline, "timeout %.0fs waiting for %s (seen %s)"
                   % (timeout, "/".join(sorted(targets)), " -> ".join(map(str, seen))))
            time.sleep(0.5)

    # 1
    def check_create(self):
        images = self.c.list_image(ListImageRequest(type="BUILD_IN"))
        expect(images.data, "list_image(type=BUILD_IN) returned no images")
        self.image_id = images.data[0].id
        expect(self.image_id, "first BUILD_IN image has no id")
        log("    image: %s (%s)" % (self.image_id, images.data[0].name))
        body = NotebookCreateRequest(
            name=self.name, flavor=FLAVOR, image_id=self.image_id,
            volume=VolumeMountRequest(category="EFS", ownership="MANAGED"),
            description="sdk e2e")
        resp = self.c.create_notebook(CreateNotebookRequest(body=body))
        expect(resp.status_code in (200, 201), "create: HTTP %s" % resp.status_code)
        expect(resp.id, "create: response has no id")
        self.nb_id = resp.id
        expect(resp.name == self.name, "create: name %r != %r" % (resp.name, self.name))
        expect(resp.flavor == FLAVOR, "create: flavor %r != %r" % (resp.flavor, FLAVOR))
        log("    id: %s status: %s" % (resp.id, resp.status))

    # 2
    def check_list(self):
        resp = self.c.list_notebooks(ListNotebooksRequest(limit=50, offset=0))
        ids = [nb.id for nb in (resp.data or [])]
        expect(self.nb_id in ids, "list: %s not among %s" % (self.nb_id, ids))
        expect((resp.total or 0) >= 1, "list: total=%r" % resp.total)
        resp = self.c.list_notebooks(ListNotebooksRequest(name=self.name))
        expect([nb.id for nb in (resp.data or [])] == [self.nb_id],
               "list name=%s: got %s" % (self.name, [nb.id for nb in (resp.data or [])]))

    # 3
    def check_show(self):
        nb = self.show()
        expect(nb.id == self.nb_id, "show: id %r" % nb.id)
        expect(nb.name == self.name, "show: name %r" % nb.name)
        expect(nb.flavor == FLAVOR, "show: flavor %r" % nb.flavor)
        expect(nb.image is not None and nb.image.id == self.image_id,
               "show: image %r" % (nb.image.id if nb.image else None))
        expect(nb.volume is not None and nb.volume.category == "EFS" and nb.volume.ownership == "MANAGED",
               "show: volume %r" % nb.volume)
        raw = json.loads(nb.raw_content or b"{}")
        expect(isinstance(raw.get("create_at"), int) and isinstance(raw.get("update_at"), int),
               "show: top-level create_at/update_at missing (%r/%r)" % (raw.get("create_at"), raw.get("update_at")))

    # 4
    def check_settle_and_stop(self):
        st = self.wait_status({"RUNNING", "STOPPED"})
        if st == "RUNNING":
            resp = self.c.stop_notebook(StopNotebookRequest(id=self.nb_id))
            log("    stop -> %s" % resp.status)
            self.wait_status({"STOPPED"})

    # 5
    def check_start_timing(self):
        self.t_start = now_ms()
        resp = self.c.start_notebook(StartNotebookRequest(id=self.nb_id, duration=HOUR_MS, type="TIMING"))
        log("    start -> %s" % resp.status)
        self.wait_status({"RUNNING"})
        nb = self.show()
        expect(nb.url, "RUNNING notebook has no url")
        expect(nb.token, "RUNNING notebook has no token")

    # 6
    def check_show_lease(self):
        lease = self.c.show_lease(ShowLeaseRequest(id=self.nb_id))
        t = now_ms()
        log("    lease: create_at=%s duration=%s enable=%s type=%s update_at=%s"
            % (lease.create_at, lease.duration, lease.enable, lease.type, lease.update_at))
        expect(lease.enable is True, "lease.enable %r != True" % lease.enable)
        expect(lease.type == "TIMING", "lease.type %r != TIMING" % lease.type)
        expect(isinstance(lease.create_at, int) and isinstance(lease.duration, int),
               "lease.create_at/duration not integers: %r/%r" % (lease.create_at, lease.duration))
        deadline = lease.create_at + lease.duration
        lo, hi = self.t_start + HOUR_MS - LEASE_SLACK_MS, t + HOUR_MS + LEASE_SLACK_MS
        expect(lo <= deadline <= hi, "lease deadline %d not in [%d, %d] (now+1h=%d, off by %+d ms)"
               % (deadline, lo, hi, t + HOUR_MS, deadline - (t + HOUR_MS)))
        self.deadline_1h = deadline

    # 7
    def check_renew_lease(self):
        t0 = now_ms()
        lease = self.c.renew_lease(RenewLeaseRequest(id=self.nb_id, duration=2 * HOUR_MS))
        t1 = now_ms()
        log("    renewed: create_at=%s duration=%s enable=%s type=%s"
            % (lease.create_at, lease.duration, lease.enable, lease.type))
        shown = self.c.show_lease(ShowLeaseRequest(id=self.nb_id))
        for label, l in (("renew response", lease), ("show after renew", shown)):
            expect(l.enable is True, "%s: enable %r" % (label, l.enable))
            expect(l.type == "TIMING", "%s: type %r" % (label, l.type))
            expect(isinstance(l.create_at, int) and isinstance(l.duration, int),
                   "%s: create_at/duration %r/%r" % (label, l.create_at, l.duration))
            deadline = l.create_at + l.duration
            lo, hi = t0 + 2 * HOUR_MS - LEASE_SLACK_MS, t1 + 2 * HOUR_MS + LEASE_SLACK_MS
            expect(lo <= deadline <= hi, "%s: deadline %d not in [%d, %d] (off by %+d ms)"
                   % (label, deadline, lo, hi, deadline - (t1 + 2 * HOUR_MS)))
            if self.deadline_1h is not None:
                expect(deadline > self.deadline_1h + HOUR_MS - 2 * LEASE_SLACK_MS,
                       "%s: deadline %d did not move ~1h past %d" % (label, deadline, self.deadline_1h))

    # 8
    def check_stop(self):
        resp = self.c.stop_notebook(StopNotebookRequest(id=self.nb_id))
        log("    stop -> %s" % resp.status)
        self.wait_status({"STOPPED"})

    # 9
    def check_start_conflict(self):
        resp = self.c.start_notebook(StartNotebookRequest(id=self.nb_id))
        log("    start -> %s" % resp.status)
        self.wait_status({"RUNNING"})
        e = expect_client_error(lambda: self.c.start_notebook(StartNotebookRequest(id=self.nb_id)),
                                400, "ModelArts.6357", "start on RUNNING")
        expect(e.request_id, "start on RUNNING: error carries no X-Request-Id")
        log("    second start -> %s %s (request id %s)" % (e.status_code, e.error_code, e.request_id))

    # 10
    def check_delete(self):
        expect(self.nb_id, "no notebook to delete")
        resp = self.c.delete_notebook(DeleteNotebookRequest(id=self.nb_id))
        log("    delete -> HTTP %s status %s" % (resp.status_code, resp.status))
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        seen = []
        while True:
            try:
                st = self.show().status
            except ClientRequestException as e:
                expect(e.status_code == 404 and e.error_code == "ModelArts.6309",
                       "show after delete: expected 404 ModelArts.6309, got %s %s (%s)"
                       % (e.status_code, e.error_code, e.error_msg))
                log("    show -> %s %s" % (e.status_code, e.error_code))
                self.nb_id = None
                return
            if not seen or seen[-1] != st:
                seen.append(st)
                log("    status: %s" % st)
            expect(st != "DELETED", "show returned 200 with status DELETED (must be an error once gone)")
            expect(st != "DELETE_FAILED", "delete failed")
            expect(time.monotonic() < deadline, "notebook still visible %.0fs after delete (seen %s)"
                   % (DELETE_TIMEOUT_S, " -> ".join(map(str, seen))))
            time.sleep(0.5)

    # 11
    def check_wrong_sk(self):
        bad_sk = "X" + self.creds["secret_key"][1:] if self.creds["secret_key"][:1] != "X" \
            else "Y" + self.creds["secret_key"][1:]
        bad = build_client(self.endpoint, self.creds["access_key"], bad_sk, self.creds["project_id"])
        e = expect_client_error(lambda: bad.list_notebooks(ListNotebooksRequest()), 401, None,
                                "request signed with a wrong SK")
        log("    wrong SK -> %s %s: %s" % (e.status_code, e.error_code, e.error_msg))


def main() -> int:
    binary = os.environ.get("ATELIER_BIN") or str(REPO_ROOT / "target" / "debug" / "atelier")
    if not os.path.isabs(binary):
        binary = str((REPO_ROOT / binary).resolve())
    if not os.access(binary, os.X_OK):
        print("atelier binary not found or not executable: %s (set ATELIER_BIN)" % binary, file=sys.stderr)
        print("sdk e2e: 0 passed, 11 failed")
        return 1

    tmp = Path(tempfile.mkdtemp(prefix="atelier-sdk-e2e-"))
    os.chmod(tmp, 0o711)  # the notebooks' uids pass through it to their volumes
    server = Server(binary, tmp / "data")
    (tmp / "data").mkdir()
    passed = failed = 0
    try:
        server.start()
        creds = server.credentials()
        endpoint = server.url or creds.get("endpoint")
        log("endpoint %s project %s ak %s" % (endpoint, creds["project_id"], creds["access_key"]))
        client = build_client(endpoint, creds["access_key"], creds["secret_key"], creds["project_id"])
        t = E2E(client, endpoint, creds)

        sequence = [
            ("create notebook (flavor %s, first BUILD_IN image, EFS/MANAGED)" % FLAVOR, t.check_create),
            ("list notebooks finds it", t.check_list),
            ("show notebook", t.check_show),
            ("creation settles; stop -> STOPPED", t.check_settle_and_stop),
            ("start duration=3600000 type=TIMING -> RUNNING", t.check_start_timing),
            ("show_lease: enable, TIMING, deadline ~ now+1h", t.check_show_lease),
            ("renew_lease duration=7200000 moves deadline to ~ now+2h", t.check_renew_lease),
            ("stop -> STOPPED", t.check_stop),
            ("start -> RUNNING; start again -> 400 ModelArts.6357", t.check_start_conflict),
        ]
        always = [
            ("delete -> show 404 ModelArts.6309", t.check_delete),
            ("wrong SK -> 401", t.check_wrong_sk),
        ]

        def run(i, title, fn):
            nonlocal passed, failed
            log("[%2d] %s" % (i, title))
            try:
                fn()
            except CheckFailed as e:
                failed += 1
                log("     FAIL: %s" % e)
                return False
            except ClientRequestException as e:
                failed += 1
                log("     FAIL: unexpected %s" % e)
                return False
            except Exception as e:  # noqa: BLE001 - report and continue counting
                failed += 1
                log("     FAIL: %s: %s" % (type(e).__name__, e))
                traceback.print_exc()
                return False
            passed += 1
            log("     ok")
            return True

        i = 0
        broken = False
        for title, fn in sequence:
            i += 1
            if broken:
                failed += 1
                log("[%2d] %s\n     FAIL: not run (an earlier step failed)" % (i, title))
                continue
            if not run(i, title, fn):
                broken = True
        for title, fn in always:
            i += 1
            if fn is t.check_delete and not t.nb_id:
                failed += 1
                log("[%2d] %s\n     FAIL: not run (no notebook was created)" % (i, title))
                continue
            run(i, title, fn)
    except Exception as e:  # server did not come up, credentials unreadable, ...
        log("setup failed: %s: %s" % (type(e).__name__, e))
        failed = 11 - passed
    finally:
        server.stop()
        if failed:
            log("---- server output (tail) ----\n%s\n------------------------------" % server.tail())
        if os.environ.get("ATELIER_E2E_KEEP"):
            log("kept data dir %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("sdk e2e: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
