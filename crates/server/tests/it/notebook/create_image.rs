//! `POST /v1/{project_id}/notebooks/{id}/create-image`: spec §1.4.12, §2.6, §3.2 — a running
//! notebook saved as a DEDICATED image, with the placeholder runtime's commit.
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use atelier_runtime::{ExitReason, PLACEHOLDER_IMAGE_BYTES, PlaceholderRuntime};
use atelier_server::clock::ManualClock;
use atelier_server::config::RegistrySettings;

use crate::events::{events, reasons};
use crate::support::{
    PROJECT_ID, SETTLE, TestApp, expect_error, id_of, json_of, notebook_body, wall_clock_ms,
};

fn create_image_path(app: &TestApp, id: &str) -> String {
    format!("{}/create-image", app.notebook_path(id))
}

fn image_path(id: &str) -> String {
    format!("/v1/{PROJECT_ID}/images/{id}")
}

async fn save(app: &TestApp, notebook_id: &str, body: &Value) -> reqwest::Response {
    app.signed(
        "POST",
        &create_image_path(app, notebook_id),
        Some(&body.to_string()),
    )
    .await
}

async fn save_ok(app: &TestApp, notebook_id: &str, body: &Value) -> Value {
    let (status, image) = json_of(save(app, notebook_id, body).await).await;
    assert_eq!(status, StatusCode::OK, "{image}");
    image
}

async fn show_image(app: &TestApp, id: &str) -> Value {
    let (status, image) = json_of(app.signed("GET", &image_path(id), None).await).await;
    assert_eq!(status, StatusCode::OK, "{image}");
    image
}

/// Polls the image until its status is one of `ends`; returns it and every status seen.
async fn wait_image(app: &TestApp, id: &str, ends: &[&str]) -> (Value, Vec<String>) {
    let deadline = Instant::now() + SETTLE;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let image = show_image(app, id).await;
        let status = image["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if ends.contains(&status.as_str()) {
            return (image, seen);
        }
        assert!(
            Instant::now() < deadline,
            "image {id} did not reach {ends:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn dedicated_images(app: &TestApp) -> Value {
    let (status, list) = json_of(
        app.signed(
            "GET",
            &format!("/v1/{PROJECT_ID}/images?type=DEDICATED"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list
}

#[tokio::test]
async fn a_running_notebook_is_saved_as_an_active_dedicated_image() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("source").await;
    let id = id_of(&notebook).to_owned();
    // Slow enough for the polls below to see every status.
    app.runtime.set_commit_delay(Duration::from_millis(400));

    let image = save_ok(
        &app,
        &id,
        &json!({"name": "my-lab", "namespace": "team", "tag": "v1", "description": "saved"}),
    )
    .await;

    assert_eq!(image["status"], "INIT");
    assert_eq!(image["type"], "DEDICATED");
    assert_eq!(image["origin"], "IMAGE_SAVE");
    assert_eq!(image["visibility"], "PRIVATE");
    assert_eq!(image["swr_path"], "atelier.local/team/my-lab:v1");
    assert_eq!(image["name"], "my-lab");
    assert_eq!(image["namespace"], "team");
    assert_eq!(image["tag"], "v1");
    assert_eq!(image["description"], "saved");
    assert_eq!(image["arch"], "x86_64", "the notebook's image's");
    assert_eq!(image["workspace_id"], "0");
    assert!(image.get("status_message").is_none(), "{image}");
    assert_eq!(app.show_ok(&id).await["status"], "SNAPSHOTTING");

    let image_id = image["id"].as_str().unwrap().to_owned();
    let (active, seen) = wait_image(&app, &image_id, &["ACTIVE", "CREATE_FAILED"]).await;
    assert_eq!(seen.last().unwrap(), "ACTIVE", "{active}");
    assert!(seen.contains(&"CREATING".to_owned()), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| ["INIT", "CREATING", "ACTIVE"].contains(&s.as_str())),
        "{seen:?}"
    );
    assert_eq!(
        active["size"],
        PLACEHOLDER_IMAGE_BYTES.div_ceil(1024),
        "KB, from the runtime's bytes"
    );
    let running = app.wait_status(&id, "RUNNING", SETTLE).await;
    assert_eq!(running["image"]["id"], notebook["image"]["id"], "unchanged");
    let saved_events = reasons(&events(&app, &id).await)
        .into_iter()
        .filter(|r| ["SavingImage", "ImageSaveEnded"].contains(r))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(saved_events, ["SavingImage", "ImageSaveEnded"]);

    // A DEDICATED image of the project like a registered one.
    let dedicated = dedicated_images(&app).await;
    assert_eq!(dedicated["total"], 1);
    assert_eq!(dedicated["data"][0]["id"], image_id.as_str());
    let (status, groups) = json_of(
        app.signed(
            "GET",
            &format!("/v1/{PROJECT_ID}/images/group?namespace=team"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(groups["total"], 1, "{groups}");
    assert_eq!(groups["data"][0]["name"], "my-lab");
    assert_eq!(groups["data"][0]["version_count"], 1);

    // A notebook starts from it.
    let mut body = notebook_body("from-saved");
    body["image_id"] = json!(image_id);
    let created = app.create_notebook(&body).await;
    assert_eq!(created["image"]["swr_path"], "atelier.local/team/my-lab:v1");
    app.wait_status(id_of(&created), "RUNNING", SETTLE).await;

    // A forced delete removes it from its registry and the list.
    let (status, deleted) = json_of(
        app.signed(
            "DELETE",
            &format!("{}?force=true", image_path(&image_id)),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["status"], "DELETED");
    assert_eq!(dedicated_images(&app).await["total"], 0);
}

#[tokio::test]
async fn the_tag_defaults_to_latest_and_the_path_names_the_push_registry() {
    let app = TestApp::builder()
        .registry(RegistrySettings {
            push: "registry.lan:5000".to_owned(),
            ..RegistrySettings::default()
        })
        .spawn()
        .await;
    let notebook = app.create_running("source").await;
    let id = id_of(&notebook);

    let image = save_ok(
        &app,
        id,
        &json!({"name": "lab", "namespace": "team", "swr_instance_domain": "registry.lan:5000"}),
    )
    .await;

    assert_eq!(image["tag"], "latest");
    assert_eq!(image["swr_path"], "registry.lan:5000/team/lab:latest");
    let image_id = image["id"].as_str().unwrap();
    let (active, _) = wait_image(&app, image_id, &["ACTIVE", "CREATE_FAILED"]).await;
    assert_eq!(active["status"], "ACTIVE", "{active}");
}

#[tokio::test]
async fn each_field_rule_is_a_400_that_changes_nothing() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("source").await;
    let id = id_of(&notebook).to_owned();
    let events_before = events(&app, &id).await.len();
    let good = json!({"name": "lab", "namespace": "team", "tag": "v1"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (without("name"), "ModelArts.6335"),
        (with("name", json!("")), "ModelArts.6335"),
        (with("name", json!("Upper")), "ModelArts.6336"),
        (with("name", json!("-lab")), "ModelArts.6336"),
        (with("name", json!("lab.")), "ModelArts.6336"),
        (with("name", json!("la b")), "ModelArts.6336"),
        (with("name", json!("a".repeat(129))), "ModelArts.6336"),
        (with("name", json!(7)), "ModelArts.6332"),
        (without("namespace"), "ModelArts.6335"),
        (with("namespace", json!("Team")), "ModelArts.6336"),
        (with("namespace", json!("1team")), "ModelArts.6336"),
        (with("namespace", json!("team/x")), "ModelArts.6336"),
        (
            with("namespace", json!(format!("t{}", "a".repeat(64)))),
            "ModelArts.6336",
        ),
        (with("tag", json!("v:1")), "ModelArts.6336"),
        (with("tag", json!("v/1")), "ModelArts.6336"),
        (with("tag", json!("v".repeat(65))), "ModelArts.6336"),
        (
            with("description", json!("d".repeat(513))),
            "ModelArts.6336",
        ),
        (
            with("workspace_id", json!("ws-elsewhere")),
            "ModelArts.7005",
        ),
        (
            with("swr_instance_id", json!("instance-1")),
            "ModelArts.6336",
        ),
        (
            with("swr_instance_domain", json!("swr.example.com")),
            "ModelArts.6336",
        ),
    ];
    for (body, code) in cases {
        let response = save(&app, &id, &body).await;
        let error = expect_error(response, 400, code).await;
        assert!(error["error_msg"].is_string(), "{body}: {error}");
    }

    // The longest names that are allowed are, and nothing above was saved.
    assert_eq!(dedicated_images(&app).await["total"], 0);
    let notebook_after = app.show_ok(&id).await;
    assert_eq!(notebook_after["status"], "RUNNING");
    assert_eq!(events(&app, &id).await.len(), events_before);
    let longest = json!({
        "name": format!("a{}z", "b".repeat(126)),
        "namespace": format!("t{}", "A".repeat(63)),
        "tag": "V".repeat(64),
        "description": "d".repeat(512),
        "workspace_id": "0",
        "swr_instance_id": "",
    });
    save_ok(&app, &id, &longest).await;
}

#[tokio::test]
async fn only_a_running_notebook_is_saved_6327() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("resting").await;
    let id = id_of(&stopped);

    let response = save(&app, id, &json!({"name": "lab", "namespace": "team"})).await;

    expect_error(response, 400, "ModelArts.6327").await;
    assert_eq!(app.show_ok(id).await["status"], "STOPPED");
    assert_eq!(dedicated_images(&app).await["total"], 0);
    // An unknown notebook is the usual 404.
    let unknown = save(
        &app,
        "4f2c9a52-1b6e-4c3d-9e8f-0a1b2c3d4e5f",
        &json!({"name": "lab", "namespace": "team"}),
    )
    .await;
    expect_error(unknown, 404, "ModelArts.6309").await;
}

#[tokio::test]
async fn a_name_and_tag_the_project_has_is_refused_6737() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("source").await;
    let id = id_of(&notebook).to_owned();
    let body = json!({"name": "lab", "namespace": "team", "tag": "v1"});
    let first = save_ok(&app, &id, &body).await;
    wait_image(&app, first["id"].as_str().unwrap(), &["ACTIVE"]).await;
    app.wait_status(&id, "RUNNING", SETTLE).await;

    expect_error(save(&app, &id, &body).await, 400, "ModelArts.6737").await;
    // A registered image of the same namespace/name:tag is the same image.
    let (status, registered) = json_of(
        app.signed(
            "POST",
            &format!("/v1/{PROJECT_ID}/images"),
            Some(&json!({"swr_path": "swr.example.com/team/other:v2"}).to_string()),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    let clash = json!({"name": "other", "namespace": "team", "tag": "v2"});
    expect_error(save(&app, &id, &clash).await, 400, "ModelArts.6737").await;

    assert_eq!(app.show_ok(&id).await["status"], "RUNNING");
    assert_eq!(dedicated_images(&app).await["total"], 2);
    // Another tag is another image.
    save_ok(
        &app,
        &id,
        &json!({"name": "lab", "namespace": "team", "tag": "v2"}),
    )
    .await;
}

#[tokio::test]
async fn a_failed_commit_fails_the_image_with_the_reason_and_the_notebook_runs_on() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("source").await;
    let id = id_of(&notebook).to_owned();
    app.runtime
        .fail_commit(id.parse().unwrap(), "no space left on device");

    let image = save_ok(&app, &id, &json!({"name": "lab", "namespace": "team"})).await;

    let (failed, _) = wait_image(
        &app,
        image["id"].as_str().unwrap(),
        &["ACTIVE", "CREATE_FAILED"],
    )
    .await;
    assert_eq!(failed["status"], "CREATE_FAILED");
    assert_eq!(failed["status_message"], "no space left on device");
    let running = app.wait_status(&id, "RUNNING", SETTLE).await;
    assert_eq!(running["fail_reason"], "", "the notebook did not fail");
    // A notebook cannot start from it; a new save of the same tag may be tried.
    let mut body = notebook_body("from-failed");
    body["image_id"] = image["id"].clone();
    let response = app
        .signed("POST", &app.notebooks_path(), Some(&body.to_string()))
        .await;
    expect_error(response, 400, "ModelArts.6797").await;
    save_ok(&app, &id, &json!({"name": "lab", "namespace": "team"})).await;
}

#[tokio::test]
async fn a_sandbox_that_dies_during_a_save_fails_the_image_and_the_notebook() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("fragile").await;
    let id = id_of(&notebook).to_owned();
    app.runtime.set_commit_delay(Duration::from_millis(300));
    let image = save_ok(&app, &id, &json!({"name": "lab", "namespace": "team"})).await;
    assert_eq!(
        app.list("?billing=COMPUTE").await["total"],
        1,
        "a notebook being saved holds its compute"
    );

    app.runtime.crash(
        id.parse().unwrap(),
        ExitReason::Exited("killed during the save".to_owned()),
    );

    let (failed, _) = wait_image(
        &app,
        image["id"].as_str().unwrap(),
        &["ACTIVE", "CREATE_FAILED"],
    )
    .await;
    assert_eq!(failed["status"], "CREATE_FAILED");
    let message = failed["status_message"].as_str().unwrap();
    assert!(message.contains("no sandbox"), "{message}");
    let broken = app.wait_status(&id, "ERROR", SETTLE).await;
    assert_eq!(broken["fail_reason"], "killed during the save");
}

#[tokio::test]
async fn a_notebook_being_saved_refuses_stop_start_and_delete() {
    let app = TestApp::spawn().await;
    let notebook = app.create_running("busy").await;
    let id = id_of(&notebook).to_owned();
    app.runtime.set_commit_delay(Duration::from_secs(2));
    let image = save_ok(&app, &id, &json!({"name": "lab", "namespace": "team"})).await;
    let image_id = image["id"].as_str().unwrap().to_owned();

    let path = app.notebook_path(&id);
    for (method, path) in [
        ("POST", format!("{path}/stop")),
        ("POST", format!("{path}/start")),
        ("DELETE", path.clone()),
    ] {
        let response = app.signed(method, &path, None).await;
        expect_error(response, 400, "ModelArts.6357").await;
    }
    // A second save waits for the first to end.
    let again = save(
        &app,
        &id,
        &json!({"name": "lab", "namespace": "team", "tag": "2"}),
    )
    .await;
    expect_error(again, 400, "ModelArts.6327").await;
    // The image being saved cannot be deleted either.
    let response = app.signed("DELETE", &image_path(&image_id), None).await;
    expect_error(response, 400, "ModelArts.6357").await;
    assert_eq!(app.show_ok(&id).await["status"], "SNAPSHOTTING");

    wait_image(&app, &image_id, &["ACTIVE"]).await;
    app.wait_status(&id, "RUNNING", SETTLE).await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", SETTLE).await;
}

#[tokio::test]
async fn a_lease_that_expires_during_a_save_stops_the_notebook_after_it() {
    let clock = ManualClock::new(wall_clock_ms());
    let app = TestApp::builder().clock(clock.clone()).spawn().await;
    let mut body = notebook_body("leased");
    body["duration"] = json!(3_600_000);
    let created = app.create_notebook(&body).await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;
    app.runtime.set_commit_delay(Duration::from_millis(500));
    let image = save_ok(&app, &id, &json!({"name": "lab", "namespace": "team"})).await;

    clock.advance(2 * 3_600_000);
    app.assert_status_holds(&id, "SNAPSHOTTING", Duration::from_millis(200))
        .await;

    let stopped = app.wait_status(&id, "STOPPED", SETTLE).await;
    assert_eq!(stopped["stop_reason"], "lease_expired");
    let (saved, _) = wait_image(
        &app,
        image["id"].as_str().unwrap(),
        &["ACTIVE", "CREATE_FAILED"],
    )
    .await;
    assert_eq!(
        saved["status"], "ACTIVE",
        "the save finished before the stop"
    );
}

#[tokio::test]
async fn a_save_interrupted_by_a_restart_fails_its_image_and_the_notebook_runs_again() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    // The sandbox outlives the control plane: both apps share one runtime.
    let runtime = Arc::new(PlaceholderRuntime::new(Duration::ZERO));
    let first = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .spawn()
        .await;
    let notebook = first.create_running("interrupted").await;
    let id = id_of(&notebook).to_owned();
    runtime.set_commit_delay(Duration::from_secs(60));
    let image = save_ok(&first, &id, &json!({"name": "lab", "namespace": "team"})).await;
    let image_id = image["id"].as_str().unwrap().to_owned();
    wait_image(&first, &image_id, &["CREATING"]).await;
    first.shutdown().await;

    runtime.set_commit_delay(Duration::ZERO);
    let second = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .spawn()
        .await;

    let running = second.wait_status(&id, "RUNNING", SETTLE).await;
    assert_eq!(running["fail_reason"], "");
    let failed = show_image(&second, &image_id).await;
    assert_eq!(failed["status"], "CREATE_FAILED");
    let message = failed["status_message"].as_str().unwrap();
    assert!(message.contains("restart"), "{message}");
    assert!(
        reasons(&events(&second, &id).await).contains(&"ImageSaveEnded"),
        "the save's end is recorded"
    );
    // The sandbox was adopted: the notebook can be saved again.
    let again = save_ok(&second, &id, &json!({"name": "lab", "namespace": "team"})).await;
    let (saved, _) = wait_image(
        &second,
        again["id"].as_str().unwrap(),
        &["ACTIVE", "CREATE_FAILED"],
    )
    .await;
    assert_eq!(saved["status"], "ACTIVE", "{saved}");
}
