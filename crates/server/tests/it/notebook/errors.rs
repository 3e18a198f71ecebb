//! Every error a notebook request can meet (spec §4): code, status, body shape, and that a
//! refused request changes nothing.
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    JUPYTERLAB_IMAGE_ID, PROJECT_ID, TestApp, expect_error, id_of, json_of, notebook_body,
};

/// Posts a create body that must be refused with `(status, code)`; checks that no notebook
/// appeared. Returns the error body.
async fn create_refused(app: &TestApp, body: &str, status: u16, code: &str) -> Value {
    let before = app.notebook_count().await;
    let response = app.signed("POST", &app.notebooks_path(), Some(body)).await;
    let error = expect_error(response, status, code).await;
    assert_eq!(
        app.notebook_count().await,
        before,
        "a refused create left a notebook behind: {body}"
    );
    error
}

fn with(mut body: Value, pointer: &str, value: Value) -> String {
    *body.pointer_mut(pointer).expect("field exists") = value;
    body.to_string()
}

fn without(mut body: Value, pointer: &str) -> String {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    body.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key);
    body.to_string()
}

#[tokio::test]
async fn malformed_json_is_6400() {
    let app = TestApp::spawn().await;
    app.create_notebook(&notebook_body("existing")).await;

    for body in [r#"{"name":"#, "not json", "[1,2]", r#""a string""#] {
        create_refused(&app, body, 400, "ModelArts.6400").await;
    }
}

#[tokio::test]
async fn a_wrong_json_type_is_6332_naming_the_field() {
    let app = TestApp::spawn().await;
    let base = notebook_body("typed");

    let error = create_refused(
        &app,
        &with(base.clone(), "/volume/capacity", json!("big")),
        400,
        "ModelArts.6332",
    )
    .await;
    assert!(
        error["error_msg"]
            .as_str()
            .unwrap()
            .contains("volume.capacity"),
        "{error}"
    );
    create_refused(
        &app,
        &with(base.clone(), "/name", json!(7)),
        400,
        "ModelArts.6332",
    )
    .await;
    create_refused(
        &app,
        &with(base.clone(), "/volume", json!("EVS")),
        400,
        "ModelArts.6332",
    )
    .await;
    let mut body = base;
    body["duration"] = json!("one hour");
    create_refused(&app, &body.to_string(), 400, "ModelArts.6332").await;
}

#[tokio::test]
async fn a_missing_required_field_is_6335_naming_it() {
    let app = TestApp::spawn().await;
    let base = notebook_body("incomplete");

    for (pointer, named) in [
        ("/name", "name"),
        ("/image_id", "image_id"),
        ("/volume/category", "volume.category"),
        ("/flavor", "flavor"),
    ] {
        let error =
            create_refused(&app, &without(base.clone(), pointer), 400, "ModelArts.6335").await;
        assert!(
            error["error_msg"].as_str().unwrap().contains(named),
            "{pointer}: {error}"
        );
    }
    // Empty strings count as absent.
    create_refused(
        &app,
        &with(base.clone(), "/name", json!("")),
        400,
        "ModelArts.6335",
    )
    .await;
    create_refused(
        &app,
        &with(base.clone(), "/image_id", json!("")),
        400,
        "ModelArts.6335",
    )
    .await;
    create_refused(
        &app,
        &with(base, "/volume/category", json!("")),
        400,
        "ModelArts.6335",
    )
    .await;
}

#[tokio::test]
async fn a_missing_volume_is_6316() {
    let app = TestApp::spawn().await;
    create_refused(
        &app,
        &without(notebook_body("no-volume"), "/volume"),
        400,
        "ModelArts.6316",
    )
    .await;
}

#[tokio::test]
async fn bad_values_are_refused_with_their_codes() {
    let app = TestApp::spawn().await;
    let base = notebook_body("values");

    let cases: Vec<(String, &str)> = vec![
        (
            with(base.clone(), "/flavor", json!("modelarts.vm.gpu.imaginary")),
            "ModelArts.6323",
        ),
        (
            with(
                base.clone(),
                "/image_id",
                json!("00000000-0000-4000-8000-000000000000"),
            ),
            "ModelArts.6797",
        ),
        (
            with(base.clone(), "/image_id", json!("not-a-uuid")),
            "ModelArts.6797",
        ),
        (
            with(base.clone(), "/volume/capacity", json!(4)),
            "ModelArts.6331",
        ),
        (
            with(base.clone(), "/volume/capacity", json!(4097)),
            "ModelArts.6331",
        ),
        (
            with(base.clone(), "/volume/category", json!("FLOPPY")),
            "ModelArts.6324",
        ),
        (
            with(base.clone(), "/name", json!("my notebook")),
            "ModelArts.6334",
        ),
        (
            with(base.clone(), "/name", json!("semi;colon")),
            "ModelArts.6334",
        ),
        (
            with(base.clone(), "/volume/ownership", json!("BORROWED")),
            "ModelArts.6336",
        ),
        (
            with(base.clone(), "/flavor", json!("modelarts.vm.cpu.free")),
            "ModelArts.6870",
        ),
        (
            {
                let mut body = base.clone();
                body["description"] = json!("a <b>bold</b> claim");
                body.to_string()
            },
            "ModelArts.6334",
        ),
        (
            {
                let mut body = base.clone();
                body["workspace_id"] = json!("0123456789abcdef0123456789abcdef");
                body.to_string()
            },
            "ModelArts.7005",
        ),
    ];
    for (body, code) in cases {
        create_refused(&app, &body, 400, code).await;
    }
}

#[tokio::test]
async fn a_lease_out_of_range_is_6349_on_create_start_and_renew() {
    let app = TestApp::spawn().await;
    let base = notebook_body("lease");
    for duration in [0, 1_000, 3_599_999, 259_200_001] {
        let mut body = base.clone();
        body["duration"] = json!(duration);
        create_refused(&app, &body.to_string(), 400, "ModelArts.6349").await;
    }
    let mut body = base.clone();
    body["lease"] = json!({"duration": 600_000, "type": "IDLE"});
    create_refused(&app, &body.to_string(), 400, "ModelArts.6349").await;

    let stopped = app.create_stopped("lease").await;
    let id = id_of(&stopped).to_owned();
    for query in [
        "duration=1000",
        "duration=259200001",
        "duration=600000&type=IDLE",
    ] {
        let response = app
            .signed(
                "POST",
                &format!("{}/start?{query}", app.notebook_path(&id)),
                None,
            )
            .await;
        expect_error(response, 400, "ModelArts.6349").await;
        assert_eq!(app.show_ok(&id).await, stopped, "after start?{query}");
    }

    app.start(&id).await;
    let running = app
        .wait_status(&id, "RUNNING", crate::support::SETTLE)
        .await;
    let lease_path = format!("{}/lease", app.notebook_path(&id));
    let response = app
        .signed("PATCH", &format!("{lease_path}?duration=1000"), None)
        .await;
    expect_error(response, 400, "ModelArts.6349").await;
    let response = app
        .signed("PATCH", &lease_path, Some(r#"{"duration": 999999999999}"#))
        .await;
    expect_error(response, 400, "ModelArts.6349").await;
    assert_eq!(app.show_ok(&id).await["lease"], running["lease"]);
}

#[tokio::test]
async fn an_unknown_or_malformed_notebook_id_is_404_6309() {
    let app = TestApp::spawn().await;
    let unknown = "3f1c2a7e-5b64-4a55-9a3e-0d6f1e2b7c11";
    for id in [unknown, "not-an-id", "3F1C2A7E"] {
        let path = app.notebook_path(id);
        for (method, path) in [
            ("GET", path.clone()),
            ("PUT", path.clone()),
            ("DELETE", path.clone()),
            ("POST", format!("{path}/start")),
            ("POST", format!("{path}/stop")),
            ("GET", format!("{path}/lease")),
            ("PATCH", format!("{path}/lease")),
            ("GET", format!("{path}/flavors")),
            ("POST", format!("{path}/tags/create")),
        ] {
            let body = if method == "PUT" || path.ends_with("tags/create") {
                Some(r#"{"tags":[]}"#)
            } else {
                None
            };
            let response = app.signed(method, &path, body).await;
            let error = expect_error(response, 404, "ModelArts.6309").await;
            assert_eq!(error.as_object().unwrap().len(), 2, "{error}");
        }
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = TestApp::spawn().await;
    for path in [
        format!("/v1/{PROJECT_ID}/notebooks/{JUPYTERLAB_IMAGE_ID}/nonsense"),
        format!("/v1/{PROJECT_ID}/widgets"),
        "/v2/whatever".to_owned(),
        "/".to_owned(),
    ] {
        let response = app.signed("GET", &path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let (_, json) = json_of(response).await;
        assert!(json["error_code"].is_string(), "{path}: {json}");
        assert!(json["error_msg"].is_string(), "{path}: {json}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = TestApp::spawn().await;
    let created = app.create_notebook(&notebook_body("m")).await;
    let id = id_of(&created);
    for (method, path) in [
        ("PATCH", app.notebooks_path()),
        ("DELETE", format!("{}/all", app.notebooks_path())),
        ("GET", format!("{}/start", app.notebook_path(id))),
        ("PUT", format!("{}/stop", app.notebook_path(id))),
    ] {
        let response = app.signed(method, &path, None).await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let (_, json) = json_of(response).await;
        assert!(
            json["error_code"]
                .as_str()
                .is_some_and(|c| c.starts_with("ModelArts.")),
            "{method} {path}: {json}"
        );
    }
    assert_eq!(app.notebook_count().await, 1);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused() {
    let app = TestApp::spawn().await;
    let mut body = notebook_body("big");
    body["description"] = json!("x".repeat(1024 * 1024 + 1));
    let body = body.to_string();
    let headers = app.sign_headers(
        crate::support::SdkStyle::Python,
        &Method::POST,
        &app.notebooks_path(),
        body.as_bytes(),
        crate::support::ACCESS_KEY,
        crate::support::SECRET_KEY,
        jiff::Timestamp::now(),
    );
    let response = app
        .send_raw(
            Method::POST,
            &app.notebooks_path(),
            headers,
            body.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.notebook_count().await, 0);
}
