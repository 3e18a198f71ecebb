//! Atelier's own vectors for `X-Sdk-Content-Sha256` (the spec's V1–V5 are in `vectors.rs`).
//!
//! Inputs are those of §5.3 (AK, SK, project, host, date) with `Content-Type:
//! application/octet-stream`, for which the Python SDK core adds `X-Sdk-Content-Sha256:
//! UNSIGNED-PAYLOAD` and signs it:
//!
//! - **V6** (`huaweicloudsdkcore` 3.1.219 `Signer`): `POST …/stop`, empty body. Its signer hashes
//!   the (empty) body before it looks at the header, so the last canonical line is the empty
//!   body's hash.
//! - **V7** (`huaweicloudsdkcore` 3.1.219 `Signer`): `PUT …/upload`, body `hello`: the last line is
//!   the literal `UNSIGNED-PAYLOAD`.
//! - **V8** (the reference algorithm, as the Node.js SDK signs): V6's request with the literal
//!   `UNSIGNED-PAYLOAD` as the last line.

use atelier_auth::{
    DEFAULT_MAX_SKEW, EMPTY_BODY_SHA256, SignableRequest, SignatureError, canonical_request,
    parse_authorization, parse_sdk_date, sha256_hex, sign, verify,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

const AK: &str = "AKTESTEXAMPLE0000001";
const SK: &str = "SKtestExampleSecretKey0000000000000000001";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "modelarts.eu-de.otc.t-systems.com";
const DATE: &str = "20240102T030405Z";
const SIGNED: &[&str] = &[
    "content-type",
    "host",
    "x-project-id",
    "x-sdk-content-sha256",
    "x-sdk-date",
];
const STOP: &str =
    "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/stop";
const UPLOAD: &str =
    "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/upload";

const V6_AUTHORIZATION: &str = "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-content-sha256;x-sdk-date, Signature=526809983a17ee7c57a7dcb1532cad22104d5db31b4e7e4372073d4f0e0fff67";
const V7_AUTHORIZATION: &str = "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-content-sha256;x-sdk-date, Signature=6b0251ba20abe6feb118ed2d8c5a22f9b94b300e7273e020940da5d7eaff1d0e";
const V8_AUTHORIZATION: &str = "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-content-sha256;x-sdk-date, Signature=880f0c5b1e3a19ca11a01f8817072ab565bba0fa96ecf5bcea6b28372404a029";

fn headers(content_sha256: Option<&str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut pairs = vec![
        ("Host", HOST),
        ("X-Sdk-Date", DATE),
        ("Content-Type", "application/octet-stream"),
        ("X-Project-Id", PROJECT),
    ];
    if let Some(value) = content_sha256 {
        pairs.push(("X-Sdk-Content-Sha256", value));
    }
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> SignableRequest<'a> {
    SignableRequest {
        method,
        path,
        query: None,
        headers,
        body,
    }
}

fn at_date() -> Timestamp {
    parse_sdk_date(DATE).unwrap()
}

fn check(req: &SignableRequest<'_>, authorization: &str) -> Result<(), SignatureError> {
    let auth = parse_authorization(authorization).unwrap();
    verify(req, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW)
}

fn canonical(req: &SignableRequest<'_>) -> String {
    let names: Vec<String> = SIGNED.iter().map(|s| (*s).to_owned()).collect();
    canonical_request(req, &names).unwrap()
}

#[test]
fn v6_python_sdk_empty_body_signs_the_empty_hash_and_verifies() {
    let hdrs = headers(Some("UNSIGNED-PAYLOAD"));
    let req = request("POST", STOP, &hdrs, b"");
    assert_eq!(check(&req, V6_AUTHORIZATION), Ok(()));
    // What the Python signer hashed: the same request with the empty body's hash last.
    let python_canonical =
        canonical(&req).replace("\nUNSIGNED-PAYLOAD", &format!("\n{EMPTY_BODY_SHA256}"));
    assert_eq!(
        sha256_hex(python_canonical.as_bytes()),
        "a812537e10ed7fbed10818eea14c6788e61bb53d438448ed82300b74f5691178"
    );
}

#[test]
fn v7_python_sdk_non_empty_body_signs_the_literal_and_verifies() {
    let hdrs = headers(Some("UNSIGNED-PAYLOAD"));
    let req = request("PUT", UPLOAD, &hdrs, b"hello");
    let text = canonical(&req);
    assert!(text.ends_with("\nUNSIGNED-PAYLOAD"), "{text}");
    assert_eq!(
        sha256_hex(text.as_bytes()),
        "143b69e7d0da31b0849f53f280d972d36a3eabb8c9b4baab60e493f1273b373a"
    );
    assert_eq!(check(&req, V7_AUTHORIZATION), Ok(()));
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), SIGNED).unwrap(),
        V7_AUTHORIZATION
    );
}

#[test]
fn v8_node_sdk_empty_body_signs_the_literal_and_verifies() {
    let hdrs = headers(Some("UNSIGNED-PAYLOAD"));
    let req = request("POST", STOP, &hdrs, b"");
    assert_eq!(
        sha256_hex(canonical(&req).as_bytes()),
        "99ca240c54911fa6adacc3b45e93c843199a07a8c34f9e5f235e01c8fc5f8a34"
    );
    assert_eq!(check(&req, V8_AUTHORIZATION), Ok(()));
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), SIGNED).unwrap(),
        V8_AUTHORIZATION
    );
}

/// The empty-hash form is a second try for an empty body only: with any body, a signature over
/// the empty hash is refused, so it cannot carry a body it did not cover.
#[test]
fn empty_hash_form_does_not_admit_a_body() {
    let hdrs = headers(Some("UNSIGNED-PAYLOAD"));
    for body in [&b"{}"[..], b" ", b"\0", b"hello"] {
        let req = request("POST", STOP, &hdrs, body);
        assert_eq!(
            check(&req, V6_AUTHORIZATION),
            Err(SignatureError::SignatureMismatch),
            "{body:?}"
        );
    }
}

/// The literal form leaves the body unsigned (what `UNSIGNED-PAYLOAD` means, for every signer):
/// V8's signature still verifies with a body. Accepting V6 adds nothing to that.
#[test]
fn literal_form_leaves_the_body_unsigned() {
    let hdrs = headers(Some("UNSIGNED-PAYLOAD"));
    let req = request("POST", STOP, &hdrs, b"{\"other\":1}");
    assert_eq!(check(&req, V8_AUTHORIZATION), Ok(()));
}

/// Only the exact `UNSIGNED-PAYLOAD` gets the second try; other spellings are refused.
#[test]
fn only_the_exact_literal_gets_the_empty_hash_try() {
    for value in ["unsigned-payload", "UNSIGNED-PAYLOAD-X", ""] {
        let hdrs = headers(Some(value));
        let req = request("POST", STOP, &hdrs, b"");
        assert!(check(&req, V6_AUTHORIZATION).is_err(), "{value:?}");
    }
}

/// Without the header, V6's signature is just an ordinary empty-body signature, and the header
/// is signed, so it cannot be added or dropped under V8's.
#[test]
fn header_presence_is_covered_by_the_signature() {
    let hdrs = headers(None);
    let req = request("POST", STOP, &hdrs, b"");
    let auth = parse_authorization(V8_AUTHORIZATION).unwrap();
    assert_eq!(
        verify(&req, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW),
        Err(SignatureError::MissingSignedHeader(
            "x-sdk-content-sha256".to_owned()
        ))
    );
}

/// A declared hash that is not the body's is refused before any signature is checked: a
/// signature over one body's hash must not carry another body.
#[test]
fn declared_hash_must_be_the_body_hash() {
    let body = b"{\"name\":\"nb1\"}";
    let real = sha256_hex(body);
    let hdrs = headers(Some(&real));
    let req = request("PUT", UPLOAD, &hdrs, body);
    let authorization = sign(&req, AK, SK.as_bytes(), SIGNED).unwrap();
    assert_eq!(check(&req, &authorization), Ok(()));
    // Upper-case hex of the same hash is the same hash.
    let upper = real.to_ascii_uppercase();
    let hdrs_upper = headers(Some(&upper));
    let req_upper = request("PUT", UPLOAD, &hdrs_upper, body);
    let authorization_upper = sign(&req_upper, AK, SK.as_bytes(), SIGNED).unwrap();
    assert_eq!(check(&req_upper, &authorization_upper), Ok(()));
    // The captured signature with a swapped body.
    let swapped = request("PUT", UPLOAD, &hdrs, b"{\"name\":\"evil\"}");
    assert_eq!(
        check(&swapped, &authorization),
        Err(SignatureError::ContentHashMismatch)
    );
    // A declared value that is no hash at all.
    let hdrs_junk = headers(Some("junk"));
    let junk = request("PUT", UPLOAD, &hdrs_junk, body);
    let authorization_junk = sign(&junk, AK, SK.as_bytes(), SIGNED).unwrap();
    assert_eq!(
        check(&junk, &authorization_junk),
        Err(SignatureError::ContentHashMismatch)
    );
}
