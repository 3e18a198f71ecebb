//! `GET /openapi.json`: served without credentials; a diff in the snapshot is an API change.
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::TestApp;

async fn openapi(app: &TestApp) -> Value {
    let response = app
        .send_raw(Method::GET, "/openapi.json", HeaderMap::new(), Vec::new())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "content type"
    );
    response.json().await.expect("the document is JSON")
}

#[tokio::test]
async fn the_openapi_document_is_served_without_credentials() {
    let app = TestApp::spawn().await;
    let document = openapi(&app).await;
    insta::assert_json_snapshot!("openapi", document);
}

#[tokio::test]
async fn the_openapi_document_lists_every_modelarts_operation_atelier_serves() {
    let app = TestApp::spawn().await;
    let document = openapi(&app).await;
    let paths = document["paths"].as_object().expect("paths");

    // Spec §1.2 #1–#15, §1.3 #20, #22–#26 and #30, and the IAM reads of §5.5.
    let expected = [
        ("post", "/v1/{project_id}/notebooks"),
        ("get", "/v1/{project_id}/notebooks"),
        ("get", "/v1/{project_id}/notebooks/all"),
        ("get", "/v1/{project_id}/notebooks/{id}"),
        ("put", "/v1/{project_id}/notebooks/{id}"),
        ("delete", "/v1/{project_id}/notebooks/{id}"),
        ("post", "/v1/{project_id}/notebooks/{id}/start"),
        ("post", "/v1/{project_id}/notebooks/{id}/stop"),
        ("post", "/v1/{project_id}/notebooks/{id}/create-image"),
        ("get", "/v1/{project_id}/notebooks/{id}/lease"),
        ("patch", "/v1/{project_id}/notebooks/{id}/lease"),
        ("get", "/v1/{project_id}/notebooks/flavors"),
        ("get", "/v1/{project_id}/notebooks/{id}/flavors"),
        (
            "post",
            "/v1/{project_id}/notebooks/{resource_id}/tags/create",
        ),
        (
            "delete",
            "/v1/{project_id}/notebooks/{resource_id}/tags/delete",
        ),
        ("get", "/v1/{project_id}/notebooks/tags"),
        ("get", "/v1/{project_id}/images"),
        ("post", "/v1/{project_id}/images"),
        ("get", "/v1/{project_id}/images/{id}"),
        ("delete", "/v1/{project_id}/images/{id}"),
        ("get", "/v1/{project_id}/images/group"),
        ("get", "/v1/{project_id}/authoring/features/{feature}"),
        ("get", "/v3/projects"),
        ("get", "/v3/auth/projects"),
    ];
    for (method, path) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing from /openapi.json"));
        let operation = item
            .get(method)
            .unwrap_or_else(|| panic!("{method} {path} is missing"));
        let responses = operation["responses"].as_object().expect("responses");
        for status in ["200", "400", "401", "403"] {
            if status == "403" && path.starts_with("/v3/") {
                // The IAM reads name no project, so none can be refused.
                assert!(
                    !responses.contains_key("403"),
                    "{method} {path} documents a 403"
                );
                continue;
            }
            assert!(
                responses.contains_key(status)
                    || (status == "200" && responses.contains_key("204")),
                "{method} {path} documents no {status}"
            );
        }
    }
}
