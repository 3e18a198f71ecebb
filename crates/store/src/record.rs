//! The JSON form of records kept in `body` columns. Private to the store: the domain types
//! stay free of serde, and a change here is a storage-format change.
use serde::{Deserialize, Serialize};

use atelier_domain::{
    DataVolume, EndpointService, EndpointSpec, Image, ImageType, Lease, LeaseRun, LeaseType,
    Notebook, StepProgress, StepStatus, StopReason, Tag, Volume,
};

use crate::StoreError;

#[derive(Serialize, Deserialize)]
pub(crate) struct NotebookRecord {
    id: String,
    project_id: String,
    user_id: String,
    user_name: String,
    name: String,
    description: String,
    feature: String,
    flavor: String,
    image_id: String,
    status: String,
    fail_reason: Option<String>,
    workspace_id: String,
    pool_id: Option<String>,
    volume: VolumeRecord,
    endpoints: Vec<EndpointRecord>,
    hooks_json: Option<String>,
    tags: Vec<(String, String)>,
    /// Dynamic storage mounts; absent from records written before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    data_volumes: Vec<DataVolumeRecord>,
    lease: LeaseRecord,
    token: Option<String>,
    action_progress: Vec<(u8, String)>,
    /// What running steps are doing (step, text); added with image pull progress, absent
    /// from older records and from records without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    step_details: Vec<(u8, String)>,
    stop_reason: Option<String>,
    has_run: bool,
    #[serde(default)]
    event_seq: i64,
    create_at: i64,
    update_at: i64,
}

#[derive(Serialize, Deserialize)]
struct DataVolumeRecord {
    id: String,
    category: String,
    mount_path: String,
    uri: String,
    efs_id: Option<String>,
    status: String,
    failure_reason: Option<String>,
    create_at: i64,
}

#[derive(Serialize, Deserialize)]
struct VolumeRecord {
    category: String,
    ownership: String,
    capacity_gb: i64,
    uri: Option<String>,
    id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct EndpointRecord {
    service: String,
    key_pair_names: Vec<String>,
    allowed_access_ips: Vec<String>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    create_at: i64,
    duration: i64,
    enable: bool,
    kind: String,
    update_at: i64,
    run_ms: i64,
    run_kind: String,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, StoreError> {
    text.parse().map_err(|_| corrupt(what))
}

impl NotebookRecord {
    pub(crate) fn from_domain(nb: &Notebook) -> NotebookRecord {
        NotebookRecord {
            id: nb.id.to_string(),
            project_id: nb.project_id.to_string(),
            user_id: nb.user_id.to_string(),
            user_name: nb.user_name.clone(),
            name: nb.name.clone(),
            description: nb.description.clone(),
            feature: nb.feature.as_str().to_owned(),
            flavor: nb.flavor.clone(),
            image_id: nb.image_id.to_string(),
            status: nb.status.as_str().to_owned(),
            fail_reason: nb.fail_reason.clone(),
            workspace_id: nb.workspace_id.clone(),
            pool_id: nb.pool_id.clone(),
            volume: VolumeRecord {
                category: nb.volume.category.as_str().to_owned(),
                ownership: nb.volume.ownership.as_str().to_owned(),
                capacity_gb: nb.volume.capacity_gb,
                uri: nb.volume.uri.clone(),
                id: nb.volume.id.clone(),
            },
            endpoints: nb
                .endpoints
                .iter()
                .map(|e| EndpointRecord {
                    service: e.service.as_str().to_owned(),
                    key_pair_names: e.key_pair_names.clone(),
                    allowed_access_ips: e.allowed_access_ips.clone(),
                    port: e.port,
                })
                .collect(),
            hooks_json: nb.hooks_json.clone(),
            tags: nb
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            data_volumes: nb
                .data_volumes
                .iter()
                .map(|v| DataVolumeRecord {
                    id: v.id.clone(),
                    category: v.category.as_str().to_owned(),
                    mount_path: v.mount_path.clone(),
                    uri: v.uri.clone(),
                    efs_id: v.efs_id.clone(),
                    status: v.status.as_str().to_owned(),
                    failure_reason: v.failure_reason.clone(),
                    create_at: v.create_at,
                })
                .collect(),
            lease: LeaseRecord {
                create_at: nb.lease.create_at,
                duration: nb.lease.duration,
                enable: nb.lease.enable,
                kind: nb.lease.kind.as_str().to_owned(),
                update_at: nb.lease.update_at,
                run_ms: nb.lease.run.run_ms(),
                run_kind: nb.lease.run.kind().as_str().to_owned(),
            },
            token: nb.token.clone(),
            action_progress: nb
                .action_progress
                .iter()
                .map(|p| (p.step, p.status.as_str().to_owned()))
                .collect(),
            step_details: nb
                .action_progress
                .iter()
                .filter_map(|p| p.detail.clone().map(|detail| (p.step, detail)))
                .collect(),
            stop_reason: nb.stop_reason.map(|r| r.as_str().to_owned()),
            has_run: nb.has_run,
            event_seq: nb.event_seq,
            create_at: nb.create_at,
            update_at: nb.update_at,
        }
    }

    pub(crate) fn into_domain(self, version: i64) -> Result<Notebook, StoreError> {
        let run_kind: LeaseType = parse(&self.lease.run_kind, "lease type")?;
        let run = if self.lease.run_ms == -1 {
            LeaseRun::Disabled
        } else {
            LeaseRun::Enabled {
                kind: run_kind,
                run_ms: self.lease.run_ms,
            }
        };
        Ok(Notebook {
            id: parse(&self.id, "notebook id")?,
            project_id: parse(&self.project_id, "project id")?,
            user_id: parse(&self.user_id, "user id")?,
            user_name: self.user_name,
            name: self.name,
            description: self.description,
            feature: parse(&self.feature, "feature")?,
            flavor: self.flavor,
            image_id: parse(&self.image_id, "image id")?,
            status: parse(&self.status, "status")?,
            fail_reason: self.fail_reason,
            workspace_id: self.workspace_id,
            pool_id: self.pool_id,
            volume: Volume {
                category: parse(&self.volume.category, "volume category")?,
                ownership: parse(&self.volume.ownership, "volume ownership")?,
                capacity_gb: self.volume.capacity_gb,
                uri: self.volume.uri,
                id: self.volume.id,
            },
            endpoints: self
                .endpoints
                .into_iter()
                .map(|e| {
                    Ok(EndpointSpec {
                        service: parse::<EndpointService>(&e.service, "endpoint service")?,
                        key_pair_names: e.key_pair_names,
                        allowed_access_ips: e.allowed_access_ips,
                        port: e.port,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            hooks_json: self.hooks_json,
            tags: self
                .tags
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
            data_volumes: self
                .data_volumes
                .into_iter()
                .map(|v| {
                    Ok(DataVolume {
                        id: v.id,
                        category: parse(&v.category, "storage category")?,
                        mount_path: v.mount_path,
                        uri: v.uri,
                        efs_id: v.efs_id,
                        status: parse(&v.status, "mount status")?,
                        failure_reason: v.failure_reason,
                        create_at: v.create_at,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            lease: Lease {
                create_at: self.lease.create_at,
                duration: self.lease.duration,
                enable: self.lease.enable,
                kind: parse(&self.lease.kind, "lease type")?,
                update_at: self.lease.update_at,
                run,
            },
            token: self.token,
            action_progress: self
                .action_progress
                .into_iter()
                .map(|(step, status)| {
                    Ok(StepProgress {
                        step,
                        status: parse::<StepStatus>(&status, "step status")?,
                        detail: self
                            .step_details
                            .iter()
                            .find(|(s, _)| *s == step)
                            .map(|(_, detail)| detail.clone()),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            stop_reason: self
                .stop_reason
                .map(|r| parse::<StopReason>(&r, "stop reason"))
                .transpose()?,
            has_run: self.has_run,
            event_seq: self.event_seq,
            create_at: self.create_at,
            update_at: self.update_at,
            version,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    id: String,
    project_id: Option<String>,
    name: String,
    namespace: String,
    tag: String,
    swr_path: String,
    kind: String,
    origin: String,
    arch: String,
    description: String,
    dev_services: Vec<String>,
    resource_categories: Vec<String>,
    service_type: String,
    size_kb: i64,
    status: String,
    /// Added with save-as-image; absent from older records.
    #[serde(default)]
    status_message: String,
    visibility: String,
    workspace_id: String,
    create_at: i64,
    update_at: i64,
}

impl ImageRecord {
    pub(crate) fn from_domain(image: &Image) -> ImageRecord {
        ImageRecord {
            id: image.id.to_string(),
            project_id: image.project_id.clone(),
            name: image.name.clone(),
            namespace: image.namespace.clone(),
            tag: image.tag.clone(),
            swr_path: image.swr_path.clone(),
            kind: image.kind.as_str().to_owned(),
            origin: image.origin.clone(),
            arch: image.arch.clone(),
            description: image.description.clone(),
            dev_services: image.dev_services.clone(),
            resource_categories: image.resource_categories.clone(),
            service_type: image.service_type.clone(),
            size_kb: image.size_kb,
            status: image.status.clone(),
            status_message: image.status_message.clone(),
            visibility: image.visibility.clone(),
            workspace_id: image.workspace_id.clone(),
            create_at: image.create_at,
            update_at: image.update_at,
        }
    }

    pub(crate) fn into_domain(self) -> Result<Image, StoreError> {
        Ok(Image {
            id: parse(&self.id, "image id")?,
            project_id: self.project_id,
            name: self.name,
            namespace: self.namespace,
            tag: self.tag,
            swr_path: self.swr_path,
            kind: parse::<ImageType>(&self.kind, "image type")?,
            origin: self.origin,
            arch: self.arch,
            description: self.description,
            dev_services: self.dev_services,
            resource_categories: self.resource_categories,
            service_type: self.service_type,
            size_kb: self.size_kb,
            status: self.status,
            status_message: self.status_message,
            visibility: self.visibility,
            workspace_id: self.workspace_id,
            create_at: self.create_at,
            update_at: self.update_at,
        })
    }
}
