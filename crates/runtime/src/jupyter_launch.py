"""Starts JupyterLab for one notebook, without what a sandboxed single-notebook server
does not need. Bound read-only at /run/atelier/launch.py by the local runtime; run with the
image's python, followed by ordinary jupyter-lab options.

The runtime binds JupyterLab's Unix socket itself, where the sandbox cannot reach it, and
passes the listening socket as descriptor ATELIER_LISTEN_FD. The notebook's settings (base
path, allowed origin, token) come as one JSON line over the connected socket ATELIER_CLAIM_FD,
never on a command line the host's `ps` shows. A warm sandbox (ATELIER_WARM=1) first imports
everything, says "warm" and then blocks on that line until a start claims it. With
ATELIER_DEFER=1 (a notebook with a pre_start hook, which runs meanwhile) it reads that line
before it imports anything of JupyterLab.

Measured on the CI machine kind: stock `jupyter lab` answers /api/status after ~1.76 s
(82 MiB); this launcher after ~0.39 s (59 MiB), with the UI, kernels and terminals intact.
"""
import json
import os
import socket
import sys

_CLAIM = os.environ.pop("ATELIER_CLAIM_FD", "")
_LISTEN = os.environ.pop("ATELIER_LISTEN_FD", "")
# Set in a warm sandbox: import everything now, then wait for the notebook to serve.
_WARM = os.environ.pop("ATELIER_WARM", "") == "1"
# Set when a pre_start hook runs first: load nothing of JupyterLab before the settings come
# (the hook may install or configure what would be loaded).
_DEFER = os.environ.pop("ATELIER_DEFER", "") == "1"


def _read_claim():
    """The notebook's settings: {"args": [...]} on one line (a warm sandbox first says it is
    ready, then blocks here until a start claims it)."""
    with socket.socket(fileno=int(_CLAIM)) as channel:
        if _WARM:
            channel.sendall(b"warm\n")
        line = channel.makefile("rb").readline()
    if not line:
        sys.exit("the runtime closed the claim channel")
    return json.loads(line)["args"]


_CLAIMED = _read_claim() if _CLAIM and _DEFER and not _WARM else None

# jsonschema imports optional "format" checkers at import time (jupyter_server ->
# jupyter_events -> jsonschema); rfc3987_syntax alone builds 39 lark grammars (~1 s). Marked
# missing, jupyter_events just skips those format assertions on its own event schemas.
for _name in ("rfc3987_syntax", "rfc3987", "isoduration", "fqdn", "webcolors",
              "uri_template", "rfc3339_validator", "rfc3986_validator"):
    sys.modules[_name] = None

# With node on PATH, importing jupyterlab.labapp runs `node yarn.js config --json` (~0.3 s)
# to find the npm registry for extension builds, which a notebook never does.
import jupyterlab.commands as _commands  # noqa: E402

_commands._yarn_config = lambda logger: {"yarn config": {}, "npm config": {}}

DEFAULT_ARGS = [
    "--no-browser",
    "--ServerApp.sock_mode=0600",
    "--ServerApp.password=",
    "--ServerApp.allow_remote_access=True",
    "--ServerApp.ip=127.0.0.1",
    "--ServerApp.jpserver_extensions=jupyter_lsp=False",
    "--ServerApp.jpserver_extensions=notebook_shim=False",
    "--LabApp.extension_manager=readonly",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--KernelManager.transport=ipc",
]
from jupyterlab.labapp import main  # noqa: E402

if _LISTEN:
    import jupyter_server.serverapp as _serverapp

    def _inherited(path, mode=0o600):
        listener = socket.socket(fileno=int(_LISTEN))
        listener.setblocking(False)
        return listener

    # The socket is already bound and listening (by the runtime, outside the sandbox).
    _serverapp.unix_socket_in_use = lambda path: False
    _serverapp.bind_unix_socket = _inherited

if _CLAIM and _WARM:
    # What ServerApp.initialize imports, so that a claimed sandbox only initialises.
    for _module in ("jupyter_server.serverapp", "jupyter_server.services.kernels.kernelmanager",
                    "jupyter_server.services.contents.largefilemanager", "jupyter_server_terminals",
                    "jupyterlab_server", "jupyter_server.gateway.managers", "terminado",
                    "jupyter_client.ioloop", "jupyter_server.services.sessions.sessionmanager"):
        try:
            __import__(_module)
        except ImportError:
            pass

if _CLAIM:
    sys.argv.extend(_CLAIMED if _CLAIMED is not None else _read_claim())
    if _WARM:
        # The claim mounted the notebook's volume over the work dir this process already sat
        # in: step onto the mount, or kernels (which inherit this directory) would write
        # beside the volume, into the slot's empty mount point, where nothing is kept.
        os.chdir(os.getcwd())

# traitlets refuses a scalar option given twice: the caller's value wins.
_given = {a.split("=", 1)[0] for a in sys.argv[1:]}
sys.argv[1:1] = [a for a in DEFAULT_ARGS
                 if a.split("=", 1)[0] not in _given or "jpserver_extensions" in a]

sys.exit(main())
