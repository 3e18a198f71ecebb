"""Schemathesis 4.x hooks for Atelier: sign every generated request with SDK-HMAC-SHA256.

Loaded by schemathesis through the environment variable
``SCHEMATHESIS_HOOKS=/abs/path/tests/e2e/schemathesis_hooks.py`` (see run_schemathesis.sh);
needs ``ATELIER_AK`` and ``ATELIER_SK`` in the environment.

The signature is computed from the request exactly as it goes on the wire: the auth provider
hands schemathesis a ``requests`` auth object, which ``requests`` calls on the *prepared*
request (final URL, final headers, final body bytes). The algorithm is the one of the
contract, /work/shared/spec/modelarts-notebook-api.md §5.1/§5.2:

  CanonicalRequest = METHOD \\n canonical-URI \\n canonical-query \\n canonical-headers \\n
                     signed-headers \\n hex(sha256(body))
  StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
  Signature        = hex(HMAC-SHA256(SK, StringToSign))

Signed headers: ``content-type`` (when present), ``host``, ``x-sdk-date``.

Self-test (test vectors V1-V5 of spec §5.3, plus a cross-check against huaweicloudsdkcore's
signer when it is importable):

    python tests/e2e/schemathesis_hooks.py --selftest
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from datetime import datetime, timezone
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

try:  # only needed when used as a requests auth object; the self-test runs without it
    import requests.auth as _requests_auth

    _AuthBase = _requests_auth.AuthBase
except ImportError:  # pragma: no cover
    _AuthBase = object

try:  # urllib3 re-encodes invalid characters of the request target just before sending
    from urllib3.util.url import _encode_target as _urllib3_encode_target
except Exception:  # pragma: no cover - private API, be defensive
    _urllib3_encode_target = None

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HEADER_CONTENT_SHA256 = "x-sdk-content-sha256"
DEFAULT_SIGNED_HEADERS = ("content-type", "host", "x-sdk-date")
_WS = " \t\n\r\x0c"  # ASCII whitespace as trimmed by the server (Rust `trim_ascii`)


# --------------------------------------------------------------------------------------------
# Canonicalisation (byte exact; mirrors the server's crates/auth and huaweicloudsdkcore)
# --------------------------------------------------------------------------------------------

def _encode(raw: bytes) -> str:
    # RFC 3986 unreserved set stays literal (A-Z a-z 0-9 - _ . ~), everything else %XX upper case.
    return quote_from_bytes(raw, safe=b"~")


def canonical_uri(raw_path: str) -> str:
    """Percent-decode the raw path, split on '/', re-encode every segment, ensure a trailing '/'."""
    decoded = unquote_to_bytes(raw_path or "")
    out = "/".join(_encode(seg) for seg in decoded.split(b"/"))
    if not out.endswith("/"):
        out += "/"
    return out


def _decode_query_component(raw: str) -> bytes:
    return unquote_to_bytes(raw.replace("+", " "))


def canonical_query(raw_query: str | None) -> str:
    """Split on '&', decode ('+' = space), sort on decoded bytes, re-encode, join as k=v."""
    if not raw_query:
        return ""
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        pairs.append((_decode_query_component(key), _decode_query_component(value)))
    pairs.sort()
    return "&".join("%s=%s" % (_encode(k), _encode(v)) for k, v in pairs)


def _header_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    value = str(value)
    try:  # http.client puts str header values on the wire as latin-1
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def canonical_request(method: str, raw_path: str, raw_query: str | None, headers: dict,
                      signed_headers, body: bytes | None) -> bytes:
    """Build the canonical request (bytes). `headers` keys are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    lines = [method.upper().encode("ascii"),
             canonical_uri(raw_path).encode("ascii"),
             canonical_query(raw_query).encode("ascii")]
    header_block = b""
    for name in signed_headers:
        if name not in lower:
            raise KeyError("signed header %r missing from request" % name)
        header_block += name.encode("ascii") + b":" + _header_bytes(lower[name]).strip(_WS.encode()) + b"\n"
    lines.append(header_block)
    lines.append(";".join(signed_headers).encode("ascii"))
    if HEADER_CONTENT_SHA256 in lower:
        lines.append(_header_bytes(lower[HEADER_CONTENT_SHA256]).strip(_WS.encode()))
    elif body:
        lines.append(hashlib.sha256(body).hexdigest().encode("ascii"))
    else:
        lines.append(EMPTY_BODY_SHA256.encode("ascii"))
    return b"\n".join(lines)


def string_to_sign(canonical: bytes, sdk_date: str) -> str:
    return "%s\n%s\n%s" % (ALGORITHM, sdk_date, hashlib.sha256(canonical).hexdigest())


def signature(sk: str, sts: str) -> str:
    return hmac.new(sk.encode("utf-8"), sts.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(ak: str, sk: str, method: str, raw_path: str, raw_query: str | None,
                  headers: dict, body: bytes | None, signed_headers=None):
    """Return (Authorization value, canonical request bytes, string to sign).

    `headers` must already contain X-Sdk-Date (and Host when signed)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if signed_headers is None:
        signed_headers = [h for h in DEFAULT_SIGNED_HEADERS if h in lower]
    signed_headers = sorted({h.lower() for h in signed_headers})
    canonical = canonical_request(method, raw_path, raw_query, headers, signed_headers, body)
    sts = string_to_sign(canonical, str(lower["x-sdk-date"]).strip(_WS))
    value = "%s Access=%s, SignedHeaders=%s, Signature=%s" % (
        ALGORITHM, ak, ";".join(signed_headers), signature(sk, sts))
    return value, canonical, sts


# --------------------------------------------------------------------------------------------
# requests auth object: signs the prepared request as it will be sent
# --------------------------------------------------------------------------------------------

def _materialise_body(r) -> bytes:
    """Return the body bytes that will go on the wire and make r.body exactly those bytes."""
    body = r.body
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        try:  # what http.client would do with a str body
            data = body.encode("latin-1")
        except UnicodeEncodeError:
            data = body.encode("utf-8")
    elif hasattr(body, "read"):
        data = body.read()
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    else:  # iterable of chunks
        data = b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
    if data is not body:
        r.body = data
        r.headers.pop("Transfer-Encoding", None)
        r.headers["Content-Length"] = str(len(data))
    return data


class SdkHmacAuth(_AuthBase):
    """`requests` auth: SDK-HMAC-SHA256 over the prepared request (host;x-sdk-date;content-type)."""

    def __init__(self, ak: str, sk: str, now=None):
        self.ak = ak
        self.sk = sk
        self._now = now or (lambda: datetime.now(timezone.utc))

    def __call__(self, r):
        body = _materialise_body(r)
        parts = urlsplit(r.url)
        host = parts.netloc.rpartition("@")[2]
        # Send an explicit Host header so the signed value is exactly the one on the wire.
        r.headers["Host"] = host
        r.headers["X-Sdk-Date"] = self._now().strftime(DATE_FORMAT)
        r.headers.pop("Authorization", None)
        target = r.path_url
        if _urllib3_encode_target is not None:
            try:
                target = _urllib3_encode_target(target)
            except Exception:
                pass
        raw_path, sep, raw_query = target.partition("?")
        value, _, _ = authorization(self.ak, self.sk, r.method or "GET", raw_path,
                                    raw_query if sep else None, dict(r.headers), body)
        r.headers["Authorization"] = value
        return r

    def __eq__(self, other):
        return isinstance(other, SdkHmacAuth) and (self.ak, self.sk) == (other.ak, other.sk)

    def __hash__(self):
        return hash((self.ak, self.sk))


# --------------------------------------------------------------------------------------------
# schemathesis registration (only when schemathesis loads this file as its hooks module;
# importing it elsewhere, e.g. to reuse the signer, registers nothing)
# --------------------------------------------------------------------------------------------

if __name__ != "__main__" and "schemathesis" in sys.modules:
    import schemathesis

    _AK = os.environ.get("ATELIER_AK", "")
    _SK = os.environ.get("ATELIER_SK", "")
    if not _AK or not _SK:
        raise RuntimeError("schemathesis_hooks: set ATELIER_AK and ATELIER_SK (admin access/secret key)")
    _AUTH = SdkHmacAuth(_AK, _SK)

    @schemathesis.auth(refresh_interval=None)
    class AtelierAkSkAuth:
        """Hands schemathesis a requests auth object; requests applies it to the prepared
        request, so the signature covers the exact path, query and body bytes sent."""

        def get(self, case, ctx):
            return _AUTH

        def set(self, case, data, ctx):
            # Same mechanism as schemathesis' own `RequestsAuth` provider (set_from_requests).
            case._auth = data


# --------------------------------------------------------------------------------------------
# Self-test: spec §5.3 vectors + cross-check against huaweicloudsdkcore
# --------------------------------------------------------------------------------------------

_V_AK = "AKTESTEXAMPLE0000001"
_V_SK = "SKtestExampleSecretKey0000000000000000001"
_V_PROJECT = "0123456789abcdef0123456789abcdef"
_V_HOST = "modelarts.eu-de.otc.t-systems.com"
_V_DATE = "20240102T030405Z"
_V_HEADERS = {"Content-Type": "application/json", "Host": _V_HOST,
              "X-Project-Id": _V_PROJECT, "X-Sdk-Date": _V_DATE}
_V_SIGNED = ["content-type", "host", "x-project-id", "x-sdk-date"]
_V1_CANONICAL = (
    "GET\n"
    "/v1/0123456789abcdef0123456789abcdef/notebooks/\n"
    "limit=10&offset=0&status=RUNNING\n"
    "content-type:application/json\n"
    "host:modelarts.eu-de.otc.t-systems.com\n"
    "x-project-id:0123456789abcdef0123456789abcdef\n"
    "x-sdk-date:20240102T030405Z\n"
    "\n"
    "content-type;host;x-project-id;x-sdk-date\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)
_V5_CANONICAL = (
    "POST\n"
    "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/stop/\n"
    "\n"
    "accept:application/json\n"
    "content-type:application/json\n"
    "user-agent:terraform-provider-iac\n"
    "x-language:en-us\n"
    "x-sdk-date:20240102T030405Z\n"
    "\n"
    "accept;content-type;user-agent;x-language;x-sdk-date\n"
    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
)


def _auth_line(signed, sig):
    return "SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s" % (_V_AK, ";".join(signed), sig)


def _selftest() -> int:
    failures = []

    def check(name, got, want):
        if got == want:
            print("  ok   %s" % name)
        else:
            print("  FAIL %s\n       got:  %r\n       want: %r" % (name, got, want))
            failures.append(name)

    print("V1 list")
    auth, canon, sts = authorization(
        _V_AK, _V_SK, "GET", "/v1/%s/notebooks" % _V_PROJECT, "limit=10&offset=0&status=RUNNING",
        _V_HEADERS, b"", _V_SIGNED)
    check("V1 canonical request", canon.decode(), _V1_CANONICAL)
    check("V1 string-to-sign hash", sts.split("\n")[2],
          "40b13b3553d92a70ffda4413557bdfa8b69e22dd07bbd99dd1097434d1ba36b1")
    check("V1 authorization", auth,
          _auth_line(_V_SIGNED, "ac33c6605d6b82abcd90142ec5539e4464bd9e671e9d3a8a1d5e31096f18e7f4"))

    print("V2 create")
    body = (b'{"name":"nb1","flavor":"modelarts.vm.cpu.2u","image_id":"e1a07296-22a8-4f05-8bc8-e936c8e54090",'
            b'"volume":{"category":"EVS","ownership":"MANAGED","capacity":5}}')
    check("V2 body sha256", hashlib.sha256(body).hexdigest(),
          "7bbd2b922196cee0b807438f6a26bd1493fbca18a2f034eed93bb4a6cbb81f82")
    auth, canon, sts = authorization(
        _V_AK, _V_SK, "POST", "/v1/%s/notebooks" % _V_PROJECT, None, _V_HEADERS, body, _V_SIGNED)
    lines = canon.decode().split("\n")
    check("V2 canonical URI", lines[1], "/v1/0123456789abcdef0123456789abcdef/notebooks/")
    check("V2 canonical query", lines[2], "")
    check("V2 string-to-sign hash", sts.split("\n")[2],
          "cdce43fadbcaf8d46b96171c6f86d223f97f6a69245b255285552448bf693bb8")
    check("V2 authorization", auth,
          _auth_line(_V_SIGNED, "b25fe823e2b04574a05fd39451f2a559ad4dc6f2eaa19d4a9eb6a6511f325283"))

    print("V3 start")
    nb = "f9937afa-4451-42db-a76b-72d624749f66"
    auth, canon, sts = authorization(
        _V_AK, _V_SK, "POST", "/v1/%s/notebooks/%s/start" % (_V_PROJECT, nb), "duration=3600000&type=TIMING",
        _V_HEADERS, b"", _V_SIGNED)
    check("V3 string-to-sign hash", sts.split("\n")[2],
          "75a595ee507c2ed74b2f9afd6c6f586b4dbd3ae02b99c434964e087b8123f978")
    check("V3 authorization", auth,
          _auth_line(_V_SIGNED, "413d57b23fb1eb11c138030abd627bf3995a29675c0fb79aefe3f1ccf268d82b"))

    print("V4 query encoding")
    auth, canon, sts = authorization(
        _V_AK, _V_SK, "GET", "/v1/%s/notebooks" % _V_PROJECT, "limit=50&name=my%20nb&tags=env%7Cdev%2Cteam%7Cml",
        _V_HEADERS, b"", _V_SIGNED)
    check("V4 canonical query", canon.decode().split("\n")[2], "limit=50&name=my%20nb&tags=env%7Cdev%2Cteam%7Cml")
    check("V4 string-to-sign hash", sts.split("\n")[2],
          "dbd8c6f5671fb0e45d75049980977ea44bed08378e48c76eee6d7af1ba6fb4c3")
    check("V4 authorization", auth,
          _auth_line(_V_SIGNED, "b8abded005b9c0c4e44d1392c83bdef4c992e17ba44c32d6e1ff158717112281"))
    # the same logical query in another spelling ('+' for space, lower-case escapes, other order)
    _, canon2, _ = authorization(
        _V_AK, _V_SK, "GET", "/v1/%s/notebooks" % _V_PROJECT, "tags=env%7cdev%2cteam%7cml&name=my+nb&limit=50",
        _V_HEADERS, b"", _V_SIGNED)
    check("V4 canonical query (respelled)", canon2.decode().split("\n")[2],
          "limit=50&name=my%20nb&tags=env%7Cdev%2Cteam%7Cml")

    print("V5 GOSDK header set")
    h5 = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "terraform-provider-iac",
          "X-Language": "en-us", "X-Sdk-Date": _V_DATE, "Host": _V_HOST, "X-Project-Id": _V_PROJECT}
    s5 = ["accept", "content-type", "user-agent", "x-language", "x-sdk-date"]
    auth, canon, sts = authorization(
        _V_AK, _V_SK, "POST", "/v1/%s/notebooks/%s/stop" % (_V_PROJECT, nb), None, h5, b"{}", s5)
    check("V5 canonical request", canon.decode(), _V5_CANONICAL)
    check("V5 string-to-sign hash", sts.split("\n")[2],
          "2a176ec78d6b4661b23f68d0d663420f7ec07d2fbf416a8f38d52e8d3e4eb4ce")
    check("V5 authorization", auth,
          _auth_line(s5, "0f63d89cb84d0469aa14fb945502da86174270e84a61e597158854e46388dd37"))

    print("canonicalisation edge cases")
    check("empty path", canonical_uri(""), "/")
    check("root path", canonical_uri("/"), "/")
    check("escaped path", canonical_uri("/a%20b/c%2Fd/%7e/x+y"), "/a%20b/c/d/~/x%2By/")
    check("query without value / repeated keys", canonical_query("b=2&a&b=1&&c="), "a=&b=1&b=2&c=")
    check("query sorted on decoded bytes", canonical_query("k=%2F&k=-"), "k=-&k=%2F")

    if _AuthBase is not object:
        import requests
        print("requests auth on a prepared request")
        fixed = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        prep = requests.Request("POST", "http://127.0.0.1:8080/v1/%s/notebooks" % _V_PROJECT,
                                params={"a b": "x/y", "z": "1"}, json={"name": "nb \u00e9"}).prepare()
        SdkHmacAuth(_V_AK, _V_SK, now=lambda: fixed)(prep)
        check("Host header set", prep.headers.get("Host"), "127.0.0.1:8080")
        check("X-Sdk-Date header set", prep.headers.get("X-Sdk-Date"), _V_DATE)
        path, _, query = prep.path_url.partition("?")
        want, _, _ = authorization(_V_AK, _V_SK, "POST", path, query,
                                   {"Content-Type": prep.headers["Content-Type"], "Host": "127.0.0.1:8080",
                                    "X-Sdk-Date": _V_DATE}, prep.body)
        check("prepared request signature", prep.headers.get("Authorization"), want)
        check("signed headers", prep.headers.get("Authorization", "").split("SignedHeaders=")[1].split(",")[0],
              "content-type;host;x-sdk-date")
        prep = requests.Request("GET", "http://127.0.0.1:8080/v1/p/notebooks").prepare()
        SdkHmacAuth(_V_AK, _V_SK, now=lambda: fixed)(prep)
        check("GET without content-type signs host;x-sdk-date",
              prep.headers.get("Authorization", "").split("SignedHeaders=")[1].split(",")[0], "host;x-sdk-date")
        check("GET body stays absent", prep.body, None)

    try:
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.sdk_request import SdkRequest
        from huaweicloudsdkcore.signer.signer import Signer
    except ImportError:
        print("(huaweicloudsdkcore not importable: cross-check skipped)")
    else:
        print("cross-check against huaweicloudsdkcore Signer")
        cases = [
            ("GET", "/v1/%s/notebooks" % _V_PROJECT, [("limit", 10), ("name", "a b/c~d"), ("status", "RUNNING")], None),
            ("POST", "/v1/%s/notebooks" % _V_PROJECT, [], '{"name": "n\u00e9", "x": [1, 2]}'),
            ("PATCH", "/v1/%s/notebooks/%s/lease" % (_V_PROJECT, nb), [("duration", 7200000)], None),
            ("DELETE", "/v1/%s/images/%s" % (_V_PROJECT, nb), [("force", True)], '{"is_force": true}'),
        ]
        for method, path, query, body in cases:
            headers = {"Content-Type": "application/json;charset=utf-8", "X-Sdk-Date": _V_DATE,
                       "User-Agent": "huaweicloud-usdk-python/3.0", "X-Project-Id": _V_PROJECT}
            req = SdkRequest(method=method, schema="http", host="127.0.0.1:8080", resource_path=path,
                             query_params=list(query), header_params=dict(headers), body=body)
            signed = Signer(BasicCredentials(_V_AK, _V_SK)).sign(req)
            sdk_auth = signed.header_params["Authorization"]
            raw_path, _, raw_query = signed.uri.partition("?")
            mine, _, _ = authorization(
                _V_AK, _V_SK, method, raw_path, raw_query, dict(headers, Host="127.0.0.1:8080"),
                body.encode("utf-8") if body else b"",
                ["content-type", "host", "user-agent", "x-project-id", "x-sdk-date"])
            check("sdk %s %s" % (method, signed.uri), mine, sdk_auth)

    total = "signer self-test: %d failure(s)" % len(failures)
    print(total)
    return 1 if failures else 0


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        sys.exit(_selftest())
    print(__doc__)
    sys.exit(2)
