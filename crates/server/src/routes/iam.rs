//! The IAM (Keystone v3) reads SDKs make to find their project id (spec §5.5): an SDK given a
//! region and no project id asks `GET /v3/projects?name={region}` (signed) and takes the one
//! project in the answer; token clients ask `GET /v3/auth/projects`. Both answer only the
//! projects the caller may act in: every project of an AK/SK's user, or a token's own project.
//!
//! A project's Keystone `name` is `{region}` (`auth.region`) for the project named `default`
//! and `{region}_{name}` for every other one: Huawei Cloud's names for a region's main project
//! and its sub-projects, so `name={region}` finds the main project.
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};

use atelier_domain::Project;
use atelier_wire::{
    ErrorBody, KeystoneLinks, KeystoneListLinks, KeystoneProject, KeystoneProjectList,
};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::IamCaller;
use crate::state::AppState;

/// The Atelier project whose Keystone name is the bare region.
pub const MAIN_PROJECT: &str = "default";

/// A project's Keystone name in `region`.
pub fn keystone_name(region: &str, project: &Project) -> String {
    if project.name == MAIN_PROJECT {
        region.to_owned()
    } else {
        format!("{region}_{}", project.name)
    }
}

/// `scheme://host` of the request, for the `links` Keystone puts in its answers.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

fn bool_filter(query: &ApiQuery, name: &str) -> Result<Option<bool>, ApiError> {
    match query.text(name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::BadValue(name.to_owned())),
    }
}

fn render(state: &AppState, base: &str, project: &Project) -> KeystoneProject {
    KeystoneProject {
        id: project.id.to_string(),
        name: keystone_name(&state.region, project),
        description: String::new(),
        domain_id: state.domain.0.clone(),
        parent_id: state.domain.0.clone(),
        enabled: true,
        is_domain: false,
        links: KeystoneLinks {
            self_link: format!("{base}/v3/projects/{}", project.id),
        },
    }
}

fn list(base: &str, path_and_query: &str, projects: Vec<KeystoneProject>) -> KeystoneProjectList {
    KeystoneProjectList {
        links: KeystoneListLinks {
            self_link: format!("{base}{path_and_query}"),
            previous: None,
            next: None,
        },
        projects,
    }
}

/// Keystone's ListProjects, over the caller's own projects only (an Atelier extension for SDK
/// project discovery; no other tenant's project is ever listed).
#[utoipa::path(get, path = "/v3/projects", tag = "iam",
    params(("name" = Option<String>, Query, description = "`{region}` finds the main project"),
        ("domain_id" = Option<String>, Query), ("parent_id" = Option<String>, Query),
        ("enabled" = Option<bool>, Query), ("is_domain" = Option<bool>, Query)),
    responses((status = 200, body = KeystoneProjectList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn keystone_list_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<IamCaller>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: ApiQuery,
) -> Result<Json<KeystoneProjectList>, ApiError> {
    let enabled = bool_filter(&query, "enabled")?;
    let is_domain = bool_filter(&query, "is_domain")?;
    let base = base_url(&headers);
    let projects = state
        .identity
        .projects_of(&caller)
        .await?
        .iter()
        .map(|project| render(&state, &base, project))
        .filter(|p| query.text("name").is_none_or(|name| p.name == name))
        .filter(|p| query.text("domain_id").is_none_or(|d| p.domain_id == d))
        .filter(|p| query.text("parent_id").is_none_or(|d| p.parent_id == d))
        .filter(|p| enabled.is_none_or(|e| p.enabled == e))
        .filter(|p| is_domain.is_none_or(|d| p.is_domain == d))
        .collect();
    let path_and_query = uri
        .path_and_query()
        .map_or("/v3/projects", |pq| pq.as_str());
    Ok(Json(list(&base, path_and_query, projects)))
}

/// Keystone's "projects available to the caller": those of an AK/SK's user, or a token's own.
#[utoipa::path(get, path = "/v3/auth/projects", tag = "iam",
    responses((status = 200, body = KeystoneProjectList), (status = 401, body = ErrorBody)))]
pub async fn keystone_list_auth_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<IamCaller>,
    headers: HeaderMap,
) -> Result<Json<KeystoneProjectList>, ApiError> {
    let base = base_url(&headers);
    let projects = state
        .identity
        .projects_of(&caller)
        .await?
        .iter()
        .map(|project| render(&state, &base, project))
        .collect();
    Ok(Json(list(&base, "/v3/auth/projects", projects)))
}
