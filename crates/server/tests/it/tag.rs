//! Notebook tags: `POST …/{id}/tags/create`, `DELETE …/{id}/tags/delete` (a DELETE with a
//! body), `GET …/notebooks/tags`: spec §1.4.10.
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{PROJECT_ID, TestApp, expect_error, id_of, json_of};

async fn tag(app: &TestApp, id: &str, tags: Value) -> reqwest::Response {
    app.signed(
        "POST",
        &format!("{}/tags/create", app.notebook_path(id)),
        Some(&json!({ "tags": tags }).to_string()),
    )
    .await
}

async fn untag(app: &TestApp, id: &str, tags: Value) -> reqwest::Response {
    app.signed(
        "DELETE",
        &format!("{}/tags/delete", app.notebook_path(id)),
        Some(&json!({ "tags": tags }).to_string()),
    )
    .await
}

async fn project_tags(app: &TestApp) -> Value {
    let path = format!("/v1/{PROJECT_ID}/notebooks/tags?workspace_id=0");
    let (status, json) = json_of(app.signed("GET", &path, None).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn tags_are_created_overwritten_deleted_and_aggregated_per_project() {
    let app = TestApp::spawn().await;
    let first = app.create_running("first").await;
    let second = app.create_running("second").await;
    let (first, second) = (id_of(&first).to_owned(), id_of(&second).to_owned());

    let response = tag(
        &app,
        &first,
        json!([{"key": "env", "value": "dev"}, {"key": "team", "value": "ml"}]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().await.unwrap().is_empty());
    let response = tag(&app, &second, json!([{"key": "env", "value": "prod"}])).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        app.show_ok(&first).await["tags"],
        json!([{"key": "env", "value": "dev"}, {"key": "team", "value": "ml"}])
    );
    assert_eq!(
        project_tags(&app).await,
        json!({"tags": [
            {"key": "env", "values": ["dev", "prod"]},
            {"key": "team", "values": ["ml"]},
        ]})
    );

    // An existing key takes the new value.
    let response = tag(&app, &first, json!([{"key": "env", "value": "staging"}])).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.show_ok(&first).await["tags"],
        json!([{"key": "env", "value": "staging"}, {"key": "team", "value": "ml"}])
    );

    // Absent tags are ignored on delete.
    let response = untag(
        &app,
        &first,
        json!([{"key": "team", "value": "ml"}, {"key": "nope"}]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.show_ok(&first).await["tags"],
        json!([{"key": "env", "value": "staging"}])
    );
    assert_eq!(
        project_tags(&app).await,
        json!({"tags": [{"key": "env", "values": ["prod", "staging"]}]})
    );

    // Tags filter the notebook list.
    let list = app.list("tags=env%7Cprod").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["id"], second.as_str());
}

#[tokio::test]
async fn bad_tags_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let running = app.create_running("tagged").await;
    let id = id_of(&running).to_owned();
    let response = tag(&app, &id, json!([{"key": "ok", "value": "fine"}])).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let before = app.show_ok(&id).await;

    for bad in [
        json!([{"key": "", "value": "v"}]),
        json!([{"key": "_sys_internal", "value": "v"}]),
        json!([{"key": " padded", "value": "v"}]),
        json!([{"key": "semi;colon", "value": "v"}]),
        json!([{"key": "k".repeat(129), "value": "v"}]),
        json!([{"key": "good", "value": "bad<value>"}]),
        json!(
            (0..21)
                .map(|n| json!({"key": format!("k{n}"), "value": "v"}))
                .collect::<Vec<_>>()
        ),
    ] {
        expect_error(tag(&app, &id, bad.clone()).await, 400, "ModelArts.6336").await;
        assert_eq!(app.show_ok(&id).await, before, "after {bad}");
    }
    expect_error(
        tag(&app, &id, json!("not a list")).await,
        400,
        "ModelArts.6332",
    )
    .await;
    let response = app
        .signed(
            "POST",
            &format!("{}/tags/create", app.notebook_path(&id)),
            Some("{}"),
        )
        .await;
    expect_error(response, 400, "ModelArts.6335").await;
    assert_eq!(app.show_ok(&id).await, before);
}
