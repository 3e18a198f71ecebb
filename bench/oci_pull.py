#!/usr/bin/env python3
"""Pull and unpack throughput of the OCI image store against `skopeo copy` + `umoci unpack`.

An OCI image is made from the built-in JupyterLab environment (/opt/jupyterlab of the built-in
image's unpacked top layer in IMAGE_DIR/oci, or the older IMAGE_DIR/jupyterlab; split into
LAYERS layers of about equal size) with umoci, pushed with skopeo to Debian's
`docker-registry` on loopback (filesystem storage in a temp dir), then pulled RUNS times into
an empty store by each side:

  atelier   crates/oci's `pull` example: resolve, download the verified blobs, unpack each
            layer once (the store the runtime mounts layers from)
  reference `skopeo copy docker://… oci:DIR` then `umoci unpack` of the same image

Both ends on one machine, loopback, cold store each run (the page cache is warm for both).
usage: bench/oci_pull.py [--smoke]      env: IMAGE_DIR, PULL (the example binary), RUNS, LAYERS
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--smoke" in sys.argv
IMAGE_DIR = os.environ.get("IMAGE_DIR") or os.path.join(REPO, "target/atelier-images")
RUNS = int(os.environ.get("RUNS", "1" if SMOKE else "5"))
LAYERS = int(os.environ.get("LAYERS", "4"))
TOOLS = ["/usr/bin/docker-registry", "skopeo", "umoci"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def pull_binary():
    if os.environ.get("PULL"):
        return os.environ["PULL"]
    profile = [] if SMOKE else ["--release"]
    run("cargo", "build", "--locked", "-q", *profile, "--example", "pull", "-p", "atelier-oci", cwd=REPO)
    return os.path.join(REPO, "target", "debug" if SMOKE else "release", "examples", "pull")


def split(source, parts):
    """Top-level entries of `source` (and of its largest subtrees) in `parts` groups of about
    equal size, so that the image has several layers as real images do."""
    def size(path):
        if os.path.islink(path) or not os.path.isdir(path):
            return os.lstat(path).st_size
        return sum(size(os.path.join(path, name)) for name in os.listdir(path))

    entries = []
    for name in os.listdir(source):
        path = os.path.join(source, name)
        if os.path.isdir(path) and not os.path.islink(path) and name == "lib":
            # lib/python3.x/site-packages holds most of the bytes: spread its packages.
            for sub, _, files in os.walk(path):
                if os.path.basename(sub) == "site-packages":
                    entries += [os.path.join(sub, n) for n in os.listdir(sub)]
                    entries += [os.path.join(os.path.dirname(sub), n) for n in os.listdir(os.path.dirname(sub)) if n != "site-packages"]
                    break
        else:
            entries.append(path)
    if SMOKE:
        # The smoke run checks the comparison works, on a few MiB.
        kept, budget = [], 16 * 2**20
        for path in sorted(entries, key=size):
            budget -= size(path)
            if budget < 0:
                break
            kept.append(path)
        entries = kept
    groups = [[] for _ in range(parts)]
    totals = [0] * parts
    for path in sorted(entries, key=size, reverse=True):
        smallest = totals.index(min(totals))
        groups[smallest].append(path)
        totals[smallest] += size(path)
    return groups, sum(totals)


def build_image(work, source):
    """An OCI layout at work/layout holding `source` as /opt/jupyterlab in LAYERS layers."""
    layout = os.path.join(work, "layout")
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:bench")
    groups, total = split(source, LAYERS)
    for group in groups:
        bundle = os.path.join(work, "bundle")
        run("umoci", "unpack", "--image", f"{layout}:bench", bundle)
        for path in group:
            target = os.path.join(bundle, "rootfs", "opt/jupyterlab", os.path.relpath(path, source))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.copytree(path, target, symlinks=True)
            else:
                shutil.copy2(path, target, follow_symlinks=False)
        run("umoci", "repack", "--image", f"{layout}:bench", bundle)
        shutil.rmtree(bundle)
    return layout, total


def builtin_venv():
    """/opt/jupyterlab of the newest built-in image in the image store, unpacked."""
    store = os.path.join(IMAGE_DIR, "oci")
    found = []
    for name in os.listdir(os.path.join(store, "images")) if os.path.isdir(store) else []:
        path = os.path.join(store, "images", name)
        with open(path) as f:
            image = json.load(f)
        if image.get("reference", "").startswith("atelier.local/builtin/jupyterlab:"):
            top = image["layers"][-1]["digest"].replace(":", "-")
            found.append((os.path.getmtime(path), os.path.join(store, "layers", top, "opt/jupyterlab")))
    if found:
        return max(found)[1]
    return os.path.join(IMAGE_DIR, "jupyterlab")


def main():
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    source = os.environ.get("SOURCE") or builtin_venv()
    if missing or not os.path.isdir(source):
        print(f"oci_pull: skipped ({', '.join(missing) or source + ' is missing'}; apt-get install docker-registry skopeo umoci)")
        return
    pull = pull_binary()
    work = tempfile.mkdtemp(prefix="atelier-oci-bench-")
    registry = None
    try:
        port = free_port()
        config = os.path.join(work, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        registry = subprocess.Popen(["/usr/bin/docker-registry", "serve", config],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        layout, total = build_image(work, source)
        reference = f"127.0.0.1:{port}/bench/jupyterlab:1"
        for _ in range(100):
            try:
                run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench", f"docker://{reference}")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        else:
            raise SystemExit("oci_pull: the registry never took the image")

        ours, theirs, compressed = [], [], 0
        for _ in range(RUNS):
            store = os.path.join(work, "store")
            began = time.monotonic()
            out = run(pull, reference, store).stdout
            ours.append(time.monotonic() - began)
            report = json.loads(out.strip().splitlines()[-1])
            compressed = report["bytes"]
            assert report["layers"] == LAYERS, report
            shutil.rmtree(store)

            copy, bundle = os.path.join(work, "copy"), os.path.join(work, "unpacked")
            began = time.monotonic()
            run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}", f"oci:{copy}:bench")
            run("umoci", "unpack", "--image", f"{copy}:bench", bundle)
            theirs.append(time.monotonic() - began)
            shutil.rmtree(copy)
            shutil.rmtree(bundle)

        mib = total / 2**20
        print(f"# OCI pull + unpack: {mib:.0f} MiB unpacked ({compressed / 2**20:.0f} MiB compressed) in {LAYERS} layers, "
              f"{RUNS} cold runs, loopback docker-registry")
        print(f"{'':<36} {'min/median/max s':<22} {'MiB/s (median, unpacked)':<24}")
        for name, times in (("atelier-oci (resolve, pull, unpack)", ours), ("skopeo copy + umoci unpack", theirs)):
            line = "/".join(f"{t:.2f}" for t in (min(times), statistics.median(times), max(times)))
            print(f"{name:<36} {line:<22} {mib / statistics.median(times):.0f}")
    finally:
        if registry:
            registry.terminate()
            registry.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
