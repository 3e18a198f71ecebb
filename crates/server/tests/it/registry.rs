//! `POST …/images` of container images: the reference is resolved in its registry — Debian's
//! `docker-registry` on loopback, with images the test pushes — before anything is recorded.
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use atelier_oci::testing::{REGISTRY, Registry, layer, push};
use atelier_server::config::RegistrySettings;

use crate::local::local_runtime_available;
use crate::support::{PROJECT_ID, TestApp, id_of, json_of, notebook_body};

async fn register(app: &TestApp, body: Value) -> (StatusCode, Value) {
    json_of(
        app.signed(
            "POST",
            &format!("/v1/{PROJECT_ID}/images"),
            Some(&body.to_string()),
        )
        .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_image_is_resolved_in_its_registry_before_it_is_registered() {
    let test = "a_container_image_is_resolved_in_its_registry_before_it_is_registered";
    if !local_runtime_available(test) {
        return;
    }
    assert!(Path::new(REGISTRY).exists(), "{test} needs {REGISTRY}");
    let registry = Registry::start().await;
    let lab = push(
        &registry,
        "team/lab:1",
        "amd64",
        vec![layer(&[("opt/x", "x")])],
    )
    .await;
    let arm = push(
        &registry,
        "team/armlab:1",
        "arm64",
        vec![layer(&[("opt/y", "y")])],
    )
    .await;
    // Incompressible, so that its layer is as large as its contents.
    let noise: String = (0..3 * 1024 * 1024)
        .map(|_| char::from(b'!' + rand::random_range(0..90u8)))
        .collect();
    let big = push(
        &registry,
        "team/big:1",
        "amd64",
        vec![layer(&[("opt/big", &noise)])],
    )
    .await;
    let app = TestApp::builder()
        .local()
        .registry(RegistrySettings {
            max_image_mb: 2,
            ..RegistrySettings::default()
        })
        .spawn()
        .await;
    let registered = || async {
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
        list["total"].as_i64().unwrap()
    };

    let (status, image) = register(&app, json!({"swr_path": lab})).await;
    assert_eq!(status, StatusCode::OK, "{image}");
    assert_eq!(
        (&image["namespace"], &image["name"], &image["tag"]),
        (&json!("team"), &json!("lab"), &json!("1"))
    );
    assert_eq!(image["arch"], "x86_64");
    assert!(image["size"].as_i64().unwrap() > 0, "{image}");

    // Each refusal says why and records nothing.
    let cases = [
        (
            json!({"swr_path": format!("{}/team/missing:1", registry.host)}),
            StatusCode::BAD_REQUEST,
            "ModelArts.6797",
            "does not exist",
        ),
        (
            json!({"swr_path": arm}),
            StatusCode::BAD_REQUEST,
            "ModelArts.6797",
            "arm64",
        ),
        (
            json!({"swr_path": big}),
            StatusCode::BAD_REQUEST,
            "ModelArts.6771",
            "too large",
        ),
        (
            json!({"swr_path": "127.0.0.1:9/team/lab:1"}),
            StatusCode::SERVICE_UNAVAILABLE,
            "ModelArts.0010",
            "cannot be reached",
        ),
    ];
    for (body, status, code, says) in cases {
        let (got, error) = register(&app, body.clone()).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["error_code"], code, "{body}: {error}");
        let message = error["error_msg"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(registered().await, 1);

    // A notebook on it (a layer of two files, no system) fails its start saying what is
    // missing, not something obscure.
    let mut body = notebook_body("on-a-container-image");
    body["image_id"] = image["id"].clone();
    let notebook = app.create_notebook(&body).await;
    let failed = app
        .wait_status(id_of(&notebook), "CREATE_FAILED", Duration::from_secs(60))
        .await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(
        reason.contains("step 4") && reason.contains("the image has no /bin/sh"),
        "{failed}"
    );

    // The arm64 image is fine for its own architecture.
    let (status, image) = register(&app, json!({"swr_path": arm, "arch": "AARCH64"})).await;
    assert_eq!(status, StatusCode::OK, "{image}");
    assert_eq!(image["arch"], "aarch64");
    assert_eq!(registered().await, 2);

    // DELETE keeps the registry's image; with force it goes from the registry too.
    let manifest = |swr_path: &str| {
        let (repository, tag) = swr_path
            .strip_prefix(&format!("{}/", registry.host))
            .unwrap()
            .rsplit_once(':')
            .unwrap();
        format!("http://{}/v2/{repository}/manifests/{tag}", registry.host)
    };
    let in_registry = |swr_path: String| async move {
        reqwest::Client::new()
            .get(manifest(&swr_path))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap()
            .status()
    };
    let delete = |id: String, query: &'static str| {
        let app = &app;
        async move {
            json_of(
                app.signed(
                    "DELETE",
                    &format!("/v1/{PROJECT_ID}/images/{id}{query}"),
                    None,
                )
                .await,
            )
            .await
        }
    };
    let (status, deleted) = delete(image["id"].as_str().unwrap().to_owned(), "").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(in_registry(arm.clone()).await, StatusCode::OK);
    let (_, lab_image) = json_of(
        app.signed(
            "GET",
            &format!("/v1/{PROJECT_ID}/images?name=lab&name_fuzzy_match=false"),
            None,
        )
        .await,
    )
    .await;
    let lab_id = lab_image["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(in_registry(lab.clone()).await, StatusCode::OK);
    let (status, deleted) = delete(lab_id.clone(), "?force=true").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["status"], "DELETED");
    assert_eq!(in_registry(lab.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(registered().await, 0);
    app.shutdown().await;
}
