//! The web console at `/console` on the API listener: one static page (no build step) that
//! signs in with an access token and drives the public API, plus `/console/session`, which
//! tells the page whose token it holds.
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

const PAGE: &str = include_str!("console.html");

pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        PAGE,
    )
        .into_response()
}

#[derive(serde::Serialize)]
pub struct Session {
    user_name: String,
    project_id: String,
    project_name: String,
    expires_at: i64,
}

/// `GET /console/session` with `X-Auth-Token`: who the token belongs to.
pub async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Session>, ApiError> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::Unauthenticated("x-auth-token not found"))?;
    let (token, user) = state
        .identity
        .token_session(token, state.service.now_ms())
        .await?;
    let project = state
        .service
        .store()
        .find_project(&token.project_id)
        .await?
        .ok_or(ApiError::Unauthenticated("the token's project is gone"))?;
    Ok(Json(Session {
        user_name: user.name.clone(),
        project_id: project.id.to_string(),
        project_name: project.name,
        expires_at: token.expires_at,
    }))
}
