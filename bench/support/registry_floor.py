#!/usr/bin/env python3
"""The registry's floor for a fleet rebase: the writes a rebase of each image needs,
sent by a client that does nothing else, to show how fast the registry alone takes them.

    registry_floor.py HOST:PORT PREFIX N RUN_TAG WORKERS

For images PREFIX/fleet/app1..N on one stack (PREFIX/fleet/run, as
engine/examples/fleet_seed.rs leaves them), everything is read and prepared first,
untimed: each image's manifest and config and the run image's manifest under RUN_TAG.
Then, timed, each image gets the 5 requests kpackd makes for a rebase, in its order:
the new run layers mounted from the run repository, the new config uploaded (POST, then
PUT with its digest) and the manifest put under the image's tag and a build-number tag.
WORKERS processes (kpackd's rebase-concurrency) take images one at a time, each on one
kept-alive connection. Prints "seconds requests".

The configs are each image's own with one label added, so every digest is new, as a
rebase's is; the manifests point at the new run image's layers then the image's own.
"""

import hashlib
import http.client
import json
import multiprocessing
import sys
import time
import urllib.parse

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = MANIFEST + ",application/vnd.docker.distribution.manifest.v2+json"


def request(conn, method, path, body=None, headers=None, expect=(200,)):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status not in expect:
        sys.exit(f"{method} {path}: {response.status} {data[:200]!r}")
    return response, data


def prepare(host, port, prefix, n, run_tag, stamp):
    """Reads what a rebase reads, untimed; returns one plan of writes per image."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    run_repo = f"{prefix}/fleet/run"
    _, body = request(conn, "GET", f"/v2/{run_repo}/manifests/{run_tag}", headers={"Accept": ACCEPT})
    run = json.loads(body)
    plans = []
    for i in range(1, n + 1):
        repo = f"{prefix}/fleet/app{i}"
        response, body = request(conn, "GET", f"/v2/{repo}/manifests/latest", headers={"Accept": ACCEPT})
        manifest = json.loads(body)
        _, body = request(conn, "GET", f"/v2/{repo}/blobs/{manifest['config']['digest']}")
        config = json.loads(body)
        config.setdefault("config", {}).setdefault("Labels", {})["io.kpackd.bench.floor"] = stamp
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        own = manifest["layers"][len(run["layers"]):]
        manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}
        manifest["layers"] = run["layers"] + own
        mounts = [layer["digest"] for layer in run["layers"][-1:]]
        plans.append((repo, run_repo, mounts, config_bytes, config_digest,
                      json.dumps(manifest).encode(), response.getheader("Content-Type") or MANIFEST))
    conn.close()
    return plans


def rebase(args):
    """One worker: the writes of its images, one image after another."""
    host, port, plans, stamp = args
    conn = http.client.HTTPConnection(host, port, timeout=60)
    count = 0
    for repo, run_repo, mounts, config_bytes, config_digest, manifest, media_type in plans:
        for digest in mounts:
            query = urllib.parse.urlencode({"mount": digest, "from": run_repo})
            request(conn, "POST", f"/v2/{repo}/blobs/uploads/?{query}", expect=(201,))
            count += 1
        response, _ = request(conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        location = urllib.parse.urlsplit(response.getheader("Location"))
        separator = "&" if location.query else ""
        path = f"{location.path}?{location.query}{separator}digest={urllib.parse.quote(config_digest)}"
        request(conn, "PUT", path, body=config_bytes,
                headers={"Content-Type": "application/octet-stream"}, expect=(201,))
        for tag in ("latest", f"floor.{stamp}"):
            request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                    headers={"Content-Type": media_type}, expect=(201,))
        count += 4
    conn.close()
    return count


def main():
    address, prefix, n, run_tag, workers = sys.argv[1:6]
    host, port = address.rsplit(":", 1)
    n, workers = int(n), int(workers)
    stamp = str(time.time_ns())
    plans = prepare(host, int(port), prefix, n, run_tag, stamp)
    shares = [(host, int(port), plans[w::workers], stamp) for w in range(workers)]
    with multiprocessing.Pool(workers) as pool:
        start = time.monotonic()
        counts = pool.map(rebase, shares, chunksize=1)
        elapsed = time.monotonic() - start
    print(f"{elapsed:.2f} {sum(counts)}")


if __name__ == "__main__":
    main()
