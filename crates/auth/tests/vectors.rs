//! Golden tests: the §5.3 test vectors V1–V5 and verification failure cases built on them.

use atelier_auth::{
    ALGORITHM, AuthorizationHeader, DEFAULT_MAX_SKEW, EMPTY_BODY_SHA256, SignableRequest,
    SignatureError, canonical_query, canonical_request, canonical_uri, parse_authorization,
    parse_sdk_date, sha256_hex, sign, string_to_sign, verify,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::{SignedDuration, Timestamp};

const AK: &str = "AKTESTEXAMPLE0000001";
const SK: &str = "SKtestExampleSecretKey0000000000000000001";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "modelarts.eu-de.otc.t-systems.com";
const DATE: &str = "20240102T030405Z";
const PY_SIGNED: &[&str] = &["content-type", "host", "x-project-id", "x-sdk-date"];

/// One test vector: the request as sent plus the expected outputs.
struct Vector {
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
    body: &'static [u8],
    signed: &'static [&'static str],
    canonical_request: Option<&'static str>,
    canonical_uri: &'static str,
    canonical_query: &'static str,
    body_sha256: &'static str,
    sts_hash: &'static str,
    authorization: &'static str,
}

impl Vector {
    fn req(&self) -> SignableRequest<'_> {
        SignableRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            body: self.body,
        }
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn py_headers() -> HeaderMap {
    headers(&[
        ("Host", HOST),
        ("X-Sdk-Date", DATE),
        ("Content-Type", "application/json"),
        ("X-Project-Id", PROJECT),
    ])
}

const V2_BODY: &[u8] = br#"{"name":"nb1","flavor":"modelarts.vm.cpu.2u","image_id":"e1a07296-22a8-4f05-8bc8-e936c8e54090","volume":{"category":"EVS","ownership":"MANAGED","capacity":5}}"#;

fn v1() -> Vector {
    Vector {
        method: "GET",
        path: "/v1/0123456789abcdef0123456789abcdef/notebooks",
        query: Some("limit=10&offset=0&status=RUNNING"),
        headers: py_headers(),
        body: b"",
        signed: PY_SIGNED,
        canonical_request: Some(
            "GET\n\
             /v1/0123456789abcdef0123456789abcdef/notebooks/\n\
             limit=10&offset=0&status=RUNNING\n\
             content-type:application/json\n\
             host:modelarts.eu-de.otc.t-systems.com\n\
             x-project-id:0123456789abcdef0123456789abcdef\n\
             x-sdk-date:20240102T030405Z\n\
             \n\
             content-type;host;x-project-id;x-sdk-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        canonical_uri: "/v1/0123456789abcdef0123456789abcdef/notebooks/",
        canonical_query: "limit=10&offset=0&status=RUNNING",
        body_sha256: EMPTY_BODY_SHA256,
        sts_hash: "40b13b3553d92a70ffda4413557bdfa8b69e22dd07bbd99dd1097434d1ba36b1",
        authorization: "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=ac33c6605d6b82abcd90142ec5539e4464bd9e671e9d3a8a1d5e31096f18e7f4",
    }
}

fn v2() -> Vector {
    Vector {
        method: "POST",
        path: "/v1/0123456789abcdef0123456789abcdef/notebooks",
        query: None,
        headers: py_headers(),
        body: V2_BODY,
        signed: PY_SIGNED,
        canonical_request: None,
        canonical_uri: "/v1/0123456789abcdef0123456789abcdef/notebooks/",
        canonical_query: "",
        body_sha256: "7bbd2b922196cee0b807438f6a26bd1493fbca18a2f034eed93bb4a6cbb81f82",
        sts_hash: "cdce43fadbcaf8d46b96171c6f86d223f97f6a69245b255285552448bf693bb8",
        authorization: "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=b25fe823e2b04574a05fd39451f2a559ad4dc6f2eaa19d4a9eb6a6511f325283",
    }
}

fn v3() -> Vector {
    Vector {
        method: "POST",
        path: "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/start",
        query: Some("duration=3600000&type=TIMING"),
        headers: py_headers(),
        body: b"",
        signed: PY_SIGNED,
        canonical_request: None,
        canonical_uri: "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/start/",
        canonical_query: "duration=3600000&type=TIMING",
        body_sha256: EMPTY_BODY_SHA256,
        sts_hash: "75a595ee507c2ed74b2f9afd6c6f586b4dbd3ae02b99c434964e087b8123f978",
        authorization: "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=413d57b23fb1eb11c138030abd627bf3995a29675c0fb79aefe3f1ccf268d82b",
    }
}

fn v4() -> Vector {
    Vector {
        method: "GET",
        path: "/v1/0123456789abcdef0123456789abcdef/notebooks",
        query: Some("limit=50&name=my%20nb&tags=env%7Cdev%2Cteam%7Cml"),
        headers: py_headers(),
        body: b"",
        signed: PY_SIGNED,
        canonical_request: None,
        canonical_uri: "/v1/0123456789abcdef0123456789abcdef/notebooks/",
        canonical_query: "limit=50&name=my%20nb&tags=env%7Cdev%2Cteam%7Cml",
        body_sha256: EMPTY_BODY_SHA256,
        sts_hash: "dbd8c6f5671fb0e45d75049980977ea44bed08378e48c76eee6d7af1ba6fb4c3",
        authorization: "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=b8abded005b9c0c4e44d1392c83bdef4c992e17ba44c32d6e1ff158717112281",
    }
}

fn v5() -> Vector {
    Vector {
        method: "POST",
        path: "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/stop",
        query: None,
        headers: headers(&[
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", "terraform-provider-iac"),
            ("X-Language", "en-us"),
            ("X-Sdk-Date", DATE),
            ("Host", HOST),
            ("X-Project-Id", PROJECT),
        ]),
        body: b"{}",
        signed: &[
            "accept",
            "content-type",
            "user-agent",
            "x-language",
            "x-sdk-date",
        ],
        canonical_request: Some(
            "POST\n\
             /v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/stop/\n\
             \n\
             accept:application/json\n\
             content-type:application/json\n\
             user-agent:terraform-provider-iac\n\
             x-language:en-us\n\
             x-sdk-date:20240102T030405Z\n\
             \n\
             accept;content-type;user-agent;x-language;x-sdk-date\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ),
        canonical_uri: "/v1/0123456789abcdef0123456789abcdef/notebooks/f9937afa-4451-42db-a76b-72d624749f66/stop/",
        canonical_query: "",
        body_sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        sts_hash: "2a176ec78d6b4661b23f68d0d663420f7ec07d2fbf416a8f38d52e8d3e4eb4ce",
        authorization: "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000001, SignedHeaders=accept;content-type;user-agent;x-language;x-sdk-date, Signature=0f63d89cb84d0469aa14fb945502da86174270e84a61e597158854e46388dd37",
    }
}

fn all() -> Vec<(&'static str, Vector)> {
    vec![
        ("V1", v1()),
        ("V2", v2()),
        ("V3", v3()),
        ("V4", v4()),
        ("V5", v5()),
    ]
}

fn at_date() -> Timestamp {
    parse_sdk_date(DATE).unwrap()
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn check_vector(name: &str, v: &Vector) {
    let req = v.req();
    assert_eq!(canonical_uri(v.path), v.canonical_uri, "{name} uri");
    assert_eq!(canonical_query(v.query), v.canonical_query, "{name} query");
    assert_eq!(sha256_hex(v.body), v.body_sha256, "{name} body hash");

    let cr = canonical_request(&req, &owned(v.signed)).unwrap();
    if let Some(expected) = v.canonical_request {
        assert_eq!(cr, expected, "{name} canonical request");
    }
    // Structure of the canonical request even where the vector does not spell it out.
    let lines: Vec<&str> = cr.split('\n').collect();
    assert_eq!(lines[0], v.method);
    assert_eq!(lines[1], v.canonical_uri);
    assert_eq!(lines[2], v.canonical_query);
    assert_eq!(*lines.last().unwrap(), v.body_sha256);

    let sts = string_to_sign(DATE, &cr);
    assert_eq!(
        sts,
        format!("{ALGORITHM}\n{DATE}\n{}", v.sts_hash),
        "{name} StringToSign"
    );

    let authorization = sign(&req, AK, SK.as_bytes(), v.signed).unwrap();
    assert_eq!(authorization, v.authorization, "{name} Authorization");

    let auth = parse_authorization(v.authorization).unwrap();
    assert_eq!(auth.access_key, AK);
    assert_eq!(auth.signed_headers, owned(v.signed));
    assert_eq!(
        verify(&req, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW),
        Ok(()),
        "{name} verify"
    );
}

#[test]
fn v1_list() {
    check_vector("V1", &v1());
}

#[test]
fn v2_create() {
    check_vector("V2", &v2());
}

#[test]
fn v3_start() {
    check_vector("V3", &v3());
}

#[test]
fn v4_query_encoding() {
    check_vector("V4", &v4());
}

#[test]
fn v5_gosdk_headers() {
    check_vector("V5", &v5());
}

#[test]
fn sign_normalises_header_list() {
    // Unsorted, mixed case, duplicated: same result as the canonical list.
    let v = v1();
    let got = sign(
        &v.req(),
        AK,
        SK.as_bytes(),
        &["X-Sdk-Date", "Host", "content-type", "X-Project-Id", "host"],
    )
    .unwrap();
    assert_eq!(got, v.authorization);
}

#[test]
fn v4_query_variants_verify() {
    // Unsorted, `+` for space, lower-case hex: same canonical query, so the V4 signature holds.
    let v = v4();
    let auth = parse_authorization(v.authorization).unwrap();
    for query in [
        "tags=env%7cdev%2cteam%7cml&name=my+nb&limit=50",
        "name=my%20nb&limit=%350&tags=env|dev,team|ml",
    ] {
        let req = SignableRequest {
            query: Some(query),
            ..v.req()
        };
        assert_eq!(canonical_query(Some(query)), v.canonical_query);
        assert_eq!(
            verify(&req, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW),
            Ok(()),
            "{query}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------------

fn verify_v(req: &SignableRequest<'_>, auth: &AuthorizationHeader) -> Result<(), SignatureError> {
    verify(req, auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW)
}

#[test]
fn rejects_changed_body() {
    for (name, v) in all() {
        let auth = parse_authorization(v.authorization).unwrap();
        let mut body = v.body.to_vec();
        body.push(b' ');
        let req = SignableRequest {
            body: &body,
            ..v.req()
        };
        assert_eq!(
            verify_v(&req, &auth),
            Err(SignatureError::SignatureMismatch),
            "{name}"
        );
    }
    let v = v2();
    let auth = parse_authorization(v.authorization).unwrap();
    let body = String::from_utf8(V2_BODY.to_vec())
        .unwrap()
        .replace("\"capacity\":5", "\"capacity\":50");
    let req = SignableRequest {
        body: body.as_bytes(),
        ..v.req()
    };
    assert_eq!(
        verify_v(&req, &auth),
        Err(SignatureError::SignatureMismatch)
    );
}

#[test]
fn rejects_changed_query() {
    for (name, v) in all() {
        let auth = parse_authorization(v.authorization).unwrap();
        let query = match v.query {
            Some(q) => format!("{q}&extra=1"),
            None => "extra=1".to_owned(),
        };
        let req = SignableRequest {
            query: Some(&query),
            ..v.req()
        };
        assert_eq!(
            verify_v(&req, &auth),
            Err(SignatureError::SignatureMismatch),
            "{name}"
        );
    }
    let v = v1();
    let auth = parse_authorization(v.authorization).unwrap();
    let req = SignableRequest {
        query: Some("limit=11&offset=0&status=RUNNING"),
        ..v.req()
    };
    assert_eq!(
        verify_v(&req, &auth),
        Err(SignatureError::SignatureMismatch)
    );
}

#[test]
fn rejects_changed_path_and_method() {
    let v = v3();
    let auth = parse_authorization(v.authorization).unwrap();
    let path = v.path.replace("/start", "/stop");
    let req = SignableRequest {
        path: &path,
        ..v.req()
    };
    assert_eq!(
        verify_v(&req, &auth),
        Err(SignatureError::SignatureMismatch)
    );
    let req = SignableRequest {
        method: "PUT",
        ..v.req()
    };
    assert_eq!(
        verify_v(&req, &auth),
        Err(SignatureError::SignatureMismatch)
    );
    // A trailing slash on the path does not change the canonical URI.
    let path = format!("{}/", v.path);
    let req = SignableRequest {
        path: &path,
        ..v.req()
    };
    assert_eq!(verify_v(&req, &auth), Ok(()));
}

#[test]
fn rejects_changed_signed_header_value() {
    for (name, v) in all() {
        let auth = parse_authorization(v.authorization).unwrap();
        for header in v.signed.iter().filter(|h| **h != "x-sdk-date") {
            let mut headers = v.headers.clone();
            headers.insert(*header, HeaderValue::from_static("changed"));
            let req = SignableRequest {
                headers: &headers,
                ..v.req()
            };
            assert_eq!(
                verify_v(&req, &auth),
                Err(SignatureError::SignatureMismatch),
                "{name} {header}"
            );
        }
        // The date is signed through the StringToSign too.
        let mut headers = v.headers.clone();
        headers.insert("x-sdk-date", HeaderValue::from_static("20240102T030406Z"));
        let req = SignableRequest {
            headers: &headers,
            ..v.req()
        };
        assert_eq!(
            verify_v(&req, &auth),
            Err(SignatureError::SignatureMismatch),
            "{name} date"
        );
    }
}

#[test]
fn unsigned_headers_may_change() {
    // V5 does not sign Host or X-Project-Id.
    let v = v5();
    let auth = parse_authorization(v.authorization).unwrap();
    let mut headers = v.headers.clone();
    headers.insert("host", HeaderValue::from_static("localhost:8080"));
    headers.remove("x-project-id");
    headers.insert("x-other", HeaderValue::from_static("1"));
    let req = SignableRequest {
        headers: &headers,
        ..v.req()
    };
    assert_eq!(verify_v(&req, &auth), Ok(()));
}

#[test]
fn surrounding_whitespace_in_header_values_is_trimmed() {
    let v = v1();
    let auth = parse_authorization(v.authorization).unwrap();
    let mut headers = v.headers.clone();
    headers.insert(
        "content-type",
        HeaderValue::from_static("  application/json\t"),
    );
    let req = SignableRequest {
        headers: &headers,
        ..v.req()
    };
    assert_eq!(verify_v(&req, &auth), Ok(()));
}

#[test]
fn rejects_missing_signed_header() {
    for (name, v) in all() {
        let auth = parse_authorization(v.authorization).unwrap();
        for header in v.signed.iter().filter(|h| **h != "x-sdk-date") {
            let mut headers = v.headers.clone();
            headers.remove(*header);
            let req = SignableRequest {
                headers: &headers,
                ..v.req()
            };
            assert_eq!(
                verify_v(&req, &auth),
                Err(SignatureError::MissingSignedHeader((*header).to_owned())),
                "{name} {header}"
            );
        }
    }
    // Listed in SignedHeaders but never sent.
    let v = v1();
    let mut auth = parse_authorization(v.authorization).unwrap();
    auth.signed_headers.insert(0, "accept".to_owned());
    assert_eq!(
        verify_v(&v.req(), &auth),
        Err(SignatureError::MissingSignedHeader("accept".to_owned()))
    );
    assert_eq!(
        sign(&v.req(), AK, SK.as_bytes(), &["accept", "host"]),
        Err(SignatureError::MissingSignedHeader("accept".to_owned()))
    );
}

#[test]
fn rejects_wrong_secret_and_signature() {
    for (name, v) in all() {
        let auth = parse_authorization(v.authorization).unwrap();
        let req = v.req();
        for secret in [&b"SKtestExampleSecretKey0000000000000000002"[..], b"", b"x"] {
            assert_eq!(
                verify(&req, &auth, secret, at_date(), DEFAULT_MAX_SKEW),
                Err(SignatureError::SignatureMismatch),
                "{name}"
            );
        }
        let mut flipped = auth.clone();
        flipped.signature[31] ^= 1;
        assert_eq!(
            verify_v(&req, &flipped),
            Err(SignatureError::SignatureMismatch)
        );
        // A different signed-header list (same headers present) changes the canonical request.
        let mut fewer = auth.clone();
        fewer.signed_headers.remove(0);
        assert_eq!(
            verify_v(&req, &fewer),
            Err(SignatureError::SignatureMismatch)
        );
    }
}

#[test]
fn date_skew() {
    let v = v1();
    let auth = parse_authorization(v.authorization).unwrap();
    let req = v.req();
    let date = at_date();
    let check = |now: Timestamp| verify(&req, &auth, SK.as_bytes(), now, DEFAULT_MAX_SKEW);
    let fifteen = SignedDuration::from_mins(15);
    let second = SignedDuration::from_secs(1);
    assert_eq!(check(date + fifteen), Ok(()));
    assert_eq!(check(date - fifteen), Ok(()));
    assert_eq!(
        check(date + fifteen + second),
        Err(SignatureError::ClockSkew)
    );
    assert_eq!(
        check(date - fifteen - second),
        Err(SignatureError::ClockSkew)
    );
    assert_eq!(
        check(date - SignedDuration::from_hours(24)),
        Err(SignatureError::ClockSkew)
    );
    assert_eq!(check(Timestamp::now()), Err(SignatureError::ClockSkew));
    assert_eq!(
        verify(&req, &auth, SK.as_bytes(), date, SignedDuration::ZERO),
        Ok(())
    );
}

#[test]
fn rejects_missing_or_malformed_date() {
    let v = v5();
    let auth = parse_authorization(v.authorization).unwrap();
    let mut headers = v.headers.clone();
    headers.remove("x-sdk-date");
    let req = SignableRequest {
        headers: &headers,
        ..v.req()
    };
    assert_eq!(verify_v(&req, &auth), Err(SignatureError::MissingDate));
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), &["host"]),
        Err(SignatureError::MissingDate)
    );
    for bad in [
        "2024-01-02T03:04:05Z",
        "Tue, 02 Jan 2024 03:04:05 GMT",
        "1704164645",
        "",
    ] {
        let mut headers = v.headers.clone();
        headers.insert("x-sdk-date", HeaderValue::from_str(bad).unwrap());
        let req = SignableRequest {
            headers: &headers,
            ..v.req()
        };
        assert_eq!(
            verify_v(&req, &auth),
            Err(SignatureError::MalformedDate),
            "{bad}"
        );
    }
}

#[test]
fn content_sha256_header_replaces_body_hash() {
    let headers = headers(&[
        ("Host", HOST),
        ("X-Sdk-Date", DATE),
        ("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD"),
    ]);
    let req = SignableRequest {
        method: "PUT",
        path: "/upload",
        query: None,
        headers: &headers,
        body: b"original",
    };
    let cr = canonical_request(&req, &owned(&["host", "x-sdk-date"])).unwrap();
    assert!(cr.ends_with("\nUNSIGNED-PAYLOAD"), "{cr}");
    let auth =
        parse_authorization(&sign(&req, AK, SK.as_bytes(), &["host", "x-sdk-date"]).unwrap())
            .unwrap();
    let other = SignableRequest {
        body: b"tampered",
        ..req
    };
    assert_eq!(
        verify(&other, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW),
        Ok(())
    );
    // Removing the header brings the real body hash back.
    let mut plain = headers.clone();
    plain.remove("x-sdk-content-sha256");
    let req = SignableRequest {
        headers: &plain,
        ..req
    };
    assert_eq!(
        verify(&req, &auth, SK.as_bytes(), at_date(), DEFAULT_MAX_SKEW),
        Err(SignatureError::SignatureMismatch)
    );
}

#[test]
fn repeated_header_values_are_sorted_lines() {
    let hdrs = headers(&[
        ("Host", HOST),
        ("X-Sdk-Date", DATE),
        ("X-A", "2"),
        ("X-A", " 1 "),
    ]);
    let req = SignableRequest {
        method: "get",
        path: "/",
        query: None,
        headers: &hdrs,
        body: b"",
    };
    let cr = canonical_request(&req, &owned(&["host", "x-a", "x-sdk-date"])).unwrap();
    assert_eq!(
        cr,
        format!(
            "GET\n/\n\nhost:{HOST}\nx-a:1\nx-a:2\nx-sdk-date:{DATE}\n\nhost;x-a;x-sdk-date\n{EMPTY_BODY_SHA256}"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Authorization parsing
// ---------------------------------------------------------------------------------------------

const SIG: &str = "ac33c6605d6b82abcd90142ec5539e4464bd9e671e9d3a8a1d5e31096f18e7f4";

#[test]
fn parse_tolerates_optional_spaces() {
    let expected = parse_authorization(v1().authorization).unwrap();
    for value in [
        format!(
            "SDK-HMAC-SHA256 Access={AK},SignedHeaders=content-type;host;x-project-id;x-sdk-date,Signature={SIG}"
        ),
        format!(
            "SDK-HMAC-SHA256   Access={AK}, SignedHeaders=content-type;host;x-project-id;x-sdk-date,Signature={SIG}"
        ),
        format!(
            "SDK-HMAC-SHA256\tAccess={AK},\tSignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature={SIG}"
        ),
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=Content-Type;Host;X-Project-Id;X-Sdk-Date, Signature={SIG}"
        ),
    ] {
        assert_eq!(parse_authorization(&value), Ok(expected.clone()), "{value}");
    }
}

#[test]
fn parse_rejects_malformed() {
    let sh = "content-type;host";
    let cases = [
        String::new(),
        " ".to_owned(),
        "SDK-HMAC-SHA256".to_owned(),
        "SDK-HMAC-SHA256 ".to_owned(),
        format!("SDK-HMAC-SHA256Access={AK}, SignedHeaders={sh}, Signature={SIG}"),
        format!(" SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access=, SignedHeaders={sh}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 access={AK}, SignedHeaders={sh}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK} SignedHeaders={sh}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK},  SignedHeaders={sh}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;;x-sdk-date, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host; x-sdk-date, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, Signature={SIG}, SignedHeaders={sh}"),
        format!("SDK-HMAC-SHA256 SignedHeaders={sh}, Access={AK}, Signature={SIG}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature="),
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={}",
            &SIG[..63]
        ),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={SIG}0"),
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={}",
            SIG.to_uppercase()
        ),
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={}g",
            &SIG[..63]
        ),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={SIG} "),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature={SIG}, Extra=1"),
        format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders={sh}, Signature=\"{SIG}\""),
    ];
    for value in &cases {
        assert_eq!(
            parse_authorization(value),
            Err(SignatureError::MalformedAuthorization),
            "{value:?}"
        );
    }
}

#[test]
fn parse_rejects_other_algorithms() {
    for value in [
        format!("SDK-HMAC-SM3 Access={AK}, SignedHeaders=host, Signature={SIG}"),
        format!("sdk-hmac-sha256 Access={AK}, SignedHeaders=host, Signature={SIG}"),
        format!("V11-HMAC-SHA256 Access={AK}, SignedHeaders=host, Signature={SIG}"),
        "Bearer abc.def".to_owned(),
        "Basic dXNlcjpwYXNz".to_owned(),
    ] {
        assert_eq!(
            parse_authorization(&value),
            Err(SignatureError::UnsupportedAlgorithm),
            "{value}"
        );
    }
}

#[test]
fn sign_rejects_bad_inputs() {
    let v = v1();
    let req = v.req();
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), &[]),
        Err(SignatureError::NoSignedHeaders)
    );
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), &["host", "bad name"]),
        Err(SignatureError::InvalidSignedHeaderName(
            "bad name".to_owned()
        ))
    );
    assert_eq!(
        sign(&req, AK, SK.as_bytes(), &[""]),
        Err(SignatureError::InvalidSignedHeaderName(String::new()))
    );
    for ak in ["", "a,b", "a\nb"] {
        assert_eq!(
            sign(&req, ak, SK.as_bytes(), &["host"]),
            Err(SignatureError::InvalidAccessKey),
            "{ak:?}"
        );
    }
}
