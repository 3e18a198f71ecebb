//! `POST …/notebooks/{id}/start` and `…/stop`: spec §1.4.6, §1.4.7, §3.2.
use std::time::Duration;

use reqwest::StatusCode;

use atelier_runtime::{ExitReason, Step};

use crate::support::{SETTLE, TestApp, expect_error, id_of, json_of};

#[tokio::test]
async fn stop_then_start_goes_through_stopping_stopped_starting_running() {
    let app = TestApp::spawn().await;
    let running = app.create_running("cycle").await;
    let id = id_of(&running).to_owned();
    let first_token = running["token"].as_str().expect("token").to_owned();

    let stopping = app.stop(&id).await;
    assert_eq!(stopping["status"], "STOPPING");
    let stopped = app.wait_status(&id, "STOPPED", SETTLE).await;
    assert_eq!(stopped["stop_reason"], "user");
    assert!(stopped.get("token").is_none(), "{stopped}");
    assert_eq!(stopped["billing_items"], serde_json::json!([]));
    // The lab URL stays visible once the notebook has run (spec §3.5).
    assert!(stopped["url"].is_string(), "{stopped}");

    let starting = app.start(&id).await;
    assert_eq!(starting["status"], "STARTING");
    assert!(
        starting["action_progress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "WAITING"),
        "{starting}"
    );
    let running_again = app.wait_status(&id, "RUNNING", SETTLE).await;
    let second_token = running_again["token"].as_str().expect("token");
    assert_ne!(second_token, first_token, "a start makes a new token");
    assert!(
        running_again.get("stop_reason").is_none(),
        "{running_again}"
    );
}

#[tokio::test]
async fn stop_on_a_stopped_notebook_is_400_6357_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("stopped").await;
    let id = id_of(&stopped);

    let response = app
        .signed("POST", &format!("{}/stop", app.notebook_path(id)), None)
        .await;

    expect_error(response, 400, "ModelArts.6357").await;
    assert_eq!(app.show_ok(id).await, stopped);
}

#[tokio::test]
async fn start_on_a_running_notebook_is_400_6357_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let running = app.create_running("running").await;
    let id = id_of(&running);

    let response = app
        .signed(
            "POST",
            &format!("{}/start?duration=7200000", app.notebook_path(id)),
            Some("{}"),
        )
        .await;

    expect_error(response, 400, "ModelArts.6357").await;
    assert_eq!(app.show_ok(id).await, running);
}

#[tokio::test]
async fn start_and_stop_accept_an_absent_empty_or_object_body() {
    let app = TestApp::spawn().await;
    let running = app.create_running("bodies").await;
    let id = id_of(&running).to_owned();
    for body in [None, Some(""), Some("{}")] {
        let response = app
            .signed("POST", &format!("{}/stop", app.notebook_path(&id)), body)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "stop with {body:?}");
        app.wait_status(&id, "STOPPED", SETTLE).await;
        let response = app
            .signed("POST", &format!("{}/start", app.notebook_path(&id)), body)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "start with {body:?}");
        app.wait_status(&id, "RUNNING", SETTLE).await;
    }
}

#[tokio::test]
async fn start_with_duration_and_lowercase_type_arms_that_lease() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("leased").await;
    let id = id_of(&stopped);

    let response = app
        .signed(
            "POST",
            &format!(
                "{}/start?duration=7200000&type=timing",
                app.notebook_path(id)
            ),
            None,
        )
        .await;
    let (status, starting) = json_of(response).await;

    assert_eq!(status, StatusCode::OK, "{starting}");
    let lease = &starting["lease"];
    assert_eq!(lease["type"], "TIMING");
    assert_eq!(
        lease["duration"].as_i64().unwrap(),
        lease["update_at"].as_i64().unwrap() - lease["create_at"].as_i64().unwrap() + 7_200_000
    );
    let running = app.wait_status(id, "RUNNING", SETTLE).await;
    let lease = &running["lease"];
    assert_eq!(
        lease["duration"].as_i64().unwrap(),
        lease["update_at"].as_i64().unwrap() - lease["create_at"].as_i64().unwrap() + 7_200_000,
        "reaching RUNNING re-arms the lease with the same run length"
    );
}

#[tokio::test]
async fn start_with_duration_minus_one_disables_auto_stop() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("tf").await;
    let id = id_of(&stopped);

    let starting = json_of(
        app.signed(
            "POST",
            &format!("{}/start?duration=-1", app.notebook_path(id)),
            None,
        )
        .await,
    )
    .await
    .1;

    assert_eq!(starting["lease"]["enable"], false, "{starting}");
    let running = app.wait_status(id, "RUNNING", SETTLE).await;
    assert_eq!(running["lease"]["enable"], false);
}

#[tokio::test]
async fn stop_pre_empts_a_start_in_flight_and_the_notebook_ends_stopped() {
    // Each start step takes 150 ms: the stop lands while step 1 or 2 is in progress.
    let app = TestApp::builder()
        .step_delay(Duration::from_millis(150))
        .spawn()
        .await;
    let stopped = app.create_stopped("race").await;
    let id = id_of(&stopped).to_owned();

    let starting = app.start(&id).await;
    assert_eq!(starting["status"], "STARTING");
    let stopping = app.stop(&id).await;
    assert_eq!(stopping["status"], "STOPPING");

    let stopped = app.wait_status(&id, "STOPPED", SETTLE).await;
    // Longer than the rest of the start would have taken: it must not come back to life.
    app.assert_status_holds(&id, "STOPPED", Duration::from_millis(800))
        .await;
    assert!(
        stopped["action_progress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "FAILED"),
        "the interrupted steps are marked FAILED: {stopped}"
    );
    assert_eq!(app.runtime.running_count(), 0);
}

#[tokio::test]
async fn a_failing_compute_step_ends_the_start_in_start_failed() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("flaky").await;
    let id = id_of(&stopped).to_owned();
    app.runtime.fail_step(
        id.parse().expect("notebook id"),
        Step::PrepareCompute,
        "the node is out of memory",
    );

    app.start(&id).await;
    let failed = app.wait_status(&id, "START_FAILED", SETTLE).await;

    let reason = failed["fail_reason"].as_str().expect("fail_reason");
    assert!(reason.contains("step 2"), "{reason}");
    assert!(reason.contains("the node is out of memory"), "{reason}");
    let step_two = failed["action_progress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["step"] == 2)
        .expect("step 2")
        .clone();
    assert_eq!(step_two["status"], "FAILED");
    assert_eq!(app.runtime.running_count(), 0);

    // START_FAILED admits another start (spec §3.2), which fails the same way.
    let again = app.start(&id).await;
    assert_eq!(again["status"], "STARTING");
    assert_eq!(
        again["fail_reason"], "",
        "a new start clears the old reason"
    );
    app.wait_status(&id, "START_FAILED", SETTLE).await;
    // …and stop is refused there.
    let response = app
        .signed("POST", &format!("{}/stop", app.notebook_path(&id)), None)
        .await;
    expect_error(response, 400, "ModelArts.6357").await;
}

#[tokio::test]
async fn a_running_notebook_whose_sandbox_ends_becomes_error_with_the_reason() {
    let app = TestApp::spawn().await;
    let running = app.create_running("fragile").await;
    let id = id_of(&running).to_owned();
    app.runtime.crash(
        id.parse().expect("notebook id"),
        ExitReason::OutOfMemory { limit_mib: 1024 },
    );
    let failed = app.wait_status(&id, "ERROR", SETTLE).await;
    let reason = failed["fail_reason"].as_str().expect("fail_reason");
    assert!(reason.contains("out of memory"), "{reason}");
    assert!(reason.contains("1024 MiB"), "{reason}");
    assert_eq!(failed["stop_reason"], "fault");
}

#[tokio::test]
async fn a_sandbox_that_ends_right_after_it_is_ready_is_not_reported_running() {
    let app = TestApp::spawn().await;
    let stopped = app.create_stopped("short-lived").await;
    let id = id_of(&stopped).to_owned();
    app.runtime.crash_when_ready(
        id.parse().expect("notebook id"),
        ExitReason::Exited("JupyterLab exited unexpectedly (signal: 9)".to_owned()),
    );
    app.start(&id).await;
    let failed = app.wait_status(&id, "ERROR", SETTLE).await;
    let reason = failed["fail_reason"].as_str().expect("fail_reason");
    assert!(reason.contains("exited unexpectedly"), "{reason}");
    assert_eq!(app.runtime.running_count(), 0);
}

#[tokio::test]
async fn step_two_shows_the_pull_while_it_runs_and_its_plain_text_once_done() {
    let app = TestApp::builder()
        .step_delay(Duration::from_millis(100))
        .spawn()
        .await;
    let stopped = app.create_stopped("pull").await;
    let id = id_of(&stopped).to_owned();
    let pulling = "Pulling the image: 12.3 of 65.0 MiB.";
    let unpacking = "Unpacking the image (65.0 MiB pulled).";
    app.runtime
        .report_pull(id.parse().expect("notebook id"), &[pulling, unpacking]);
    let step_two = |notebook: &serde_json::Value| {
        notebook["action_progress"]
            .as_array()
            .expect("action_progress")
            .iter()
            .find(|p| p["step"] == 2)
            .expect("step 2")
            .clone()
    };

    app.start(&id).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    let running = loop {
        let notebook = app.show_ok(&id).await;
        let step = step_two(&notebook);
        assert_eq!(step["description"], step["step_description"], "{step}");
        if step["status"] == "PROCESSING" {
            let text = step["description"]
                .as_str()
                .expect("description")
                .to_owned();
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        if notebook["status"] == "RUNNING" {
            break notebook;
        }
        assert!(tokio::time::Instant::now() < deadline, "{notebook}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    for detail in [pulling, unpacking] {
        let shown = format!("Prepare the compute resource. {detail}");
        assert!(seen.contains(&shown), "{shown:?} not among {seen:?}");
    }
    let done = step_two(&running);
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["description"], "Prepare the compute resource.");
    assert_eq!(done["step_description"], "Prepare the compute resource.");
    // The details are progress, not history: no event for each.
    let (_, events) = json_of(
        app.signed("GET", &format!("{}/events", app.notebook_path(&id)), None)
            .await,
    )
    .await;
    let pulled = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["reason"] == "PullingImage")
        .count();
    assert_eq!(pulled, 2, "one per start (create, start): {events}");
}
