//! A control plane stopped and started again on the same data dir: leases, running sandboxes
//! and interrupted operations survive it.
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use atelier_runtime::PlaceholderRuntime;
use atelier_server::clock::ManualClock;

use crate::support::{SETTLE, TestApp, id_of, notebook_body, wall_clock_ms};

#[tokio::test]
async fn the_lease_of_a_running_notebook_survives_a_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    // The sandboxes outlive the control plane: both apps share one runtime.
    let runtime = Arc::new(PlaceholderRuntime::new(Duration::ZERO));
    let start = wall_clock_ms();
    let first = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .clock(ManualClock::new(start))
        .spawn()
        .await;
    let mut body = notebook_body("durable");
    body["duration"] = json!(3_600_000);
    let created = first.create_notebook(&body).await;
    let id = id_of(&created).to_owned();
    let running = first.wait_status(&id, "RUNNING", SETTLE).await;
    first.shutdown().await;

    let clock = ManualClock::new(start);
    let second = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .clock(clock.clone())
        .spawn()
        .await;
    let after_restart = second.show_ok(&id).await;
    assert_eq!(after_restart["status"], "RUNNING");
    assert_eq!(after_restart["lease"], running["lease"]);
    assert_eq!(after_restart["token"], running["token"]);

    clock.advance(30 * 60 * 1000);
    second
        .assert_status_holds(&id, "RUNNING", Duration::from_millis(200))
        .await;
    clock.advance(31 * 60 * 1000);
    let stopped = second.wait_status(&id, "STOPPED", SETTLE).await;
    assert_eq!(stopped["stop_reason"], "lease_expired");
    assert_eq!(runtime.running_count(), 0);
}

#[tokio::test]
async fn a_running_notebook_whose_sandbox_is_gone_after_a_restart_is_marked_error() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let first = TestApp::builder().data_dir(data_dir.path()).spawn().await;
    let running = first.create_running("orphan").await;
    let id = id_of(&running).to_owned();
    let stopped = first.create_stopped("resting").await;
    let stopped_id = id_of(&stopped).to_owned();
    first.shutdown().await;

    // A fresh runtime knows no sandbox (the host rebooted).
    let second = TestApp::builder().data_dir(data_dir.path()).spawn().await;
    let lost = second.show_ok(&id).await;

    assert_eq!(lost["status"], "ERROR");
    let reason = lost["fail_reason"].as_str().expect("fail_reason");
    assert!(reason.contains("sandbox"), "{reason}");
    assert_eq!(lost["stop_reason"], "fault");
    assert_eq!(
        second.show_ok(&stopped_id).await["status"],
        "STOPPED",
        "a stopped notebook needs no sandbox"
    );
    // ERROR admits a start (spec §3.2 as Atelier extends it), which brings it back.
    second.start(&id).await;
    let back = second.wait_status(&id, "RUNNING", SETTLE).await;
    assert_eq!(back["fail_reason"], "");
}

#[tokio::test]
async fn a_start_interrupted_by_a_shutdown_resumes_after_the_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let first = TestApp::builder().data_dir(data_dir.path()).spawn().await;
    let stopped = first.create_stopped("interrupted").await;
    let id = id_of(&stopped).to_owned();
    first.shutdown().await;

    // Steps so slow that the start cannot finish before the shutdown.
    let slow = TestApp::builder()
        .data_dir(data_dir.path())
        .step_delay(Duration::from_secs(60))
        .spawn()
        .await;
    let starting = slow.start(&id).await;
    assert_eq!(starting["status"], "STARTING");
    slow.shutdown().await;

    let resumed = TestApp::builder().data_dir(data_dir.path()).spawn().await;
    let running = resumed.wait_status(&id, "RUNNING", SETTLE).await;
    assert!(
        running["action_progress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "COMPLETED"),
        "{running}"
    );
    assert_eq!(resumed.runtime.running_count(), 1);
}

#[tokio::test]
async fn a_create_interrupted_by_a_shutdown_resumes_after_the_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let slow = TestApp::builder()
        .data_dir(data_dir.path())
        .step_delay(Duration::from_secs(60))
        .spawn()
        .await;
    let created = slow.create_notebook(&notebook_body("half-made")).await;
    let id = id_of(&created).to_owned();
    slow.shutdown().await;

    let resumed = TestApp::builder().data_dir(data_dir.path()).spawn().await;
    let running = resumed.wait_status(&id, "RUNNING", SETTLE).await;
    assert!(running["url"].is_string(), "{running}");
}

#[tokio::test]
async fn a_mount_interrupted_by_a_restart_is_carried_out_by_the_next_boot() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    // Every step and mount takes a while, so that the first server stops mid-mount.
    let runtime = Arc::new(PlaceholderRuntime::new(Duration::from_millis(300)));
    let storage = atelier_server::config::StorageSettings {
        object_stores: vec![atelier_server::config::ObjectStoreSettings {
            endpoint: "http://127.0.0.1:1".to_owned(),
            region: String::new(),
            access_key_id: "GKexample".to_owned(),
            secret_access_key: "secret".to_owned(),
            projects: vec!["*".to_owned()],
            buckets: vec!["*".to_owned()],
            read_only: false,
        }],
        shares: vec![],
    };
    let first = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .storage(storage.clone())
        .spawn()
        .await;
    let running = first.create_running("mounting").await;
    let id = id_of(&running).to_owned();
    let body = json!({"category": "OBSFS", "mount_path": "/data/in/", "uri": "obs://bucket/in/"});
    let path = format!("{}/storage", first.notebook_path(&id));
    let attached = first.signed("POST", &path, Some(&body.to_string())).await;
    assert_eq!(attached.status(), 200);
    first.shutdown().await;
    assert!(
        runtime.mounted(id.parse().unwrap()).is_empty(),
        "cut off mid-mount"
    );

    let second = TestApp::builder()
        .data_dir(data_dir.path())
        .runtime(runtime.clone())
        .storage(storage)
        .spawn()
        .await;
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let shown = second.show_ok(&id).await;
        if shown["data_volumes"][0]["status"] == "MOUNTED" {
            break;
        }
        assert_eq!(shown["data_volumes"][0]["status"], "MOUNTING", "{shown}");
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runtime.mounted(id.parse().unwrap()), vec!["in"]);
}
