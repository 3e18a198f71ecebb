//! The two reads of the IAM (Keystone v3) API that SDKs make to find their project id when
//! they are configured with a region and no project id (spec §5.5): `GET /v3/projects` and
//! `GET /v3/auth/projects`. Shapes as Keystone (and Huawei Cloud IAM) answer them.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"links": {...}, "projects": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeystoneProjectList {
    pub links: KeystoneListLinks,
    pub projects: Vec<KeystoneProject>,
}

/// The list's own links; there is never a next or previous page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeystoneListLinks {
    #[serde(rename = "self")]
    pub self_link: String,
    pub previous: Option<String>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeystoneProject {
    /// The project id (32 hex), what `/v1/{project_id}/…` takes.
    pub id: String,
    /// `{region}` for the project named `default`, `{region}_{name}` for the others (Huawei
    /// Cloud's names for a region's main project and its sub-projects).
    pub name: String,
    pub description: String,
    pub domain_id: String,
    /// The domain, as for Huawei Cloud's region projects.
    pub parent_id: String,
    pub enabled: bool,
    pub is_domain: bool,
    pub links: KeystoneLinks,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeystoneLinks {
    #[serde(rename = "self")]
    pub self_link: String,
}
