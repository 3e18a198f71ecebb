//! Property tests: query canonicalisation invariants and sign → verify round trips.

use atelier_auth::{
    DEFAULT_MAX_SKEW, SignableRequest, SignatureError, canonical_query, canonical_uri,
    format_sdk_date, parse_authorization, parse_sdk_date, sign, verify,
};
use http::{HeaderMap, HeaderValue};
use jiff::Timestamp;
use proptest::prelude::*;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Encodes `s` for a raw query component. `choices` picks, byte by byte, between the possible
/// spellings: literal (where that is unambiguous), `%XX`, `%xx`, and `+` for a space.
fn encode_component(s: &str, choices: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let choice = choices.get(i % choices.len().max(1)).copied().unwrap_or(0) % 3;
        let literal_ok = b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'+' | b'%' | b'#');
        match (choice, b) {
            (0, b' ') => out.push('+'),
            (0, _) if literal_ok => out.push(b as char),
            (2, _) => out.push_str(&format!("%{b:02x}")),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn raw_query(pairs: &[(String, String)], choices: &[u8]) -> String {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let k = encode_component(k, &choices[i % choices.len()..]);
            let v = encode_component(v, &choices[(i + 1) % choices.len()..]);
            // `k` alone means `k=`; an empty key must keep its `=` (an empty piece is ignored).
            if !k.is_empty() && v.is_empty() && choices[i % choices.len()].is_multiple_of(2) {
                k
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._~-]{0,8}", "[ -~]{0,8}", "\\PC{0,6}",]
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((component(), component()), 0..8)
}

fn choices() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..16)
}

/// Canonical form computed independently: sort decoded pairs, encode unreserved-only.
fn reference_canonical(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if is_unreserved(b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let mut sorted: Vec<_> = pairs.iter().collect();
    sorted.sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes())));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn query_invariant_under_permutation(
        (pairs, shuffled) in pairs().prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle())),
        choices in choices(),
    ) {
        let a = canonical_query(Some(&raw_query(&pairs, &choices)));
        let b = canonical_query(Some(&raw_query(&shuffled, &choices)));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a, reference_canonical(&pairs));
    }

    #[test]
    fn query_invariant_under_reencoding(
        pairs in pairs(),
        c1 in choices(),
        c2 in choices(),
    ) {
        let a = canonical_query(Some(&raw_query(&pairs, &c1)));
        let b = canonical_query(Some(&raw_query(&pairs, &c2)));
        prop_assert_eq!(&a, &b);
        // Canonical form is a fixed point.
        prop_assert_eq!(canonical_query(Some(&a)), a);
    }

    #[test]
    fn uri_is_idempotent(path in "(/\\PC{0,5}){0,4}") {
        let once = canonical_uri(&path);
        prop_assert!(once.ends_with('/'));
        prop_assert!(once.bytes().all(|b| is_unreserved(b) || b == b'/' || b == b'%'));
        prop_assert_eq!(canonical_uri(&once), once);
    }

    #[test]
    fn sign_verify_round_trip(
        body in prop::collection::vec(any::<u8>(), 0..512),
        segments in prop::collection::vec(component(), 0..5),
        pairs in pairs(),
        choices in choices(),
        secs in 0i64..4_102_444_800,
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        secret in prop::collection::vec(any::<u8>(), 0..80),
        sign_host in any::<bool>(),
    ) {
        let path: String = segments
            .iter()
            .enumerate()
            .map(|(i, s)| format!("/{}", encode_component(s, &choices[i % choices.len()..]).replace('+', "%20")))
            .collect();
        let query = raw_query(&pairs, &choices);
        let date = Timestamp::from_second(secs).unwrap();
        let date_text = format_sdk_date(date);
        prop_assert_eq!(parse_sdk_date(&date_text).unwrap(), date);

        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert("x-sdk-date", HeaderValue::from_str(&date_text).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-project-id", HeaderValue::from_static("p1"));
        let req = SignableRequest {
            method,
            path: &path,
            query: (!query.is_empty()).then_some(query.as_str()),
            headers: &headers,
            body: &body,
        };
        let signed: &[&str] = if sign_host {
            &["content-type", "host", "x-project-id", "x-sdk-date"]
        } else {
            &["Content-Type", "X-Sdk-Date"]
        };
        let authorization = sign(&req, "AK-test", &secret, signed).unwrap();
        let auth = parse_authorization(&authorization).unwrap();
        prop_assert_eq!(&auth.access_key, "AK-test");
        prop_assert_eq!(verify(&req, &auth, &secret, date, DEFAULT_MAX_SKEW), Ok(()));

        let mut other_body = body.clone();
        other_body.push(0);
        let tampered = SignableRequest { body: &other_body, ..req };
        prop_assert_eq!(
            verify(&tampered, &auth, &secret, date, DEFAULT_MAX_SKEW),
            Err(SignatureError::SignatureMismatch)
        );
        let other_path = format!("{path}/x");
        let tampered = SignableRequest { path: &other_path, ..req };
        prop_assert_eq!(
            verify(&tampered, &auth, &secret, date, DEFAULT_MAX_SKEW),
            Err(SignatureError::SignatureMismatch)
        );
        let other_query = format!("{query}&zz=1");
        let tampered = SignableRequest { query: Some(&other_query), ..req };
        prop_assert_eq!(
            verify(&tampered, &auth, &secret, date, DEFAULT_MAX_SKEW),
            Err(SignatureError::SignatureMismatch)
        );
        let mut other_secret = secret.clone();
        other_secret.push(1);
        prop_assert_eq!(
            verify(&req, &auth, &other_secret, date, DEFAULT_MAX_SKEW),
            Err(SignatureError::SignatureMismatch)
        );
    }
}
