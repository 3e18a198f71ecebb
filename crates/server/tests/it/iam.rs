//! `GET /v3/projects` and `GET /v3/auth/projects`: project discovery by SDKs given a region
//! and no project id (spec §5.5), with AK/SK and with tokens; only the caller's projects.
use reqwest::{Method, StatusCode};
use serde_json::Value;

use atelier_domain::{Project, ProjectId};

use crate::support::{ACCESS_KEY, PROJECT_ID, SdkStyle, TestApp, expect_error, json_of};

/// The default `auth.region`.
const REGION: &str = "local";

fn ids(list: &Value) -> Vec<&str> {
    list["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect()
}

/// Adds the admin to a new project named `name`; returns its id.
async fn admin_joins(app: &TestApp, name: &str) -> String {
    let project = Project {
        id: ProjectId::new_random(),
        name: name.to_owned(),
        create_at: app.now_ms(),
    };
    app.store.create_project(&project).await.unwrap();
    app.store
        .add_project_member(&project.id, &app.admin().await.id)
        .await
        .unwrap();
    project.id.to_string()
}

#[tokio::test]
async fn the_region_name_finds_the_main_project_as_the_python_sdk_asks() {
    let app = TestApp::spawn().await;
    let path = format!("/v3/projects?name={REGION}");
    let (status, list) = json_of(app.signed("GET", &path, None).await).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), [PROJECT_ID]);
    let project = &list["projects"][0];
    assert_eq!(project["name"], REGION);
    assert_eq!(project["enabled"], true);
    assert_eq!(project["is_domain"], false);
    assert_eq!(project["domain_id"], project["parent_id"]);
    assert_eq!(
        project["links"]["self"],
        format!("http://{}/v3/projects/{PROJECT_ID}", app.host)
    );
    assert_eq!(list["links"]["self"], format!("http://{}{path}", app.host));
    assert_eq!(list["links"]["next"], Value::Null);
    assert_eq!(list["links"]["previous"], Value::Null);
}

#[tokio::test]
async fn other_projects_of_the_caller_are_sub_projects_of_the_region() {
    let app = TestApp::spawn().await;
    let research = admin_joins(&app, "research").await;
    let (_, all) = json_of(
        app.signed_as(SdkStyle::Go, "GET", "/v3/projects", None)
            .await,
    )
    .await;
    let mut found = ids(&all);
    found.sort_unstable();
    let mut expected = vec![PROJECT_ID, research.as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected, "{all}");

    let (_, main) = json_of(
        app.signed("GET", &format!("/v3/projects?name={REGION}"), None)
            .await,
    )
    .await;
    assert_eq!(ids(&main), [PROJECT_ID], "exactly one, as the SDK requires");
    let (_, sub) = json_of(
        app.signed("GET", &format!("/v3/projects?name={REGION}_research"), None)
            .await,
    )
    .await;
    assert_eq!(ids(&sub), [research.as_str()]);
    let (_, none) = json_of(app.signed("GET", "/v3/projects?name=eu-de", None).await).await;
    assert!(ids(&none).is_empty(), "{none}");
    let (_, disabled) = json_of(app.signed("GET", "/v3/projects?enabled=false", None).await).await;
    assert!(ids(&disabled).is_empty(), "{disabled}");
}

#[tokio::test]
async fn no_other_tenants_project_is_ever_listed() {
    let app = TestApp::spawn().await;
    let foreign = app.foreign_project().await;
    let (bobs, access_key, secret_key) = app.second_tenant().await;
    for path in ["/v3/projects", "/v3/auth/projects"] {
        let (status, ours) = json_of(app.signed("GET", path, None).await).await;
        assert_eq!(status, StatusCode::OK, "{ours}");
        assert_eq!(ids(&ours), [PROJECT_ID], "{path}");
        let response = app
            .signed_with(
                SdkStyle::Python,
                "GET",
                path,
                None,
                &access_key,
                &secret_key,
            )
            .await;
        let (status, theirs) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{theirs}");
        assert_eq!(ids(&theirs), [bobs.as_str()], "{path}");
        assert!(!ids(&theirs).contains(&foreign.as_str()));
    }
    // Bob's only project is not named `default`: a sub-project, which `name={region}` misses.
    let response = app
        .signed_with(
            SdkStyle::Python,
            "GET",
            &format!("/v3/projects?name={REGION}"),
            None,
            &access_key,
            &secret_key,
        )
        .await;
    let (_, theirs) = json_of(response).await;
    assert!(ids(&theirs).is_empty(), "{theirs}");
}

#[tokio::test]
async fn a_token_sees_its_own_project_only() {
    let app = TestApp::spawn().await;
    let research = admin_joins(&app, "research").await;
    let token = app.token(&research).await;
    for path in ["/v3/auth/projects", "/v3/projects"] {
        let (status, list) = json_of(app.with_token(&token, "GET", path, None).await).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(ids(&list), [research.as_str()], "{path}");
        assert_eq!(list["projects"][0]["name"], format!("{REGION}_research"));
    }
    let token = app.token(PROJECT_ID).await;
    let (_, list) = json_of(
        app.with_token(&token, "GET", &format!("/v3/projects?name={REGION}"), None)
            .await,
    )
    .await;
    assert_eq!(ids(&list), [PROJECT_ID]);
}

#[tokio::test]
async fn project_discovery_refuses_bad_credentials_and_bad_filters() {
    let app = TestApp::spawn().await;
    let response = app
        .send_raw(Method::GET, "/v3/projects", Default::default(), Vec::new())
        .await;
    expect_error(response, 401, "APIG.0301").await;
    let response = app
        .signed_with(
            SdkStyle::Python,
            "GET",
            "/v3/auth/projects",
            None,
            ACCESS_KEY,
            "not-the-secret-key-at-all",
        )
        .await;
    expect_error(response, 401, "APIG.0301").await;
    let response = app
        .with_token("atk-unknown", "GET", "/v3/auth/projects", None)
        .await;
    expect_error(response, 401, "APIG.0301").await;
    let response = app.signed("GET", "/v3/projects?enabled=maybe", None).await;
    expect_error(response, 400, "ModelArts.6336").await;
    // Writes are not served.
    let response = app.signed("POST", "/v3/projects", Some("{}")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
