//! `/metrics`: the Prometheus text format with start steps, API durations, notebooks by
//! status and lease expiries. Gateway traffic is checked with real JupyterLab in `local`.
use serde_json::json;

use atelier_server::clock::ManualClock;

use crate::support::{SETTLE, TestApp, id_of, notebook_body, wall_clock_ms};

pub async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

/// The value of the first sample line starting with `prefix` (name and labels).
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_start_steps_api_requests_notebooks_and_lease_expiries() {
    let clock = ManualClock::new(wall_clock_ms());
    let app = TestApp::builder().clock(clock.clone()).spawn().await;
    let mut body = notebook_body("measured");
    body["duration"] = json!(3_600_000);
    let id = id_of(&app.create_notebook(&body).await).to_owned();
    app.wait_status(&id, "RUNNING", SETTLE).await;
    let text = scrape(&app).await;
    for step in ["storage", "compute", "network", "init"] {
        let line = format!(
            "atelier_start_step_duration_seconds_count{{step=\"{step}\",outcome=\"completed\"}}"
        );
        assert_eq!(sample(&text, &line), Some(1.0), "{line} in\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "atelier_start_duration_seconds_count{outcome=\"completed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "atelier_notebooks{status=\"RUNNING\"}"),
        Some(1.0)
    );
    let shown = sample(
        &text,
        "atelier_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/{project_id}/notebooks/{id}\",status=\"200\"}",
    )
    .unwrap_or(0.0);
    assert!(shown >= 1.0, "{text}");
    assert!(text.contains("atelier_gateway_requests_total 0"), "{text}");
    assert!(
        text.contains("atelier_gateway_busy_poll_seconds_total 0"),
        "{text}"
    );
    assert!(text.contains("atelier_ssh_sessions 0"), "{text}");

    clock.advance(61 * 60 * 1000);
    app.wait_status(&id, "STOPPED", SETTLE).await;
    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            "atelier_lease_expiries_total{reason=\"lease_expired\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "atelier_notebooks{status=\"STOPPED\"}"),
        Some(1.0)
    );
}
