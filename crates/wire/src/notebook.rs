use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::ImageResponse;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotebookResp {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: String,
    pub feature: String,
    pub flavor: String,
    pub image: ImageResponse,
    pub lease: LeaseResp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolRes>,
    pub volume: VolumeRes,
    pub data_volumes: Vec<crate::VolumeResponse>,
    pub endpoints: Vec<EndpointsRes>,
    pub action_progress: Vec<JobProgress>,
    pub fail_reason: String,
    /// Atelier extension: why the notebook last stopped (`user`, `lease_expired`, `idle`, `fault`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub workspace_id: String,
    pub billing_items: Vec<String>,
    pub user: UserRes,
    pub user_id: String,
    pub tags: Vec<TmsTag>,
    pub is_need_credentials: bool,
    pub create_at: i64,
    pub update_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub step: i32,
    pub status: String,
    pub description: String,
    pub step_description: String,
    pub notebook_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointsRes {
    pub service: String,
    pub dev_service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pair_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_access_ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseResp {
    pub create_at: i64,
    /// Omitted while auto-stop is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    pub enable: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub update_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolRes {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeRes {
    pub category: String,
    pub ownership: String,
    pub capacity: i64,
    pub mount_path: String,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Atelier extension, ShowNotebook only: bytes in use on the work volume while the
    /// notebook's volume is mounted (EVS, EFS with a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserRes {
    pub id: String,
    pub name: String,
    pub domain: DomainRes,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainRes {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TmsTag {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagsBody {
    pub tags: Vec<TmsTag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectTags {
    pub tags: Vec<ProjectTag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectTag {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotebookList {
    pub current: i64,
    pub data: Vec<NotebookResp>,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
}

/// `POST /v1/{project_id}/notebooks` (spec §2.2). Unknown fields are ignored; enums are
/// case-insensitive strings, parsed by the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NotebookCreateRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub flavor: Option<String>,
    pub image_id: String,
    pub volume: VolumeReq,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub pool_id: Option<String>,
    /// Run time in ms before auto-stop; `-1` disables auto-stop. Wins over `lease`.
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub lease: Option<LeaseReq>,
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointsReq>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub hooks: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VolumeReq {
    pub category: String,
    #[serde(default)]
    pub ownership: Option<String>,
    #[serde(default)]
    pub capacity: Option<i64>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EndpointsReq {
    #[serde(default, alias = "dev_service")]
    pub service: Option<String>,
    #[serde(default, alias = "ssh_keys")]
    pub key_pair_names: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_access_ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LeaseReq {
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `PUT /v1/{project_id}/notebooks/{id}` (spec §2.3): only supplied fields change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NotebookUpdateRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub flavor: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointsReq>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub hooks: Option<Value>,
    #[serde(default)]
    pub storage_new_size: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotebookFlavor {
    pub id: String,
    pub name: String,
    pub arch: String,
    pub category: String,
    pub description: String,
    pub feature: String,
    pub free: bool,
    pub sold_out: bool,
    pub vcpus: i64,
    /// KiB
    pub memory: i64,
    pub storages: Vec<String>,
    pub billing: FlavorBilling,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlavorBilling {
    pub code: String,
    pub unit_num: i64,
}

/// The flavor array appears twice: `data` (Terraform) and `flavors` (Go SDK).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlavorList {
    pub current: i64,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
    pub data: Vec<NotebookFlavor>,
    pub flavors: Vec<NotebookFlavor>,
}

/// One thing that happened to a notebook (an Atelier extension): `GET …/{id}/events` and the
/// `data` of each `GET …/{id}/progress` Server-Sent Event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotebookEventResp {
    /// 1, 2, 3, … per notebook; the SSE `id`, for `Last-Event-ID`.
    pub id: i64,
    /// Epoch ms.
    pub time: i64,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Created`, `Scheduled`, `PulledImage`, `NotebookHealthy`, `Running`,
    /// `StopNotebookResourceIdle`, `StopNotebookLeaseExpired`, `StartFailed`, …
    pub reason: String,
    pub message: String,
    /// The notebook's status after the event.
    pub status: String,
    /// 1–4 for step transitions (storage, compute, network, init).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_status: Option<String>,
    /// True for the status an operation ends in (RUNNING, STOPPED, a failure, …).
    pub terminal: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotebookEventList {
    pub events: Vec<NotebookEventResp>,
    pub total: i64,
}
