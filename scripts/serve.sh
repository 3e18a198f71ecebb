#!/usr/bin/env bash
# Builds and runs `atelier serve` on its embedded defaults: API on 127.0.0.1:8080, gateway on
# 127.0.0.1:8081, data in ./atelier-data (SQLite). Extra arguments go to `atelier serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null || { echo "serve.sh needs a Rust toolchain (cargo)" >&2; exit 2; }
# Notebooks run container images in bubblewrap sandboxes; the built-in JupyterLab image is
# made here from Debian packages (mmdebstrap) and PyPI.
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# Each sandbox has a network namespace of its own (slirp4netns NAT, nftables egress rules)
# and an EVS volume is an ext4 image.
command -v slirp4netns >/dev/null || need+=(slirp4netns)
command -v nft >/dev/null || need+=(nftables)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# Dynamic storage: object-store prefixes are mounted into notebooks with s3fs.
command -v s3fs >/dev/null || need+=(s3fs)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "serve.sh: install ${need[*]} first (notebooks run in bubblewrap sandboxes)" >&2
        exit 2
    fi
fi
cargo build --release -p atelier
# Once per host (about two minutes), so that the first notebook does not wait for it.
./target/release/atelier image pull
exec ./target/release/atelier serve "$@"
