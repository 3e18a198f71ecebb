#![forbid(unsafe_code)]
//! AK/SK request signing (`SDK-HMAC-SHA256`) as used by the Huawei Cloud / OTC SDKs, and the
//! server-side verification Atelier performs on every request.
//!
//! See `shared/spec/modelarts-notebook-api.md` §5.1–§5.3. In short:
//!
//! ```text
//! CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(sha256(body))
//! StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(SK, StringToSign))
//! ```
//!
//! The crate does no IO. [`verify`] streams the canonical request straight into the SHA-256
//! state instead of materialising it; the only allocations on that path are the list of query
//! pairs (when there is a query) and decoded copies of components that contain escapes.

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp, tz::Offset};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The signing algorithm name as it appears in `Authorization` and in the StringToSign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// Lower-case hex SHA-256 of the empty byte string.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Header carrying the signing time (`YYYYMMDDTHHMMSSZ`, UTC).
pub const HEADER_SDK_DATE: &str = "x-sdk-date";

/// Optional header whose value replaces the body hash in the canonical request.
pub const HEADER_CONTENT_SHA256: &str = "x-sdk-content-sha256";

/// The `X-Sdk-Content-Sha256` value that leaves the body out of the signature (signers send it
/// for bodies they do not hash, such as uploads).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// `strftime`-style format of the `X-Sdk-Date` header.
pub const SDK_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The clock skew the real gateway tolerates (§5.2 step 3).
pub const DEFAULT_MAX_SKEW: SignedDuration = SignedDuration::from_mins(15);

type HmacSha256 = Hmac<Sha256>;

/// Why a request could not be signed or failed verification. Variants name conditions; mapping
/// them to HTTP statuses / error bodies is the caller's business.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The `Authorization` value does not have the `SDK-HMAC-SHA256 Access=…, SignedHeaders=…,
    /// Signature=…` shape.
    #[error("malformed Authorization header")]
    MalformedAuthorization,
    /// The `Authorization` value names an algorithm other than `SDK-HMAC-SHA256`.
    #[error("unsupported signing algorithm")]
    UnsupportedAlgorithm,
    /// No `X-Sdk-Date` header.
    #[error("missing X-Sdk-Date header")]
    MissingDate,
    /// `X-Sdk-Date` is not a valid `YYYYMMDDTHHMMSSZ` UTC time.
    #[error("malformed X-Sdk-Date header (expected YYYYMMDDTHHMMSSZ)")]
    MalformedDate,
    /// `X-Sdk-Date` is too far from the server clock.
    #[error("X-Sdk-Date is outside the allowed clock skew")]
    ClockSkew,
    /// A header listed in `SignedHeaders` is not present in the request (lower-case name).
    #[error("signed header `{0}` is missing from the request")]
    MissingSignedHeader(String),
    /// `X-Sdk-Content-Sha256` is neither `UNSIGNED-PAYLOAD` nor the SHA-256 of the body.
    #[error("X-Sdk-Content-Sha256 is not the hash of the body")]
    ContentHashMismatch,
    /// The recomputed signature differs from the one presented.
    #[error("signature does not match")]
    SignatureMismatch,
    /// Signing side: the access key is empty or contains characters that cannot be carried in
    /// the `Authorization` header (`,` or control characters).
    #[error("invalid access key")]
    InvalidAccessKey,
    /// Signing side: a header name to sign is not a valid HTTP header name.
    #[error("invalid signed header name `{0}`")]
    InvalidSignedHeaderName(String),
    /// Signing side: the list of headers to sign is empty.
    #[error("no headers to sign")]
    NoSignedHeaders,
}

/// The parts of an HTTP request that take part in the signature, as received (server) or as
/// about to be sent (client).
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    /// HTTP method; upper-cased for the canonical request.
    pub method: &'a str,
    /// Raw request path, still percent-encoded, without the query.
    pub path: &'a str,
    /// Raw query string without the leading `?`.
    pub query: Option<&'a str>,
    /// Request headers. `Host` must be present here when `host` is signed (for HTTP/2 the caller
    /// should insert it from `:authority`).
    pub headers: &'a http::HeaderMap,
    /// Raw body bytes.
    pub body: &'a [u8],
}

/// A parsed `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// The access key (`Access=`), exactly as given.
    pub access_key: String,
    /// The `SignedHeaders=` names, lower-cased, in the order given.
    pub signed_headers: Vec<String>,
    /// The decoded signature.
    pub signature: [u8; 32],
}

// ---------------------------------------------------------------------------------------------
// Authorization header
// ---------------------------------------------------------------------------------------------

/// Parses an `Authorization` value following §5.2 step 1, i.e. the regex
/// `^SDK-HMAC-SHA256\s+Access=([^,]+),\s?SignedHeaders=([^,]+),\s?Signature=([0-9a-f]{64})$`.
///
/// In addition, every signed header name must be a non-empty HTTP token (names are lower-cased).
/// A well-formed value naming another algorithm (e.g. `SDK-HMAC-SM3 …`, `Bearer …`) yields
/// [`SignatureError::UnsupportedAlgorithm`].
pub fn parse_authorization(value: &str) -> Result<AuthorizationHeader, SignatureError> {
    use SignatureError::MalformedAuthorization as Malformed;

    let alg_end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    let (alg, rest) = value.split_at(alg_end);
    if alg != ALGORITHM {
        let looks_like_scheme = !alg.is_empty()
            && alg_end < value.len()
            && alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        return Err(if looks_like_scheme {
            SignatureError::UnsupportedAlgorithm
        } else {
            Malformed
        });
    }
    if rest.is_empty() {
        return Err(Malformed);
    }
    // `rest` starts with the whitespace that ended the algorithm (`\s+`).
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());

    let rest = rest.strip_prefix("Access=").ok_or(Malformed)?;
    let (access_key, rest) = rest.split_once(',').ok_or(Malformed)?;
    if access_key.is_empty() {
        return Err(Malformed);
    }

    let rest = skip_one_whitespace(rest)
        .strip_prefix("SignedHeaders=")
        .ok_or(Malformed)?;
    let (signed, rest) = rest.split_once(',').ok_or(Malformed)?;
    if signed.is_empty() {
        return Err(Malformed);
    }
    let signed_headers = signed
        .split(';')
        .map(|name| {
            if is_token(name) {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(Malformed)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let sig_hex = skip_one_whitespace(rest)
        .strip_prefix("Signature=")
        .ok_or(Malformed)?;
    if sig_hex.len() != 64
        || !sig_hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Malformed);
    }
    let mut signature = [0u8; 32];
    hex::decode_to_slice(sig_hex, &mut signature).map_err(|_| Malformed)?;

    Ok(AuthorizationHeader {
        access_key: access_key.to_owned(),
        signed_headers,
        signature,
    })
}

fn skip_one_whitespace(s: &str) -> &str {
    match s.as_bytes().first() {
        Some(b) if b.is_ascii_whitespace() => &s[1..],
        _ => s,
    }
}

/// RFC 9110 `token` (what an HTTP field name may consist of).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

// ---------------------------------------------------------------------------------------------
// Canonicalisation (streamed into a sink: a Vec for the public String functions, the SHA-256
// state for sign/verify)
// ---------------------------------------------------------------------------------------------

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

/// RFC 3986 unreserved characters stay literal; everything else (and every non-ASCII byte) is
/// `%XX`-encoded with upper-case hex.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Like [`UNRESERVED`] but `/` separates path segments and stays literal.
const PATH_SEGMENTS: &AsciiSet = &UNRESERVED.remove(b'/');

fn put_encoded<S: Sink>(sink: &mut S, bytes: &[u8], set: &'static AsciiSet) {
    for chunk in percent_encode(bytes, set) {
        sink.put(chunk.as_bytes());
    }
}

fn put_lowercase<S: Sink>(sink: &mut S, s: &str) {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        sink.put(s.to_ascii_lowercase().as_bytes());
    } else {
        sink.put(s.as_bytes());
    }
}

fn write_canonical_uri<S: Sink>(sink: &mut S, raw_path: &str) {
    // Decoding first and then splitting on `/` means an encoded `%2F` acts as a separator,
    // exactly like the SDKs (`unquote(path).split('/')`).
    let decoded: Cow<'_, [u8]> = percent_decode(raw_path.as_bytes()).into();
    put_encoded(sink, &decoded, PATH_SEGMENTS);
    if decoded.last() != Some(&b'/') {
        sink.put(b"/");
    }
}

/// Decodes a query component: `+` is a space, `%XX` is a byte, invalid escapes stay literal.
fn decode_query_component(raw: &str) -> Cow<'_, [u8]> {
    let raw = raw.as_bytes();
    if raw.contains(&b'+') {
        let replaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Cow<'_, [u8]> = percent_decode(&replaced).into();
        match decoded {
            Cow::Borrowed(_) => Cow::Owned(replaced),
            Cow::Owned(v) => Cow::Owned(v),
        }
    } else {
        percent_decode(raw).into()
    }
}

type QueryPair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

fn write_canonical_query<S: Sink>(sink: &mut S, raw_query: Option<&str>) {
    let Some(raw) = raw_query.filter(|q| !q.is_empty()) else {
        return;
    };
    let mut pairs: Vec<QueryPair<'_>> = raw
        .split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| {
            let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
            (decode_query_component(k), decode_query_component(v))
        })
        .collect();
    // Sort on the *decoded* bytes, as both SDKs do (this can differ from sorting encoded text).
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            sink.put(b"&");
        }
        put_encoded(sink, k, UNRESERVED);
        sink.put(b"=");
        put_encoded(sink, v, UNRESERVED);
    }
}

fn write_header_line<S: Sink>(sink: &mut S, name: &str, value: &[u8]) {
    put_lowercase(sink, name);
    sink.put(b":");
    sink.put(value.trim_ascii());
    sink.put(b"\n");
}

/// Which body hash ends the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyHash {
    /// The `X-Sdk-Content-Sha256` value when the header is present, else the body's SHA-256:
    /// what every signer does for a non-empty body, and the Node.js SDK for an empty one.
    Declared,
    /// The body's SHA-256 whatever the header says: what the Python SDK core signs for an
    /// empty body even when it sent `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`.
    Computed,
}

fn write_canonical_request<S: Sink, N: AsRef<str>>(
    sink: &mut S,
    req: &SignableRequest<'_>,
    signed_headers: &[N],
    body_hash: BodyHash,
) -> Result<(), SignatureError> {
    // 1. method
    if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
        sink.put(req.method.to_ascii_uppercase().as_bytes());
    } else {
        sink.put(req.method.as_bytes());
    }
    sink.put(b"\n");
    // 2. URI
    write_canonical_uri(sink, req.path);
    sink.put(b"\n");
    // 3. query
    write_canonical_query(sink, req.query);
    sink.put(b"\n");
    // 4. headers, one `name:value\n` line each (this block always ends with `\n`)
    if signed_headers.is_empty() {
        sink.put(b"\n");
    }
    for name in signed_headers {
        let name = name.as_ref();
        let mut values = req.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Err(SignatureError::MissingSignedHeader(
                name.to_ascii_lowercase(),
            ));
        };
        match values.next() {
            None => write_header_line(sink, name, first.as_bytes()),
            Some(second) => {
                // Repeated header: one line per value, values sorted (APIG Go signer).
                let mut all: Vec<&[u8]> = [first, second]
                    .into_iter()
                    .chain(values)
                    .map(|v| v.as_bytes().trim_ascii())
                    .collect();
                all.sort_unstable();
                for v in all {
                    write_header_line(sink, name, v);
                }
            }
        }
    }
    sink.put(b"\n");
    // 5. signed header list
    for (i, name) in signed_headers.iter().enumerate() {
        if i > 0 {
            sink.put(b";");
        }
        put_lowercase(sink, name.as_ref());
    }
    sink.put(b"\n");
    // 6. body hash
    match body_hash {
        BodyHash::Declared => match req.headers.get(HEADER_CONTENT_SHA256) {
            Some(v) => sink.put(v.as_bytes().trim_ascii()),
            None => put_body_sha256(sink, req.body),
        },
        BodyHash::Computed => put_body_sha256(sink, req.body),
    }
    Ok(())
}

fn put_body_sha256<S: Sink>(sink: &mut S, body: &[u8]) {
    let mut hex_buf = [0u8; 64];
    hex_into(&Sha256::digest(body), &mut hex_buf);
    sink.put(&hex_buf);
}

fn hex_into(digest: &[u8], out: &mut [u8; 64]) {
    // Lengths always match (32 bytes -> 64 hex chars), so this cannot fail.
    let _ = hex::encode_to_slice(digest, out);
}

fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Canonical URI (§5.1 step 1.2): percent-decode, split on `/`, re-encode every segment with
/// the RFC 3986 unreserved set, re-join, ensure a trailing `/`. An empty path yields `/`.
pub fn canonical_uri(raw_path: &str) -> String {
    let mut out = Vec::with_capacity(raw_path.len() + 1);
    write_canonical_uri(&mut out, raw_path);
    ascii_string(out)
}

/// Canonical query string (§5.1 step 1.3): split on `&` (empty pieces ignored), decode keys and
/// values (`+` is a space, invalid `%` escapes stay literal), sort by key then value on the
/// decoded bytes, re-encode with the unreserved set and join as `k=v` with `&` (`k=` when there
/// is no value). `None` or an empty query yields the empty string.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut out = Vec::with_capacity(raw_query.map_or(0, str::len));
    write_canonical_query(&mut out, raw_query);
    ascii_string(out)
}

/// The full canonical request text (§5.1 step 1) for the given signed headers, which are used
/// in the order given (lower-cased on output); clients sort them, see [`sign`]. The body hash is
/// the `X-Sdk-Content-Sha256` header value if present, else the hex SHA-256 of the body.
///
/// Header values that are not valid UTF-8 are rendered lossily here; [`verify`] and [`sign`]
/// hash the raw bytes.
pub fn canonical_request(
    req: &SignableRequest<'_>,
    signed_headers: &[String],
) -> Result<String, SignatureError> {
    let mut out = Vec::with_capacity(256 + req.path.len() + req.query.map_or(0, str::len));
    write_canonical_request(&mut out, req, signed_headers, BodyHash::Declared)?;
    Ok(ascii_string(out))
}

/// StringToSign (§5.1 step 2): `SDK-HMAC-SHA256\n<sdk_date>\n<hex sha256(canonical_request)>`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// Parses an `X-Sdk-Date` value (`%Y%m%dT%H%M%SZ`, exactly 16 characters, UTC).
pub fn parse_sdk_date(value: &str) -> Result<Timestamp, SignatureError> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(SignatureError::MalformedDate);
    }
    fn num(digits: &[u8]) -> Result<i16, SignatureError> {
        digits.iter().try_fold(0i16, |acc, &d| {
            if d.is_ascii_digit() {
                Ok(acc * 10 + i16::from(d - b'0'))
            } else {
                Err(SignatureError::MalformedDate)
            }
        })
    }
    // Two-digit fields are at most 99, so the narrowing casts are lossless.
    let small = |digits: &[u8]| num(digits).map(|n| n as i8);
    let dt = jiff::civil::DateTime::new(
        num(&b[0..4])?,
        small(&b[4..6])?,
        small(&b[6..8])?,
        small(&b[9..11])?,
        small(&b[11..13])?,
        small(&b[13..15])?,
        0,
    )
    .map_err(|_| SignatureError::MalformedDate)?;
    Offset::UTC
        .to_timestamp(dt)
        .map_err(|_| SignatureError::MalformedDate)
}

/// Formats a timestamp as an `X-Sdk-Date` value (UTC, `%Y%m%dT%H%M%SZ`, sub-seconds dropped).
/// Only meaningful for years 0..=9999.
pub fn format_sdk_date(ts: Timestamp) -> String {
    let dt = Offset::UTC.to_datetime(ts);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

// ---------------------------------------------------------------------------------------------
// Sign / verify
// ---------------------------------------------------------------------------------------------

/// Reads, trims and parses `X-Sdk-Date`; returns the trimmed text (it goes into the
/// StringToSign) and the parsed time.
fn sdk_date(headers: &http::HeaderMap) -> Result<(&str, Timestamp), SignatureError> {
    let value = headers
        .get(HEADER_SDK_DATE)
        .ok_or(SignatureError::MissingDate)?;
    let text = value
        .to_str()
        .map_err(|_| SignatureError::MalformedDate)?
        .trim();
    Ok((text, parse_sdk_date(text)?))
}

/// HMAC state after absorbing the StringToSign.
fn mac_over_request<N: AsRef<str>>(
    req: &SignableRequest<'_>,
    signed_headers: &[N],
    date_text: &str,
    secret_key: &[u8],
    body_hash: BodyHash,
) -> Result<HmacSha256, SignatureError> {
    let mut hasher = Sha256::new();
    write_canonical_request(&mut hasher, req, signed_headers, body_hash)?;
    let mut cr_hex = [0u8; 64];
    hex_into(&hasher.finalize(), &mut cr_hex);

    // HMAC accepts keys of any length; the error branch is unreachable.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret_key)
        .map_err(|_| SignatureError::SignatureMismatch)?;
    mac.update(ALGORITHM.as_bytes());
    mac.update(b"\n");
    mac.update(date_text.as_bytes());
    mac.update(b"\n");
    mac.update(&cr_hex);
    Ok(mac)
}

/// Full server-side verification (§5.2 steps 3–5): `X-Sdk-Date` present and parsable,
/// `|now − date| <= max_skew`, every signed header present (`host` is looked up as the `Host`
/// header), signature recomputed from the request as received and compared in constant time.
///
/// The body hash is `X-Sdk-Content-Sha256` when present, which must then be either
/// `UNSIGNED-PAYLOAD` or the body's own SHA-256 ([`SignatureError::ContentHashMismatch`]
/// otherwise); with `UNSIGNED-PAYLOAD` and an empty body, a signature over the empty body's
/// hash is accepted too (the Python SDK core's form; the Node.js SDK signs the literal).
///
/// The signed headers are used in the order they appear in `auth` (clients send them sorted).
/// Looking up the secret key by `auth.access_key` is the caller's job.
pub fn verify(
    req: &SignableRequest<'_>,
    auth: &AuthorizationHeader,
    secret_key: &[u8],
    now: Timestamp,
    max_skew: SignedDuration,
) -> Result<(), SignatureError> {
    let (date_text, date) = sdk_date(req.headers)?;
    if now.duration_since(date).abs() > max_skew {
        return Err(SignatureError::ClockSkew);
    }
    let declared = req
        .headers
        .get(HEADER_CONTENT_SHA256)
        .map(|v| v.as_bytes().trim_ascii());
    if let Some(declared) = declared
        && declared != UNSIGNED_PAYLOAD.as_bytes()
        && !declared.eq_ignore_ascii_case(sha256_hex(req.body).as_bytes())
    {
        // A declared hash stands in for the body only if it is the body's hash: otherwise a
        // body could be swapped under a captured signature that covered another body's hash.
        return Err(SignatureError::ContentHashMismatch);
    }
    let matches = |body_hash| -> Result<bool, SignatureError> {
        Ok(
            mac_over_request(req, &auth.signed_headers, date_text, secret_key, body_hash)?
                .verify_slice(&auth.signature)
                .is_ok(),
        )
    };
    if matches(BodyHash::Declared)? {
        return Ok(());
    }
    // `UNSIGNED-PAYLOAD` with an empty body: the Python SDK core signs the empty body's hash
    // (its signer hashes the body before it looks at the header), the Node.js SDK signs the
    // literal text (tried above). Both say the same thing: there is no body. Only an empty
    // body gets the second try, and the hash tried is that of the body received, so this
    // admits no request the plain (header-less) verification would refuse.
    if declared == Some(UNSIGNED_PAYLOAD.as_bytes())
        && req.body.is_empty()
        && matches(BodyHash::Computed)?
    {
        return Ok(());
    }
    Err(SignatureError::SignatureMismatch)
}

/// Client side: signs `req` and returns the full `Authorization` header value. The
/// `X-Sdk-Date` header must already be present in `req.headers` (see [`format_sdk_date`]);
/// `signed_headers` are lower-cased, sorted and de-duplicated, and each must be present.
pub fn sign(
    req: &SignableRequest<'_>,
    access_key: &str,
    secret_key: &[u8],
    signed_headers: &[&str],
) -> Result<String, SignatureError> {
    if access_key.is_empty() || access_key.chars().any(|c| c == ',' || c.is_control()) {
        return Err(SignatureError::InvalidAccessKey);
    }
    let mut names = signed_headers
        .iter()
        .map(|name| {
            if is_token(name) {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(SignatureError::InvalidSignedHeaderName((*name).to_owned()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        return Err(SignatureError::NoSignedHeaders);
    }
    names.sort_unstable();
    names.dedup();

    let (date_text, _) = sdk_date(req.headers)?;
    let tag = mac_over_request(req, &names, date_text, secret_key, BodyHash::Declared)?.finalize();
    let mut sig_hex = [0u8; 64];
    hex_into(&tag.into_bytes(), &mut sig_hex);
    let sig_hex = std::str::from_utf8(&sig_hex).unwrap_or_default();
    Ok(format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={sig_hex}",
        names.join(";")
    ))
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Constant-time equality for secrets such as tokens (lengths are not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_constant() {
        assert_eq!(sha256_hex(b""), EMPTY_BODY_SHA256);
    }

    #[test]
    fn uri_cases() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/v1/p/notebooks"), "/v1/p/notebooks/");
        assert_eq!(canonical_uri("/v1/p/notebooks/"), "/v1/p/notebooks/");
        assert_eq!(canonical_uri("//x"), "//x/");
        assert_eq!(canonical_uri("/a%2Fb"), "/a/b/");
        assert_eq!(canonical_uri("/a%2fb/"), "/a/b/");
        assert_eq!(canonical_uri("/%7e%41-_."), "/~A-_./");
        assert_eq!(canonical_uri("/a b+c"), "/a%20b%2Bc/");
        assert_eq!(canonical_uri("/%c3%a9t%C3%A9"), "/%C3%A9t%C3%A9/");
        assert_eq!(canonical_uri("/é"), "/%C3%A9/");
        assert_eq!(canonical_uri("/a:b@c!"), "/a%3Ab%40c%21/");
        // invalid escapes stay literal and the `%` itself gets encoded
        assert_eq!(canonical_uri("/%zz%4"), "/%25zz%254/");
    }

    #[test]
    fn query_cases() {
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("")), "");
        assert_eq!(canonical_query(Some("&&")), "");
        assert_eq!(canonical_query(Some("k")), "k=");
        assert_eq!(canonical_query(Some("k=")), "k=");
        assert_eq!(canonical_query(Some("=v")), "=v");
        assert_eq!(canonical_query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
        assert_eq!(canonical_query(Some("a+b=c+d")), "a%20b=c%20d");
        assert_eq!(canonical_query(Some("x=%2B%2b+")), "x=%2B%2B%20");
        assert_eq!(canonical_query(Some("x=a=b")), "x=a%3Db");
        assert_eq!(canonical_query(Some("%zz=1")), "%25zz=1");
        assert_eq!(canonical_query(Some("flag=true&%7e=%41")), "flag=true&~=A");
        // sorting uses decoded bytes: '-' (0x2D) < '/' (0x2F) although "%2F" < "-"
        assert_eq!(canonical_query(Some("%2F=1&-=2")), "-=2&%2F=1");
        // key then value
        assert_eq!(canonical_query(Some("a=b&a=a&A=z")), "A=z&a=a&a=b");
        // prefix keys
        assert_eq!(canonical_query(Some("ab=1&a=2")), "a=2&ab=1");
    }

    #[test]
    fn date_round_trip_and_errors() {
        let ts = parse_sdk_date("20240102T030405Z").unwrap();
        assert_eq!(ts.as_second(), 1_704_164_645);
        assert_eq!(format_sdk_date(ts), "20240102T030405Z");
        assert_eq!(
            format_sdk_date(Timestamp::from_second(1_704_164_645).unwrap()),
            "20240102T030405Z"
        );
        for bad in [
            "",
            "2024-01-02T03:04:05Z",
            "20240102T030405",
            "20240102t030405Z",
            "20240102T030405z",
            "20241302T030405Z",
            "20240230T000000Z",
            "20240102T240000Z",
            "20240102T030460Z",
            "2024010 T030405Z",
            "+0240102T030405Z",
            "20240102T030405Z ",
            "２０240102T0304Z",
        ] {
            assert_eq!(
                parse_sdk_date(bad),
                Err(SignatureError::MalformedDate),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn token_names() {
        assert!(is_token("x-sdk-date"));
        assert!(!is_token(""));
        assert!(!is_token(" host"));
        assert!(!is_token("a:b"));
    }
}
