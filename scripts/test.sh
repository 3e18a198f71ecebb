#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, the Rust tests (unit, store
# conformance, integration against the real server on ephemeral ports), then the end-to-end
# tests with the official Huawei Cloud Python SDK and schemathesis against /openapi.json, and
# the benchmark suite in smoke mode. Installs the Python tools it needs into .venv-e2e.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

steps=0
# A failed run says what the machine looked like at the end (a full disk or memory fails
# tests far from the cause).
trap 'status=$?; if [ "$status" -ne 0 ]; then printf "\n==> failed (exit %s); disk and memory now:\n" "$status"; df -h / /tmp; free -m; fi' EXIT
step() { steps=$((steps + 1)); printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every server started below would write the user's ~/.config/atelier profile on first run
# (pointing at a port that is gone once the test ends); keep those in the checkout instead.
export XDG_CONFIG_HOME="$repo/target/tmp/xdg"

# Real notebooks need a JupyterLab image: provision it once for every test in this checkout.
export ATELIER_RUNTIME__IMAGE_DIR="$repo/target/tmp/atelier-images"
step "JupyterLab image (atelier image pull)"
cargo build --locked -p atelier
pull_dir="$(mktemp -d)"
target/debug/atelier image pull --data-dir "$pull_dir"
rm -rf "$pull_dir"

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --doc --locked
else
    cargo test --workspace --locked --no-fail-fast
fi

step "Python end-to-end tools (.venv-e2e)"
venv="$repo/.venv-e2e"
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/python" -c 'import huaweicloudsdkmodelarts, playwright' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
fi
cargo build --locked -p atelier
export ATELIER_BIN="$repo/target/debug/atelier" PY_VENV="$venv"

step "Huawei Cloud Python SDK end to end"
"$venv/bin/python" tests/e2e/sdk_e2e.py

step "Python SDK with a region and no project id: project discovery, features, UNSIGNED-PAYLOAD"
# It runs the placeholder runtime (the API contract only), which has no image dir.
env -u ATELIER_RUNTIME__IMAGE_DIR "$venv/bin/python" tests/e2e/discovery_e2e.py

step "container images with the Python SDK: save a notebook, run the image, register, delete"
# Pushes to Debian's docker-registry on a loopback port; skopeo copies within it.
"$venv/bin/python" tests/e2e/images_e2e.py

step "dynamic storage with the Python SDK against a real Garage (s3fs mounts)"
"$venv/bin/python" tests/e2e/storage_e2e.py

step "web console in headless Chromium (Playwright)"
# Screenshots land in test-output/ (the CI artifact).
"$venv/bin/python" tests/e2e/console_e2e.py

step "JupyterLab in headless Chromium (Playwright): a person's session, a hostile neighbour"
"$venv/bin/python" tests/e2e/jupyterlab_e2e.py

step "schemathesis against /openapi.json (signed requests)"
# The fuzzer creates notebooks by the hundred: it checks the API, so nothing needs to run.
env -u ATELIER_RUNTIME__IMAGE_DIR ATELIER_RUNTIME__KIND=placeholder tests/e2e/run_schemathesis.sh

step "benchmark suite, smoke mode"
if command -v wrk >/dev/null; then
    cargo build --locked -p atelier -p atelier-loadgen
    ATELIER_BIN="$repo/target/debug/atelier" LOADGEN="$repo/target/debug/atelier-loadgen" \
        IMAGE_DIR="$ATELIER_RUNTIME__IMAGE_DIR" bench/run.sh --smoke
else
    echo "wrk is not installed: the benchmark smoke run needs it (apt-get install wrk)" >&2
    exit 1
fi

# Every step above stops the script on failure: reaching here means all of them passed.
echo
echo "steps: $steps passed, 0 failed"
