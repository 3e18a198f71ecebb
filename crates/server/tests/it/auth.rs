//! Who may call: AK/SK signatures as both SDKs make them, `X-Auth-Token`, clock skew, and
//! project scope (spec §5). Applies to every `/v1/{project_id}/…` path.
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::support::{
    ACCESS_KEY, PROJECT_ID, SECRET_KEY, SdkStyle, TestApp, expect_error, json_of, notebook_body,
};

fn list_path() -> String {
    format!("/v1/{PROJECT_ID}/notebooks?limit=10&offset=0")
}

#[tokio::test]
async fn a_python_sdk_signature_is_accepted() {
    let app = TestApp::spawn().await;
    let response = app.signed("GET", &list_path(), None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_go_sdk_signature_without_host_and_project_is_accepted() {
    let app = TestApp::spawn().await;
    let body = notebook_body("from-terraform").to_string();

    let response = app
        .signed_go("POST", &app.notebooks_path(), Some(&body))
        .await;
    let (status, created) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{created}");

    let response = app.signed_go("GET", &list_path(), None).await;
    let (status, list) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn a_request_without_credentials_is_401_apig_0301() {
    let app = TestApp::spawn().await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));

    let response = app
        .send_raw(Method::GET, &list_path(), headers, Vec::new())
        .await;

    let error = expect_error(response, 401, "APIG.0301").await;
    assert!(
        error["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("Incorrect IAM authentication information"),
        "{error}"
    );
}

#[tokio::test]
async fn a_signature_made_with_the_wrong_secret_or_an_unknown_key_is_401() {
    let app = TestApp::spawn().await;

    let wrong_secret = app
        .signed_with(
            SdkStyle::Python,
            "GET",
            &list_path(),
            None,
            ACCESS_KEY,
            "not-the-secret-key-at-all",
        )
        .await;
    expect_error(wrong_secret, 401, "APIG.0301").await;

    let unknown_key = app
        .signed_with(
            SdkStyle::Python,
            "GET",
            &list_path(),
            None,
            "AKUNKNOWN000000000001",
            SECRET_KEY,
        )
        .await;
    expect_error(unknown_key, 401, "APIG.0301").await;
}

#[tokio::test]
async fn a_body_changed_after_signing_is_401_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let signed_body = notebook_body("signed").to_string();
    let sent_body = notebook_body("tampered").to_string();
    let headers = app.sign_headers(
        SdkStyle::Python,
        &Method::POST,
        &app.notebooks_path(),
        signed_body.as_bytes(),
        ACCESS_KEY,
        SECRET_KEY,
        jiff::Timestamp::now(),
    );

    let response = app
        .send_raw(
            Method::POST,
            &app.notebooks_path(),
            headers,
            sent_body.into_bytes(),
        )
        .await;

    expect_error(response, 401, "APIG.0301").await;
    assert_eq!(app.notebook_count().await, 0);
}

#[tokio::test]
async fn a_changed_query_or_path_breaks_the_signature() {
    let app = TestApp::spawn().await;
    let headers = app.sign_headers(
        SdkStyle::Python,
        &Method::GET,
        &list_path(),
        b"",
        ACCESS_KEY,
        SECRET_KEY,
        jiff::Timestamp::now(),
    );

    let response = app
        .send_raw(
            Method::GET,
            &format!("/v1/{PROJECT_ID}/notebooks?limit=50&offset=0"),
            headers.clone(),
            Vec::new(),
        )
        .await;
    expect_error(response, 401, "APIG.0301").await;

    let response = app
        .send_raw(
            Method::GET,
            &format!("/v1/{PROJECT_ID}/notebooks/all?limit=10&offset=0"),
            headers,
            Vec::new(),
        )
        .await;
    expect_error(response, 401, "APIG.0301").await;
}

#[tokio::test]
async fn an_sdk_date_more_than_fifteen_minutes_off_is_401() {
    let app = TestApp::spawn().await;
    for skew_minutes in [-16, 16] {
        let date = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_mins(skew_minutes))
            .expect("in range");
        let headers = app.sign_headers(
            SdkStyle::Python,
            &Method::GET,
            &list_path(),
            b"",
            ACCESS_KEY,
            SECRET_KEY,
            date,
        );
        let response = app
            .send_raw(Method::GET, &list_path(), headers, Vec::new())
            .await;
        let error = expect_error(response, 401, "APIG.0301").await;
        assert!(
            error["error_msg"].as_str().unwrap().contains("expired"),
            "{skew_minutes} min: {error}"
        );
    }
    // Fourteen minutes is within the allowed skew.
    let date = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_mins(14))
        .expect("in range");
    let headers = app.sign_headers(
        SdkStyle::Python,
        &Method::GET,
        &list_path(),
        b"",
        ACCESS_KEY,
        SECRET_KEY,
        date,
    );
    let response = app
        .send_raw(Method::GET, &list_path(), headers, Vec::new())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_project_the_caller_is_not_a_member_of_is_403_0210() {
    let app = TestApp::spawn().await;
    let foreign = app.foreign_project().await;
    let body = notebook_body("intruder").to_string();

    let response = app
        .signed("GET", &format!("/v1/{foreign}/notebooks"), None)
        .await;
    expect_error(response, 403, "ModelArts.0210").await;
    let response = app
        .signed("POST", &format!("/v1/{foreign}/notebooks"), Some(&body))
        .await;
    expect_error(response, 403, "ModelArts.0210").await;
    // A malformed project id is refused the same way.
    let response = app.signed("GET", "/v1/not-a-project/notebooks", None).await;
    expect_error(response, 403, "ModelArts.0210").await;
    assert_eq!(app.notebook_count().await, 0);
}

#[tokio::test]
async fn an_x_project_id_header_naming_another_project_is_403() {
    let app = TestApp::spawn().await;
    let mut headers = app.sign_headers(
        SdkStyle::Go,
        &Method::GET,
        &list_path(),
        b"",
        ACCESS_KEY,
        SECRET_KEY,
        jiff::Timestamp::now(),
    );
    // The Go SDK does not sign X-Project-Id, so it can be changed without breaking the signature.
    headers.insert(
        "x-project-id",
        HeaderValue::from_static("ffffffffffffffffffffffffffffffff"),
    );

    let response = app
        .send_raw(Method::GET, &list_path(), headers, Vec::new())
        .await;

    expect_error(response, 403, "ModelArts.0210").await;
}

#[tokio::test]
async fn another_tenant_sees_none_of_our_notebooks() {
    let app = TestApp::spawn().await;
    let ours = app.create_notebook(&notebook_body("ours")).await;
    let (project, access_key, secret_key) = app.second_tenant().await;
    let as_bob = |method: &'static str, path: String| {
        let (access_key, secret_key) = (access_key.clone(), secret_key.clone());
        let app = &app;
        async move {
            app.signed_with(
                SdkStyle::Python,
                method,
                &path,
                None,
                &access_key,
                &secret_key,
            )
            .await
        }
    };

    let (status, list) = json_of(as_bob("GET", format!("/v1/{project}/notebooks/all")).await).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 0);
    let id = ours["id"].as_str().unwrap();
    let response = as_bob("GET", format!("/v1/{project}/notebooks/{id}")).await;
    expect_error(response, 404, "ModelArts.6309").await;
    let response = as_bob("DELETE", format!("/v1/{project}/notebooks/{id}")).await;
    expect_error(response, 404, "ModelArts.6309").await;
    // …and cannot reach into our project.
    let response = as_bob("GET", format!("/v1/{PROJECT_ID}/notebooks/{id}")).await;
    expect_error(response, 403, "ModelArts.0210").await;
    assert_eq!(app.show_ok(id).await["id"], id);
}

#[tokio::test]
async fn an_x_auth_token_authenticates_for_its_project() {
    let app = TestApp::spawn().await;
    let token = app.token(PROJECT_ID).await;

    let response = app
        .with_token(
            &token,
            "POST",
            &app.notebooks_path(),
            Some(&notebook_body("by-token").to_string()),
        )
        .await;
    let (status, created) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{created}");

    let response = app.with_token(&token, "GET", &list_path(), None).await;
    let (status, list) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn an_expired_or_unknown_token_is_401() {
    let app = TestApp::spawn().await;
    let two_days_ago = app.now_ms() - 48 * 3600 * 1000;
    let expired = app
        .token_issued_at(PROJECT_ID, Duration::from_secs(3600), two_days_ago)
        .await;

    let response = app.with_token(&expired, "GET", &list_path(), None).await;
    expect_error(response, 401, "APIG.0301").await;
    let response = app
        .with_token("atk-made-up-token", "GET", &list_path(), None)
        .await;
    expect_error(response, 401, "APIG.0301").await;
}

#[tokio::test]
async fn a_token_for_another_project_is_403_0210() {
    let app = TestApp::spawn().await;
    let foreign = app.foreign_project().await;
    let token = app.token(&foreign).await;

    let response = app.with_token(&token, "GET", &list_path(), None).await;

    expect_error(response, 403, "ModelArts.0210").await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_even_unauthenticated_ones() {
    let app = TestApp::spawn().await;
    // `send_raw` checks the header on every response; here the requests carry no credentials.
    for (method, path) in [
        (Method::GET, list_path()),
        (Method::POST, format!("/v1/{PROJECT_ID}/notebooks")),
        (Method::GET, "/openapi.json".to_owned()),
        (Method::GET, "/nowhere".to_owned()),
    ] {
        let response = app
            .send_raw(method.clone(), &path, HeaderMap::new(), Vec::new())
            .await;
        assert!(
            response.status() != StatusCode::OK || path == "/openapi.json",
            "{method} {path}: {}",
            response.status()
        );
    }
    // Two answers never share an id.
    let first = app.signed("GET", &list_path(), None).await;
    let second = app.signed("GET", &list_path(), None).await;
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
}

/// Signs `body` like the Python SDK, then adds `X-Sdk-Content-Sha256` (unsigned) as given.
fn with_content_sha256(
    app: &TestApp,
    method: &Method,
    path: &str,
    signed_body: &[u8],
    content_sha256: &str,
) -> HeaderMap {
    let mut headers = app.sign_headers(
        SdkStyle::Python,
        method,
        path,
        signed_body,
        ACCESS_KEY,
        SECRET_KEY,
        jiff::Timestamp::now(),
    );
    headers.insert(
        "x-sdk-content-sha256",
        HeaderValue::from_str(content_sha256).expect("header"),
    );
    headers
}

/// The Python SDK core signs the empty body's hash when it sends `X-Sdk-Content-Sha256:
/// UNSIGNED-PAYLOAD` with no body (the Node.js SDK signs the literal; both are accepted).
#[tokio::test]
async fn unsigned_payload_with_an_empty_body_accepts_the_python_sdk_form() {
    let app = TestApp::spawn().await;
    let headers = with_content_sha256(&app, &Method::GET, &list_path(), b"", "UNSIGNED-PAYLOAD");
    let response = app
        .send_raw(Method::GET, &list_path(), headers, Vec::new())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A signature over the empty body's hash never carries a body, `UNSIGNED-PAYLOAD` or not.
#[tokio::test]
async fn unsigned_payload_does_not_let_an_empty_body_signature_carry_a_body() {
    let app = TestApp::spawn().await;
    let headers = with_content_sha256(
        &app,
        &Method::POST,
        &app.notebooks_path(),
        b"",
        "UNSIGNED-PAYLOAD",
    );
    let body = notebook_body("smuggled").to_string();
    let response = app
        .send_raw(
            Method::POST,
            &app.notebooks_path(),
            headers,
            body.into_bytes(),
        )
        .await;
    expect_error(response, 401, "APIG.0301").await;
    assert_eq!(app.notebook_count().await, 0);
}

/// A declared body hash must be the hash of the body sent: a captured signature over one
/// body's hash does not carry another body.
#[tokio::test]
async fn a_declared_content_hash_that_is_not_the_bodys_is_401_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let signed_body = notebook_body("signed").to_string();
    let declared = atelier_auth::sha256_hex(signed_body.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("host", HeaderValue::from_str(&app.host).expect("header"));
    headers.insert(
        "x-sdk-date",
        HeaderValue::from_str(&atelier_auth::format_sdk_date(jiff::Timestamp::now()))
            .expect("header"),
    );
    headers.insert(
        "x-sdk-content-sha256",
        HeaderValue::from_str(&declared).expect("header"),
    );
    let path = app.notebooks_path();
    let authorization = atelier_auth::sign(
        &atelier_auth::SignableRequest {
            method: "POST",
            path: &path,
            query: None,
            headers: &headers,
            body: signed_body.as_bytes(),
        },
        ACCESS_KEY,
        SECRET_KEY.as_bytes(),
        &["content-type", "host", "x-sdk-content-sha256", "x-sdk-date"],
    )
    .expect("signed");
    headers.insert(
        "authorization",
        HeaderValue::from_str(&authorization).expect("header"),
    );

    let swapped = notebook_body("swapped").to_string();
    let response = app
        .send_raw(Method::POST, &path, headers.clone(), swapped.into_bytes())
        .await;
    expect_error(response, 401, "APIG.0301").await;
    assert_eq!(app.notebook_count().await, 0);

    // The body it declared goes through.
    let response = app
        .send_raw(Method::POST, &path, headers, signed_body.into_bytes())
        .await;
    let (status, created) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(app.notebook_count().await, 1);
}
