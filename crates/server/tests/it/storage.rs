//! `POST|GET …/notebooks/{id}/storage`, `GET|DELETE …/storage/{storage_id}` (spec §1.4.11,
//! §2.8) against the placeholder runtime: validation, grants, the status machine, stop/start
//! and restart. The real mounts (s3fs against Garage) are in `local_storage`.
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use atelier_server::config::{ObjectStoreSettings, ShareSettings, StorageSettings};

use crate::support::{PROJECT_ID, SETTLE, TestApp, expect_error, id_of, json_of};

fn grants() -> StorageSettings {
    StorageSettings {
        object_stores: vec![ObjectStoreSettings {
            endpoint: "http://127.0.0.1:1".to_owned(),
            region: "garage".to_owned(),
            access_key_id: "GKexample".to_owned(),
            secret_access_key: "do-not-log-this-secret".to_owned(),
            projects: vec![PROJECT_ID.to_owned()],
            buckets: vec!["team-data".to_owned()],
            read_only: false,
        }],
        shares: vec![ShareSettings {
            id: "team-share".to_owned(),
            path: "/srv/share".into(),
            projects: vec!["*".to_owned()],
            read_only: false,
        }],
    }
}

async fn app() -> TestApp {
    TestApp::builder().storage(grants()).spawn().await
}

fn storage_path(app: &TestApp, id: &str) -> String {
    format!("{}/storage", app.notebook_path(id))
}

fn obs(mount_path: &str, uri: &str) -> String {
    json!({"category": "OBS", "mount_path": mount_path, "uri": uri}).to_string()
}

async fn attach(app: &TestApp, id: &str, body: &str) -> Value {
    let (status, json) =
        json_of(app.signed("POST", &storage_path(app, id), Some(body)).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

async fn show_mount(app: &TestApp, id: &str, storage_id: &str) -> (StatusCode, Value) {
    let path = format!("{}/{storage_id}", storage_path(app, id));
    json_of(app.signed("GET", &path, None).await).await
}

/// Polls a mount until its status is `status`.
async fn wait_mount(app: &TestApp, id: &str, storage_id: &str, status: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (code, json) = show_mount(app, id, storage_id).await;
        if code == StatusCode::OK && json["status"] == status {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "mount never {status}: {code} {json}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_mount_gone(app: &TestApp, id: &str, storage_id: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (code, json) = show_mount(app, id, storage_id).await;
        if code == StatusCode::NOT_FOUND {
            assert_eq!(json["error_code"], "ModelArts.6404", "{json}");
            return;
        }
        assert!(Instant::now() < deadline, "mount never went: {json}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_mount_goes_mounting_mounted_then_unmounting_and_gone() {
    let app = app().await;
    let running = app.create_running("dyn").await;
    let id = id_of(&running);

    let mount = attach(&app, id, &obs("/data/in/", "obs://team-data/in/")).await;
    assert_eq!(mount["status"], "MOUNTING", "{mount}");
    assert_eq!(mount["category"], "OBS");
    assert_eq!(mount["mount_path"], "/data/in/");
    assert_eq!(mount["uri"], "obs://team-data/in/");
    assert_eq!(mount["mount_type"], "DYNAMIC");
    let storage_id = mount["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&storage_id).is_ok(), "{mount}");

    wait_mount(&app, id, &storage_id, "MOUNTED").await;
    assert_eq!(app.runtime.mounted(id.parse().unwrap()), vec!["in"]);
    let (status, list) = json_of(app.signed("GET", &storage_path(&app, id), None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["data"][0]["id"], storage_id.as_str());
    // The notebook lists it too, with `url` (what Terraform reads).
    let notebook = app.show_ok(id).await;
    assert_eq!(
        notebook["data_volumes"],
        json!([{"id": storage_id, "category": "OBS", "mount_path": "/data/in/",
            "url": "obs://team-data/in/", "status": "MOUNTED", "mount_type": "DYNAMIC"}])
    );

    let path = format!("{}/{storage_id}", storage_path(&app, id));
    let (status, detached) = json_of(app.signed("DELETE", &path, None).await).await;
    assert_eq!(status, StatusCode::OK, "{detached}");
    assert_eq!(detached["status"], "UNMOUNTING");
    wait_mount_gone(&app, id, &storage_id).await;
    assert!(app.runtime.mounted(id.parse().unwrap()).is_empty());
    assert_eq!(app.show_ok(id).await["data_volumes"], json!([]));
}

#[tokio::test]
async fn bad_requests_get_the_spec_codes_and_change_nothing() {
    let app = app().await;
    let running = app.create_running("bad").await;
    let id = id_of(&running);
    let path = storage_path(&app, id);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            obs("/data/in/", "obs://team-data/in"),
            400,
            "ModelArts.6318",
        ),
        (obs("/data/in/", "obs://team-data/"), 400, "ModelArts.6358"),
        (obs("/data/in/", "obs://team-data"), 400, "ModelArts.6358"),
        (
            obs("/data/in", "obs://team-data/in/"),
            400,
            "ModelArts.6336",
        ),
        (
            obs("/data/../etc/", "obs://team-data/in/"),
            400,
            "ModelArts.6336",
        ),
        (
            obs("/data/a/b/", "obs://team-data/in/"),
            400,
            "ModelArts.6336",
        ),
        (
            obs("/home/ma-user/work/", "obs://team-data/in/"),
            400,
            "ModelArts.6336",
        ),
        (
            obs("/data/in/", "obs://team-data/../x/"),
            400,
            "ModelArts.6336",
        ),
        (
            obs("/data/in/", "http://team-data/in/"),
            400,
            "ModelArts.6336",
        ),
        (
            json!({"category": "NFS", "mount_path": "/data/in/", "uri": "x"}).to_string(),
            400,
            "ModelArts.6324",
        ),
        (
            json!({"category": "OBS", "mount_path": "/data/in/"}).to_string(),
            400,
            "ModelArts.6335",
        ),
        (
            json!({"category": "OBS", "mount_path": 5, "uri": "obs://team-data/in/"}).to_string(),
            400,
            "ModelArts.6332",
        ),
        (
            json!({"category": "EFS", "mount_path": "/data/in/", "uri": "share"}).to_string(),
            400,
            "ModelArts.6335",
        ),
        ("{".to_owned(), 400, "ModelArts.6400"),
        // Not granted to the project: the same answer whether or not the bucket exists.
        (
            obs("/data/in/", "obs://someone-elses/in/"),
            403,
            "ModelArts.6407",
        ),
        (
            json!({"category": "EFS", "mount_path": "/data/in/", "uri": "x", "efs_id": "nope"})
                .to_string(),
            403,
            "ModelArts.6407",
        ),
    ];
    for (body, status, code) in cases {
        let error = expect_error(app.signed("POST", &path, Some(&body)).await, status, code).await;
        assert!(!error.to_string().contains("do-not-log"), "{error}");
    }
    let (_, list) = json_of(app.signed("GET", &path, None).await).await;
    assert_eq!(list["total"], 0, "{list}");
    assert!(app.runtime.mounted(id.parse().unwrap()).is_empty());

    // The same path twice: refused, the first one stays.
    let first = attach(&app, id, &obs("/data/in/", "obs://team-data/in/")).await;
    expect_error(
        app.signed(
            "POST",
            &path,
            Some(&obs("/data/in/", "obs://team-data/other/")),
        )
        .await,
        400,
        "ModelArts.6336",
    )
    .await;
    wait_mount(&app, id, first["id"].as_str().unwrap(), "MOUNTED").await;

    // Unknown notebook and unknown mount.
    let unknown = "00000000-0000-4000-8000-000000000000";
    expect_error(
        app.signed("GET", &storage_path(&app, unknown), None).await,
        404,
        "ModelArts.6309",
    )
    .await;
    let (status, json) = show_mount(&app, id, unknown).await;
    assert_eq!(
        (status.as_u16(), json["error_code"].as_str()),
        (404, Some("ModelArts.6404"))
    );
    expect_error(
        app.signed("DELETE", &format!("{path}/{unknown}"), None)
            .await,
        404,
        "ModelArts.6404",
    )
    .await;
}

#[tokio::test]
async fn only_a_running_notebook_mounts_or_unmounts() {
    let app = app().await;
    let stopped = app.create_stopped("stopped").await;
    let id = id_of(&stopped);
    expect_error(
        app.signed(
            "POST",
            &storage_path(&app, id),
            Some(&obs("/data/in/", "obs://team-data/in/")),
        )
        .await,
        400,
        "ModelArts.6327",
    )
    .await;
    assert_eq!(app.show_ok(id).await["data_volumes"], json!([]));
}

#[tokio::test]
async fn a_failed_mount_says_why_and_can_be_removed() {
    let app = app().await;
    let running = app.create_running("fails").await;
    let id = id_of(&running);
    app.runtime
        .fail_mounts(id.parse().unwrap(), "s3fs: invalid credentials");
    let mount = attach(&app, id, &obs("/data/in/", "obs://team-data/in/")).await;
    let storage_id = mount["id"].as_str().unwrap();
    let failed = wait_mount(&app, id, storage_id, "MOUNT_FAILED").await;
    assert_eq!(
        failed["failure_reason"], "s3fs: invalid credentials",
        "{failed}"
    );
    let path = format!("{}/{storage_id}", storage_path(&app, id));
    let (status, _) = json_of(app.signed("DELETE", &path, None).await).await;
    assert_eq!(status, StatusCode::OK);
    wait_mount_gone(&app, id, storage_id).await;
}

#[tokio::test]
async fn mounts_are_mounted_again_at_every_start() {
    let app = app().await;
    let running = app.create_running("again").await;
    let id = id_of(&running);
    let nb: atelier_domain::NotebookId = id.parse().unwrap();
    let mount = attach(&app, id, &obs("/data/in/", "obs://team-data/in/")).await;
    let storage_id = mount["id"].as_str().unwrap();
    wait_mount(&app, id, storage_id, "MOUNTED").await;

    app.stop(id).await;
    app.wait_status(id, "STOPPED", SETTLE).await;
    assert!(app.runtime.mounted(nb).is_empty(), "a stop unmounts");
    // Still listed while stopped, and not changeable.
    let (_, list) = json_of(app.signed("GET", &storage_path(&app, id), None).await).await;
    assert_eq!(list["total"], 1, "{list}");
    let path = format!("{}/{storage_id}", storage_path(&app, id));
    expect_error(
        app.signed("DELETE", &path, None).await,
        400,
        "ModelArts.6327",
    )
    .await;

    app.start(id).await;
    let running = app.wait_status(id, "RUNNING", SETTLE).await;
    // Mounted before the notebook counts as running.
    assert_eq!(app.runtime.mounted(nb), vec!["in"]);
    assert_eq!(running["data_volumes"][0]["status"], "MOUNTED", "{running}");
}
