#!/usr/bin/env bash
# API benchmark: ShowNotebook and a 50-item ListNotebooks at concurrency 1 and 32, with
# NOTEBOOKS notebooks stored. Starts its own release-built `atelier serve` in a temp dir,
# seeds the store through the API, and drives it with wrk using AK/SK-signed requests (a
# signature is valid for 15 minutes, so one signed request can be replayed by wrk).
#
#   bench/api.sh                 full run: 10,000 notebooks, 10 s per measurement, 3 runs
#   bench/api.sh --smoke         CI smoke run: 200 notebooks, 1 s, 1 run (checks the suite works)
#
# The notebooks are not started for real (placeholder runtime): this measures the control plane.
# Environment: NOTEBOOKS, DURATION (s), RUNS, ATELIER_BIN (default target/release/atelier).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
notebooks="${NOTEBOOKS:-10000}"; duration="${DURATION:-10}"; runs="${RUNS:-3}"
if [ "${1:-}" = "--smoke" ]; then notebooks=200; duration=1; runs=1; fi
command -v wrk >/dev/null || { echo "bench needs wrk (apt-get install wrk)" >&2; exit 2; }
bin="${ATELIER_BIN:-$repo/target/release/atelier}"
[ -x "$bin" ] || (cd "$repo" && cargo build --release -p atelier)

tmp="$(mktemp -d)"; pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
env -u ATELIER_RUNTIME__IMAGE_DIR XDG_CONFIG_HOME="$tmp/xdg" ATELIER_RUNTIME__KIND=placeholder ATELIER_RUNTIME__STEP_DELAY=0s ATELIER_LOG=warn \
    "$bin" serve --data-dir "$tmp/data" \
    --api-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q '^api listening' "$tmp/out" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^api listening on //p' "$tmp/out")"
project="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["project_id"])' "$tmp/data/admin-credentials.json")"
sign() { "$bin" sign --data-dir "$tmp/data" --method "$1" "$2" ${3:+--body "$3"}; }

mapfile -t create_headers < <(sign POST "$base/v1/$project/notebooks" "$(cat "$here/create-body.json")")
python3 "$here/seed.py" "$base/v1/$project/notebooks" "$notebooks" "${create_headers[@]}"
# Let the orchestrator finish the creates so that reads are measured on a quiet server.
running_url="$base/v1/$project/notebooks?limit=1&status=RUNNING"
for _ in $(seq 600); do
    mapfile -t h < <(sign GET "$running_url")
    total="$(curl -s "${h[@]/#/-H}" "$running_url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')"
    [ "$total" -ge "$notebooks" ] && break
    sleep 0.5
done
list_url="$base/v1/$project/notebooks?limit=50&offset=0"
mapfile -t h < <(sign GET "$list_url")
id="$(curl -s "${h[@]/#/-H}" "$list_url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
show_url="$base/v1/$project/notebooks/$id"

# wrk prints "Requests/sec:" and, with --latency, "50%" and "99%" lines.
measure() { # name url connections
    local name="$1" url="$2" connections="$3" results=()
    mapfile -t h < <(sign GET "$url")
    for _ in $(seq "$runs"); do
        out="$(wrk -t "$(( connections > 1 ? 2 : 1 ))" -c "$connections" -d "${duration}s" --latency "${h[@]/#/-H}" "$url")"
        rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
        p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
        p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
        non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
        [ -z "$non2xx" ] || { echo "$name: $non2xx non-2xx responses" >&2; exit 1; }
        results+=("$rps $p50 $p99")
    done
    printf '%s\n' "${results[@]}" | python3 "$here/summarise.py" "$name c=$connections"
}
echo "# API benchmark: $notebooks notebooks stored, ${duration}s x $runs runs, $(nproc) cores, $(date -u +%F)"
printf '%-22s %-28s %-28s %-28s\n' "operation" "req/s min/median/max" "p50 min/median/max" "p99 min/median/max"
measure show "$show_url" 1
measure show "$show_url" 32
measure list50 "$list_url" 1
measure list50 "$list_url" 32
rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
echo "server RSS after the run: $((rss_kib / 1024)) MiB"
