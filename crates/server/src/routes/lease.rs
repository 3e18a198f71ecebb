//! The auto-stop lease: spec §1.4.8, arithmetic in `atelier_domain::lease`.
use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_domain::lease::DEFAULT_RUN_MS;
use atelier_domain::{LeaseRun, LeaseType};
use atelier_wire::{ErrorBody, LeaseReq, LeaseResp};

use crate::error::ApiError;
use crate::extract::{ApiQuery, parse_json};
use crate::identity::Caller;
use crate::render;
use crate::routes::notebook::parse_notebook_id;
use crate::state::AppState;

/// Show the lease of a notebook.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/lease", tag = "lease",
    params(("project_id" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = LeaseResp), (status = 404, body = ErrorBody)))]
pub async fn show_lease(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
) -> Result<Json<LeaseResp>, ApiError> {
    let notebook = state
        .service
        .get(&caller.project_id, &parse_notebook_id(&id)?)?;
    Ok(Json(render::lease(&notebook.lease)))
}

/// Re-arm the auto-stop timer of a running notebook. A `duration` query wins over the body
/// and forces `TIMING`; `-1` turns auto-stop off.
#[utoipa::path(patch, path = "/v1/{project_id}/notebooks/{id}/lease", tag = "lease",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("duration" = Option<i64>, Query, description = "ms from now; -1 disables auto-stop")),
    request_body(content = Option<LeaseReq>),
    responses((status = 200, body = LeaseResp), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn renew_lease(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
    body: axum::body::Bytes,
) -> Result<Json<LeaseResp>, ApiError> {
    let id = parse_notebook_id(&id)?;
    // A notebook the caller cannot see is 404 before anything about the request is 400.
    state.service.get(&caller.project_id, &id)?;
    let run = match query.int("duration")? {
        Some(duration) => LeaseRun::parse(duration, LeaseType::Timing).map_err(ApiError::from)?,
        None => {
            let request: LeaseReq = parse_json(&body)?;
            let kind = match request.kind.as_deref().filter(|k| !k.is_empty()) {
                None => LeaseType::Timing,
                Some(text) => text
                    .parse()
                    .map_err(|_| ApiError::BadValue("type".to_owned()))?,
            };
            LeaseRun::parse(request.duration.unwrap_or(DEFAULT_RUN_MS), kind)
                .map_err(ApiError::from)?
        }
    };
    let notebook = state
        .operations
        .renew_lease(&caller.project_id, &id, run)
        .await?;
    Ok(Json(render::lease(&notebook.lease)))
}
