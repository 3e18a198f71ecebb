//! `POST /v1/{project_id}/notebooks` (create) and `GET …/notebooks/{id}` (show).
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use atelier_runtime::Step;

use crate::support::{
    JUPYTERLAB_IMAGE_ID, PROJECT_ID, SETTLE, TestApp, id_of, json_of, notebook_body, wall_clock_ms,
};

fn step_statuses(notebook: &Value) -> Vec<(i64, String)> {
    let mut steps: Vec<(i64, String)> = notebook["action_progress"]
        .as_array()
        .expect("action_progress is a list")
        .iter()
        .map(|p| {
            (
                p["step"].as_i64().expect("step"),
                p["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    steps.sort();
    steps
}

#[tokio::test]
async fn create_answers_at_once_and_the_notebook_reaches_running_with_every_step_completed() {
    let app = TestApp::spawn().await;
    let before = wall_clock_ms();

    let created = app.create_notebook(&notebook_body("nb1")).await;

    let id = id_of(&created).to_owned();
    assert!(id.parse::<uuid::Uuid>().is_ok(), "id is a UUID: {id}");
    assert_eq!(created["name"], "nb1");
    assert!(
        matches!(
            created["status"].as_str(),
            Some("INIT" | "CREATING" | "STARTING")
        ),
        "{created}"
    );
    assert!(created["create_at"].as_i64().expect("create_at") >= before);
    assert!(created["update_at"].is_i64());
    assert_eq!(created["feature"], "NOTEBOOK");
    assert_eq!(created["workspace_id"], "0");
    assert_eq!(created["image"]["id"], JUPYTERLAB_IMAGE_ID);

    let running = app.wait_status(&id, "RUNNING", SETTLE).await;
    let steps = step_statuses(&running);
    assert_eq!(
        steps,
        (1..=4)
            .map(|s| (s, "COMPLETED".to_owned()))
            .collect::<Vec<_>>()
    );
    for progress in running["action_progress"].as_array().unwrap() {
        assert_eq!(progress["notebook_id"], id.as_str());
        assert!(!progress["description"].as_str().unwrap().is_empty());
        assert_eq!(progress["description"], progress["step_description"]);
    }
    let url = running["url"].as_str().expect("url once RUNNING");
    // Each notebook is its own web origin on the gateway.
    assert_eq!(
        url,
        format!("http://{id}.localhost:{}/lab", app.gateway_addr.port())
    );
    let token = running["token"].as_str().expect("token once RUNNING");
    assert!(token.parse::<uuid::Uuid>().is_ok(), "token: {token}");
    let create_at = running["create_at"].as_i64().expect("create_at");
    let update_at = running["update_at"].as_i64().expect("update_at");
    assert_eq!(create_at, created["create_at"].as_i64().unwrap());
    assert!(update_at >= create_at);
    assert_eq!(running["billing_items"], json!(["COMPUTE"]));
    assert_eq!(running["endpoints"][0]["service"], "NOTEBOOK");
    assert_eq!(running["endpoints"][0]["uri"], url);
    assert_eq!(running["volume"]["category"], "EVS");
    assert_eq!(running["volume"]["capacity"], 5);
    assert_eq!(running["volume"]["mount_path"], "/home/ma-user/work/");
    assert_eq!(running["fail_reason"], "");
    assert!(running.get("error_code").is_none());
    // The lease was re-armed when the notebook became RUNNING (spec §3.3).
    let lease = &running["lease"];
    assert_eq!(lease["enable"], true);
    assert_eq!(lease["type"], "TIMING");
    assert_eq!(lease["create_at"], create_at);
    let duration = lease["duration"].as_i64().expect("duration");
    let armed_at = lease["update_at"].as_i64().expect("update_at");
    assert_eq!(duration, armed_at - create_at + 3_600_000);
}

#[tokio::test]
async fn show_returns_the_notebook_that_create_returned() {
    let app = TestApp::spawn().await;
    let created = app.create_running("shown").await;

    let shown = app.show_ok(id_of(&created)).await;

    assert_eq!(shown["id"], created["id"]);
    assert_eq!(shown["name"], "shown");
    assert_eq!(shown["flavor"], "modelarts.vm.cpu.2u");
    assert_eq!(shown["user_id"], shown["user"]["id"]);
    assert_eq!(shown["user"]["name"], "admin");
}

#[tokio::test]
async fn lowercase_enums_are_accepted_and_echoed_upper_case() {
    let app = TestApp::spawn().await;
    let body = json!({
        "name": "lower",
        "flavor": "modelarts.vm.cpu.2u",
        "image_id": JUPYTERLAB_IMAGE_ID,
        "feature": "notebook",
        "volume": {"category": "evs", "ownership": "managed", "capacity": 8},
        "lease": {"duration": 7_200_000, "type": "timing"}
    });

    let created = app.create_notebook(&body).await;

    assert_eq!(created["feature"], "NOTEBOOK");
    assert_eq!(created["volume"]["category"], "EVS");
    assert_eq!(created["volume"]["ownership"], "MANAGED");
    assert_eq!(created["volume"]["capacity"], 8);
    assert_eq!(created["lease"]["type"], "TIMING");
    assert_eq!(created["lease"]["duration"], 7_200_000);
    app.wait_status(id_of(&created), "RUNNING", SETTLE).await;
}

#[tokio::test]
async fn empty_string_fields_count_as_absent() {
    let app = TestApp::spawn().await;
    // OPENI sends empty strings for every field it does not use (spec §1.4.1).
    let body = json!({
        "name": "empties",
        "description": "",
        "flavor": "modelarts.vm.cpu.2u",
        "image_id": JUPYTERLAB_IMAGE_ID,
        "feature": "",
        "pool_id": "",
        "workspace_id": "",
        "volume": {"category": "EFS", "ownership": "", "uri": "", "id": ""},
        "lease": {"type": ""}
    });

    let created = app.create_notebook(&body).await;

    assert_eq!(created["feature"], "NOTEBOOK");
    assert_eq!(created["workspace_id"], "0");
    assert_eq!(created["description"], "");
    assert!(created.get("pool").is_none(), "{created}");
    assert_eq!(created["volume"]["ownership"], "MANAGED");
    assert_eq!(created["volume"]["capacity"], 50);
    assert!(created["volume"].get("uri").is_none(), "{created}");
    assert_eq!(created["lease"]["type"], "TIMING");
    assert_eq!(created["lease"]["duration"], 3_600_000);
}

#[tokio::test]
async fn unknown_request_fields_are_ignored() {
    let app = TestApp::spawn().await;
    let mut body = notebook_body("extras");
    body["env_variables"] = json!({"A": "b"});
    body["surprise"] = json!([1, 2, 3]);
    body["volume"]["not_a_field"] = json!(true);

    let created = app.create_notebook(&body).await;

    assert_eq!(created["name"], "extras");
    assert!(created.get("surprise").is_none());
}

#[tokio::test]
async fn duration_minus_one_disables_auto_stop() {
    let app = TestApp::spawn().await;
    let mut body = notebook_body("forever");
    // What Terraform always sends.
    body["feature"] = json!("NOTEBOOK");
    body["duration"] = json!(-1);

    let created = app.create_notebook(&body).await;
    assert_eq!(created["lease"]["enable"], false, "{created}");
    assert!(created["lease"].get("duration").is_none(), "{created}");

    let running = app.wait_status(id_of(&created), "RUNNING", SETTLE).await;
    assert_eq!(running["lease"]["enable"], false, "{running}");
}

#[tokio::test]
async fn top_level_duration_wins_over_the_lease_object() {
    let app = TestApp::spawn().await;
    let mut body = notebook_body("dur");
    body["duration"] = json!(14_400_000);
    body["lease"] = json!({"duration": 7_200_000, "type": "IDLE"});

    let created = app.create_notebook(&body).await;

    assert_eq!(created["lease"]["duration"], 14_400_000);
    assert_eq!(created["lease"]["type"], "TIMING");
}

#[tokio::test]
async fn ssh_endpoint_accepts_the_old_dev_service_and_ssh_keys_names() {
    let app = TestApp::spawn().await;
    let keypair = json!({"keypair": {"name": "kp1", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa66lDBVQ3CEG+8xQYQZvr1UOYEzGGK5lhX422idrJF"}});
    let registered = app
        .signed(
            "POST",
            &format!("/v1/{PROJECT_ID}/keypairs"),
            Some(&keypair.to_string()),
        )
        .await;
    assert_eq!(registered.status(), 200);
    let mut body = notebook_body("ssh");
    body["endpoints"] = json!([
        {"dev_service": "ssh", "ssh_keys": ["kp1"], "allowed_access_ips": ["1.2.3.4"]}
    ]);

    let created = app.create_notebook(&body).await;
    let running = app.wait_status(id_of(&created), "RUNNING", SETTLE).await;

    let ssh = running["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "SSH")
        .unwrap_or_else(|| panic!("no SSH endpoint: {running}"))
        .clone();
    assert_eq!(ssh["dev_service"], "SSH");
    assert_eq!(ssh["key_pair_names"], json!(["kp1"]));
    assert_eq!(ssh["ssh_keys"], json!(["kp1"]));
    assert_eq!(ssh["allowed_access_ips"], json!(["1.2.3.4"]));
}

#[tokio::test]
async fn a_free_codelab_notebook_can_be_created_once_per_user() {
    let app = TestApp::spawn().await;
    let body = json!({
        "name": "codelab",
        "feature": "DEFAULT",
        "flavor": "modelarts.vm.cpu.free",
        "image_id": JUPYTERLAB_IMAGE_ID,
        "volume": {"category": "EFS", "ownership": "MANAGED"}
    });
    let created = app.create_notebook(&body).await;
    assert_eq!(created["feature"], "DEFAULT");

    let response = app
        .signed("POST", &app.notebooks_path(), Some(&body.to_string()))
        .await;
    crate::support::expect_error(response, 400, "ModelArts.6302").await;
    assert_eq!(app.notebook_count().await, 1);
}

#[tokio::test]
async fn a_failing_compute_step_ends_the_create_in_create_failed() {
    // Slow steps leave time to arm the failure before step 2 runs.
    let app = TestApp::builder()
        .step_delay(Duration::from_millis(250))
        .spawn()
        .await;
    let created = app.create_notebook(&notebook_body("doomed")).await;
    let id = id_of(&created).to_owned();
    app.runtime.fail_step(
        id.parse().expect("notebook id"),
        Step::PrepareCompute,
        "no capacity left",
    );

    let failed = app.wait_status(&id, "CREATE_FAILED", SETTLE).await;

    let reason = failed["fail_reason"].as_str().expect("fail_reason");
    assert!(reason.contains("step 2"), "{reason}");
    assert!(reason.contains("compute"), "{reason}");
    assert!(reason.contains("no capacity left"), "{reason}");
    assert_eq!(
        step_statuses(&failed),
        vec![
            (1, "COMPLETED".to_owned()),
            (2, "FAILED".to_owned()),
            (3, "WAITING".to_owned()),
            (4, "WAITING".to_owned()),
        ]
    );
    assert_eq!(app.runtime.running_count(), 0);
    // A failed notebook can still be deleted.
    let (status, deleting) =
        json_of(app.signed("DELETE", &app.notebook_path(&id), None).await).await;
    assert_eq!(status, StatusCode::OK, "{deleting}");
    app.wait_gone(&id).await;
}
