//! `PUT …/notebooks/{id}`: spec §1.4.4, §2.3, and the update rows of the §3.2 admission table.
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{JUPYTERLAB_IMAGE_ID, SETTLE, TestApp, expect_error, id_of, json_of};

async fn update(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.signed("PUT", &app.notebook_path(id), Some(&body.to_string()))
        .await
}

async fn update_ok(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, json) = json_of(update(app, id, body).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

/// Sends an update that must be refused with `code`, and checks that nothing changed.
async fn update_refused(app: &TestApp, id: &str, body: Value, code: &str) {
    let before = app.show_ok(id).await;
    expect_error(update(app, id, body.clone()).await, 400, code).await;
    assert_eq!(app.show_ok(id).await, before, "after refused update {body}");
}

#[tokio::test]
async fn name_and_description_change_while_running() {
    let app = TestApp::spawn().await;
    let running = app.create_running("before").await;
    let id = id_of(&running);

    let updated = update_ok(
        &app,
        id,
        json!({"name": "after", "description": "now with a description"}),
    )
    .await;

    assert_eq!(updated["name"], "after");
    assert_eq!(updated["description"], "now with a description");
    assert_eq!(updated["status"], "RUNNING");
    assert!(updated["update_at"].as_i64() >= running["update_at"].as_i64());
    let shown = app.show_ok(id).await;
    assert_eq!(shown["name"], "after");
    // Terraform clears a description with "".
    let cleared = update_ok(&app, id, json!({"description": ""})).await;
    assert_eq!(cleared["description"], "");
    assert_eq!(cleared["name"], "after");
}

#[tokio::test]
async fn flavor_is_refused_while_running_and_changes_while_stopped() {
    let app = TestApp::spawn().await;
    let running = app.create_running("resize").await;
    let id = id_of(&running).to_owned();

    update_refused(
        &app,
        &id,
        json!({"flavor": "modelarts.vm.cpu.8u"}),
        "ModelArts.6347",
    )
    .await;
    // Naming the current flavor changes nothing, so it is allowed in any state.
    update_ok(&app, &id, json!({"flavor": "modelarts.vm.cpu.2u"})).await;

    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", SETTLE).await;
    let updated = update_ok(&app, &id, json!({"flavor": "modelarts.vm.cpu.8u"})).await;
    assert_eq!(updated["flavor"], "modelarts.vm.cpu.8u");
    assert_eq!(updated["status"], "STOPPED");

    update_refused(
        &app,
        &id,
        json!({"flavor": "modelarts.vm.gpu.imaginary"}),
        "ModelArts.6792",
    )
    .await;
    // The free CodeLab flavor belongs to another feature.
    update_refused(
        &app,
        &id,
        json!({"flavor": "modelarts.vm.cpu.free"}),
        "ModelArts.6792",
    )
    .await;
    app.start(&id).await;
    let running = app.wait_status(&id, "RUNNING", SETTLE).await;
    assert_eq!(running["flavor"], "modelarts.vm.cpu.8u");
}

#[tokio::test]
async fn image_changes_only_while_stopped() {
    let app = TestApp::spawn().await;
    let running = app.create_running("img").await;
    let id = id_of(&running).to_owned();
    let registered = json_of(
        app.signed(
            "POST",
            &format!("/v1/{}/images", crate::support::PROJECT_ID),
            Some(r#"{"swr_path":"swr.example.com/team/custom-lab:1.0"}"#),
        )
        .await,
    )
    .await
    .1;
    let image_id = registered["id"].as_str().expect("image id").to_owned();

    update_refused(&app, &id, json!({"image_id": image_id}), "ModelArts.6347").await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", SETTLE).await;
    update_refused(
        &app,
        &id,
        json!({"image_id": "00000000-0000-4000-8000-000000000000"}),
        "ModelArts.6797",
    )
    .await;
    let updated = update_ok(&app, &id, json!({"image_id": image_id})).await;
    assert_eq!(updated["image"]["id"], image_id.as_str());
    assert_eq!(updated["image"]["name"], "custom-lab");
    let back = update_ok(&app, &id, json!({"image_id": JUPYTERLAB_IMAGE_ID})).await;
    assert_eq!(back["image"]["type"], "BUILD_IN");
}

#[tokio::test]
async fn evs_storage_grows_but_never_shrinks_or_passes_4096() {
    let app = TestApp::spawn().await;
    let running = app.create_running("disk").await;
    let id = id_of(&running).to_owned();

    let grown = update_ok(&app, &id, json!({"storage_new_size": 10})).await;
    assert_eq!(grown["volume"]["capacity"], 10);
    // Equal is a no-op.
    let same = update_ok(&app, &id, json!({"storage_new_size": 10})).await;
    assert_eq!(same["volume"]["capacity"], 10);

    update_refused(&app, &id, json!({"storage_new_size": 6}), "ModelArts.6336").await;
    update_refused(
        &app,
        &id,
        json!({"storage_new_size": 5000}),
        "ModelArts.6331",
    )
    .await;

    // Old Terraform grows the disk while stopped.
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", SETTLE).await;
    let grown = update_ok(&app, &id, json!({"storage_new_size": 4096})).await;
    assert_eq!(grown["volume"]["capacity"], 4096);
}

#[tokio::test]
async fn efs_storage_accepts_its_own_size_and_refuses_any_other() {
    let app = TestApp::spawn().await;
    let mut body = crate::support::notebook_body("efs");
    body["volume"] = json!({"category": "EFS", "ownership": "MANAGED"});
    let created = app.create_notebook(&body).await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;

    // Old Terraform sends storage_new_size = volume.size with every change, even for EFS.
    let same = update_ok(
        &app,
        &id,
        json!({"storage_new_size": 50, "name": "efs-renamed"}),
    )
    .await;
    assert_eq!(same["volume"]["capacity"], 50);
    assert_eq!(same["name"], "efs-renamed");

    update_refused(&app, &id, json!({"storage_new_size": 60}), "ModelArts.6336").await;
}

#[tokio::test]
async fn bad_update_bodies_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let running = app.create_running("steady").await;
    let id = id_of(&running).to_owned();

    update_refused(&app, &id, json!({"name": "bad name!"}), "ModelArts.6334").await;
    update_refused(
        &app,
        &id,
        json!({"description": "<script>"}),
        "ModelArts.6334",
    )
    .await;
    update_refused(&app, &id, json!({"name": 42}), "ModelArts.6332").await;
    update_refused(
        &app,
        &id,
        json!({"storage_new_size": "big"}),
        "ModelArts.6332",
    )
    .await;
    // A refused field refuses the whole update: the valid name is not applied either.
    update_refused(
        &app,
        &id,
        json!({"name": "renamed", "flavor": "modelarts.vm.cpu.8u"}),
        "ModelArts.6347",
    )
    .await;

    let before = app.show_ok(&id).await;
    let response = app
        .signed("PUT", &app.notebook_path(&id), Some("{\"name\":"))
        .await;
    expect_error(response, 400, "ModelArts.6400").await;
    assert_eq!(app.show_ok(&id).await, before);
}
