//! `GET|POST …/images`, `GET|DELETE …/images/{id}`: spec §1.3 #22–#25, §1.4.13, §2.6.
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    JUPYTERLAB_IMAGE_ID, PROJECT_ID, TestApp, expect_error, id_of, json_of, notebook_body,
};

fn images_path() -> String {
    format!("/v1/{PROJECT_ID}/images")
}

fn image_path(id: &str) -> String {
    format!("/v1/{PROJECT_ID}/images/{id}")
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (status, json) = json_of(
        app.signed("GET", &format!("{}{query}", images_path()), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

async fn register(app: &TestApp, body: Value) -> Value {
    let (status, json) = json_of(
        app.signed("POST", &images_path(), Some(&body.to_string()))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn the_built_in_list_contains_the_jupyterlab_image() {
    let app = TestApp::spawn().await;

    let built_in = list(&app, "?type=BUILD_IN").await;

    let image = built_in["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == JUPYTERLAB_IMAGE_ID)
        .unwrap_or_else(|| panic!("no JupyterLab image: {built_in}"))
        .clone();
    assert_eq!(image["type"], "BUILD_IN");
    assert_eq!(image["status"], "ACTIVE");
    assert_eq!(image["arch"], "x86_64");
    assert!(image["name"].as_str().unwrap().contains("jupyterlab"));
    assert!(
        image["dev_services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "NOTEBOOK")
    );
    assert_eq!(built_in["current"], 0);
    assert_eq!(built_in["size"], 200, "the default page size");
    assert_eq!(list(&app, "?type=DEDICATED").await["total"], 0);
}

#[tokio::test]
async fn a_local_python_environment_registers_as_a_dedicated_image() {
    let app = TestApp::spawn().await;

    let image = register(
        &app,
        json!({"swr_path": "local:///opt/env/py", "description": "my env", "arch": "X86_64"}),
    )
    .await;

    assert_eq!(image["type"], "DEDICATED");
    assert_eq!(image["status"], "ACTIVE");
    assert_eq!(image["swr_path"], "local:///opt/env/py");
    assert_eq!(image["name"], "py");
    assert_eq!(image["namespace"], "local");
    assert_eq!(image["tag"], "latest");
    assert_eq!(image["arch"], "x86_64");
    assert_eq!(image["origin"], "CUSTOMIZE");
    assert_eq!(image["visibility"], "PRIVATE");
    assert_eq!(image["description"], "my env");
    let id = image["id"].as_str().unwrap();
    let (status, shown) = json_of(app.signed("GET", &image_path(id), None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, image);
    // A notebook can run it.
    let mut body = notebook_body("on-local");
    body["image_id"] = json!(id);
    let created = app.create_notebook(&body).await;
    assert_eq!(created["image"]["id"], id);
    assert_eq!(created["image"]["swr_path"], "local:///opt/env/py");
}

#[tokio::test]
async fn an_swr_path_is_parsed_into_namespace_name_and_tag() {
    let app = TestApp::spawn().await;

    let image = register(
        &app,
        json!({
            "swr_path": "swr.example.com/ns/name:tag",
            "resource_category": ["cpu"],
            "services": ["notebook"],
            "unknown": 1
        }),
    )
    .await;

    assert_eq!(image["namespace"], "ns");
    assert_eq!(image["name"], "name");
    assert_eq!(image["tag"], "tag");
    assert_eq!(image["resource_categories"], json!(["CPU"]));
    assert_eq!(image["dev_services"], json!(["NOTEBOOK"]));
    let dedicated = list(&app, "?type=DEDICATED").await;
    assert_eq!(dedicated["total"], 1);
    assert_eq!(dedicated["data"][0]["id"], image["id"]);
    assert_eq!(list(&app, "?name=nam").await["total"], 1);
    assert_eq!(
        list(&app, "?name=nam&name_fuzzy_match=false").await["total"],
        0
    );
    assert_eq!(list(&app, "?namespace=ns").await["total"], 1);
}

#[tokio::test]
async fn a_deleted_image_answers_deleted_then_404_6404() {
    let app = TestApp::spawn().await;
    let image = register(&app, json!({"swr_path": "swr.example.com/ns/gone:1"})).await;
    let id = image["id"].as_str().unwrap().to_owned();
    let mut body = notebook_body("keeps-its-image");
    body["image_id"] = json!(id);
    let notebook = app.create_notebook(&body).await;

    // The Python SDK sends `{"is_force": …}` in the DELETE body.
    let (status, deleted) = json_of(
        app.signed("DELETE", &image_path(&id), Some(r#"{"is_force": false}"#))
            .await,
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["status"], "DELETED");
    assert_eq!(deleted["id"], id.as_str());
    expect_error(
        app.signed("GET", &image_path(&id), None).await,
        404,
        "ModelArts.6404",
    )
    .await;
    expect_error(
        app.signed("DELETE", &image_path(&id), None).await,
        404,
        "ModelArts.6404",
    )
    .await;
    assert_eq!(list(&app, "?type=DEDICATED").await["total"], 0);
    // New notebooks cannot use it; existing ones keep showing it.
    let response = app
        .signed("POST", &app.notebooks_path(), Some(&body.to_string()))
        .await;
    expect_error(response, 400, "ModelArts.6797").await;
    assert_eq!(
        app.show_ok(id_of(&notebook)).await["image"]["id"],
        id.as_str()
    );
    // Registering the same path again works once the old one is deleted.
    register(&app, json!({"swr_path": "swr.example.com/ns/gone:1"})).await;
}

#[tokio::test]
async fn a_built_in_image_cannot_be_deleted() {
    let app = TestApp::spawn().await;

    let response = app
        .signed("DELETE", &image_path(JUPYTERLAB_IMAGE_ID), None)
        .await;

    expect_error(response, 403, "ModelArts.0108").await;
    let (status, shown) = json_of(
        app.signed("GET", &image_path(JUPYTERLAB_IMAGE_ID), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["status"], "ACTIVE");
}

#[tokio::test]
async fn registering_an_image_twice_is_refused() {
    let app = TestApp::spawn().await;
    register(&app, json!({"swr_path": "swr.example.com/ns/twice:1"})).await;

    let response = app
        .signed(
            "POST",
            &images_path(),
            Some(r#"{"swr_path": "swr.example.com/ns/twice:1"}"#),
        )
        .await;

    let (status, error) = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["error_code"]
            .as_str()
            .unwrap()
            .starts_with("ModelArts.")
    );
    assert_eq!(list(&app, "?type=DEDICATED").await["total"], 1);
}

#[tokio::test]
async fn bad_image_requests_are_refused() {
    let app = TestApp::spawn().await;

    for (body, code) in [
        (r#"{"swr_path": "no-tag-here/at/all"}"#, "ModelArts.6336"),
        (r#"{"swr_path": "local://relative"}"#, "ModelArts.6336"),
        (
            r#"{"swr_path": "swr.example.com/ns/UPPER:1"}"#,
            "ModelArts.6336",
        ),
        (
            r#"{"swr_path": "swr.example.com/ns/n:1", "arch": "sparc"}"#,
            "ModelArts.6336",
        ),
        (r#"{"swr_path": ""}"#, "ModelArts.6335"),
        (r#"{}"#, "ModelArts.6335"),
        (r#"{"swr_path": 5}"#, "ModelArts.6332"),
        (r#"{"swr_path": "#, "ModelArts.6400"),
    ] {
        let response = app.signed("POST", &images_path(), Some(body)).await;
        expect_error(response, 400, code).await;
    }
    assert_eq!(list(&app, "?type=DEDICATED").await["total"], 0);
    for id in ["00000000-0000-4000-8000-000000000000", "nope"] {
        expect_error(
            app.signed("GET", &image_path(id), None).await,
            404,
            "ModelArts.6404",
        )
        .await;
    }
    let response = app
        .signed("GET", &format!("{}?sort_key=size", images_path()), None)
        .await;
    expect_error(response, 400, "ModelArts.6303").await;
}

#[tokio::test]
async fn image_groups_aggregate_the_versions_of_each_name() {
    let app = TestApp::spawn().await;
    // Nothing registered yet: the built-in images are groups of their own, and the path is
    // not taken for an image id.
    let before = list_groups(&app, "").await;
    assert!(before["total"].as_i64().unwrap() >= 1, "{before}");
    assert_eq!(before["is_swr_enterprise"], false);
    let built_in = before["total"].as_i64().unwrap();

    let first = register(
        &app,
        json!({"swr_path": "swr.example.com/team/torch:2.1", "description": "old"}),
    )
    .await;
    // Registered a little later, so that it is the newest version.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    register(
        &app,
        json!({"swr_path": "swr.example.com/team/torch:2.2", "description": "new"}),
    )
    .await;
    register(&app, json!({"swr_path": "swr.example.com/other/torch:1"})).await;
    let lone = register(
        &app,
        json!({"swr_path": "swr.example.com/team/tensorflow:1"}),
    )
    .await;

    let all = list_groups(&app, "").await;
    assert_eq!(all["total"], built_in + 3, "{all}");
    let torch = list_groups(&app, "?name=torch&name_fuzzy_match=false&namespace=team").await;
    assert_eq!(torch["total"], 1, "{torch}");
    let group = &torch["data"][0];
    assert_eq!(group["name"], "torch");
    assert_eq!(group["namespace"], "team");
    assert_eq!(group["version_count"], 2);
    assert_eq!(
        group["description"], "new",
        "the newest version describes the group"
    );
    assert_eq!(group["create_at"], first["create_at"]);
    assert!(group["id"].as_str().unwrap().len() == 36, "{group}");
    // Fuzzy by default; the type filter; paging.
    assert_eq!(list_groups(&app, "?name=tens").await["total"], 1);
    assert_eq!(
        list_groups(&app, "?type=DEDICATED").await["total"],
        3,
        "only registered images"
    );
    let page = list_groups(&app, "?type=DEDICATED&limit=2&offset=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    // No SWR enterprise instance exists here.
    assert_eq!(list_groups(&app, "?swr_instance_id=abc").await["total"], 0);

    // A deleted version leaves the group; the group keeps its id.
    let id = group["id"].clone();
    let (status, _) = json_of(
        app.signed("DELETE", &image_path(first["id"].as_str().unwrap()), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let torch = list_groups(&app, "?name=torch&name_fuzzy_match=false&namespace=team").await;
    assert_eq!(torch["data"][0]["version_count"], 1);
    assert_eq!(torch["data"][0]["id"], id);
    // Deleting the only version removes the group.
    app.signed("DELETE", &image_path(lone["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(list_groups(&app, "?name=tensorflow").await["total"], 0);
    // Bad filters are refused.
    let (status, json) = json_of(
        app.signed(
            "GET",
            &format!("{}/group?type=SOMETIMES", images_path()),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
}

async fn list_groups(app: &TestApp, query: &str) -> Value {
    let (status, json) = json_of(
        app.signed("GET", &format!("{}/group{query}", images_path()), None)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}
