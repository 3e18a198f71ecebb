#!/usr/bin/env bash
# Builds and runs `atelier serve` on its embedded defaults: API on 127.0.0.1:8080, gateway on
# 127.0.0.1:8081, data in ./atelier-data (SQLite). Extra arguments go to `atelier serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || { echo "serve.sh needs a Rust toolchain (cargo)" >&2; exit 2; }
cargo build --release -p atelier
exec ./target/release/atelier serve "$@"
