//! Flavors: spec §1.4.9. The catalogue is built in or comes from the configuration.
use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_domain::{Feature, Flavor, FlavorCategory};
use atelier_wire::{ErrorBody, FlavorList, Page};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::identity::Caller;
use crate::render;
use crate::routes::notebook::parse_notebook_id;
use crate::state::AppState;

fn page_of(mut flavors: Vec<&Flavor>, query: &ApiQuery) -> Result<FlavorList, ApiError> {
    let limit = query.int("limit")?;
    let offset = query.int("offset")?.unwrap_or(0);
    if offset < 0 || limit.is_some_and(|l| l < 1) {
        return Err(ApiError::BadValue(
            if offset < 0 { "offset" } else { "limit" }.to_owned(),
        ));
    }
    match query.text("sort_key") {
        None | Some("id") => flavors.sort_by(|a, b| a.id.cmp(&b.id)),
        Some("vcpus") => flavors.sort_by_key(|f| f.vcpus),
        Some("memory") => flavors.sort_by_key(|f| f.memory_mib),
        Some("name") => flavors.sort_by(|a, b| a.name.cmp(&b.name)),
        Some(other) => return Err(ApiError::UnsortableField(other.to_owned())),
    }
    match query.text("sort_dir") {
        None => {}
        Some(d) if d.eq_ignore_ascii_case("ASC") => {}
        Some(d) if d.eq_ignore_ascii_case("DESC") => flavors.reverse(),
        Some(_) => return Err(ApiError::BadValue("sort_dir".to_owned())),
    }
    let total = flavors.len() as i64;
    let data: Vec<_> = flavors
        .into_iter()
        .skip(offset as usize)
        .take(limit.unwrap_or(i64::MAX) as usize)
        .map(render::flavor)
        .collect();
    let size = limit.unwrap_or(data.len() as i64);
    let page = Page::compute(total, offset, size);
    Ok(FlavorList {
        current: page.current,
        pages: page.pages,
        size: page.size,
        total,
        flavors: data.clone(),
        data,
    })
}

/// List the flavors new notebooks can use.
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/flavors", tag = "flavor",
    params(("project_id" = String, Path),
        ("category" = Option<String>, Query), ("type" = Option<String>, Query),
        ("feature" = Option<String>, Query), ("limit" = Option<i64>, Query, minimum = 1),
        ("offset" = Option<i64>, Query, minimum = 0), ("sort_key" = Option<String>, Query),
        ("sort_dir" = Option<String>, Query)),
    responses((status = 200, body = FlavorList), (status = 400, body = ErrorBody)))]
pub async fn list_flavors(
    State(state): State<AppState>,
    query: ApiQuery,
) -> Result<Json<FlavorList>, ApiError> {
    let category: Option<FlavorCategory> = query
        .text("category")
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::BadValue("category".to_owned()))
        })
        .transpose()?;
    let feature: Feature = query
        .text("feature")
        .map(|f| {
            f.parse()
                .map_err(|_| ApiError::BadValue("feature".to_owned()))
        })
        .transpose()?
        .unwrap_or(Feature::Notebook);
    // Only the public (MANAGED) pool exists.
    let dedicated = match query.text("type") {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("MANAGED") => false,
        Some(t) if t.eq_ignore_ascii_case("DEDICATED") => true,
        Some(_) => return Err(ApiError::BadValue("type".to_owned())),
    };
    let flavors: Vec<&Flavor> = state
        .service
        .flavors()
        .iter()
        .filter(|f| !dedicated && f.feature == feature && category.is_none_or(|c| f.category == c))
        .filter(|_| query.text("flavor_type").is_none())
        .collect();
    page_of(flavors, &query).map(Json)
}

/// List the flavors a notebook can be switched to (with Update `flavor` while stopped).
#[utoipa::path(get, path = "/v1/{project_id}/notebooks/{id}/flavors", tag = "flavor",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("limit" = Option<i64>, Query, minimum = 1), ("offset" = Option<i64>, Query, minimum = 0),
        ("sort_key" = Option<String>, Query), ("sort_dir" = Option<String>, Query)),
    responses((status = 200, body = FlavorList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show_switchable_flavors(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
) -> Result<Json<FlavorList>, ApiError> {
    let notebook = state
        .service
        .get(&caller.project_id, &parse_notebook_id(&id)?)?;
    let flavors: Vec<&Flavor> = state
        .service
        .flavors()
        .iter()
        .filter(|f| f.feature == notebook.feature && f.id != notebook.flavor && !f.sold_out)
        .collect();
    page_of(flavors, &query).map(Json)
}
