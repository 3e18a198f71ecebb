//! Notebook tags: spec §1.4.10.
use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use atelier_domain::Tag;
use atelier_wire::{ErrorBody, ProjectTag, ProjectTags, TagsBody, TmsTag};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::identity::Caller;
use crate::routes::notebook::parse_notebook_id;
use crate::state::AppState;

fn tag_char_ok(c: char, in_value: bool) -> bool {
    c.is_alphanumeric()
        || matches!(c, ' ' | '_' | '.' | ':' | '=' | '+' | '-' | '@')
        || (in_value && c == '/')
}

fn parse_tags(tags: &[TmsTag]) -> Result<Vec<Tag>, ApiError> {
    if tags.len() > 20 {
        return Err(ApiError::BadValue("tags".to_owned()));
    }
    tags.iter()
        .enumerate()
        .map(|(index, tag)| {
            let key = &tag.key;
            let key_ok = !key.is_empty()
                && key.chars().count() <= 128
                && key.trim() == key
                && !key.starts_with("_sys_")
                && key.chars().all(|c| tag_char_ok(c, false));
            if !key_ok {
                return Err(ApiError::BadValue(format!("tags[{index}].key")));
            }
            let value = tag.value.clone().unwrap_or_default();
            if value.chars().count() > 255 || !value.chars().all(|c| tag_char_ok(c, true)) {
                return Err(ApiError::BadValue(format!("tags[{index}].value")));
            }
            Ok(Tag {
                key: key.clone(),
                value,
            })
        })
        .collect()
}

/// Add tags to a notebook; an existing key takes the new value.
#[utoipa::path(post, path = "/v1/{project_id}/notebooks/{resource_id}/tags/create", tag = "tag",
    params(("project_id" = String, Path), ("resource_id" = String, Path), ("workspace_id" = Option<String>, Query)),
    request_body = TagsBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_notebook_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<TagsBody>,
) -> Result<StatusCode, ApiError> {
    let id = parse_notebook_id(&id)?;
    // A notebook the caller cannot see is 404 before anything about the request is 400.
    state.service.get(&caller.project_id, &id)?;
    let tags = parse_tags(&body.tags)?;
    state
        .operations
        .add_tags(&caller.project_id, &id, tags)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove tags from a notebook (by key); absent tags are ignored.
#[utoipa::path(delete, path = "/v1/{project_id}/notebooks/{resource_id}/tags/delete", tag = "tag",
    params(("project_id" = String, Path), ("resource_id" = String, Path), ("workspace_id" = Option<String>, Query)),
    request_body = TagsBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_notebook_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<TagsBody>,
) -> Result<StatusCode, ApiError> {
    let id = parse_notebook_id(&id)?;
    let keys: Vec<String> = body.tags.iter().map(|t| t.key.clone()).collect();
    state
        .operations
        .remove_tags(&caller.project_id, &id, keys)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every tag key used by the project's notebooks, with the values seen for it.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/tags", tag = "tag",
    params(("project_id" = String, Path), ("workspace_id" = Option<String>, Query)),
    responses((status = 200, body = ProjectTags)))]
pub async fn show_notebook_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ProjectTags>, ApiError> {
    let mut merged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for notebook in state.service.scan_project(&caller.project_id, |_| true) {
        for tag in &notebook.tags {
            let values = merged.entry(tag.key.clone()).or_default();
            if !values.contains(&tag.value) {
                values.push(tag.value.clone());
            }
        }
    }
    let tags = merged
        .into_iter()
        .map(|(key, mut values)| {
            values.sort();
            ProjectTag { key, values }
        })
        .collect();
    Ok(Json(ProjectTags { tags }))
}
