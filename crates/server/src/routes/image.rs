//! Images: spec §1.3 #20, #22–#26. The built-in catalogue plus each project's DEDICATED
//! images (registered, or saved from a notebook by create-image), and their groups (the
//! images of one `namespace/name`).
use axum::extract::{Path, State};
use axum::{Extension, Json};

use atelier_control::operations::NewImage;
use atelier_domain::{Image, ImageId, ImageType};
use atelier_runtime::{ImageRef, RuntimeError, oci_architecture};
use atelier_wire::{
    ErrorBody, ImageCreateReq, ImageDeleteRequest, ImageGroup, ImageGroupList, ImageList,
    ImageRegRequest, ImageResponse, Page,
};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, parse_json};
use crate::identity::Caller;
use crate::render;
use crate::routes::notebook::{parse_notebook_id, parse_paging};
use crate::state::AppState;

/// List the images a project can use.
#[utoipa::path(get, path = "/v1/{project_id}/images", tag = "image",
    params(("project_id" = String, Path),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000), ("offset" = Option<i64>, Query, minimum = 0),
        ("name" = Option<String>, Query), ("name_fuzzy_match" = Option<bool>, Query),
        ("namespace" = Option<String>, Query), ("type" = Option<String>, Query),
        ("sort_key" = Option<String>, Query), ("sort_dir" = Option<String>, Query),
        ("workspace_id" = Option<String>, Query)),
    responses((status = 200, body = ImageList), (status = 400, body = ErrorBody)))]
pub async fn list_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: ApiQuery,
) -> Result<Json<ImageList>, ApiError> {
    let (limit, offset) = parse_paging(&query, 200)?;
    let filter = ImageFilter::parse(&query)?;
    let mut images: Vec<_> = state
        .service
        .images(&caller.project_id)
        .into_iter()
        .filter(|i| filter.matches(i))
        .collect();
    match query.text("sort_key") {
        None | Some("create_at") => images.sort_by_key(|i| (i.create_at, i.id)),
        Some("update_at") => images.sort_by_key(|i| (i.update_at, i.id)),
        Some("name") => images.sort_by(|a, b| a.name.cmp(&b.name)),
        Some(other) => return Err(ApiError::UnsortableField(other.to_owned())),
    }
    match query.text("sort_dir") {
        None => {}
        Some(d) if d.eq_ignore_ascii_case("DESC") => images.reverse(),
        Some(d) if d.eq_ignore_ascii_case("ASC") => {}
        Some(_) => return Err(ApiError::BadValue("sort_dir".to_owned())),
    }
    let total = images.len() as i64;
    let data = images
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|i| render::image(i))
        .collect();
    let page = Page::compute(total, offset, limit);
    Ok(Json(ImageList {
        current: page.current,
        data,
        pages: page.pages,
        size: page.size,
        total,
    }))
}

/// The filters ListImage and ListImageGroup share: `type`, `name` (a substring unless
/// `name_fuzzy_match=false`), `namespace` and `workspace_id` (built-in images are in every
/// workspace).
struct ImageFilter<'q> {
    kind: Option<ImageType>,
    name: Option<&'q str>,
    fuzzy: bool,
    namespace: Option<&'q str>,
    workspace_id: Option<&'q str>,
}

impl<'q> ImageFilter<'q> {
    fn parse(query: &'q ApiQuery) -> Result<ImageFilter<'q>, ApiError> {
        Ok(ImageFilter {
            kind: query
                .text("type")
                .map(|t| t.parse().map_err(|_| ApiError::BadValue("type".to_owned())))
                .transpose()?,
            name: query.text("name"),
            fuzzy: query.bool("name_fuzzy_match")?.unwrap_or(true),
            namespace: query.text("namespace"),
            workspace_id: query.text("workspace_id"),
        })
    }

    fn matches(&self, image: &Image) -> bool {
        self.kind.is_none_or(|k| image.kind == k)
            && self.name.is_none_or(|n| {
                if self.fuzzy {
                    image.name.contains(n)
                } else {
                    image.name == n
                }
            })
            && self.namespace.is_none_or(|n| image.namespace == n)
            && self
                .workspace_id
                .is_none_or(|w| image.workspace_id == w || image.kind == ImageType::BuildIn)
    }
}

/// List image groups: the project's images (and the built-in ones) aggregated by
/// `namespace/name`, with how many versions (tags) each has.
#[utoipa::path(get, path = "/v1/{project_id}/images/group", tag = "image",
    params(("project_id" = String, Path),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000), ("offset" = Option<i64>, Query, minimum = 0),
        ("name" = Option<String>, Query), ("name_fuzzy_match" = Option<bool>, Query),
        ("namespace" = Option<String>, Query), ("type" = Option<String>, Query),
        ("workspace_id" = Option<String>, Query), ("swr_instance_id" = Option<String>, Query)),
    responses((status = 200, body = ImageGroupList), (status = 400, body = ErrorBody)))]
pub async fn list_image_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: ApiQuery,
) -> Result<Json<ImageGroupList>, ApiError> {
    let (limit, offset) = parse_paging(&query, 200)?;
    let filter = ImageFilter::parse(&query)?;
    // Atelier has no SWR enterprise instances: asking for one finds no groups.
    let instance = query.text("swr_instance_id").filter(|i| !i.is_empty());
    let mut groups: std::collections::BTreeMap<(String, String), Vec<std::sync::Arc<Image>>> =
        std::collections::BTreeMap::new();
    for image in state.service.images(&caller.project_id) {
        if image.status != "DELETED" && instance.is_none() && filter.matches(&image) {
            groups
                .entry((image.namespace.clone(), image.name.clone()))
                .or_default()
                .push(image);
        }
    }
    let mut groups: Vec<ImageGroup> = groups
        .into_iter()
        .map(|((namespace, name), mut versions)| {
            versions.sort_by_key(|i| (i.create_at, i.id));
            let newest = versions.last().expect("a group has a version");
            ImageGroup {
                id: group_id(&caller.project_id.to_string(), &namespace, &name),
                create_at: versions[0].create_at,
                update_at: versions.iter().map(|i| i.update_at).max().unwrap_or(0),
                version_count: versions.len() as i64,
                description: newest.description.clone(),
                read_me: String::new(),
                icon_name: String::new(),
                swr_instance_name: String::new(),
                swr_instance_id: String::new(),
                name,
                namespace,
            }
        })
        .collect();
    groups.sort_by(|a, b| (a.create_at, &a.id).cmp(&(b.create_at, &b.id)));
    let total = groups.len() as i64;
    let data = groups
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    let page = Page::compute(total, offset, limit);
    Ok(Json(ImageGroupList {
        current: page.current,
        data,
        pages: page.pages,
        size: page.size,
        total,
        is_swr_enterprise: false,
    }))
}

/// A group's id: a name-based UUID of its project, namespace and name, so that it stays the
/// same while its versions come and go.
fn group_id(project: &str, namespace: &str, name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("atelier/image-group/{project}/{namespace}/{name}").as_bytes(),
    )
    .to_string()
}

/// `(namespace, name, tag)` of an image reference: `[registry[:port]]/namespace/name:tag`, or
/// `local:///abs/prefix` for a Python environment on this host.
fn parse_swr_path(path: &str) -> Option<(String, String, String)> {
    if let Some(prefix) = path.strip_prefix("local://") {
        let prefix = std::path::Path::new(prefix);
        if !prefix.is_absolute() || prefix.components().count() < 2 {
            return None;
        }
        let name = prefix.file_name()?.to_str()?.to_lowercase();
        return Some(("local".to_owned(), name, "latest".to_owned()));
    }
    if path.len() < 16 || path.len() > 2048 || path.contains(char::is_whitespace) {
        return None;
    }
    let (repository, tag) = path.rsplit_once(':')?;
    if tag.is_empty() || tag.contains('/') {
        return None;
    }
    let mut segments: Vec<&str> = repository.split('/').collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let name = segments.pop()?.to_owned();
    let namespace = segments.pop()?.to_owned();
    let name_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    name_ok.then(|| (namespace, name, tag.to_owned()))
}

fn upper_list(
    values: Option<Vec<String>>,
    default: &[&str],
    allowed: &[&str],
    field: &str,
) -> Result<Vec<String>, ApiError> {
    let values: Vec<String> = match values {
        Some(v) if !v.is_empty() => v.iter().map(|s| s.to_ascii_uppercase()).collect(),
        _ => default.iter().map(|s| (*s).to_owned()).collect(),
    };
    if values.iter().any(|v| !allowed.contains(&v.as_str())) {
        return Err(ApiError::BadValue(field.to_owned()));
    }
    Ok(values)
}

/// Register an image: a container image (`registry/namespace/name:tag`), resolved in its
/// registry first (it must exist for `arch` and fit the size limit), or for the local runtime
/// `local:///abs/prefix`, a Python environment that contains JupyterLab.
#[utoipa::path(post, path = "/v1/{project_id}/images", tag = "image",
    params(("project_id" = String, Path)),
    request_body = ImageRegRequest,
    responses((status = 200, body = ImageResponse), (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "the image's registry cannot be reached")))]
pub async fn register_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<ImageRegRequest>,
) -> Result<Json<ImageResponse>, ApiError> {
    let swr_path = body.swr_path.trim().to_owned();
    if swr_path.is_empty() {
        return Err(ApiError::MissingField("swr_path".to_owned()));
    }
    let (namespace, name, tag) =
        parse_swr_path(&swr_path).ok_or_else(|| ApiError::BadValue("swr_path".to_owned()))?;
    let arch = match body.arch.as_deref().filter(|a| !a.is_empty()) {
        None => "x86_64".to_owned(),
        Some(a) if a.eq_ignore_ascii_case("X86_64") => "x86_64".to_owned(),
        Some(a) if a.eq_ignore_ascii_case("AARCH64") => "aarch64".to_owned(),
        Some(_) => return Err(ApiError::BadValue("arch".to_owned())),
    };
    let description = body.description.unwrap_or_default();
    if description.chars().count() > 512 {
        return Err(ApiError::BadValue("description".to_owned()));
    }
    let services = upper_list(
        body.services,
        &["NOTEBOOK", "SSH"],
        &["NOTEBOOK", "SSH", "AI_FLOW"],
        "services",
    )?;
    let resource_categories = upper_list(
        body.resource_category,
        &["CPU", "GPU"],
        &["CPU", "GPU", "ASCEND"],
        "resource_category",
    )?;
    let service_type = body
        .service_type
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "UNKNOWN".to_owned())
        .to_ascii_uppercase();
    if !["COMMON", "INFERENCE", "TRAIN", "DEV", "UNKNOWN"].contains(&service_type.as_str()) {
        return Err(ApiError::BadValue("service_type".to_owned()));
    }
    let visibility = body
        .visibility
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "PRIVATE".to_owned())
        .to_ascii_uppercase();
    if !["PRIVATE", "PUBLIC"].contains(&visibility.as_str()) {
        return Err(ApiError::BadValue("visibility".to_owned()));
    }
    let origin = body
        .origin
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "CUSTOMIZE".to_owned())
        .to_ascii_uppercase();
    if !["CUSTOMIZE", "IMAGE_SAVE"].contains(&origin.as_str()) {
        return Err(ApiError::BadValue("origin".to_owned()));
    }
    let workspace_id = match body.workspace_id.filter(|w| !w.is_empty()) {
        None => "0".to_owned(),
        Some(w) if w == "0" => w,
        Some(w) => return Err(ApiError::WorkspaceNotFound(w)),
    };
    if state
        .service
        .images(&caller.project_id)
        .iter()
        .any(|i| i.swr_path == swr_path)
    {
        return Err(ApiError::ImageConflict(swr_path));
    }
    // A container image must exist in its registry, for this architecture, within the size
    // limit: resolved now, so that a notebook never starts from an image that cannot run.
    let image_ref = ImageRef::parse(&swr_path);
    let mut size_kb = 0;
    if matches!(image_ref, ImageRef::Container(_)) {
        let resolved = state
            .orchestrator
            .runtime()
            .images()
            .resolve(&image_ref, &oci_architecture(&arch))
            .await
            .map_err(registry_api_error)?;
        let size = resolved.size.unwrap_or(0);
        if state.max_image_bytes > 0 && size > state.max_image_bytes {
            return Err(ApiError::ImageTooLarge {
                size,
                limit: state.max_image_bytes,
            });
        }
        size_kb = i64::try_from(size.div_ceil(1024)).unwrap_or(i64::MAX);
    }
    let now = state.service.now_ms();
    let image = Image {
        id: ImageId::new_random(),
        project_id: Some(caller.project_id.to_string()),
        name,
        namespace,
        tag,
        swr_path,
        kind: ImageType::Dedicated,
        origin,
        arch,
        description,
        dev_services: services,
        resource_categories,
        service_type,
        size_kb,
        status: "ACTIVE".to_owned(),
        status_message: String::new(),
        visibility,
        workspace_id,
        create_at: now,
        update_at: now,
    };
    let image = state.service.insert_image(image).await?;
    Ok(Json(render::image(&image)))
}

/// Save a running notebook as an image (spec §1.4.12): answered at once with the new image
/// (`INIT`, `DEDICATED`, `IMAGE_SAVE`, `PRIVATE`, `swr_path` in the configured push
/// registry); the notebook shows SNAPSHOTTING until the save ends, and the image becomes
/// `ACTIVE` or `CREATE_FAILED` (with `status_message`).
#[utoipa::path(post, path = "/v1/{project_id}/notebooks/{id}/create-image", tag = "image",
    params(("project_id" = String, Path), ("id" = String, Path)),
    request_body = ImageCreateReq,
    responses((status = 200, body = ImageResponse),
        (status = 400, body = ErrorBody, description = "a bad field (ModelArts.6335/6336), a notebook that is not RUNNING (ModelArts.6327), a name and tag already taken (ModelArts.6737)"),
        (status = 404, body = ErrorBody)))]
pub async fn create_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ImageCreateReq>,
) -> Result<Json<ImageResponse>, ApiError> {
    let id = parse_notebook_id(&id)?;
    let new = parse_image_create(body, state.operations.push_registry())?;
    let image = state
        .operations
        .create_image(&caller.project_id, &id, new)
        .await?;
    Ok(Json(render::image(&image)))
}

/// The tag of a saved image when the request names none.
pub const DEFAULT_IMAGE_TAG: &str = "latest";

/// Checks an `ImageCreateReq` against the spec's rules (§2.6), field by field.
fn parse_image_create(body: ImageCreateReq, push_registry: &str) -> Result<NewImage, ApiError> {
    let given = |value: Option<String>| value.filter(|v| !v.is_empty());
    let bad = |field: &str| ApiError::BadValue(field.to_owned());
    let name = given(body.name).ok_or_else(|| ApiError::MissingField("name".to_owned()))?;
    let name_ok = name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(bad("name"));
    }
    let namespace =
        given(body.namespace).ok_or_else(|| ApiError::MissingField("namespace".to_owned()))?;
    let namespace_ok = namespace.len() <= 64
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && namespace.starts_with(|c: char| c.is_ascii_lowercase());
    if !namespace_ok {
        return Err(bad("namespace"));
    }
    let tag = given(body.tag).unwrap_or_else(|| DEFAULT_IMAGE_TAG.to_owned());
    let tag_ok = tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !tag_ok {
        return Err(bad("tag"));
    }
    let description = body.description.unwrap_or_default();
    if description.chars().count() > 512 {
        return Err(bad("description"));
    }
    let workspace_id = match given(body.workspace_id) {
        None => "0".to_owned(),
        Some(w) if w == "0" => w,
        Some(w) => return Err(ApiError::WorkspaceNotFound(w)),
    };
    // Atelier has no SWR enterprise instances: images go to the push registry only.
    if given(body.swr_instance_id).is_some() {
        return Err(bad("swr_instance_id"));
    }
    if given(body.swr_instance_domain).is_some_and(|domain| domain != push_registry) {
        return Err(bad("swr_instance_domain"));
    }
    Ok(NewImage {
        name,
        namespace,
        tag,
        description,
        workspace_id,
    })
}

/// What a registry's refusal means for the client: the image's fault (400) or the
/// registry's absence (503).
fn registry_api_error(error: RuntimeError) -> ApiError {
    match error {
        RuntimeError::Transient(why) => ApiError::RegistryUnavailable(why),
        RuntimeError::Image(why) | RuntimeError::Unsupported(why) => {
            ApiError::ImageNotRegistrable(why)
        }
        other => ApiError::internal(other),
    }
}

fn find_image(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<std::sync::Arc<Image>, ApiError> {
    let id: ImageId = id
        .parse()
        .map_err(|_| ApiError::ResourceNotFound("image"))?;
    state
        .service
        .image(&caller.project_id, &id)
        .filter(|i| i.status != "DELETED")
        .ok_or(ApiError::ResourceNotFound("image"))
}

/// Show an image.
#[utoipa::path(get, path = "/v1/{project_id}/images/{id}", tag = "image",
    params(("project_id" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ImageResponse), (status = 404, body = ErrorBody)))]
pub async fn show_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
) -> Result<Json<ImageResponse>, ApiError> {
    let image = find_image(&state, &caller, &id)?;
    Ok(Json(render::image(&image)))
}

/// Delete a registered image (answers it with status DELETED). Built-in images cannot be
/// deleted; notebooks created from the image keep running it.
#[utoipa::path(delete, path = "/v1/{project_id}/images/{id}", tag = "image",
    params(("project_id" = String, Path), ("id" = String, Path), ("force" = Option<bool>, Query)),
    request_body(content = Option<ImageDeleteRequest>),
    responses((status = 200, body = ImageResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((_project, id)): Path<(String, String)>,
    query: ApiQuery,
    body: axum::body::Bytes,
) -> Result<Json<ImageResponse>, ApiError> {
    let force = query.bool("force")?.unwrap_or(false);
    let request: ImageDeleteRequest = parse_json(&body)?;
    let force = force || request.is_force.unwrap_or(false);
    let image = find_image(&state, &caller, &id)?;
    if image.kind == ImageType::BuildIn {
        return Err(ApiError::NotAuthorized("delete a built-in image"));
    }
    // An image being saved is deleted once the save has ended (ACTIVE or CREATE_FAILED).
    if matches!(image.status.as_str(), "INIT" | "CREATING") {
        return Err(ApiError::StateConflict(format!("image {}", image.status)));
    }
    // Forced: a private image's manifest goes from its registry first; the record is kept if
    // the registry cannot do it, so the delete can be tried again.
    if force && image.visibility == "PRIVATE" {
        state
            .orchestrator
            .runtime()
            .images()
            .remove(&ImageRef::parse(&image.swr_path))
            .await
            .map_err(registry_api_error)?;
    }
    let mut deleted = (*image).clone();
    deleted.status = "DELETED".to_owned();
    deleted.update_at = state.service.now_ms();
    let deleted = state.service.update_image(deleted).await?;
    Ok(Json(render::image(&deleted)))
}

#[cfg(test)]
mod tests {
    use super::parse_swr_path;

    #[test]
    fn swr_paths_parse_into_namespace_name_tag() {
        assert_eq!(
            parse_swr_path("swr.example.com/team/my-image:1.0"),
            Some(("team".into(), "my-image".into(), "1.0".into()))
        );
        assert_eq!(
            parse_swr_path("local:///opt/envs/py311"),
            Some(("local".into(), "py311".into(), "latest".into()))
        );
        assert_eq!(parse_swr_path("local://relative"), None);
        assert_eq!(parse_swr_path("no-tag-here/at/all"), None);
    }
}
