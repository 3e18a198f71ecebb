//! Features: spec §1.3 #30 (ListFeatures). `NOTEBOOK` is the only feature the SDK names; its
//! quota is the project's notebook limit (Atelier has none: -1) and `used` the project's
//! notebooks of that feature.
use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_domain::Feature;
use atelier_wire::{ErrorBody, FeatureResp};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Show whether a feature is on for the caller's project, its quota and how much is used.
#[utoipa::path(get, path = "/v1/{project_id}/authoring/features/{feature}", tag = "feature",
    params(("project_id" = String, Path),
        ("feature" = String, Path, description = "`NOTEBOOK` (case-insensitive)", example = "NOTEBOOK")),
    responses((status = 200, body = FeatureResp), (status = 404, body = ErrorBody)))]
pub async fn list_features(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, feature)): Path<(String, String)>,
) -> Result<Json<FeatureResp>, ApiError> {
    if !feature.eq_ignore_ascii_case("NOTEBOOK") {
        return Err(ApiError::FeatureNotFound(feature));
    }
    let project = state
        .service
        .store()
        .find_project(&caller.project_id)
        .await?
        .ok_or(ApiError::ProjectMismatch)?;
    let (used, _) = state.service.page_project(
        &caller.project_id,
        atelier_control::service::ListFilter::Predicate(|notebook: &atelier_domain::Notebook| {
            notebook.feature == Feature::Notebook
        }),
        0,
        0,
    );
    let id = atelier_auth::sha256_hex(format!("{}/features/NOTEBOOK", project.id).as_bytes());
    Ok(Json(FeatureResp {
        id: id[..32].to_owned(),
        name: "NOTEBOOK".to_owned(),
        enabled: true,
        quota: -1,
        used: used as i64,
        user_id: caller.user.id.to_string(),
        create_at: project.create_at,
        update_at: project.create_at,
    }))
}
