#!/usr/bin/env python3
"""JupyterLab as a person uses it: headless Chromium (Debian's `chromium`) driven by Playwright
against `atelier serve` with the local runtime (real JupyterLab sandboxes behind the gateway).

The instances are created, stopped and started with the CLI, and every link comes from
`atelier notebook open`. Once a page is open, every action is a click or a key press:

  open the link -> create a notebook from the launcher -> run a cell, see its output -> save it
  (JupyterLab asks for a name) -> open a terminal, run a command (checked in the work volume on the host) ->
  upload a file through the file browser (checked on the host) -> download it back -> rename
  it in the file browser -> reload,
  the notebook and its output are restored -> the debugger shows a variable -> a console runs
  code -> a second tab on another notebook runs a cell
  while the first runs one -> stop and start the instance, open the new link, the files are
  there and a kernel runs.

Then the cross-notebook attack: the owner of notebook A serves a page from A (a "lab
extension" file at /lab/extensions/x/static/evil.html, and a file at /files/evil.html) and
lures the victim, whose browser has notebook B open, to it. The page must not read B's files,
start B's kernels, write to B, open B's WebSockets or read B's frames. A control run of the same
script against A's own origin shows the script does work where it is allowed.

Screenshots go to <repo>/test-output/ (lab-*.png): the CI artifact.

Environment: ATELIER_BIN (default <repo>/target/debug/atelier), CHROMIUM (default
/usr/bin/chromium), ATELIER_RUNTIME__IMAGE_DIR (a provisioned image dir, optional).
Exits 1 on failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from atelier_server import Atelier

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "test-output"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
UI_TIMEOUT_MS = 120_000

EVIL_HTML = """<!doctype html>
<html><head><title>running</title></head><body><h1>Win a prize</h1><script>
const params = new URLSearchParams(location.hash.slice(1));
const victim = params.get('b'), kernel = params.get('k');
const results = {};
async function attempt(name, f) {
  try { results[name] = String(await f()); } catch (e) { results[name] = 'error: ' + e; }
}
const wait = (ms, value) => new Promise(r => setTimeout(() => r(value), ms));
(async () => {
  // Control: the same reads against the page's own origin.
  await attempt('own_read', async () => {
    const r = await fetch('/api/contents/attacker.txt?content=1', {credentials: 'include'});
    return r.status + ' ' + (await r.text()).slice(0, 300);
  });
  await attempt('read', async () => {
    const r = await fetch(victim + '/api/contents/secret.txt?content=1', {credentials: 'include'});
    return 'read ' + r.status + ' ' + (await r.text());
  });
  await attempt('list', async () => {
    const r = await fetch(victim + '/api/contents', {credentials: 'include'});
    return 'read ' + r.status + ' ' + (await r.text());
  });
  // Simple requests need no preflight: they reach the server whatever CORS says.
  await attempt('kernel_post', async () => {
    const r = await fetch(victim + '/api/kernels', {method: 'POST', credentials: 'include',
      mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{"name": "python3"}'});
    return 'sent ' + r.type;
  });
  await attempt('file_post', async () => {
    const r = await fetch(victim + '/api/contents', {method: 'POST', credentials: 'include',
      mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{"type": "file"}'});
    return 'sent ' + r.type;
  });
  await attempt('websocket', () => new Promise(resolve => {
    const ws = new WebSocket(victim.replace('http', 'ws') + '/api/kernels/' + kernel + '/channels');
    ws.onopen = () => { resolve('open'); ws.close(); };
    ws.onerror = () => resolve('refused');
    setTimeout(() => resolve('timeout'), 8000);
  }));
  await attempt('frame', () => new Promise(resolve => {
    const frame = document.createElement('iframe');
    frame.src = victim + '/lab';
    frame.onload = () => {
      try { resolve('read ' + frame.contentWindow.document.body.innerText.slice(0, 200)); }
      catch (e) { resolve('blocked: ' + e.name); }
    };
    document.body.appendChild(frame);
    setTimeout(() => resolve('timeout'), 10000);
  }));
  await attempt('window', async () => {
    const opened = window.open(victim + '/lab', 'victim');
    await wait(4000);
    try { return 'read ' + opened.document.body.innerText.slice(0, 200); }
    catch (e) { return 'blocked: ' + e.name; }
  });
  window.results = results;
  document.title = 'done';
})();
</script></body></html>
"""


def log(message: str) -> None:
    print(f"jupyterlab e2e: {message}", flush=True)


def wait_for_file(path: Path, expected: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == expected:
            return
        time.sleep(0.2)
    found = path.read_text() if path.exists() else "nothing"
    raise AssertionError(f"{path}: expected {expected!r}, found {found!r}")


def lab_ready(page: Page) -> None:
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator(".jp-DirListing-content")).to_be_visible(timeout=UI_TIMEOUT_MS)


def menu(page: Page, *path: str) -> None:
    """Clicks through the menu bar: menu(page, "File", "New", "Terminal")."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{path[0]}$")).click()
    for label in path[1:-1]:
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{label}$")).hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{path[-1]}$")).click()


def file_item(page: Page, name: str):
    return page.locator(".jp-DirListing-item", has=page.locator(
        ".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$")))


def kernel_idle(page: Page) -> None:
    indicator = page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")
    expect(indicator).to_have_attribute("data-status", "idle", timeout=UI_TIMEOUT_MS)


def run_in_new_cell(page: Page, code: str, paste: bool = False) -> None:
    """Types `code` into the last cell of the visible notebook and runs it (Shift+Enter).

    JupyterLab shows a new kernel idle a moment before it takes executions, and drops a run in
    that moment (the prompt stays `[ ]`); like a person, the test then runs the cell again."""
    cells = page.locator(".jp-NotebookPanel:visible .jp-CodeCell")
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    if paste:
        page.keyboard.insert_text(code)
    else:
        page.keyboard.type(code)
    for _ in range(10):
        page.keyboard.press("Shift+Enter")
        try:
            expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=3000)
            return
        except AssertionError:
            cell.locator(".cm-content").click()
    raise AssertionError(f"the cell never ran: {code[:60]}")


def toggle_debugger(bug, pressed: str) -> None:
    """Clicks the notebook's debugger button until it shows `pressed`.

    While the debugger starts or stops a session with the kernel, JupyterLab ignores clicks
    on the button (seen in CI: a click right after the variables appeared changed nothing), so
    like a person the test looks at the button and clicks again; it never clicks while the
    button already shows the wanted state."""
    for _ in range(8):
        if bug.get_attribute("aria-pressed") == pressed:
            return
        bug.click()
        try:
            expect(bug).to_have_attribute("aria-pressed", pressed, timeout=5000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the debugger button never showed aria-pressed={pressed}")


def new_notebook_from_launcher(page: Page) -> None:
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    expect(page.locator(".jp-NotebookPanel:visible")).to_be_visible(timeout=UI_TIMEOUT_MS)
    kernel_idle(page)


def output_of_visible_notebook(page: Page):
    return page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output")


def person_uses_jupyterlab(atelier: Atelier, browser) -> dict:
    """Everything a person does in JupyterLab; returns what the attack part needs."""
    atelier.cli("notebook", "create", "lab-a", "--wait")
    link_a, id_a, token_a = atelier.open_link("lab-a")
    log(f"lab-a at {link_a.split('?')[0]}")
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(link_a)
    lab_ready(page)
    if not page.url.startswith(link_a.split("?")[0]):
        raise AssertionError(f"the link led to {page.url}")

    # A notebook from the launcher; a cell runs and shows its output.
    new_notebook_from_launcher(page)
    run_in_new_cell(page, "print(6 * 7)")
    expect(output_of_visible_notebook(page).first).to_contain_text("42", timeout=60_000)
    # The first save asks for a name: the notebook is renamed as it is saved.
    page.keyboard.press("Control+s")
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Rename file", timeout=30_000)
    page.keyboard.type("analysis")  # replaces the selected "Untitled"
    dialog.get_by_role("button", name="Rename and Save").click()
    expect(file_item(page, "analysis.ipynb")).to_be_visible(timeout=30_000)
    saved = atelier.volume(id_a) / "analysis.ipynb"
    deadline = time.monotonic() + 30
    while not saved.exists() or '"42' not in saved.read_text():
        if time.monotonic() > deadline:
            raise AssertionError("the saved notebook is not in the work volume with its output")
        time.sleep(0.2)
    assert not (atelier.volume(id_a) / "Untitled.ipynb").exists(), "the rename left Untitled.ipynb"
    log("notebook created from the launcher, cell ran, saved as analysis.ipynb")

    # A terminal: the command's effect shows in the work volume on the host.
    menu(page, "File", "New", "Terminal")
    terminal = page.locator(".jp-Terminal:visible .xterm")
    expect(terminal).to_be_visible(timeout=UI_TIMEOUT_MS)
    terminal.click()
    time.sleep(1)  # the shell's prompt
    page.keyboard.type('echo "from the terminal in $(pwd) as $(id -un)" > term.txt')
    page.keyboard.press("Enter")
    wait_for_file(atelier.volume(id_a) / "term.txt",
                  "from the terminal in /home/ma-user/work as ma-user\n")
    log("terminal command ran in the work dir")

    # Upload through the file browser's button and file chooser.
    upload = atelier.work / "upload-me.csv"
    upload.write_text("a,b\n1,2\n")
    with page.expect_file_chooser() as chooser:
        page.locator('.jp-FileBrowser-toolbar [title="Upload Files"]').click()
    chooser.value.set_files(str(upload))
    expect(file_item(page, "upload-me.csv")).to_be_visible(timeout=30_000)
    wait_for_file(atelier.volume(id_a) / "upload-me.csv", "a,b\n1,2\n")
    log("uploaded through the file browser")

    # Download it back through the context menu.
    file_item(page, "upload-me.csv").click(button="right")
    with page.expect_download() as download:
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Download$")).click()
    saved = atelier.work / "downloaded.csv"
    download.value.save_as(str(saved))
    assert saved.read_text() == "a,b\n1,2\n", saved.read_text()
    log("downloaded through the file browser")

    # Rename a file in the file browser (context menu, type the new name).
    file_item(page, "upload-me.csv").click(button="right")
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Rename$")).click()
    expect(page.locator(".jp-DirListing-editor")).to_be_visible()
    page.keyboard.press("Control+a")
    page.keyboard.type("data.csv")
    page.keyboard.press("Enter")
    expect(file_item(page, "data.csv")).to_be_visible(timeout=30_000)
    wait_for_file(atelier.volume(id_a) / "data.csv", "a,b\n1,2\n")
    assert not (atelier.volume(id_a) / "upload-me.csv").exists()
    log("renamed in the file browser")

    # Reload: the workspace brings the notebook back with its output.
    page.locator(".lm-TabBar-tab", has_text="analysis.ipynb").click()
    time.sleep(2)  # the workspace state is saved shortly after a layout change
    page.reload()
    lab_ready(page)
    page.locator(".lm-TabBar-tab", has_text="analysis.ipynb").click()
    expect(output_of_visible_notebook(page).first).to_contain_text("42", timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(OUT / "lab-reloaded.png"))
    log("after a reload the notebook and its output are back")

    # The debugger (its messages travel over the kernel's WebSocket) shows the variables.
    bug = page.locator(".jp-NotebookPanel:visible .jp-DebuggerBugButton")
    toggle_debugger(bug, "true")
    run_in_new_cell(page, "answer = 41 + 1")
    expect(page.locator(".jp-DebuggerVariables")).to_contain_text("answer", timeout=30_000)
    toggle_debugger(bug, "false")
    log("the debugger shows the kernel's variables")

    # A console on a kernel of its own.
    menu(page, "File", "New", "Console")
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Select Kernel", timeout=30_000)
    dialog.get_by_role("button", name="Select").click()
    console = page.locator(".jp-CodeConsole:visible")
    prompt = console.locator(".jp-CodeConsole-promptCell .cm-content")
    expect(prompt).to_be_visible(timeout=UI_TIMEOUT_MS)
    prompt.click()
    page.keyboard.type("print('console', 7 * 6)")
    for _ in range(10):
        page.keyboard.press("Shift+Enter")
        try:
            expect(console.locator(".jp-CodeConsole-content")).to_contain_text("console 42", timeout=3000)
            break
        except AssertionError:
            prompt.click()  # a run dropped while the new kernel settled: run it again
            if "console" not in prompt.inner_text():
                page.keyboard.type("print('console', 7 * 6)")
    expect(console.locator(".jp-CodeConsole-content")).to_contain_text("console 42")
    page.screenshot(path=str(OUT / "lab-console.png"))
    page.locator(".lm-TabBar-tab", has_text="analysis.ipynb").click()
    log("a console ran code")

    # A second notebook in a second tab, both running cells at the same time.
    atelier.cli("notebook", "create", "lab-b", "--wait")
    link_b, id_b, token_b = atelier.open_link("lab-b")
    if id_b == id_a:
        raise AssertionError("two notebooks, one id")
    second = context.new_page()
    second.goto(link_b)
    lab_ready(second)
    new_notebook_from_launcher(second)
    kernel_idle(page)
    run_in_new_cell(page, "import time; time.sleep(3); print('tab', 'one')")
    run_in_new_cell(second, "print('tab', 'two')")
    expect(output_of_visible_notebook(second).first).to_contain_text("tab two", timeout=60_000)
    expect(output_of_visible_notebook(page).last).to_contain_text("tab one", timeout=60_000)
    second.screenshot(path=str(OUT / "lab-second-tab.png"))
    log("two notebooks in two tabs at once")

    # Stop and start A; the new link opens it with the files there and a kernel running.
    atelier.cli("notebook", "stop", "lab-a", "--wait")
    atelier.cli("notebook", "start", "lab-a", "--wait")
    link_a2, id_again, token_a2 = atelier.open_link("lab-a")
    assert id_again == id_a
    page.goto(link_a2)
    lab_ready(page)
    # The restored console lost its kernel with the stop: JupyterLab asks for one.
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        expect(dialog).to_be_visible(timeout=15_000)
        dialog.get_by_role("button", name="Select").click()
    except AssertionError:
        pass
    for name in ("analysis.ipynb", "data.csv", "term.txt"):
        expect(file_item(page, name)).to_be_visible(timeout=30_000)
    if not page.locator(".jp-NotebookPanel:visible").is_visible():
        file_item(page, "analysis.ipynb").dblclick()
    else:
        page.locator(".lm-TabBar-tab", has_text="analysis.ipynb").click()
    expect(page.locator(".jp-NotebookPanel:visible")).to_be_visible(timeout=UI_TIMEOUT_MS)
    kernel_idle(page)
    run_in_new_cell(page, "print(open('term.txt').read().split()[0], 40 + 2)")
    expect(output_of_visible_notebook(page).last).to_contain_text("from 42", timeout=60_000)
    page.screenshot(path=str(OUT / "lab-after-restart.png"))
    log("stopped, started, new link: files there, kernel runs")
    return {"context": context, "attacker": page, "victim": second, "id_a": id_a,
            "token_a": token_a2, "id_b": id_b, "token_b": token_b, "link_b": link_b}


def plant(attacker: Page) -> None:
    """From a cell of the attacker's notebook: the page as a lab extension's static file and as
    a file in the work dir, and a file of the attacker's own for the control read."""
    encoded = base64.b64encode(EVIL_HTML.encode()).decode()
    code = ("import base64, pathlib; home = pathlib.Path.home(); "
            "d = home / '.local/share/jupyter/labextensions/x/static'; d.mkdir(parents=True, exist_ok=True); "
            f"page = base64.b64decode('{encoded}'); (d / 'evil.html').write_bytes(page); "
            "(home / 'evil.html').write_bytes(page); "
            "(home / 'attacker.txt').write_text('attacker-own-file'); print('planted')")
    run_in_new_cell(attacker, code, paste=True)
    expect(output_of_visible_notebook(attacker).last).to_contain_text("planted", timeout=60_000)


def lure(context, url: str, screenshot: str, keep: tuple) -> dict:
    """The victim opens `url` in a new tab of their browser; returns what its script got."""
    page = context.new_page()
    page.goto(url)
    expect(page).to_have_title("done", timeout=60_000)
    results = page.evaluate("window.results")
    page.screenshot(path=str(OUT / screenshot))
    for other in context.pages:
        if other not in keep:
            other.close()
    return results


def attack(atelier: Atelier, state: dict) -> None:
    """A's owner serves a page from A; the victim, with B open, visits it."""
    context, attacker, victim = state["context"], state["attacker"], state["victim"]
    id_a, token_a, id_b, token_b = state["id_a"], state["token_a"], state["id_b"], state["token_b"]
    port = atelier.gateway.rsplit(":", 1)[1]
    origin_a, origin_b = f"http://{id_a}.localhost:{port}", f"http://{id_b}.localhost:{port}"

    # The victim's secret, written in B's own terminal-free way: a cell in B's tab.
    run_in_new_cell(victim, "open('secret.txt', 'w').write('victim-secret-' + 'b' * 3)")
    wait_for_file(atelier.volume(id_b) / "secret.txt", "victim-secret-bbb")
    kernels_b = atelier.notebook_api(id_b, token_b, "/api/kernels")
    kernel_b = kernels_b[0]["id"]

    # The attacker plants the page from a cell of their own notebook.
    plant(attacker)

    fragment = f"#b={origin_b}&k={kernel_b}"
    for label, path in (("lab extension", "/lab/extensions/x/static/evil.html"),
                        ("/files/", "/files/evil.html")):
        # The link the attacker sends carries A's own token (the victim has none for A).
        results = lure(context, f"{origin_a}{path}?token={token_a}{fragment}",
                       f"lab-attack-{'ext' if 'ext' in path else 'files'}.png", (attacker, victim))
        log(f"attack from A's {label} page: {json.dumps(results)[:600]}")
        if label == "lab extension" and "attacker-own-file" not in results["own_read"]:
            raise AssertionError(f"control: the page could not read its own origin: {results['own_read']}")
        for name, outcome in results.items():
            if "victim-secret" in outcome:
                raise AssertionError(f"{label}: {name} read B's secret: {outcome}")
        for name in ("read", "list", "frame", "window"):
            if results[name].startswith("read "):
                raise AssertionError(f"{label}: {name} read B: {results[name]}")
        if results["websocket"] == "open":
            raise AssertionError(f"{label}: a WebSocket to B's kernel opened")
        after = atelier.notebook_api(id_b, token_b, "/api/kernels")
        if len(after) != len(kernels_b):
            raise AssertionError(f"{label}: B has {len(after)} kernels, had {len(kernels_b)}")
        written = sorted(p.name for p in atelier.volume(id_b).iterdir() if p.name.startswith("untitled"))
        if written:
            raise AssertionError(f"{label}: the page wrote to B: {written}")
    # B still works for its owner.
    victim.bring_to_front()
    run_in_new_cell(victim, "print('still', 'mine')")
    expect(output_of_visible_notebook(victim).last).to_contain_text("still mine", timeout=60_000)
    log("A's pages could not read, write, start kernels in, connect to or frame B")


def the_shared_origin_is_unsafe(browser) -> None:
    """The same attack against `gateway_routing = "path"` (every notebook under /{id}/ of one
    origin) succeeds: this is what the per-notebook origin prevents, and proof that the attack
    above would notice it."""
    atelier = Atelier(routing="path")
    try:
        atelier.cli("notebook", "create", "shared-a", "--wait")
        atelier.cli("notebook", "create", "shared-b", "--wait")
        link_a, id_a, token_a = atelier.open_link("shared-a")
        link_b, id_b, _ = atelier.open_link("shared-b")
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        victim = context.new_page()
        victim.goto(link_b)
        lab_ready(victim)
        new_notebook_from_launcher(victim)
        run_in_new_cell(victim, "open('secret.txt', 'w').write('victim-secret-' + 'b' * 3)")
        attacker = context.new_page()
        attacker.goto(link_a)
        lab_ready(attacker)
        new_notebook_from_launcher(attacker)
        plant(attacker)
        shared = atelier.gateway
        results = lure(context, f"{shared}/{id_a}/lab/extensions/x/static/evil.html?token={token_a}"
                                f"#b={shared}/{id_b}&k=none", "lab-attack-shared-origin.png",
                       (attacker, victim))
        log(f"the same attack on the shared origin: {json.dumps(results)[:300]}")
        if "victim-secret" not in results["read"] or not results["frame"].startswith("read "):
            raise AssertionError(f"on the shared origin the attack should succeed: {results}")
        context.close()
        log("on the shared origin (gateway_routing = \"path\") the same page reads B: unsafe, as documented")
    finally:
        atelier.close()


def main() -> int:
    OUT.mkdir(exist_ok=True)
    atelier = Atelier()
    log(f"gateway at {atelier.gateway}")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                state = person_uses_jupyterlab(atelier, browser)
                attack(atelier, state)
                the_shared_origin_is_unsafe(browser)
            except Exception:
                # What each page showed when it failed: the CI artifact says why.
                for n, context in enumerate(browser.contexts):
                    for m, page in enumerate(context.pages):
                        page.screenshot(path=str(OUT / f"lab-failed-{n}-{m}.png"))
                raise
            browser.close()
        log("passed")
        return 0
    except Exception as error:  # noqa: BLE001 - report any failure plainly
        log(f"FAILED: {str(error)[:3000]}")
        return 1
    finally:
        atelier.close()


if __name__ == "__main__":
    sys.exit(main())
