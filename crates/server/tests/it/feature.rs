//! `GET /v1/{project}/authoring/features/{feature}` (ListFeatures, spec §1.3 #30).
use reqwest::StatusCode;

use crate::support::{PROJECT_ID, SdkStyle, TestApp, expect_error, json_of, notebook_body};

fn feature_path(feature: &str) -> String {
    format!("/v1/{PROJECT_ID}/authoring/features/{feature}")
}

#[tokio::test]
async fn notebook_feature_counts_the_projects_notebooks() {
    let app = TestApp::spawn().await;
    let (status, before) = json_of(app.signed("GET", &feature_path("NOTEBOOK"), None).await).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["name"], "NOTEBOOK");
    assert_eq!(before["enabled"], true);
    assert_eq!(before["quota"], -1);
    assert_eq!(before["used"], 0);
    assert_eq!(before["user_id"], app.admin().await.id.to_string());
    let id = before["id"].as_str().expect("id");
    assert_eq!(id.len(), 32, "{before}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{before}");
    let project = app
        .store
        .find_project(&PROJECT_ID.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before["create_at"], project.create_at);
    assert_eq!(before["update_at"], project.create_at);

    app.create_notebook(&notebook_body("one")).await;
    app.create_notebook(&notebook_body("two")).await;
    // Lower case, and the Go SDK's signature, work too.
    let (status, after) = json_of(
        app.signed_as(SdkStyle::Go, "GET", &feature_path("notebook"), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["used"], 2);
    assert_eq!(after["id"], before["id"], "the id is stable");
}

#[tokio::test]
async fn notebook_feature_is_per_project() {
    let app = TestApp::spawn().await;
    app.create_notebook(&notebook_body("ours")).await;
    let (project, access_key, secret_key) = app.second_tenant().await;
    let theirs = format!("/v1/{project}/authoring/features/NOTEBOOK");
    let response = app
        .signed_with(
            SdkStyle::Python,
            "GET",
            &theirs,
            None,
            &access_key,
            &secret_key,
        )
        .await;
    let (status, other) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(other["used"], 0);
    let (_, ours) = json_of(app.signed("GET", &feature_path("NOTEBOOK"), None).await).await;
    assert_eq!(ours["used"], 1);
    assert_ne!(ours["id"], other["id"]);
    // Nobody reads another project's feature.
    let response = app.signed("GET", &theirs, None).await;
    expect_error(response, 403, "ModelArts.0210").await;
}

#[tokio::test]
async fn an_unknown_feature_is_404_6404() {
    let app = TestApp::spawn().await;
    for feature in ["TRAIN", "DEFAULT", "NOTEBOOKS", "%20"] {
        let response = app.signed("GET", &feature_path(feature), None).await;
        let error = expect_error(response, 404, "ModelArts.6404").await;
        assert!(
            error["error_msg"].as_str().unwrap().contains("NOTEBOOK"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn features_take_a_token_and_refuse_no_credentials() {
    let app = TestApp::spawn().await;
    let token = app.token(PROJECT_ID).await;
    let (status, feature) = json_of(
        app.with_token(&token, "GET", &feature_path("NOTEBOOK"), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{feature}");
    let response = app
        .send_raw(
            reqwest::Method::GET,
            &feature_path("NOTEBOOK"),
            Default::default(),
            Vec::new(),
        )
        .await;
    expect_error(response, 401, "APIG.0301").await;
}
