//! `/console` (the web console page) and `/console/session` (whose token the page holds).
//! The page itself is driven in a real browser by `tests/e2e/console_e2e.py`.
use crate::support::{PROJECT_ID, TestApp, json_of};

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(format!("{}/console", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && policy.contains("connect-src 'self'"));
    let page = response.text().await.unwrap();
    assert!(page.contains("<title>Atelier console</title>"));
    assert!(
        page.contains("/progress"),
        "the page follows the progress stream"
    );
}

#[tokio::test]
async fn a_console_session_names_the_tokens_user_and_project() {
    let app = TestApp::spawn().await;
    let token = app.token(PROJECT_ID).await;
    let session = |token: Option<String>| {
        let mut request = app.client.get(format!("{}/console/session", app.base_url));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        request.send()
    };
    let (status, json) = json_of(session(Some(token)).await.unwrap()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["project_id"], PROJECT_ID);
    assert_eq!(json["user_name"], "admin");
    assert!(json["expires_at"].as_i64().unwrap() > app.now_ms());

    let (status, json) = json_of(session(Some("wrong".to_owned())).await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), json["error_code"].as_str()),
        (401, Some("APIG.0301"))
    );
    let (status, _) = json_of(session(None).await.unwrap()).await;
    assert_eq!(status, 401);
}
