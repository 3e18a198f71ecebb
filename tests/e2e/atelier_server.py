"""`atelier serve` with the local runtime in a temp dir, and the CLI against it: what the
browser tests (console_e2e.py, jupyterlab_e2e.py) start before they open a page.

Environment: ATELIER_BIN (default <repo>/target/debug/atelier).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("ATELIER_BIN", str(REPO / "target" / "debug" / "atelier"))
# The first start may provision the image from PyPI.
START_TIMEOUT_S = 600
LINK = re.compile(r"^http://([0-9a-f-]{36})\.localhost:(\d+)/lab\?token=([0-9a-f-]+)$")
SHARED_LINK = re.compile(r"^http://127\.0\.0\.1:(?:\d+)/([0-9a-f-]{36})/lab\?token=()([0-9a-f-]+)$")


class Atelier:
    """`atelier serve` with the local runtime, and the CLI against it."""

    def __init__(self, routing: str = "host") -> None:
        self.work = Path(tempfile.mkdtemp(prefix="atelier-e2e-"))
        os.chmod(self.work, 0o711)  # the notebooks' uids pass through it to their volumes
        self.data_dir, self.xdg = self.work / "data", self.work / "xdg"
        self.env = dict(os.environ, ATELIER_LOG="warn", XDG_CONFIG_HOME=str(self.xdg),
                        ATELIER_RUNTIME__KIND="local", ATELIER_GATEWAY_ROUTING=routing)
        self.routing = routing
        self.proc = subprocess.Popen(
            [BIN, "serve", "--api-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
             "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        self.api = self.gateway = None
        while time.monotonic() < deadline and self.gateway is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("atelier exited before listening")
            match = re.match(r"(api|gateway) listening on (http://\S+)", line)
            if match:
                setattr(self, match.group(1), match.group(2))
        if self.api is None or self.gateway is None:
            raise RuntimeError("atelier did not say where it listens")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def cli(self, *args: str, timeout: float = START_TIMEOUT_S) -> str:
        done = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"atelier {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def open_link(self, name: str) -> tuple[str, str, str]:
        """`atelier notebook open NAME`: the link, the notebook's id and its token."""
        link = self.cli("notebook", "open", name).strip()
        match = (LINK if self.routing == "host" else SHARED_LINK).match(link)
        if not match:
            raise AssertionError(f"`notebook open` printed {link!r}, not http://ID.localhost:PORT/lab?token=…")
        return link, match.group(1), match.group(3)

    def volume(self, notebook_id: str) -> Path:
        return self.data_dir / "volumes" / notebook_id

    def notebook_api(self, notebook_id: str, token: str, path: str) -> object:
        """The test's own view of a notebook (JupyterLab's REST API with the token): an oracle
        for what the browser did, never used to drive it."""
        port = self.gateway.rsplit(":", 1)[1]
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={
            "Host": f"{notebook_id}.localhost:{port}", "Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        # Sandboxes outlive the server by design; a failed run must not leave any behind.
        subprocess.run(["pkill", "-KILL", "-f", str(self.data_dir)], check=False)
        subprocess.run(["umount", "-R", str(self.data_dir / "mounts")], check=False,
                       capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
