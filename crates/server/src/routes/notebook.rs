//! Notebook instances: spec §1.2 #1–#8.
use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_control::operations::{NewNotebook, NotebookUpdate, StartLease};
use atelier_control::service::ListFilter;
use atelier_domain::{
    EndpointService, EndpointSpec, Feature, LeaseRun, LeaseType, Notebook, NotebookId,
    NotebookStatus, Volume, VolumeCategory, VolumeOwnership, lease::DEFAULT_RUN_MS,
};
use atelier_wire::{
    EndpointsReq, ErrorBody, NotebookCreateRequest, NotebookList, NotebookResp,
    NotebookUpdateRequest, Page,
};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::identity::Caller;
use crate::state::AppState;

pub fn parse_notebook_id(text: &str) -> Result<NotebookId, ApiError> {
    text.parse().map_err(|_| ApiError::NotebookNotFound)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Names: 1–128 characters, letters (any script), digits, `-` and `_`.
pub fn validate_name(name: &str) -> Result<String, ApiError> {
    if name.is_empty() {
        return Err(ApiError::MissingField("name".to_owned()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(ApiError::BadCharacter(bad.to_string()));
    }
    if name.chars().count() > 128 {
        return Err(ApiError::BadValue("name".to_owned()));
    }
    Ok(name.to_owned())
}

pub fn validate_description(description: &str) -> Result<String, ApiError> {
    if let Some(bad) = description.chars().find(|c| matches!(c, '<' | '>')) {
        return Err(ApiError::BadCharacter(bad.to_string()));
    }
    if description.chars().count() > 512 {
        return Err(ApiError::BadValue("description".to_owned()));
    }
    Ok(description.to_owned())
}

fn validate_ip_or_cidr(text: &str) -> bool {
    match text.split_once('/') {
        None => text.parse::<IpAddr>().is_ok(),
        Some((addr, prefix)) => match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
            (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
            _ => false,
        },
    }
}

pub fn parse_endpoints(endpoints: &[EndpointsReq]) -> Result<Vec<EndpointSpec>, ApiError> {
    let mut parsed = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let service_text = endpoint
            .service
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::MissingField(format!("endpoints[{index}].service")))?;
        let service: EndpointService = service_text
            .parse()
            .map_err(|_| ApiError::BadValue(format!("endpoints[{index}].service")))?;
        let ips = endpoint.allowed_access_ips.clone().unwrap_or_default();
        if ips.len() > 5 {
            return Err(ApiError::BadValue(format!(
                "endpoints[{index}].allowed_access_ips"
            )));
        }
        if ips.iter().any(|ip| !validate_ip_or_cidr(ip.trim())) {
            return Err(ApiError::BadValue(format!(
                "endpoints[{index}].allowed_access_ips"
            )));
        }
        let keys = endpoint.key_pair_names.clone().unwrap_or_default();
        if keys.iter().any(|k| k.is_empty() || k.len() > 64) {
            return Err(ApiError::BadValue(format!(
                "endpoints[{index}].key_pair_names"
            )));
        }
        if service == EndpointService::Notebook {
            // The JupyterLab endpoint always exists; naming it changes nothing.
            continue;
        }
        if parsed.iter().any(|e: &EndpointSpec| e.service == service) {
            return Err(ApiError::BadValue(format!("endpoints[{index}].service")));
        }
        parsed.push(EndpointSpec {
            service,
            key_pair_names: keys,
            allowed_access_ips: ips.iter().map(|ip| ip.trim().to_owned()).collect(),
            port: None,
        });
    }
    Ok(parsed)
}

/// Checks `hooks` (spec §2.2.3) and gives the text the record keeps; `null` means none.
fn hooks_json(hooks: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    use atelier_control::hooks::{self, HookError};
    let parsed = hooks::parse(&hooks.unwrap_or_default()).map_err(|error| match error {
        HookError::WrongType { field, expected } => ApiError::WrongType {
            field,
            expected: expected.to_owned(),
        },
        HookError::Missing(field) => ApiError::MissingField(field),
        HookError::BadValue(field) => ApiError::BadValue(field),
    })?;
    Ok(parsed.map(|hooks| hooks::encode(&hooks)))
}

fn workspace(value: Option<String>) -> Result<String, ApiError> {
    match non_empty(value) {
        None => Ok("0".to_owned()),
        Some(ws) if ws == "0" => Ok(ws),
        Some(ws) => Err(ApiError::WorkspaceNotFound(ws)),
    }
}

/// Create a notebook instance; it is started right away (INIT → CREATING → STARTING → RUNNING).
#[utoipa::path(post, path = "/v1/{project_id}/notebooks", tag = "notebook",
    params(("project_id" = String, Path, description = "project id (32 hex)")),
    request_body = NotebookCreateRequest,
    responses((status = 200, body = NotebookResp), (status = 400, body = ErrorBody)))]
pub async fn create_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<ApiJson<NotebookCreateRequest>, ApiError>,
) -> Result<Json<NotebookResp>, ApiError> {
    // A missing `volume` has its own code (spec §4.3), not the generic 6335.
    let ApiJson(body) = body.map_err(|error| match error {
        ApiError::MissingField(field) if field == "volume" => ApiError::MissingVolume,
        other => other,
    })?;
    let name = validate_name(body.name.trim())?;
    let description = validate_description(body.description.as_deref().unwrap_or(""))?;
    let feature = match non_empty(body.feature) {
        None => Feature::Notebook,
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::BadValue("feature".to_owned()))?,
    };
    let flavor_id =
        non_empty(body.flavor).ok_or_else(|| ApiError::MissingField("flavor".to_owned()))?;
    let image_text = body.image_id.trim();
    if image_text.is_empty() {
        return Err(ApiError::MissingField("image_id".to_owned()));
    }
    let image_id = image_text
        .parse()
        .map_err(|_| ApiError::UnknownImage(image_text.to_owned()))?;
    let volume = parse_volume(&body.volume)?;
    let workspace_id = workspace(body.workspace_id)?;
    let run = match (body.duration, body.lease) {
        (Some(duration), _) => {
            LeaseRun::parse(duration, LeaseType::Timing).map_err(ApiError::from)?
        }
        (None, Some(lease)) => {
            let kind = match non_empty(lease.kind) {
                None => LeaseType::Timing,
                Some(text) => text
                    .parse()
                    .map_err(|_| ApiError::BadValue("lease.type".to_owned()))?,
            };
            LeaseRun::parse(lease.duration.unwrap_or(DEFAULT_RUN_MS), kind)
                .map_err(ApiError::from)?
        }
        (None, None) => LeaseRun::default_timing(),
    };
    let endpoints = parse_endpoints(body.endpoints.as_deref().unwrap_or(&[]))?;
    let hooks_json = hooks_json(body.hooks)?;
    let notebook = state
        .operations
        .create(NewNotebook {
            project_id: caller.project_id.clone(),
            user_id: caller.user.id.clone(),
            user_name: caller.user.name.clone(),
            name,
            description,
            feature,
            flavor: flavor_id,
            image_id,
            volume,
            workspace_id,
            pool_id: non_empty(body.pool_id),
            run,
            endpoints,
            hooks_json,
        })
        .await?;
    Ok(Json(state.render(&notebook)))
}

fn parse_volume(volume: &atelier_wire::VolumeReq) -> Result<Volume, ApiError> {
    if volume.category.trim().is_empty() {
        return Err(ApiError::MissingField("volume.category".to_owned()));
    }
    let category: VolumeCategory = volume
        .category
        .parse()
        .map_err(|_| ApiError::UnsupportedStorage(volume.category.clone()))?;
    let ownership = match volume.ownership.as_deref().filter(|o| !o.is_empty()) {
        None => VolumeOwnership::Managed,
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::BadValue("volume.ownership".to_owned()))?,
    };
    let uri = volume.uri.clone().filter(|u| !u.is_empty());
    let id = volume.id.clone().filter(|u| !u.is_empty());
    let capacity_gb = match category {
        VolumeCategory::Evs => {
            if ownership != VolumeOwnership::Managed {
                return Err(ApiError::BadValue("volume.ownership".to_owned()));
            }
            let capacity = volume.capacity.unwrap_or(Volume::EVS_DEFAULT_GB);
            if !(Volume::EVS_MIN_GB..=Volume::EVS_MAX_GB).contains(&capacity) {
                return Err(ApiError::EvsCapacity {
                    min: Volume::EVS_MIN_GB,
                    max: Volume::EVS_MAX_GB,
                });
            }
            capacity
        }
        VolumeCategory::Efs | VolumeCategory::Sfs => {
            if ownership == VolumeOwnership::Dedicated && uri.is_none() {
                return Err(ApiError::MissingField("volume.uri".to_owned()));
            }
            Volume::EFS_GB
        }
    };
    if uri.as_ref().is_some_and(|u| u.len() > 1024) {
        return Err(ApiError::BadValue("volume.uri".to_owned()));
    }
    Ok(Volume {
        category,
        ownership,
        capacity_gb,
        uri,
        id,
    })
}

/// How a list is sorted: `(field, descending)` pairs.
fn parse_sort(query: &ApiQuery) -> Result<Vec<(String, bool)>, ApiError> {
    let descending = match query.text("sort_dir") {
        None => true,
        Some(dir) if dir.eq_ignore_ascii_case("DESC") => true,
        Some(dir) if dir.eq_ignore_ascii_case("ASC") => false,
        Some(_) => return Err(ApiError::BadValue("sort_dir".to_owned())),
    };
    let keys = query.text("sort_key").unwrap_or("create_at");
    if keys.len() > 128 {
        return Err(ApiError::UnsortableField(keys.to_owned()));
    }
    keys.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|key| {
            const SORTABLE: &[&str] = &[
                "create_at",
                "update_at",
                "name",
                "status",
                "flavor",
                "id",
                "description",
            ];
            if SORTABLE.contains(&key) {
                Ok((key.to_owned(), descending))
            } else {
                Err(ApiError::UnsortableField(key.to_owned()))
            }
        })
        .collect()
}

fn compare(a: &Notebook, b: &Notebook, key: &str) -> std::cmp::Ordering {
    match key {
        "update_at" => a.update_at.cmp(&b.update_at),
        "name" => a.name.cmp(&b.name),
        "status" => a.status.as_str().cmp(b.status.as_str()),
        "flavor" => a.flavor.cmp(&b.flavor),
        "id" => a.id.cmp(&b.id),
        "description" => a.description.cmp(&b.description),
        _ => a.create_at.cmp(&b.create_at),
    }
}

/// Case-insensitive substring test; `needle_lower` is already lower-case. ASCII text (the
/// common case) is compared without allocating.
fn contains_ignore_case(haystack: &str, needle_lower: &str) -> bool {
    if haystack.is_ascii() && needle_lower.is_ascii() {
        let (haystack, needle) = (haystack.as_bytes(), needle_lower.as_bytes());
        return needle.is_empty()
            || haystack
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(needle_lower)
}

/// Paging parameters: `limit` (1–1000, default 10) and a record `offset`.
pub fn parse_paging(query: &ApiQuery, default_limit: i64) -> Result<(i64, i64), ApiError> {
    let limit = query.int("limit")?.unwrap_or(default_limit);
    let offset = query.int("offset")?.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadValue("limit".to_owned()));
    }
    if offset < 0 {
        return Err(ApiError::BadValue("offset".to_owned()));
    }
    Ok((limit, offset))
}

fn list(
    state: &AppState,
    caller: &Caller,
    query: &ApiQuery,
    only_own: bool,
) -> Result<NotebookList, ApiError> {
    let (limit, offset) = parse_paging(query, 10)?;
    let sort = parse_sort(query)?;
    let feature: Option<Feature> = query
        .text("feature")
        .map(|f| {
            f.parse()
                .map_err(|_| ApiError::BadValue("feature".to_owned()))
        })
        .transpose()?;
    let status: Option<NotebookStatus> = query
        .text("status")
        .map(|s| {
            s.parse()
                .map_err(|_| ApiError::BadValue("status".to_owned()))
        })
        .transpose()?;
    let workspace_id = query
        .text("workspace_id")
        .or_else(|| query.text("workspaceId"));
    let billing = query.text("billing").map(str::to_ascii_uppercase);
    if let Some(billing) = &billing
        && !matches!(billing.as_str(), "COMPUTE" | "STORAGE" | "ALL")
    {
        return Err(ApiError::BadValue("billing".to_owned()));
    }
    let tags: Vec<(String, Option<String>)> = query
        .text("tags")
        .map(|t| {
            t.split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('|') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (pair.to_owned(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    let owner = query.text("owner").filter(|_| caller.user.is_admin);
    let name = query.text("name").map(str::to_lowercase);
    let id = query.text("id");
    let id_parsed: Option<Option<NotebookId>> = id.map(|i| i.parse().ok());
    let flavor = query.text("flavor").map(str::to_lowercase);
    let image_id = query.text("image_id");
    let description = query.text("description").map(str::to_lowercase);
    let username = query.text("username").map(str::to_lowercase);
    let pool_id = query.text("pool_id");
    let swr_path = query.text("swr_path").map(str::to_lowercase);
    let ip = query.text("ip");
    let pool_name = query.text("pool_name").map(str::to_lowercase);
    let filtered = [
        feature.is_some(),
        status.is_some(),
        workspace_id.is_some(),
        name.is_some(),
        id.is_some(),
        flavor.is_some(),
        image_id.is_some(),
        description.is_some(),
        username.is_some(),
        pool_id.is_some(),
        ip.is_some(),
        pool_name.is_some(),
        swr_path.is_some(),
        billing.is_some(),
        !tags.is_empty(),
    ]
    .contains(&true);
    let images = state.service.images(&caller.project_id);
    let keep = |nb: &Notebook| {
        (!only_own || owner.is_some() || nb.user_id == caller.user.id)
            && owner.is_none_or(|o| nb.user_id.as_str() == o)
            && feature.is_none_or(|f| nb.feature == f)
            && status.is_none_or(|s| nb.status == s)
            && workspace_id.is_none_or(|w| nb.workspace_id == w)
            && name
                .as_deref()
                .is_none_or(|n| contains_ignore_case(&nb.name, n))
            && id_parsed.is_none_or(|i| i == Some(nb.id))
            && flavor
                .as_deref()
                .is_none_or(|f| contains_ignore_case(&nb.flavor, f))
            && image_id.is_none_or(|i| i.parse() == Ok(nb.image_id))
            && description
                .as_deref()
                .is_none_or(|d| contains_ignore_case(&nb.description, d))
            && username
                .as_deref()
                .is_none_or(|u| contains_ignore_case(&nb.user_name, u))
            && pool_id.is_none_or(|p| nb.pool_id.as_deref() == Some(p))
            && ip.is_none()
            && pool_name.as_deref().is_none_or(|p| {
                nb.pool_id
                    .as_deref()
                    .is_some_and(|id| contains_ignore_case(id, p))
            })
            && swr_path.as_deref().is_none_or(|s| {
                images
                    .iter()
                    .any(|i| i.id == nb.image_id && contains_ignore_case(&i.swr_path, s))
            })
            && billing.as_deref().is_none_or(|b| match b {
                // A notebook being saved as an image still holds its compute.
                "COMPUTE" => matches!(
                    nb.status,
                    NotebookStatus::Running | NotebookStatus::Snapshotting
                ),
                _ => true,
            })
            && tags.iter().all(|(k, v)| {
                nb.tags
                    .iter()
                    .any(|t| t.key == *k && v.as_ref().is_none_or(|v| t.value == *v))
            })
    };
    let default_order = sort.len() == 1 && sort[0] == ("create_at".to_owned(), true);
    let (total, rows) = if default_order {
        // The index is already in creation order: count, and clone only the page.
        let owner_id: Option<atelier_domain::UserId> = owner.and_then(|o| o.parse().ok());
        let filter = if filtered || (owner.is_some() && owner_id.is_none()) {
            ListFilter::Predicate(keep)
        } else if owner_id.is_some() {
            ListFilter::Owner(owner_id.as_ref())
        } else if only_own {
            ListFilter::Owner(Some(&caller.user.id))
        } else {
            ListFilter::Owner(None)
        };
        state
            .service
            .page_project(&caller.project_id, filter, offset as usize, limit as usize)
    } else {
        let mut rows = state.service.scan_project(&caller.project_id, keep);
        rows.sort_by(|a, b| {
            for (key, descending) in &sort {
                let ordering = compare(a, b, key);
                let ordering = if *descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering.is_ne() {
                    return ordering;
                }
            }
            std::cmp::Ordering::Equal
        });
        let total = rows.len();
        let page = rows
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
        (total, page)
    };
    let total = total as i64;
    let data: Vec<NotebookResp> = rows.iter().map(|nb| state.render(nb)).collect();
    let page = Page::compute(total, offset, limit);
    Ok(NotebookList {
        current: page.current,
        data,
        pages: page.pages,
        size: page.size,
        total,
    })
}

/// List the caller's notebook instances.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks", tag = "notebook",
    params(("project_id" = String, Path), ListParams),
    responses((status = 200, body = NotebookList), (status = 400, body = ErrorBody)))]
pub async fn list_notebooks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: ApiQuery,
) -> Result<Json<NotebookList>, ApiError> {
    list(&state, &caller, &query, true).map(Json)
}

/// List every notebook instance of the project.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/all", tag = "notebook",
    params(("project_id" = String, Path), ListParams),
    responses((status = 200, body = NotebookList), (status = 400, body = ErrorBody)))]
pub async fn list_all_notebooks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: ApiQuery,
) -> Result<Json<NotebookList>, ApiError> {
    list(&state, &caller, &query, false).map(Json)
}

/// Query parameters of the notebook lists (documentation only; parsed by hand).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    feature: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
    name: Option<String>,
    id: Option<String>,
    status: Option<String>,
    workspace_id: Option<String>,
    pool_id: Option<String>,
    owner: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    flavor: Option<String>,
    image_id: Option<String>,
    billing: Option<String>,
    tags: Option<String>,
    swr_path: Option<String>,
    description: Option<String>,
    username: Option<String>,
}

/// Show a notebook instance.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}", tag = "notebook",
    params(("project_id" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = NotebookResp), (status = 404, body = ErrorBody)))]
pub async fn show_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
) -> Result<Json<NotebookResp>, ApiError> {
    let notebook = state
        .service
        .get(&caller.project_id, &parse_notebook_id(&id)?)?;
    let mut shown = state.render(&notebook);
    shown.volume.used_bytes = state.orchestrator.runtime().volume_usage(notebook.id);
    Ok(Json(shown))
}

/// Update a notebook instance; only supplied fields change (spec §2.3).
#[utoipa::path(put, path = "/v1/{project_id}/notebooks/{id}", tag = "notebook",
    params(("project_id" = String, Path), ("id" = String, Path)),
    request_body = NotebookUpdateRequest,
    responses((status = 200, body = NotebookResp), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<NotebookUpdateRequest>,
) -> Result<Json<NotebookResp>, ApiError> {
    let id = parse_notebook_id(&id)?;
    // A notebook the caller cannot see is 404 before anything about the request is 400.
    state.service.get(&caller.project_id, &id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| validate_name(n.trim()))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(validate_description)
        .transpose()?;
    let image_id = match non_empty(body.image_id) {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| ApiError::UnknownImage(text))?),
    };
    let update = NotebookUpdate {
        name,
        description,
        flavor: non_empty(body.flavor),
        image_id,
        endpoints: body.endpoints.as_deref().map(parse_endpoints).transpose()?,
        hooks_json: hooks_json(body.hooks)?,
        storage_new_size: body.storage_new_size,
    };
    let notebook = state
        .operations
        .update(&caller.project_id, &id, update)
        .await?;
    Ok(Json(state.render(&notebook)))
}

/// Delete a notebook instance and its storage (answers DELETING; the record disappears once
/// the runtime has released everything).
#[utoipa::path(delete, path = "/v1/{project_id}/notebooks/{id}", tag = "notebook",
    params(("project_id" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = NotebookResp), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
) -> Result<Json<NotebookResp>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let notebook = state.operations.delete(&caller.project_id, &id).await?;
    Ok(Json(state.render(&notebook)))
}

/// Start a stopped notebook with an auto-stop lease.
#[utoipa::path(post, path = "/v1/{project_id}/notebooks/{id}/start", tag = "notebook",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("duration" = Option<i64>, Query, description = "ms before auto-stop; -1 disables it"),
        ("type" = Option<String>, Query, description = "TIMING or IDLE")),
    responses((status = 200, body = NotebookResp), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn start_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
) -> Result<Json<NotebookResp>, ApiError> {
    let id = parse_notebook_id(&id)?;
    // A notebook the caller cannot see is 404 before anything about the request is 400.
    state.service.get(&caller.project_id, &id)?;
    let duration_ms = query.int("duration")?;
    let kind: Option<LeaseType> = query
        .text("type")
        .map(|t| t.parse().map_err(|_| ApiError::BadValue("type".to_owned())))
        .transpose()?;
    let notebook = state
        .operations
        .start(&caller.project_id, &id, StartLease { duration_ms, kind })
        .await?;
    Ok(Json(state.render(&notebook)))
}

/// Stop a running (or starting) notebook; its work volume is kept.
#[utoipa::path(post, path = "/v1/{project_id}/notebooks/{id}/stop", tag = "notebook",
    params(("project_id" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = NotebookResp), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop_notebook(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
) -> Result<Json<NotebookResp>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let notebook = state.operations.stop(&caller.project_id, &id).await?;
    Ok(Json(state.render(&notebook)))
}
