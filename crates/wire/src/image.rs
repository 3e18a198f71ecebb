use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `Image` inside a notebook and `ImageResponse` of the image API share these fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageResponse {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub tag: String,
    pub swr_path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub origin: String,
    pub arch: String,
    pub description: String,
    pub dev_services: Vec<String>,
    pub resource_categories: Vec<String>,
    pub support_res_categories: Vec<String>,
    pub service_type: String,
    /// KB
    pub size: i64,
    pub status: String,
    /// Why saving the image failed (`status: CREATE_FAILED`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    pub visibility: String,
    pub workspace_id: String,
    pub create_at: i64,
    pub update_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub current: i64,
    pub data: Vec<ImageResponse>,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
}

/// `POST /v1/{project_id}/images` (spec §2.6). For the local runtime, `swr_path` may be
/// `local:///abs/prefix`: a Python environment that contains JupyterLab.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageRegRequest {
    pub swr_path: String,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub resource_category: Option<Vec<String>>,
    #[serde(default)]
    pub service_type: Option<String>,
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

/// `POST /v1/{project_id}/notebooks/{id}/create-image` (spec §1.4.12, §2.6): save a running
/// notebook as the image `{registry}/{namespace}/{name}:{tag}`. The SDKs require `name` and
/// `namespace`; `tag` defaults to `latest`. Atelier has no SWR enterprise instances:
/// `swr_instance_id` must be empty and `swr_instance_domain` empty or the push registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageCreateReq {
    /// ≤128 characters of `[a-z0-9._-]`, starting and ending with a letter or digit.
    #[serde(default)]
    pub name: Option<String>,
    /// ≤64 characters of `[A-Za-z0-9._-]`, starting with a lower-case letter.
    #[serde(default)]
    pub namespace: Option<String>,
    /// ≤64 characters of `[A-Za-z0-9._-]`; `latest` when absent.
    #[serde(default)]
    pub tag: Option<String>,
    /// ≤512 characters.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub swr_instance_id: Option<String>,
    #[serde(default)]
    pub swr_instance_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageDeleteRequest {
    #[serde(default)]
    pub is_force: Option<bool>,
}

/// One entry of `GET /v1/{project_id}/images/group` (spec §2.6 `ImageGroup`): the images of
/// one `namespace/name`, whatever their tags.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageGroup {
    /// Stable for the group's `namespace/name` in its project.
    pub id: String,
    pub name: String,
    pub namespace: String,
    /// The oldest version's registration time (ms).
    pub create_at: i64,
    /// The newest change to any version (ms).
    pub update_at: i64,
    pub version_count: i64,
    /// The newest version's description.
    pub description: String,
    pub read_me: String,
    pub icon_name: String,
    pub swr_instance_name: String,
    pub swr_instance_id: String,
}

/// `GET /v1/{project_id}/images/group`: the paged envelope plus `is_swr_enterprise`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageGroupList {
    pub current: i64,
    pub data: Vec<ImageGroup>,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
    pub is_swr_enterprise: bool,
}
