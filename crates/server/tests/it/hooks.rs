//! `hooks` of create and update (spec §2.2.3): what is refused (fast, placeholder runtime),
//! and real hooks in real sandboxes (the local runtime; see `local.rs` for what it needs):
//! when they run, as whom, their output in the notebook's events, failures and the time
//! limit.
use std::time::Duration;

use serde_json::{Value, json};

use crate::local::{FIRST_START, Lab, local_runtime_available, wait_warm, warm_sandboxes};
use crate::support::{TestApp, expect_error, id_of, json_of, notebook_body};

pub(crate) fn b64(text: &str) -> String {
    use base64ct::Encoding as _;
    base64ct::Base64::encode_string(text.as_bytes())
}

pub(crate) fn with_hooks(name: &str, hooks: Value) -> Value {
    let mut body = notebook_body(name);
    body["hooks"] = hooks;
    body
}

pub(crate) async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = json_of(
        app.signed("GET", &format!("{}/events", app.notebook_path(id)), None)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().expect("events").clone()
}

/// The events a hook made, as `reason: message` lines.
pub(crate) fn hook_lines(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("Hook")))
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect()
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

/// A pre-start hook that writes JupyterLab's configuration before it starts (a header on
/// every answer shows JupyterLab read it) and the post-start script of the notebook's own
/// volume, which a post-start hook (ASYNC) then runs: both as `ma-user` in the work dir,
/// their output in the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_as_the_notebook_user_before_jupyterlab_starts_and_once_it_answers() {
    if !local_runtime_available(
        "hooks_run_as_the_notebook_user_before_jupyterlab_starts_and_once_it_answers",
    ) {
        return;
    }
    let app = TestApp::builder().local().warm_pool(1).spawn().await;
    // A first notebook of the kind fills the pool; the hooked one must not take from it.
    let plain = app.create_notebook(&notebook_body("plain")).await;
    app.wait_status(id_of(&plain), "RUNNING", FIRST_START).await;
    wait_warm(&app, 1.0).await;
    let pre_start = r#"#!/bin/sh
set -e
echo "pre-start as $(id -u) in $(pwd) with HOME=$HOME"
mkdir -p "$HOME/.jupyter"
printf '{"ServerApp": {"tornado_settings": {"headers": {"X-Atelier-Hook": "pre_start"}}}}\n' \
  > "$HOME/.jupyter/jupyter_server_config.json"
id -u > pre.txt
cat > post.sh <<'EOF'
#!/bin/sh
echo "post-start says hi"
id -u > post.txt
# Left behind, writing to the hook's output for ever.
(yes atelier-hook-writer &)
EOF
chmod +x post.sh
echo "wrote post.sh" >&2
"#;
    let created = app
        .create_notebook(&with_hooks(
            "hooked",
            json!({"container_hooks": {
                "pre_start": {"script": b64(pre_start), "type": "COMMAND"},
                "post_start": {"script": "/home/ma-user/work/post.sh"}}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    let running = app.wait_status(&id, "RUNNING", FIRST_START).await;
    let lab = Lab::of(&app, &running).await;
    let status = lab.get("api/status").await;
    assert_eq!(
        status
            .headers()
            .get("x-atelier-hook")
            .map(|v| v.to_str().unwrap()),
        Some("pre_start"),
        "JupyterLab read what the pre-start hook wrote before it started"
    );
    // The kernel is the notebook's user: the same uid as the hook's.
    let kernel = lab
        .execute("import os; print(os.getuid(), open('pre.txt').read().strip(), os.stat('pre.txt').st_uid == os.getuid())")
        .await;
    assert_eq!(kernel.trim(), "1000 1000 True", "{kernel}");
    // The ASYNC post-start hook runs in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(text) = lab.read_file("post.txt").await {
            assert_eq!(text.trim(), "1000");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "post.txt never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = hook_lines(&events_of(&app, &id).await);
        if lines
            .iter()
            .any(|l| l.starts_with("HookSucceeded: post_start"))
        {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let joined = lines.join("\n");
    assert!(
        lines[0].starts_with("HookStarted: pre_start hook started: inline script"),
        "{joined}"
    );
    assert!(
        joined.contains("pre-start as 1000 in /home/ma-user/work with HOME=/home/ma-user/work")
            && joined.contains("wrote post.sh"),
        "{joined}"
    );
    assert!(
        joined.contains("HookSucceeded: pre_start hook succeeded"),
        "{joined}"
    );
    assert!(
        joined.contains("HookStarted: post_start hook (ASYNC) started: /home/ma-user/work/post.sh")
            && joined.contains("post-start says hi"),
        "{joined}"
    );
    // What the hook left writing to its output is not read any more: it is blocked on the
    // full pipe, not spending the server's CPU (nor its own).
    let writer = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c == b"yes\0atelier-hook-writer\0")
        })
        .expect("the hook's background writer runs")
        .path();
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(writer.join("stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(") ")
            .unwrap()
            .1
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        cpu_ticks() <= before + 1,
        "the writer ran on: {before} → {}",
        cpu_ticks()
    );
    // `pipe_write`, or `anon_pipe_write` on newer kernels.
    let wchan = std::fs::read_to_string(writer.join("wchan")).unwrap();
    assert!(wchan.ends_with("pipe_write"), "{wchan}");
    // The pre-start hook's events come within step 4, before JupyterLab answered.
    let events = events_of(&app, &id).await;
    let position = |reason: &str| events.iter().position(|e| e["reason"] == reason).unwrap();
    assert!(position("StartingNotebook") < position("HookSucceeded"));
    assert!(position("HookSucceeded") < position("NotebookHealthy"));
    // A notebook with a pre-start hook starts cold: the warm sandbox is still idle.
    assert_eq!(warm_sandboxes(&app).await, 1.0);

    // One with a post-start hook only takes it, and the hook runs in the claimed sandbox
    // (the slot's uid, the notebook's volume mounted in).
    let script = "echo \"claimed as $(id -u)\"\nid -u > warm.txt\n";
    let claimed = app
        .create_notebook(&with_hooks(
            "claimed",
            json!({"container_hooks": {"post_start": {"script": b64(script), "type": "COMMAND", "mode": "BLOCK"}}}),
        ))
        .await;
    let claimed_id = id_of(&claimed).to_owned();
    let running = app.wait_status(&claimed_id, "RUNNING", FIRST_START).await;
    assert_eq!(
        warm_sandboxes(&app).await,
        0.0,
        "the warm sandbox was claimed"
    );
    let lab = Lab::of(&app, &running).await;
    assert_eq!(
        lab.read_file("warm.txt").await.as_deref().map(str::trim),
        Some("1000"),
        "the BLOCK post-start hook ended before RUNNING"
    );
    let lines = hook_lines(&events_of(&app, &claimed_id).await);
    assert!(
        lines.iter().any(|l| l.contains("claimed as 1000"))
            && lines
                .iter()
                .any(|l| l.starts_with("HookSucceeded: post_start hook succeeded")),
        "{lines:#?}"
    );
    app.shutdown().await;
}

/// A pre-start hook that fails: the create fails at step 4 with the hook's exit status and
/// its last lines in `fail_reason`; JupyterLab never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_start_hook_fails_the_create_or_start_with_its_status_and_output() {
    if !local_runtime_available(
        "a_failing_pre_start_hook_fails_the_create_with_its_status_and_output",
    ) {
        return;
    }
    let app = TestApp::builder().local().spawn().await;
    let script = "echo 'installing things'\necho 'pip: no such package' >&2\nexit 3\n";
    let created = app
        .create_notebook(&with_hooks(
            "failing",
            json!({"container_hooks": {"pre_start": {"script": b64(script), "type": "COMMAND"}}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    let failed = app.wait_status(&id, "CREATE_FAILED", FIRST_START).await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("step 4 (")
            && reason.contains("pre_start hook (inline script")
            && reason.contains("exit status 3")
            && reason.contains("installing things | pip: no such package"),
        "{reason}"
    );
    let steps: Vec<&str> = failed["action_progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]);
    let lines = hook_lines(&events_of(&app, &id).await);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("HookFailed: pre_start hook") && l.contains("exit status 3")),
        "{lines:#?}"
    );

    // Hooks set by an update apply at the next start, which fails the same way.
    let plain = app.create_notebook(&notebook_body("updated")).await;
    let id = id_of(&plain).to_owned();
    app.wait_status(&id, "RUNNING", FIRST_START).await;
    app.stop(&id).await;
    app.wait_status(&id, "STOPPED", Duration::from_secs(60))
        .await;
    let update = json!({"hooks": {"container_hooks": {"pre_start": {
        "script": b64("echo 'no luck this time'\nexit 42\n"), "type": "COMMAND"}}}});
    let (status, body) = json_of(
        app.signed("PUT", &app.notebook_path(&id), Some(&update.to_string()))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.start(&id).await;
    let failed = app.wait_status(&id, "START_FAILED", FIRST_START).await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(
        reason.contains("pre_start hook (inline script")
            && reason.contains("exit status 42; last output: no luck this time"),
        "{reason}"
    );
    app.shutdown().await;
}

/// A SCRIPT hook from the image, BLOCK post-start, that runs past the time limit: killed,
/// and the start fails saying so; a missing script fails with a reason that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_the_time_limit_is_killed_and_fails_the_start() {
    if !local_runtime_available("a_hook_past_the_time_limit_is_killed_and_fails_the_start") {
        return;
    }
    let app = TestApp::builder()
        .local()
        .hook_timeout(Duration::from_secs(3))
        .spawn()
        .await;
    let script = "echo 'sleeping a long time'\nsleep 600\n";
    let created = app
        .create_notebook(&with_hooks(
            "slow",
            json!({"container_hooks": {"post_start": {"script": b64(script), "type": "COMMAND", "mode": "BLOCK"}}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    let started = tokio::time::Instant::now();
    let failed = app.wait_status(&id, "CREATE_FAILED", FIRST_START).await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(
        reason.contains("post_start hook (inline script")
            && reason.contains("ran past the time limit of 3 s and was killed")
            && reason.contains("sleeping a long time"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );

    // From the image: a script that is not there.
    let created = app
        .create_notebook(&with_hooks(
            "missing",
            json!({"container_hooks": {"pre_start": {"script": "/opt/no-such-hook.sh", "type": "SCRIPT"}}}),
        ))
        .await;
    let id = id_of(&created).to_owned();
    let failed = app.wait_status(&id, "CREATE_FAILED", FIRST_START).await;
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(
        reason.contains("pre_start hook (/opt/no-such-hook.sh) failed: exit status 127")
            && reason.contains("/opt/no-such-hook.sh: no such file in the notebook"),
        "{reason}"
    );
    app.shutdown().await;
}

/// What a runtime reports of hooks becomes the notebook's events: those of a hook the start
/// waits for within step 4, in order, those of a background one after RUNNING; none ends a
/// progress stream.
#[tokio::test]
async fn hook_reports_become_events_in_order_and_never_end_a_stream() {
    use atelier_domain::{HookMode, HookPoint};
    use atelier_runtime::{HookActivity, HookReport, PlaceholderRuntime};
    let runtime = std::sync::Arc::new(PlaceholderRuntime::new(Duration::ZERO));
    let app = TestApp::builder().runtime(runtime.clone()).spawn().await;
    let created = app.create_stopped("reported").await;
    let id = id_of(&created).to_owned();
    let report = |point, mode, what| HookReport { point, mode, what };
    runtime.report_hooks(
        id.parse().unwrap(),
        vec![
            report(
                HookPoint::PreStart,
                HookMode::Block,
                HookActivity::Started("/opt/pre.sh".into()),
            ),
            report(
                HookPoint::PreStart,
                HookMode::Block,
                HookActivity::Output("one\ntwo".into()),
            ),
            report(
                HookPoint::PreStart,
                HookMode::Block,
                HookActivity::Succeeded {
                    elapsed: Duration::from_millis(1500),
                },
            ),
            report(
                HookPoint::PostStart,
                HookMode::Async,
                HookActivity::Started("/opt/post.sh".into()),
            ),
            report(
                HookPoint::PostStart,
                HookMode::Async,
                HookActivity::Failed(
                    "post_start hook (/opt/post.sh) failed: exit status 1; no output".into(),
                ),
            ),
        ],
    );
    app.start(&id).await;
    app.wait_status(&id, "RUNNING", crate::support::SETTLE)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = events_of(&app, &id).await;
        if events.iter().any(|e| e["reason"] == "HookFailed") {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let start = events
        .iter()
        .position(|e| e["reason"] == "StartRequested")
        .unwrap();
    let reasons: Vec<&str> = events[start..]
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    let at = |reason: &str| reasons.iter().position(|r| *r == reason).unwrap();
    assert!(at("StartingNotebook") < at("HookStarted"), "{reasons:?}");
    assert!(at("HookSucceeded") < at("NotebookHealthy"), "{reasons:?}");
    assert!(at("Running") < at("HookFailed"), "{reasons:?}");
    let lines = hook_lines(&events);
    assert_eq!(
        lines,
        [
            "HookStarted: pre_start hook started: /opt/pre.sh",
            "HookOutput: pre_start hook output:\none\ntwo",
            "HookSucceeded: pre_start hook succeeded (1.5 s)",
            "HookStarted: post_start hook (ASYNC) started: /opt/post.sh",
            "HookFailed: post_start hook (/opt/post.sh) failed: exit status 1; no output",
        ]
    );
    let failed = events.iter().find(|e| e["reason"] == "HookFailed").unwrap();
    assert_eq!(failed["type"], "Warning", "{failed}");
    assert_eq!(failed["status"], "RUNNING");
    assert_eq!(failed["terminal"], false, "{failed}");
}
