//! `DELETE …/notebooks/{id}`: spec §1.4.5.
use reqwest::StatusCode;

use crate::support::{TestApp, expect_error, id_of, json_of};

#[tokio::test]
async fn delete_answers_deleting_and_the_notebook_then_disappears() {
    let app = TestApp::spawn().await;
    let running = app.create_running("doomed").await;
    let id = id_of(&running).to_owned();
    let keep = app.create_running("kept").await;

    // Clients delete running notebooks directly (spec §3.2).
    let (status, deleting) =
        json_of(app.signed("DELETE", &app.notebook_path(&id), None).await).await;

    assert_eq!(status, StatusCode::OK, "{deleting}");
    assert_eq!(deleting["status"], "DELETING");
    assert_eq!(deleting["id"], id.as_str());
    app.wait_gone(&id).await;
    let response = app.signed("GET", &app.notebook_path(&id), None).await;
    expect_error(response, 404, "ModelArts.6309").await;
    let list = app.list("limit=50").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["id"], keep["id"]);
    assert_eq!(app.runtime.running_count(), 1);
}

#[tokio::test]
async fn deleting_twice_is_refused_with_6357_or_404() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("twice").await;
    let id = id_of(&stopped).to_owned();

    let first = app.signed("DELETE", &app.notebook_path(&id), None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = app.signed("DELETE", &app.notebook_path(&id), None).await;

    let (status, json) = json_of(second).await;
    let answer = (status.as_u16(), json["error_code"].as_str().unwrap_or(""));
    assert!(
        answer == (400, "ModelArts.6357") || answer == (404, "ModelArts.6309"),
        "{status} {json}"
    );
    app.wait_gone(&id).await;
    let third = app.signed("DELETE", &app.notebook_path(&id), None).await;
    expect_error(third, 404, "ModelArts.6309").await;
}

#[tokio::test]
async fn start_stop_and_update_of_a_deleted_notebook_are_404() {
    let app = TestApp::spawn().await;
    let running = app.create_running("gone").await;
    let id = id_of(&running).to_owned();
    app.signed("DELETE", &app.notebook_path(&id), None).await;
    app.wait_gone(&id).await;

    let path = app.notebook_path(&id);
    for (method, path, body) in [
        ("POST", format!("{path}/start"), None),
        ("POST", format!("{path}/stop"), None),
        ("PUT", path.clone(), Some(r#"{"name":"x"}"#)),
        ("GET", format!("{path}/lease"), None),
        ("GET", format!("{path}/flavors"), None),
    ] {
        let response = app.signed(method, &path, body).await;
        expect_error(response, 404, "ModelArts.6309").await;
    }
}

#[tokio::test]
async fn a_notebook_being_created_cannot_be_stopped_but_can_be_deleted() {
    // Slow steps keep the create in flight while the test acts.
    let app = TestApp::builder()
        .step_delay(std::time::Duration::from_millis(200))
        .spawn()
        .await;
    let created = app
        .create_notebook(&crate::support::notebook_body("unborn"))
        .await;
    let id = id_of(&created).to_owned();

    let response = app
        .signed("POST", &format!("{}/stop", app.notebook_path(&id)), None)
        .await;
    expect_error(response, 400, "ModelArts.6357").await;
    let (status, deleting) =
        json_of(app.signed("DELETE", &app.notebook_path(&id), None).await).await;

    assert_eq!(status, StatusCode::OK, "{deleting}");
    assert_eq!(deleting["status"], "DELETING");
    app.wait_gone(&id).await;
    assert_eq!(app.runtime.running_count(), 0);
    assert_eq!(app.notebook_count().await, 0);
}
