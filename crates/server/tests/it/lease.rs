//! `GET|PATCH …/notebooks/{id}/lease` (spec §1.4.8, §3.3) and the lease keeper that stops
//! notebooks whose lease ran out. Time is a `ManualClock`: the tests move it.
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use atelier_server::clock::ManualClock;

use crate::support::{SETTLE, TestApp, expect_error, id_of, json_of, notebook_body, wall_clock_ms};

const HOUR_MS: i64 = 3_600_000;

async fn manual_app() -> TestApp {
    TestApp::builder()
        .clock(ManualClock::new(wall_clock_ms()))
        .spawn()
        .await
}

fn lease_path(app: &TestApp, id: &str) -> String {
    format!("{}/lease", app.notebook_path(id))
}

async fn lease_of(app: &TestApp, id: &str) -> Value {
    let (status, json) = json_of(app.signed("GET", &lease_path(app, id), None).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

async fn renew(app: &TestApp, id: &str, query: &str, body: Option<&str>) -> Value {
    let path = format!("{}{query}", lease_path(app, id));
    let (status, json) = json_of(app.signed("PATCH", &path, body).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

#[tokio::test]
async fn show_lease_matches_the_lease_inside_the_notebook() {
    let app = manual_app().await;
    let running = app.create_running("show").await;
    let id = id_of(&running);

    let lease = lease_of(&app, id).await;

    assert_eq!(lease, running["lease"]);
    let create_at = running["create_at"].as_i64().unwrap();
    assert_eq!(
        lease,
        json!({
            "create_at": create_at,
            "duration": HOUR_MS,
            "enable": true,
            "type": "TIMING",
            "update_at": create_at,
        }),
        "nothing has moved the clock since the create"
    );
}

#[tokio::test]
async fn renew_sets_duration_to_elapsed_time_plus_the_new_run_length() {
    let app = manual_app().await;
    let running = app.create_running("renew").await;
    let id = id_of(&running);
    let create_at = running["create_at"].as_i64().unwrap();

    app.advance(Duration::from_secs(10 * 60));
    let renewed = renew(&app, id, "", Some(r#"{"duration": 7200000}"#)).await;

    let now = app.now_ms();
    assert_eq!(now - create_at, 600_000);
    assert_eq!(renewed["create_at"], create_at, "the anchor never moves");
    assert_eq!(renewed["duration"], 600_000 + 2 * HOUR_MS);
    assert_eq!(renewed["update_at"], now);
    assert_eq!(renewed["enable"], true);
    assert_eq!(renewed["type"], "TIMING");
    assert_eq!(lease_of(&app, id).await, renewed);
    assert_eq!(app.show_ok(id).await["lease"], renewed);

    // No body and no query: one hour from now.
    app.advance(Duration::from_secs(60));
    let default = renew(&app, id, "", None).await;
    assert_eq!(default["duration"], 660_000 + HOUR_MS);

    // An IDLE lease from the body, in lower case.
    let idle = renew(
        &app,
        id,
        "",
        Some(r#"{"duration": 900000, "type": "idle"}"#),
    )
    .await;
    assert_eq!(idle["type"], "IDLE");
    assert_eq!(idle["duration"], 660_000 + 900_000);
}

#[tokio::test]
async fn a_query_duration_wins_over_the_body_and_forces_timing() {
    let app = manual_app().await;
    let running = app.create_running("query").await;
    let id = id_of(&running);
    app.advance(Duration::from_secs(5 * 60));

    // What the Go SDK sends: the query only, no body.
    let renewed = renew(
        &app,
        id,
        "?duration=10800000",
        Some(r#"{"duration": 7200000, "type": "IDLE"}"#),
    )
    .await;

    assert_eq!(renewed["duration"], 300_000 + 3 * HOUR_MS);
    assert_eq!(renewed["type"], "TIMING");
}

#[tokio::test]
async fn renew_with_minus_one_disables_auto_stop_and_a_later_renew_enables_it() {
    let app = manual_app().await;
    let running = app.create_running("off").await;
    let id = id_of(&running).to_owned();

    let off = renew(&app, &id, "?duration=-1", None).await;
    assert_eq!(off["enable"], false);
    assert!(off.get("duration").is_none(), "{off}");

    // Nothing stops it now, however long it runs.
    app.advance(Duration::from_secs(80 * 3600));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(200))
        .await;

    let on = renew(&app, &id, "", Some(r#"{"duration": 3600000}"#)).await;
    assert_eq!(on["enable"], true);
    assert_eq!(on["duration"], 80 * HOUR_MS + HOUR_MS);
}

#[tokio::test]
async fn renew_of_a_notebook_that_is_not_running_is_6327() {
    let app = manual_app().await;
    let stopped = app.create_stopped("stopped").await;
    let id = id_of(&stopped);

    let response = app.signed("PATCH", &lease_path(&app, id), Some("{}")).await;

    expect_error(response, 400, "ModelArts.6327").await;
    assert_eq!(app.show_ok(id).await, stopped);
    // Showing the lease works in any state.
    assert_eq!(lease_of(&app, id).await, stopped["lease"]);
}

#[tokio::test]
async fn bad_renew_bodies_are_refused() {
    let app = manual_app().await;
    let running = app.create_running("bad").await;
    let id = id_of(&running);
    let path = lease_path(&app, id);

    let response = app.signed("PATCH", &path, Some(r#"{"duration":"#)).await;
    expect_error(response, 400, "ModelArts.6400").await;
    let response = app
        .signed("PATCH", &path, Some(r#"{"duration":"long"}"#))
        .await;
    expect_error(response, 400, "ModelArts.6332").await;
    let response = app
        .signed("PATCH", &format!("{path}?duration=soon"), None)
        .await;
    expect_error(response, 400, "ModelArts.6332").await;
    let response = app
        .signed("PATCH", &path, Some(r#"{"type":"SOMETIMES"}"#))
        .await;
    expect_error(response, 400, "ModelArts.6336").await;
    assert_eq!(lease_of(&app, id).await, running["lease"]);
}

#[tokio::test]
async fn the_lease_keeper_stops_a_notebook_when_its_lease_runs_out() {
    let app = manual_app().await;
    let mut body = notebook_body("expiring");
    body["duration"] = json!(HOUR_MS);
    let created = app.create_notebook(&body).await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;
    let other = app.create_running("renewed-in-time").await;
    let other_id = id_of(&other).to_owned();

    app.advance(Duration::from_secs(59 * 60));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(300))
        .await;
    // Renewing gives the other notebook another hour from now.
    renew(&app, &other_id, "", None).await;

    app.advance(Duration::from_secs(2 * 60));
    let stopped = app.wait_status(&id, "STOPPED", SETTLE).await;

    assert_eq!(stopped["stop_reason"], "lease_expired");
    assert_eq!(app.show_ok(&other_id).await["status"], "RUNNING");
    assert_eq!(app.runtime.running_count(), 1);

    // A new start re-arms the lease; it expires again an hour later.
    app.start(&id).await;
    let running = app.wait_status(&id, "RUNNING", SETTLE).await;
    assert!(running.get("stop_reason").is_none(), "{running}");
    app.advance(Duration::from_secs(61 * 60));
    app.wait_status(&id, "STOPPED", SETTLE).await;
    let other = app.wait_status(&other_id, "STOPPED", SETTLE).await;
    assert_eq!(other["stop_reason"], "lease_expired");
}

#[tokio::test]
async fn an_idle_lease_stops_a_notebook_without_activity() {
    let app = manual_app().await;
    let mut body = notebook_body("idle");
    body["lease"] = json!({"duration": 900_000, "type": "IDLE"});
    let created = app.create_notebook(&body).await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;

    app.advance(Duration::from_secs(14 * 60));
    app.assert_status_holds(&id, "RUNNING", Duration::from_millis(200))
        .await;
    app.advance(Duration::from_secs(2 * 60));
    let stopped = app.wait_status(&id, "STOPPED", SETTLE).await;

    assert_eq!(stopped["stop_reason"], "idle");
}

#[tokio::test]
async fn leases_ending_together_are_stopped_together_each_with_its_own_event() {
    let app = manual_app().await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let mut body = notebook_body(&format!("together-{n}"));
        body["duration"] = json!(HOUR_MS);
        ids.push(id_of(&app.create_notebook(&body).await).to_owned());
    }
    for id in &ids {
        app.wait_status(id, "RUNNING", SETTLE).await;
    }
    let survivor = app.create_running("renewed").await;
    let survivor = id_of(&survivor).to_owned();
    app.advance(Duration::from_secs(30 * 60));
    renew(&app, &survivor, "", None).await;

    app.advance(Duration::from_secs(31 * 60));
    for id in &ids {
        let stopped = app.wait_status(id, "STOPPED", SETTLE).await;
        assert_eq!(stopped["stop_reason"], "lease_expired", "{stopped}");
        let events = crate::events::events(&app, id).await;
        let reasons = crate::events::reasons(&events);
        let expiries = reasons
            .iter()
            .filter(|r| **r == "StopNotebookLeaseExpired")
            .count();
        assert_eq!(expiries, 1, "{reasons:?}");
    }
    assert_eq!(app.show_ok(&survivor).await["status"], "RUNNING");
    assert_eq!(app.runtime.running_count(), 1);
}
