#!/usr/bin/env bash
# Fuzz Atelier's API with schemathesis against its own OpenAPI document.
#
# Starts `atelier serve` on random ports in a temporary data dir, signs every request with the
# admin AK/SK (tests/e2e/schemathesis_hooks.py), pins the `project_id` path parameter to the real
# project, runs `schemathesis run http://127.0.0.1:PORT/openapi.json` and exits with its status.
#
# Usage (from anywhere):  tests/e2e/run_schemathesis.sh [extra schemathesis run options...]
# Environment:
#   ATELIER_BIN     server binary            (default: <repo>/target/debug/atelier)
#   PY_VENV         venv with schemathesis   (default: /work/py/venv)
#   ST_CHECKS       checks                   (default: not_a_server_error,response_schema_conformance)
#   ST_MAX_EXAMPLES examples per operation   (default: 30)
#   ST_SEED         hypothesis seed          (default: 20240102)
#   ST_PHASES       phases, e.g. examples,coverage,fuzzing (default: schemathesis' default, all)
#   ATELIER_E2E_KEEP=1  keep the temp dir (server log, config) for inspection
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${ATELIER_BIN:-$repo/target/debug/atelier}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
venv="${PY_VENV:-/work/py/venv}"
py="$venv/bin/python"
st="$venv/bin/schemathesis"
checks="${ST_CHECKS:-not_a_server_error,response_schema_conformance}"
max_examples="${ST_MAX_EXAMPLES:-30}"
seed="${ST_SEED:-20240102}"

[ -x "$bin" ] || { echo "atelier binary not found: $bin (set ATELIER_BIN)" >&2; exit 2; }
[ -x "$st" ] || { echo "schemathesis not found in $venv (set PY_VENV)" >&2; exit 2; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/atelier-schemathesis.XXXXXX")"
data="$tmp/data"
log="$tmp/server.log"
mkdir -p "$data"
server_pid=""

cleanup() {
    local rc=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    if [ "$rc" -ne 0 ] && [ -s "$log" ]; then
        echo "---- server log (tail) ----" >&2
        tail -n 40 "$log" >&2
    fi
    if [ -n "${ATELIER_E2E_KEEP:-}" ]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "starting: $bin serve --data-dir $data --api-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0"
"$bin" serve --data-dir "$data" --api-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 \
    </dev/null >"$log" 2>&1 &
server_pid=$!

url=""
for _ in $(seq 1 300); do
    url="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'api listening on https\?://[^[:space:]"'"'"',]*' \
           | head -n1 | sed 's/^api listening on //; s:/*$::')"
    [ -n "$url" ] && [ -s "$data/admin-credentials.json" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "atelier exited before listening" >&2; exit 2; }
    sleep 0.1
done
[ -n "$url" ] || { echo "no 'api listening on http://...' line within 30s" >&2; exit 2; }
[ -s "$data/admin-credentials.json" ] || { echo "$data/admin-credentials.json not written" >&2; exit 2; }
sleep 0.2  # let the credentials file be completely written

creds_env="$("$py" - "$data/admin-credentials.json" <<'EOF'
import json, shlex, sys
c = json.load(open(sys.argv[1]))
for var, key in (("ATELIER_AK", "access_key"), ("ATELIER_SK", "secret_key"), ("ATELIER_PROJECT_ID", "project_id")):
    print("%s=%s" % (var, shlex.quote(c[key])))
EOF
)" || { echo "cannot read admin-credentials.json" >&2; exit 2; }
eval "$creds_env"
export ATELIER_AK ATELIER_SK ATELIER_PROJECT_ID
export SCHEMATHESIS_HOOKS="$here/schemathesis_hooks.py"
echo "server $url (pid $server_pid), project $ATELIER_PROJECT_ID"

# A real notebook, so that operations on a notebook id reach their logic instead of 404.
create_url="$url/v1/$ATELIER_PROJECT_ID/notebooks"
create_body='{"name":"fuzz-target","flavor":"modelarts.vm.cpu.2u","image_id":"e1a07296-22a8-4f05-8bc8-e936c8e54090","volume":{"category":"EVS","ownership":"MANAGED","capacity":5}}'
mapfile -t sign_headers < <("$bin" sign --data-dir "$data" --method POST --body "$create_body" "$create_url")
notebook_id="$(curl -s "${sign_headers[@]/#/-H}" --data-binary "$create_body" "$create_url" \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])')" \
    || { echo "could not create the fuzz target notebook" >&2; exit 2; }
echo "fuzz target notebook $notebook_id"

# Pin `project_id` to the real project, and the tag operations' notebook to the real one.
# (schemathesis 4 has no CLI flag for fixed parameters; the config file does it.)
cat >"$tmp/schemathesis.toml" <<EOF
[parameters]
"path.project_id" = "\${ATELIER_PROJECT_ID}"
"path.resource_id" = "$notebook_id"
EOF

args=(run "$url/openapi.json"
      --checks "$checks"
      --max-examples "$max_examples"
      --seed "$seed"
      --workers 1
      --generation-database none
      --wait-for-schema 10)
[ -n "${ST_PHASES:-}" ] && args+=(--phases "$ST_PHASES")

# Run from the temp dir so nothing (e.g. .hypothesis/) lands in the repository.
cd "$tmp"
"$st" --config-file "$tmp/schemathesis.toml" "${args[@]}" "$@"
status=$?
echo "schemathesis exit status: $status"
exit "$status"
