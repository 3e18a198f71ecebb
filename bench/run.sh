#!/usr/bin/env bash
# The benchmark suite, one command: builds the release binaries, then runs every part against
# its own `atelier serve` with the embedded defaults and prints the tables.
#
#   bench/run.sh            full run (about 15 minutes on 2 cores; run it on a quiet machine)
#   bench/run.sh --smoke    CI: every part once, briefly (checks the suite works, not figures)
#
#   api.sh      ShowNotebook / 50-item list at c=1 and c=32 with 10,000 notebooks (wrk)
#   start.py    start one / ten at once (first, median, all ready), stop: real JupyterLab
#   gateway.py  gateway vs direct on the same Jupyter socket: HTTP c=1/c=32, WebSocket, 1+1
#   sandbox.py  idle memory of a running notebook (RSS, PSS), and of its network helper
#   oci_pull.py pull + unpack of a JupyterLab OCI image from a loopback registry, against
#               skopeo copy + umoci unpack of the same image
#   images.py   a custom image in a loopback registry: start from it cold (empty image dir,
#               so pulled and unpacked), cold from the cache (beside the built-in image) and
#               warm; save a notebook with installed packages as an image (create-image) against
#               buildah commit + skopeo copy of the same files
#   control.py  boot and idle RSS with 10,000 notebooks, lease-expiry lateness with 1,000
#               leases due at once, RSS with 100 running notebooks
# Environment: ATELIER_BIN, LOADGEN (prebuilt binaries), IMAGE_DIR (provisioned images).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
smoke=()
[ "${1:-}" = "--smoke" ] && smoke=(--smoke)
if [ -z "${ATELIER_BIN:-}" ] || [ -z "${LOADGEN:-}" ]; then
    (cd "$repo" && cargo build --release --locked -p atelier -p atelier-loadgen)
    export ATELIER_BIN="$repo/target/release/atelier" LOADGEN="$repo/target/release/atelier-loadgen"
fi
export IMAGE_DIR="${IMAGE_DIR:-$repo/target/atelier-images}"
echo "# Atelier benchmark suite: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%FT%TZ)"
"$here/api.sh" "${smoke[@]}"
echo
python3 "$here/start.py" "${smoke[@]}"
echo
python3 "$here/gateway.py" "${smoke[@]}"
echo
python3 "$here/sandbox.py" "${smoke[@]}"
echo
python3 "$here/control.py" "${smoke[@]}"
echo
python3 "$here/oci_pull.py" "${smoke[@]}"
echo
python3 "$here/images.py" "${smoke[@]}"
