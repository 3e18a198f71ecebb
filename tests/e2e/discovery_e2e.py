#!/usr/bin/env python3
"""The official Python SDK with its default set-up: a region and an IAM endpoint, no project id.

Starts `atelier serve` (placeholder runtime: this is about the API contract, no sandboxes) in a
temp data dir with `[auth] region` set, then:

  1. a ModelArtsClient built from BasicCredentials(ak, sk) + with_iam_endpoint + a Region — no
     project id — finds its project through `GET /v3/projects?name={region}` (signed), creates a
     notebook and lists it; the project id it found is the admin's;
  2. ListFeatures (`client.list_features`) says NOTEBOOK is on, quota -1, used 1; an unknown
     feature is 404 ModelArts.6404;
  3. a token client's discovery: `GET /v3/auth/projects` and `GET /v3/projects?name={region}`
     with the X-Auth-Token of `atelier token create` answer the token's project only;
  4. `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` with an empty body, signed by the SDK core's own
     Signer (which signs the empty body's hash in that case), is accepted; the same signature with
     a body added is 401;
  5. a region the server is not configured for finds no project: the SDK raises.

Usage: python tests/e2e/discovery_e2e.py   (ATELIER_BIN: default <repo>/target/debug/atelier)
Prints `discovery e2e: N passed, M failed`; exits 1 when M > 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException, SdkException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.region.region import Region
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkmodelarts.v1 import (
    CreateNotebookRequest,
    ListFeaturesRequest,
    ListNotebooksRequest,
    ModelArtsClient,
    NotebookCreateRequest,
    VolumeMountRequest,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_e2e import REPO_ROOT, CheckFailed, Server, expect, expect_client_error, log  # noqa: E402

REGION = "atelier-test-1"
BUILTIN_IMAGE = "e1a07296-22a8-4f05-8bc8-e936c8e54090"


def region_client(endpoint: str, ak: str, sk: str, region: str) -> tuple[ModelArtsClient, BasicCredentials]:
    """The SDK as its documentation sets it up: a region, an IAM endpoint, no project id."""
    config = HttpConfig.get_default_config()
    config.timeout = (10, 30)
    credentials = BasicCredentials(ak, sk).with_iam_endpoint(endpoint)
    client = (ModelArtsClient.new_builder()
              .with_http_config(config)
              .with_credentials(credentials)
              .with_region(Region(region, endpoint))
              .build())
    return client, credentials


def http(method: str, url: str, headers: dict, body: bytes = b"") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Discovery:
    def __init__(self, server: Server, endpoint: str, creds: dict):
        self.server = server
        self.endpoint = endpoint
        self.creds = creds
        self.client: ModelArtsClient | None = None

    def check_region_client(self):
        client, credentials = region_client(self.endpoint, self.creds["access_key"],
                                            self.creds["secret_key"], REGION)
        expect(credentials.project_id == self.creds["project_id"],
               "the SDK found project %r, not %r" % (credentials.project_id, self.creds["project_id"]))
        created = client.create_notebook(CreateNotebookRequest(body=NotebookCreateRequest(
            name="discovered", flavor="modelarts.vm.cpu.2u", image_id=BUILTIN_IMAGE,
            volume=VolumeMountRequest(category="EFS", ownership="MANAGED"))))
        listed = client.list_notebooks(ListNotebooksRequest())
        ids = [nb.id for nb in listed.data or []]
        expect(created.id in ids, "the notebook %s is not in the list %s" % (created.id, ids))
        log("    project %s found by region %s; notebook %s listed" % (credentials.project_id, REGION, created.id))
        self.client = client

    def check_features(self):
        assert self.client is not None
        feature = self.client.list_features(ListFeaturesRequest(feature="NOTEBOOK"))
        expect(feature.name == "NOTEBOOK" and feature.enabled is True,
               "feature %s enabled=%s" % (feature.name, feature.enabled))
        expect(feature.quota == -1 and feature.used == 1, "quota %s used %s" % (feature.quota, feature.used))
        expect(feature.id and len(feature.id) == 32, "id %r" % feature.id)
        again = self.client.list_features(ListFeaturesRequest(feature="NOTEBOOK"))
        expect(again.id == feature.id, "the feature id changed: %s, %s" % (feature.id, again.id))
        expect_client_error(lambda: self.client.list_features(ListFeaturesRequest(feature="TRAIN")),
                            404, "ModelArts.6404", "an unknown feature")
        log("    NOTEBOOK: enabled, quota %s, used %s, id %s" % (feature.quota, feature.used, feature.id))

    def check_token_discovery(self):
        done = subprocess.run([self.server.binary, "token", "create", "--data-dir", str(self.server.data_dir)],
                              capture_output=True, text=True, timeout=60)
        expect(done.returncode == 0, "atelier token create: %s" % done.stderr)
        token = done.stdout.strip().splitlines()[-1].split()[-1]
        headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
        for path in ("/v3/auth/projects", "/v3/projects?name=" + REGION):
            status, body = http("GET", self.endpoint + path, headers)
            expect(status == 200, "%s: %s %s" % (path, status, body))
            ids = [p["id"] for p in body.get("projects", [])]
            expect(ids == [self.creds["project_id"]], "%s listed %s" % (path, ids))
        status, body = http("GET", self.endpoint + "/v3/auth/projects", {"X-Auth-Token": "atk-not-a-token"})
        expect(status == 401 and body.get("error_code") == "APIG.0301", "a bad token: %s %s" % (status, body))

    def signed_by_sdk_core(self, body: bytes) -> tuple[str, dict]:
        """GET notebooks signed by the SDK core's Signer with a non-JSON content type, for which
        it adds `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` (and, with an empty body, signs the
        empty body's hash)."""
        parsed = urllib.parse.urlparse(self.endpoint)
        request = SdkRequest(method="GET", schema=parsed.scheme, host=parsed.netloc,
                             resource_path="/v1/%s/notebooks" % self.creds["project_id"],
                             query_params=[("limit", 10)],
                             header_params={"Content-Type": "application/octet-stream",
                                            "X-Project-Id": self.creds["project_id"]},
                             body=body)
        Signer(BasicCredentials(self.creds["access_key"], self.creds["secret_key"])).sign(request)
        expect(request.header_params.get("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD",
               "the SDK did not add UNSIGNED-PAYLOAD: %s" % request.header_params)
        return "%s%s" % (self.endpoint, request.uri), dict(request.header_params)

    def check_unsigned_payload(self):
        url, headers = self.signed_by_sdk_core(b"")
        status, body = http("GET", url, headers)
        expect(status == 200, "the SDK core's UNSIGNED-PAYLOAD form: %s %s" % (status, body))
        status, body = http("GET", url, headers, b'{"smuggled": true}')
        expect(status == 401, "the same signature with a body: %s %s" % (status, body))

    def check_unknown_region(self):
        try:
            client, credentials = region_client(self.endpoint, self.creds["access_key"],
                                                self.creds["secret_key"], "eu-nowhere-9")
        except SdkException as e:
            log("    eu-nowhere-9 -> %s" % str(e).splitlines()[0][:120])
            return
        raise CheckFailed("a region the server is not configured for found project %s" % credentials.project_id)


def main() -> int:
    binary = os.environ.get("ATELIER_BIN") or str(REPO_ROOT / "target" / "debug" / "atelier")
    if not os.path.isabs(binary):
        binary = str((REPO_ROOT / binary).resolve())
    checks = 5
    if not os.access(binary, os.X_OK):
        print("atelier binary not found or not executable: %s (set ATELIER_BIN)" % binary, file=sys.stderr)
        print("discovery e2e: 0 passed, %d failed" % checks)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="atelier-discovery-e2e-"))
    (tmp / "data").mkdir()
    config = tmp / "atelier.toml"
    config.write_text('[auth]\nregion = "%s"\n\n[runtime]\nkind = "placeholder"\n' % REGION)
    server = Server(binary, tmp / "data", config)
    passed = failed = 0
    try:
        server.start()
        creds = server.credentials()
        endpoint = server.url or creds["endpoint"]
        t = Discovery(server, endpoint, creds)
        sequence = [
            ("region + IAM endpoint, no project id: discover, create, list", t.check_region_client),
            ("list_features NOTEBOOK; unknown feature 404", t.check_features),
            ("token discovery: /v3/auth/projects, /v3/projects?name=", t.check_token_discovery),
            ("UNSIGNED-PAYLOAD, empty body, the SDK core's signer", t.check_unsigned_payload),
            ("an unknown region finds no project", t.check_unknown_region),
        ]
        for i, (title, fn) in enumerate(sequence, 1):
            log("[%2d] %s" % (i, title))
            try:
                fn()
            except (CheckFailed, ClientRequestException, SdkException) as e:
                failed += 1
                log("     FAIL: %s" % e)
                continue
            except Exception as e:  # noqa: BLE001 - report and go on
                failed += 1
                log("     FAIL: %s: %s" % (type(e).__name__, e))
                traceback.print_exc()
                continue
            passed += 1
            log("     ok")
    except Exception as e:  # the server did not come up
        log("setup failed: %s: %s" % (type(e).__name__, e))
        failed = checks - passed
    finally:
        server.stop()
        if failed:
            log("---- server output (tail) ----\n%s\n------------------------------" % server.tail())
        shutil.rmtree(tmp, ignore_errors=True)
    print("discovery e2e: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
