#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright against `atelier serve` with the local runtime (real JupyterLab sandboxes).

  sign in with a token -> create and start a notebook -> the four steps advance live to
  RUNNING -> "Open JupyterLab" loads JupyterLab's UI -> stop -> STOPPED -> delete.

Screenshots go to <repo>/test-output/ (console-running.png, jupyterlab.png,
console-stopped.png): the CI artifact.

Environment: ATELIER_BIN (default <repo>/target/debug/atelier), CHROMIUM (default
/usr/bin/chromium), ATELIER_RUNTIME__IMAGE_DIR (a provisioned image dir, optional).
Exits 1 on failure.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from atelier_server import Atelier

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "test-output"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The first start may provision the image from PyPI.
START_TIMEOUT_MS = 600_000


def log(message: str) -> None:
    print(f"console e2e: {message}", flush=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    atelier = Atelier()
    api = atelier.api
    log(f"server at {api}")
    try:
        token = atelier.cli("token", "create", "--data-dir", str(atelier.data_dir)).strip()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{api}/console")
            expect(page).to_have_title("Atelier console")

            # A wrong token is refused with a message; the right one signs in.
            page.get_by_label("Access token").fill("not-a-token")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#signin-error")).to_contain_text("Sign-in failed")
            page.get_by_label("Access token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#who")).to_contain_text("admin")
            log("signed in")

            # Create and start; the steps advance live to RUNNING.
            page.get_by_label("Name").fill("browser-nb")
            page.get_by_role("button", name="Create and start").click()
            row = page.locator('#notebooks tr[data-name="browser-nb"]')
            expect(row).to_be_visible()
            expect(row.locator('[data-testid="status"]')).to_have_text("RUNNING", timeout=START_TIMEOUT_MS)
            progress = page.locator("#log").inner_text()
            for reason in ("StorageReady", "PulledImage", "NetworkReady", "NotebookHealthy", "Running"):
                if reason not in progress:
                    raise AssertionError(f"the live progress lacks {reason}:\n{progress}")
            order = [progress.find(r) for r in ("Running", "NotebookHealthy", "StorageReady")]
            if order != sorted(order):  # newest first
                raise AssertionError(f"progress out of order:\n{progress}")
            expect(row.locator(".lease")).to_contain_text("left")
            page.screenshot(path=str(OUT / "console-running.png"), full_page=True)
            log("RUNNING, steps seen live")

            # Open JupyterLab through the link: its UI loads.
            with context.expect_page() as opened:
                row.get_by_role("link", name="Open JupyterLab of browser-nb").click()
            lab = opened.value
            lab.wait_for_load_state()
            # Each notebook is its own origin: http://{id}.localhost:PORT/lab.
            if not re.match(r"^http://[0-9a-f-]{36}\.localhost:\d+/lab", lab.url):
                raise AssertionError(f"the Open link led to {lab.url}")
            expect(lab.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
            expect(lab.locator(".jp-Launcher, .jp-LauncherBody").first).to_be_visible(timeout=120_000)
            lab.screenshot(path=str(OUT / "jupyterlab.png"))
            lab.close()
            log("JupyterLab loaded")

            # Stop, then delete.
            row.get_by_role("button", name="Stop browser-nb").click()
            expect(row.locator('[data-testid="status"]')).to_have_text("STOPPED", timeout=60_000)
            page.screenshot(path=str(OUT / "console-stopped.png"), full_page=True)
            page.once("dialog", lambda dialog: dialog.accept())
            row.get_by_role("button", name="Delete browser-nb").click()
            expect(page.locator('#notebooks tr[data-name="browser-nb"]')).to_have_count(0, timeout=60_000)
            log("stopped and deleted")
            browser.close()
        log("passed")
        return 0
    except Exception as error:  # noqa: BLE001 - report any failure plainly
        log(f"FAILED: {error}")
        return 1
    finally:
        atelier.close()

if __name__ == "__main__":
    sys.exit(main())
