//! `/notebooks/{id}/events` and `/notebooks/{id}/progress` (Atelier extensions): events are
//! numbered per notebook, stored with each change, and the progress stream resumes after any
//! of them, across a restart of the control plane.
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use atelier_runtime::PlaceholderRuntime;
use atelier_server::clock::ManualClock;

use crate::support::{SETTLE, TestApp, expect_error, id_of, json_of, notebook_body, wall_clock_ms};

pub async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, json) = json_of(
        app.signed("GET", &format!("{}/events", app.notebook_path(id)), None)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["events"].as_array().unwrap().clone()
}

pub fn reasons(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect()
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// Reads frames from a progress stream until `end` (included), or `max` frames.
pub async fn read_frames(response: reqwest::Response, max: usize) -> Vec<Frame> {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut response = response;
    let mut buffer = String::new();
    let mut frames = Vec::new();
    loop {
        while let Some(at) = buffer.find("\n\n") {
            let block: String = buffer.drain(..at + 2).collect();
            let mut frame = Frame {
                id: None,
                event: "message".to_owned(),
                data: Value::Null,
            };
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    frame.id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    frame.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            frame.data = serde_json::from_str(&data).unwrap();
            let end = frame.event == "end";
            frames.push(frame);
            if end || frames.len() >= max {
                return frames;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the stream moves within 30 s")
            .expect("the stream reads");
        match chunk {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => return frames,
        }
    }
}

#[tokio::test]
async fn a_start_leaves_numbered_events_from_created_to_running() {
    let app = TestApp::spawn().await;
    let running = app.create_running("evented").await;
    let id = id_of(&running).to_owned();
    let list = events(&app, &id).await;
    assert_eq!(
        reasons(&list),
        [
            "Created",
            "Scheduled",
            "PreparingStorage",
            "StorageReady",
            "PullingImage",
            "PulledImage",
            "ConfiguringNetwork",
            "NetworkReady",
            "Starting",
            "StartingNotebook",
            "NotebookHealthy",
            "Running"
        ]
    );
    let ids: Vec<i64> = list.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    assert_eq!(list[3]["step"], 1);
    assert_eq!(list[3]["step_status"], "COMPLETED");
    assert_eq!(list[11]["status"], "RUNNING");
    assert_eq!(list[11]["terminal"], true);
    assert!(list.iter().all(|e| e["time"].as_i64().unwrap() > 0));

    // `after` and `limit` page through them; bad values are refused.
    let (_, page) = json_of(
        app.signed(
            "GET",
            &format!("{}/events?after=10&limit=1", app.notebook_path(&id)),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        reasons(page["events"].as_array().unwrap()),
        ["NotebookHealthy"]
    );
    expect_error(
        app.signed(
            "GET",
            &format!("{}/events?limit=0", app.notebook_path(&id)),
            None,
        )
        .await,
        400,
        "ModelArts.6336",
    )
    .await;
}

#[tokio::test]
async fn lease_expiry_and_a_failed_start_are_events_with_their_reasons() {
    let clock = ManualClock::new(wall_clock_ms());
    let runtime = Arc::new(PlaceholderRuntime::new(Duration::ZERO));
    let app = TestApp::builder()
        .clock(clock.clone())
        .runtime(runtime.clone())
        .spawn()
        .await;
    let mut body = notebook_body("leased");
    body["duration"] = json!(3_600_000);
    let id = id_of(&app.create_notebook(&body).await).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;
    clock.advance(61 * 60 * 1000);
    app.wait_status(&id, "STOPPED", SETTLE).await;
    let list = events(&app, &id).await;
    assert_eq!(
        reasons(&list)[list.len() - 2..],
        ["StopNotebookLeaseExpired", "Stopped"]
    );

    runtime.fail_step(
        id.parse().unwrap(),
        atelier_runtime::Step::PrepareCompute,
        "image pull refused",
    );
    app.start(&id).await;
    app.wait_status(&id, "START_FAILED", SETTLE).await;
    let list = events(&app, &id).await;
    let tail: Vec<&Value> = list.iter().rev().take(2).rev().collect();
    assert_eq!(tail[0]["reason"], "StepFailed");
    assert_eq!(tail[0]["type"], "Warning");
    assert_eq!(tail[0]["step"], 2);
    assert_eq!(tail[1]["reason"], "StartFailed");
    assert!(
        tail[1]["message"]
            .as_str()
            .unwrap()
            .contains("image pull refused"),
        "{list:?}"
    );
}

#[tokio::test]
async fn the_progress_stream_follows_a_start_to_running_and_ends() {
    let app = TestApp::builder()
        .step_delay(Duration::from_millis(100))
        .spawn()
        .await;
    let id = id_of(&app.create_notebook(&notebook_body("streamed")).await).to_owned();
    let response = app
        .signed("GET", &format!("{}/progress", app.notebook_path(&id)), None)
        .await;
    let frames = read_frames(response, 100).await;
    let last = frames.last().unwrap();
    assert_eq!(last.event, "end");
    assert_eq!(last.data["status"], "RUNNING");
    let ids: Vec<i64> = frames.iter().filter_map(|f| f.id).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>(), "{frames:?}");
    let steps_done = frames
        .iter()
        .filter(|f| f.event == "step" && f.data["step_status"] == "COMPLETED")
        .count();
    assert_eq!(steps_done, 4);

    // Connecting to a settled notebook replays its last operation and ends at once.
    let again = read_frames(
        app.signed("GET", &format!("{}/progress", app.notebook_path(&id)), None)
            .await,
        100,
    )
    .await;
    assert_eq!(again.len(), frames.len());

    // Resuming after the last event: nothing new, just the end.
    let resumed = read_frames(
        app.signed(
            "GET",
            &format!("{}/progress?last_event_id=12", app.notebook_path(&id)),
            None,
        )
        .await,
        100,
    )
    .await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].event, "end");

    // A stop: the stream starts at the stop request and ends STOPPED.
    app.stop(&id).await;
    let stop = read_frames(
        app.signed("GET", &format!("{}/progress", app.notebook_path(&id)), None)
            .await,
        100,
    )
    .await;
    let reasons: Vec<&str> = stop
        .iter()
        .filter_map(|f| f.data["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["StopRequested", "Stopped"]);
}

#[tokio::test]
async fn the_progress_stream_resumes_after_a_restart_without_gap_or_duplicate() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let runtime = Arc::new(PlaceholderRuntime::new(Duration::from_millis(300)));
    let first = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .spawn()
        .await;
    let id = id_of(&first.create_notebook(&notebook_body("resumed")).await).to_owned();
    let response = first
        .signed(
            "GET",
            &format!("{}/progress", first.notebook_path(&id)),
            None,
        )
        .await;
    let before = read_frames(response, 4).await;
    assert_eq!(before.len(), 4);
    first.shutdown().await;

    let second = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .spawn()
        .await;
    let last = before.last().unwrap().id.unwrap();
    let after = read_frames(
        second
            .signed(
                "GET",
                &format!(
                    "{}/progress?last_event_id={last}",
                    second.notebook_path(&id)
                ),
                None,
            )
            .await,
        100,
    )
    .await;
    let ids: Vec<i64> = before.iter().chain(&after).filter_map(|f| f.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "{before:?} {after:?}"
    );
    let end = after.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["status"], "RUNNING");
    assert_eq!(second.show_ok(&id).await["status"], "RUNNING");
}
