//! Dynamic storage (spec §1.4.11, §2.8): object-store prefixes and shares mounted under
//! `/data/` of a running notebook.
use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_domain::storage::{StorageFieldError, mount_dir, parse_obs_uri};
use atelier_domain::{DataVolume, MountStatus, StorageCategory};
use atelier_wire::{DataVolumesList, DataVolumesReq, DataVolumesRes, ErrorBody, Page};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::identity::Caller;
use crate::render;
use crate::routes::notebook::{parse_notebook_id, parse_paging};
use crate::state::AppState;

/// The request, checked field by field in the spec's order of codes; nothing is written
/// until all of it holds.
fn parse_request(request: DataVolumesReq) -> Result<DataVolume, ApiError> {
    let category: StorageCategory = request
        .category
        .parse()
        .map_err(|_| ApiError::UnsupportedStorage(request.category.clone()))?;
    if request.mount_path.len() > 256 || mount_dir(&request.mount_path).is_none() {
        return Err(ApiError::MountRefused(format!(
            "{:?} must be /data/{{name}}/ with a name of letters, digits, '_' and '-'",
            request.mount_path
        )));
    }
    if request.uri.len() > 256 {
        return Err(ApiError::BadValue("uri".to_owned()));
    }
    let efs_id = match category {
        StorageCategory::Obs | StorageCategory::Obsfs => {
            parse_obs_uri(&request.uri).map_err(|error| match error {
                StorageFieldError::NoTrailingSlash => ApiError::ObsPathNoSlash,
                StorageFieldError::BucketRoot => ApiError::ObsBucketRoot,
                _ => ApiError::BadValue("uri".to_owned()),
            })?;
            None
        }
        StorageCategory::Efs => {
            let efs_id = request
                .efs_id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| ApiError::MissingField("efs_id".to_owned()))?;
            if efs_id.len() > 128 || request.uri.is_empty() {
                return Err(ApiError::BadValue("efs_id".to_owned()));
            }
            Some(efs_id)
        }
    };
    Ok(DataVolume {
        id: String::new(),
        category,
        mount_path: request.mount_path,
        uri: request.uri,
        efs_id,
        status: MountStatus::Mounting,
        failure_reason: None,
        create_at: 0,
    })
}

/// Mount an object-store prefix (`OBS`/`OBSFS`, `obs://bucket/dir/`) or an operator's share
/// (`EFS`, `efs_id`) at `mount_path` (`/data/{name}/`) of a RUNNING notebook. Answers at
/// once with `MOUNTING`; the mount becomes `MOUNTED` or `MOUNT_FAILED` (`failure_reason`).
#[utoipa::path(post, path = "/v1/{project_id}/notebooks/{id}/storage", tag = "storage",
    params(("project_id" = String, Path), ("id" = String, Path)),
    request_body = DataVolumesReq,
    responses((status = 200, body = DataVolumesRes), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn attach_dynamic_storage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    ApiJson(request): ApiJson<DataVolumesReq>,
) -> Result<Json<DataVolumesRes>, ApiError> {
    let id = parse_notebook_id(&id)?;
    // A notebook the caller cannot see is 404 before anything about the body is 400.
    state.service.get(&caller.project_id, &id)?;
    let volume = parse_request(request)?;
    let volume = state
        .operations
        .attach_storage(&caller.project_id, &id, volume)
        .await?;
    Ok(Json(render::data_volume(&volume)))
}

/// The notebook's dynamic mounts (paged: `limit`, `offset`).
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/storage", tag = "storage",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = DataVolumesList), (status = 404, body = ErrorBody)))]
pub async fn list_dynamic_storages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
) -> Result<Json<DataVolumesList>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let volumes = state.operations.list_storage(&caller.project_id, &id)?;
    let (limit, offset) = parse_paging(&query, 10)?;
    let page = Page::compute(volumes.len() as i64, offset, limit);
    let data = volumes
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(0))
        .map(render::data_volume)
        .collect();
    Ok(Json(DataVolumesList {
        current: page.current,
        data,
        pages: page.pages,
        size: page.size,
        total: page.total,
    }))
}

/// One dynamic mount.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/storage/{storage_id}", tag = "storage",
    params(("project_id" = String, Path), ("id" = String, Path), ("storage_id" = String, Path)),
    responses((status = 200, body = DataVolumesRes), (status = 404, body = ErrorBody)))]
pub async fn show_dynamic_storage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id, storage_id)): Path<(String, String, String)>,
) -> Result<Json<DataVolumesRes>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let volume = state
        .operations
        .show_storage(&caller.project_id, &id, &storage_id)?;
    Ok(Json(render::data_volume(&volume)))
}

/// Unmount a dynamic mount of a RUNNING notebook: `UNMOUNTING` now, gone once unmounted
/// (the bucket's objects are untouched).
#[utoipa::path(delete, path = "/v1/{project_id}/notebooks/{id}/storage/{storage_id}", tag = "storage",
    params(("project_id" = String, Path), ("id" = String, Path), ("storage_id" = String, Path)),
    responses((status = 200, body = DataVolumesRes), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn detach_dynamic_storage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id, storage_id)): Path<(String, String, String)>,
) -> Result<Json<DataVolumesRes>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let volume = state
        .operations
        .detach_storage(&caller.project_id, &id, &storage_id)
        .await?;
    Ok(Json(render::data_volume(&volume)))
}
