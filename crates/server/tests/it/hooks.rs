//! `hooks` of create and update (spec §2.2.3): what is refused.
use serde_json::{Value, json};

use crate::support::{TestApp, expect_error, id_of, json_of, notebook_body};

fn b64(text: &str) -> String {
    use base64ct::Encoding as _;
    base64ct::Base64::encode_string(text.as_bytes())
}

fn with_hooks(name: &str, hooks: Value) -> Value {
    let mut body = notebook_body(name);
    body["hooks"] = hooks;
    body
}

#[tokio::test]
async fn bad_hooks_are_refused_at_create_naming_the_field_and_create_nothing() {
    let app = TestApp::spawn().await;
    let pre = "hooks.container_hooks.pre_start";
    let cases = [
        (json!("run.sh"), "ModelArts.6332", "hooks".to_owned()),
        (
            json!({"container_hooks": {"pre_start": {}}}),
            "ModelArts.6335",
            format!("{pre}.script"),
        ),
        (
            json!({"container_hooks": {"pre_start": {"script": ["/x"]}}}),
            "ModelArts.6332",
            format!("{pre}.script"),
        ),
        (
            json!({"container_hooks": {"pre_start": {"script": "/x", "type": "BINARY"}}}),
            "ModelArts.6336",
            format!("{pre}.type"),
        ),
        (
            json!({"container_hooks": {"pre_start": {"script": "/x", "mode": "LATER"}}}),
            "ModelArts.6336",
            format!("{pre}.mode"),
        ),
        (
            json!({"container_hooks": {"pre_start": {"script": "setup.sh"}}}),
            "ModelArts.6336",
            format!("{pre}.script"),
        ),
        (
            json!({"container_hooks": {"pre_start": {"script": "/home/ma-user/work/../../etc/x"}}}),
            "ModelArts.6336",
            format!("{pre}.script"),
        ),
        (
            json!({"container_hooks": {"post_start": {"script": "echo hi", "type": "COMMAND"}}}),
            "ModelArts.6336",
            "hooks.container_hooks.post_start.script".to_owned(),
        ),
    ];
    for (hooks, code, field) in cases {
        let before = app.notebook_count().await;
        let body = with_hooks("hooked", hooks.clone()).to_string();
        let response = app.signed("POST", &app.notebooks_path(), Some(&body)).await;
        let error = expect_error(response, 400, code).await;
        assert!(
            error["error_msg"].as_str().unwrap().contains(&field),
            "{hooks} → {error}"
        );
        assert_eq!(app.notebook_count().await, before, "{hooks}");
    }
}

#[tokio::test]
async fn good_hooks_are_accepted_and_an_update_with_bad_ones_changes_nothing() {
    let app = TestApp::spawn().await;
    // `base64` wraps its output at 76 columns: line breaks are fine.
    let mut wrapped = b64(&"echo pre-start hook ran\n".repeat(10));
    wrapped.insert(76, '\n');
    let created = app
        .create_notebook(&with_hooks(
            "hooked",
            json!({"container_hooks": {
                "pre_start": {"script": wrapped, "type": "COMMAND"},
                "post_start": {"script": "/home/ma-user/work/post.sh", "mode": "BLOCK"}}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    app.wait_status(&id, "RUNNING", crate::support::SETTLE)
        .await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", crate::support::SETTLE)
        .await;
    let bad = json!({"name": "renamed", "hooks": {"container_hooks": {"pre_start": {"script": "!!", "type": "COMMAND"}}}});
    let response = app
        .signed("PUT", &app.notebook_path(&id), Some(&bad.to_string()))
        .await;
    expect_error(response, 400, "ModelArts.6336").await;
    assert_eq!(app.show_ok(&id).await["name"], "hooked", "nothing changed");
    let good = json!({"hooks": {"container_hooks": {"post_start": {"script": "/opt/post.sh", "type": "SCRIPT", "mode": "ASYNC"}}}});
    let (status, body) = json_of(
        app.signed("PUT", &app.notebook_path(&id), Some(&good.to_string()))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
