//! Domain records to wire JSON.
use atelier_domain::{EndpointService, Flavor, Image, Lease, Notebook, NotebookStatus};
use atelier_wire::{
    DomainRes, EndpointsRes, FlavorBilling, ImageResponse, JobProgress, LeaseResp, NotebookFlavor,
    NotebookResp, PoolRes, TmsTag, UserRes, VolumeRes, VolumeResponse,
};

pub fn lease(lease: &Lease) -> LeaseResp {
    LeaseResp {
        create_at: lease.create_at,
        duration: lease.enable.then_some(lease.duration),
        enable: lease.enable,
        kind: lease.kind.as_str().to_owned(),
        update_at: lease.update_at,
    }
}

pub fn image(image: &Image) -> ImageResponse {
    ImageResponse {
        id: image.id.to_string(),
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
        support_res_categories: image.resource_categories.clone(),
        service_type: image.service_type.clone(),
        size: image.size_kb,
        status: image.status.clone(),
        status_message: (!image.status_message.is_empty()).then(|| image.status_message.clone()),
        visibility: image.visibility.clone(),
        workspace_id: image.workspace_id.clone(),
        create_at: image.create_at,
        update_at: image.update_at,
    }
}

pub fn flavor(flavor: &Flavor) -> NotebookFlavor {
    NotebookFlavor {
        id: flavor.id.clone(),
        name: flavor.name.clone(),
        arch: flavor.arch.clone(),
        category: flavor.category.as_str().to_owned(),
        description: flavor.description.clone(),
        feature: flavor.feature.as_str().to_owned(),
        free: flavor.free,
        sold_out: flavor.sold_out,
        vcpus: i64::from(flavor.vcpus),
        memory: (flavor.memory_mib * 1024) as i64,
        storages: flavor.storages.clone(),
        billing: FlavorBilling {
            code: flavor.id.clone(),
            unit_num: 1,
        },
    }
}

/// Everything `NotebookResp` needs besides the record itself.
pub struct NotebookContext<'a> {
    pub addressing: &'a atelier_gateway::Addressing,
    pub image: Option<&'a Image>,
    pub domain_id: &'a str,
    pub domain_name: &'a str,
    /// `ssh://ma-user@HOST:PORT` while the notebook's SSH endpoint is listening.
    pub ssh_uri: Option<String>,
}

pub fn notebook(notebook: &Notebook, context: &NotebookContext<'_>) -> NotebookResp {
    let id = notebook.id.to_string();
    let lab_url = context.addressing.lab_url(&notebook.id);
    let shows_url = notebook.has_run || notebook.status == NotebookStatus::Running;
    let running = notebook.status == NotebookStatus::Running;
    let mut endpoints = Vec::new();
    if running {
        endpoints.push(EndpointsRes {
            service: "NOTEBOOK".to_owned(),
            dev_service: "NOTEBOOK".to_owned(),
            uri: Some(lab_url.clone()),
            key_pair_names: None,
            ssh_keys: None,
            allowed_access_ips: None,
        });
    }
    for endpoint in &notebook.endpoints {
        if endpoint.service != EndpointService::Ssh {
            continue;
        }
        endpoints.push(EndpointsRes {
            service: "SSH".to_owned(),
            dev_service: "SSH".to_owned(),
            uri: context.ssh_uri.clone(),
            key_pair_names: Some(endpoint.key_pair_names.clone()),
            ssh_keys: Some(endpoint.key_pair_names.clone()),
            allowed_access_ips: Some(endpoint.allowed_access_ips.clone()),
        });
    }
    let image = match context.image {
        Some(found) => image(found),
        None => ImageResponse {
            id: notebook.image_id.to_string(),
            name: String::new(),
            namespace: String::new(),
            tag: String::new(),
            swr_path: String::new(),
            kind: "DEDICATED".to_owned(),
            origin: String::new(),
            arch: "x86_64".to_owned(),
            description: String::new(),
            dev_services: vec![],
            resource_categories: vec![],
            support_res_categories: vec![],
            service_type: String::new(),
            size: 0,
            status: "DELETED".to_owned(),
            status_message: None,
            visibility: "PRIVATE".to_owned(),
            workspace_id: notebook.workspace_id.clone(),
            create_at: 0,
            update_at: 0,
        },
    };
    NotebookResp {
        id: id.clone(),
        name: notebook.name.clone(),
        description: notebook.description.clone(),
        status: notebook.status.as_str().to_owned(),
        feature: notebook.feature.as_str().to_owned(),
        flavor: notebook.flavor.clone(),
        image,
        lease: lease(&notebook.lease),
        pool: notebook.pool_id.as_ref().map(|pool| PoolRes {
            id: pool.clone(),
            name: pool.clone(),
        }),
        volume: VolumeRes {
            category: notebook.volume.category.as_str().to_owned(),
            ownership: notebook.volume.ownership.as_str().to_owned(),
            capacity: notebook.volume.capacity_gb,
            mount_path: "/home/ma-user/work/".to_owned(),
            read_only: false,
            id: notebook.volume.id.clone(),
            uri: notebook.volume.uri.clone(),
            status: None,
            used_bytes: None,
        },
        data_volumes: notebook
            .data_volumes
            .iter()
            .map(|v| VolumeResponse {
                id: v.id.clone(),
                category: v.category.as_str().to_owned(),
                mount_path: v.mount_path.clone(),
                url: v.uri.clone(),
                status: v.status.as_str().to_owned(),
                mount_type: MOUNT_TYPE.to_owned(),
            })
            .collect(),
        endpoints,
        action_progress: notebook
            .action_progress
            .iter()
            .map(|p| JobProgress {
                step: i32::from(p.step),
                status: p.status.as_str().to_owned(),
                description: p.description(),
                step_description: p.description(),
                notebook_id: id.clone(),
            })
            .collect(),
        fail_reason: notebook.fail_reason.clone().unwrap_or_default(),
        stop_reason: notebook.stop_reason.map(|r| r.as_str().to_owned()),
        token: notebook
            .token
            .clone()
            .filter(|_| notebook.status != NotebookStatus::Stopped),
        url: shows_url.then_some(lab_url),
        workspace_id: notebook.workspace_id.clone(),
        billing_items: if running {
            vec!["COMPUTE".to_owned()]
        } else {
            vec![]
        },
        user: UserRes {
            id: notebook.user_id.to_string(),
            name: notebook.user_name.clone(),
            domain: DomainRes {
                id: context.domain_id.to_owned(),
                name: context.domain_name.to_owned(),
            },
        },
        user_id: notebook.user_id.to_string(),
        tags: notebook
            .tags
            .iter()
            .map(|t| TmsTag {
                key: t.key.clone(),
                value: Some(t.value.clone()),
            })
            .collect(),
        is_need_credentials: false,
        create_at: notebook.create_at,
        update_at: notebook.update_at,
    }
}

pub fn event(event: &atelier_domain::NotebookEvent) -> atelier_wire::NotebookEventResp {
    atelier_wire::NotebookEventResp {
        id: event.seq,
        time: event.at,
        kind: event.level.as_str().to_owned(),
        reason: event.reason.clone(),
        message: event.message.clone(),
        status: event.status.as_str().to_owned(),
        step: event.step,
        step_status: event.step_status.map(|s| s.as_str().to_owned()),
        terminal: event.is_terminal(),
    }
}

/// How every mount made through the storage API is listed.
pub const MOUNT_TYPE: &str = "DYNAMIC";

pub fn data_volume(volume: &atelier_domain::DataVolume) -> atelier_wire::DataVolumesRes {
    atelier_wire::DataVolumesRes {
        id: volume.id.clone(),
        category: volume.category.as_str().to_owned(),
        mount_path: volume.mount_path.clone(),
        uri: volume.uri.clone(),
        status: volume.status.as_str().to_owned(),
        failure_reason: volume.failure_reason.clone(),
        efs_id: volume.efs_id.clone(),
        mount_type: MOUNT_TYPE.to_owned(),
    }
}
