//! Dynamic storage (spec §2.8): `POST/GET …/notebooks/{id}/storage[/{storage_id}]`.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `DataVolumesReq`, the attach body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DataVolumesReq {
    /// `OBS`, `OBSFS` or `EFS`.
    pub category: String,
    /// `/data/{dir}/`.
    pub mount_path: String,
    /// `obs://bucket/dir/`, or for EFS the share's address.
    pub uri: String,
    /// The share's id (EFS only).
    #[serde(default)]
    pub efs_id: Option<String>,
}

/// `DataVolumesRes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DataVolumesRes {
    pub id: String,
    pub category: String,
    pub mount_path: String,
    pub uri: String,
    /// `MOUNTING`, `MOUNTED`, `MOUNT_FAILED`, `UNMOUNTING`, `UNMOUNTED`, `UNMOUNT_FAILED`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efs_id: Option<String>,
    /// `DYNAMIC`: mounted through this API into a running notebook.
    pub mount_type: String,
}

/// `GET …/storage`: the paged envelope of spec §2.9.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DataVolumesList {
    pub current: i64,
    pub data: Vec<DataVolumesRes>,
    pub pages: i64,
    pub size: i64,
    pub total: i64,
}

/// `NotebookResp.data_volumes[]` (`VolumeResponse`): note `url`, not `uri` (TF reads `url`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeResponse {
    pub id: String,
    pub category: String,
    pub mount_path: String,
    pub url: String,
    pub status: String,
    pub mount_type: String,
}
