//! Application services: what a request asks of a notebook (create, update, start, stop,
//! delete, renew the lease, tag), checked against the catalogue, the quota, the key pairs and
//! the state machine, committed through [`NotebookService`] and handed to the
//! [`Orchestrator`]. Requests arrive parsed into domain values; nothing here knows HTTP.
use std::sync::Arc;

use atelier_domain::{
    DataVolume, EndpointService, EndpointSpec, Feature, Image, ImageId, ImageType, Lease, LeaseRun,
    LeaseType, MountStatus, Notebook, NotebookId, NotebookStatus, Operation, ProjectId, StopReason,
    Tag, UserId, Volume, VolumeCategory,
};

use crate::error::ControlError;
use crate::orchestrator::Orchestrator;
use crate::service::NotebookService;
use crate::ssh::SshService;

/// The most tags a notebook carries.
pub const MAX_TAGS: usize = 20;

/// A create request, parsed.
pub struct NewNotebook {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub user_name: String,
    pub name: String,
    pub description: String,
    pub feature: Feature,
    pub flavor: String,
    pub image_id: ImageId,
    pub volume: Volume,
    pub workspace_id: String,
    pub pool_id: Option<String>,
    pub run: LeaseRun,
    /// Without ports: an SSH endpoint gets its port here.
    pub endpoints: Vec<EndpointSpec>,
    pub hooks_json: Option<String>,
}

/// An update request, parsed; `None` leaves the field as it is.
#[derive(Default)]
pub struct NotebookUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub flavor: Option<String>,
    pub image_id: Option<ImageId>,
    /// Without ports: the SSH endpoint keeps its port, or gets one here.
    pub endpoints: Option<Vec<EndpointSpec>>,
    pub hooks_json: Option<String>,
    pub storage_new_size: Option<i64>,
}

/// A save-as-image request (create-image), parsed: names already checked against the spec's
/// character rules.
pub struct NewImage {
    pub name: String,
    pub namespace: String,
    pub tag: String,
    pub description: String,
    pub workspace_id: String,
}

/// The lease a start asks for.
pub struct StartLease {
    /// The run length in ms (-1: no auto-stop).
    pub duration_ms: Option<i64>,
    pub kind: Option<LeaseType>,
}

pub struct NotebookOperations {
    service: Arc<NotebookService>,
    orchestrator: Arc<Orchestrator>,
    ssh: Arc<SshService>,
    /// Where saved images go (`host[:port]`): their `swr_path` is
    /// `{push_registry}/{namespace}/{name}:{tag}`.
    push_registry: String,
}

/// A port held while an operation runs; given back unless [`PortHold::keep`] is called.
struct PortHold<'a> {
    ssh: &'a SshService,
    port: Option<u16>,
}

impl PortHold<'_> {
    fn keep(mut self) {
        self.port = None;
    }
}

impl Drop for PortHold<'_> {
    fn drop(&mut self) {
        if let Some(port) = self.port {
            self.ssh.release_port(port);
        }
    }
}

impl NotebookOperations {
    pub fn new(
        service: Arc<NotebookService>,
        orchestrator: Arc<Orchestrator>,
        ssh: Arc<SshService>,
        push_registry: String,
    ) -> Arc<NotebookOperations> {
        Arc::new(NotebookOperations {
            service,
            orchestrator,
            ssh,
            push_registry,
        })
    }

    /// Every key pair an endpoint names must exist in the project.
    async fn check_key_pairs(
        &self,
        project: &ProjectId,
        endpoints: &[EndpointSpec],
    ) -> Result<(), ControlError> {
        for name in endpoints.iter().flat_map(|e| &e.key_pair_names) {
            if self
                .service
                .store()
                .find_keypair(project, name)
                .await?
                .is_none()
            {
                return Err(ControlError::UnknownKeyPair(name.clone()));
            }
        }
        Ok(())
    }

    /// An image the project may start notebooks from.
    fn check_image(&self, project: &ProjectId, image_id: &ImageId) -> Result<(), ControlError> {
        match self.service.image(project, image_id) {
            Some(image) if image.status == "ACTIVE" => Ok(()),
            _ => Err(ControlError::UnknownImage(image_id.to_string())),
        }
    }

    /// Creates a notebook and starts it right away (INIT → CREATING → STARTING → RUNNING).
    pub async fn create(&self, new: NewNotebook) -> Result<Arc<Notebook>, ControlError> {
        let flavor = self
            .service
            .flavor(&new.flavor)
            .ok_or_else(|| ControlError::UnknownFlavor(new.flavor.clone()))?;
        if flavor.sold_out {
            return Err(ControlError::FlavorSoldOut(new.flavor));
        }
        if flavor.feature != new.feature {
            return Err(ControlError::FlavorFeatureMismatch {
                flavor: new.flavor,
                feature: new.feature.as_str().to_owned(),
            });
        }
        self.check_image(&new.project_id, &new.image_id)?;
        let category = new.volume.category;
        if !flavor
            .storages
            .iter()
            .any(|s| s == category.as_str() || (s == "EFS" && category == VolumeCategory::Sfs))
        {
            return Err(ControlError::UnsupportedStorage(
                category.as_str().to_owned(),
            ));
        }
        if new.feature == Feature::Default
            && self
                .service
                .count_user_notebooks(&new.user_id, |n| n.feature == Feature::Default)
                > 0
        {
            return Err(ControlError::InstanceLimit);
        }
        self.check_key_pairs(&new.project_id, &new.endpoints)
            .await?;
        let mut endpoints = new.endpoints;
        let mut hold = PortHold {
            ssh: &self.ssh,
            port: None,
        };
        if let Some(ssh) = endpoints
            .iter_mut()
            .find(|e| e.service == EndpointService::Ssh)
            && self.ssh.available()
        {
            let port = self.ssh.reserve_port()?;
            hold.port = Some(port);
            ssh.port = Some(port);
        }
        let now = self.service.now_ms();
        let mut notebook = Notebook {
            id: NotebookId::new_random(),
            project_id: new.project_id,
            user_id: new.user_id,
            user_name: new.user_name,
            name: new.name,
            description: new.description,
            feature: new.feature,
            flavor: new.flavor,
            image_id: new.image_id,
            status: NotebookStatus::Init,
            fail_reason: None,
            workspace_id: new.workspace_id,
            pool_id: new.pool_id,
            volume: new.volume,
            endpoints,
            hooks_json: new.hooks_json,
            tags: vec![],
            data_volumes: vec![],
            lease: Lease::new(now, new.run),
            token: Some(uuid::Uuid::new_v4().to_string()),
            action_progress: vec![],
            stop_reason: None,
            has_run: false,
            event_seq: 0,
            create_at: now,
            update_at: now,
            version: 1,
        };
        notebook.reset_progress();
        let notebook = self.service.insert(notebook).await?;
        hold.keep();
        tracing::info!(notebook_id = %notebook.id, "notebook created");
        self.orchestrator.kick(notebook.id);
        Ok(notebook)
    }

    /// Applies an update (spec §2.3). Admission and validation run first, on the current
    /// copy: nothing is reserved or resized for a change that would be refused. Then the SSH
    /// port is reserved and a running notebook's EVS volume grown (online, before the record
    /// says so), and the change is committed, admitted again against the latest copy; a
    /// refusal then gives the port back.
    pub async fn update(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        mut update: NotebookUpdate,
    ) -> Result<Arc<Notebook>, ControlError> {
        let current = self.service.get(project, id)?;
        if let Some(image_id) = &update.image_id {
            self.check_image(project, image_id)?;
        }
        if let Some(endpoints) = &update.endpoints {
            self.check_key_pairs(project, endpoints).await?;
        }
        apply_update(&mut (*current).clone(), &update, &self.service)?;

        let old_port = current.ssh_endpoint().and_then(|e| e.port);
        let mut hold = PortHold {
            ssh: &self.ssh,
            port: None,
        };
        // The SSH port stays with the notebook; an endpoint added now gets a new one.
        if let Some(ssh) = update
            .endpoints
            .iter_mut()
            .flatten()
            .find(|e| e.service == EndpointService::Ssh)
        {
            ssh.port = match old_port {
                Some(port) => Some(port),
                None if self.ssh.available() => {
                    let port = self.ssh.reserve_port()?;
                    hold.port = Some(port);
                    Some(port)
                }
                None => None,
            };
        }
        // Growing a running notebook's disk happens online, before the record says so.
        if let Some(size) = update.storage_new_size
            && size > current.volume.capacity_gb
            && current.volume.category == VolumeCategory::Evs
            && current.status == NotebookStatus::Running
        {
            self.orchestrator.resize_volume(&current, size).await?;
        }
        let (notebook, ()) = self
            .service
            .mutate(id, |nb| apply_update(nb, &update, &self.service))
            .await?;
        hold.keep();
        if update.endpoints.is_some() {
            let new_port = notebook.ssh_endpoint().and_then(|e| e.port);
            if new_port.is_none()
                && let Some(port) = old_port
            {
                self.ssh.close(&notebook.id);
                self.ssh.release_port(port);
            }
            if new_port.is_some() && notebook.status == NotebookStatus::Running {
                // Until the next start, the sandbox has no SSH files if it predates them.
                if let Err(error) = self.ssh.open(&notebook).await {
                    tracing::warn!(notebook_id = %notebook.id, %error, "SSH endpoint not opened");
                }
            }
        }
        Ok(notebook)
    }

    /// Starts a stopped notebook. A lease type without a duration keeps the last run length.
    pub async fn start(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        lease: StartLease,
    ) -> Result<Arc<Notebook>, ControlError> {
        let current = self.service.get(project, id)?;
        let run = match (lease.duration_ms, lease.kind) {
            (None, None) => None,
            (Some(duration), kind) => Some(LeaseRun::parse(
                duration,
                kind.unwrap_or(LeaseType::Timing),
            )?),
            (None, Some(kind)) => match current.lease.run {
                LeaseRun::Disabled => Some(LeaseRun::Disabled),
                LeaseRun::Enabled { run_ms, .. } => Some(LeaseRun::parse(run_ms, kind)?),
            },
        };
        self.orchestrator.request_start(id, run).await
    }

    /// Stops a running (or starting) notebook; its work volume is kept.
    pub async fn stop(
        &self,
        project: &ProjectId,
        id: &NotebookId,
    ) -> Result<Arc<Notebook>, ControlError> {
        self.service.get(project, id)?;
        self.orchestrator.request_stop(id, StopReason::User).await
    }

    /// Mounts `volume` (parsed and checked by the caller) into a RUNNING notebook: the
    /// answer is the mount as `MOUNTING`; a task mounts it.
    pub async fn attach_storage(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        mut volume: DataVolume,
    ) -> Result<DataVolume, ControlError> {
        self.service.get(project, id)?;
        volume.id = uuid::Uuid::new_v4().to_string();
        volume.create_at = self.service.now_ms();
        volume.status = MountStatus::Mounting;
        volume.failure_reason = None;
        self.orchestrator.request_attach(id, volume.clone()).await?;
        Ok(volume)
    }

    /// The notebook's dynamic mounts, oldest first.
    pub fn list_storage(
        &self,
        project: &ProjectId,
        id: &NotebookId,
    ) -> Result<Vec<DataVolume>, ControlError> {
        Ok(self.service.get(project, id)?.data_volumes.clone())
    }

    pub fn show_storage(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        storage_id: &str,
    ) -> Result<DataVolume, ControlError> {
        self.service
            .get(project, id)?
            .data_volumes
            .iter()
            .find(|v| v.id == storage_id)
            .cloned()
            .ok_or(ControlError::StorageNotFound)
    }

    /// Unmounts a mount (`UNMOUNTING` now; the record goes once it is unmounted).
    pub async fn detach_storage(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        storage_id: &str,
    ) -> Result<DataVolume, ControlError> {
        self.service.get(project, id)?;
        self.orchestrator.request_detach(id, storage_id).await
    }

    /// Deletes a notebook and its storage (DELETING now; the record goes once the runtime has
    /// released everything).
    pub async fn delete(
        &self,
        project: &ProjectId,
        id: &NotebookId,
    ) -> Result<Arc<Notebook>, ControlError> {
        self.service.get(project, id)?;
        self.orchestrator.request_delete(id).await
    }

    /// The registry saved images go to (`[registry] push`).
    pub fn push_registry(&self) -> &str {
        &self.push_registry
    }

    /// Saves a running notebook as a new DEDICATED image of its project (spec §1.4.12): the
    /// image is answered `INIT` at once, the notebook goes SNAPSHOTTING and, once the runtime
    /// has committed its sandbox to `{push registry}/{namespace}/{name}:{tag}`, back to
    /// RUNNING, the image `ACTIVE` (or `CREATE_FAILED`). The image takes its architecture,
    /// services and categories from the notebook's own image.
    pub async fn create_image(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        new: NewImage,
    ) -> Result<Arc<Image>, ControlError> {
        let notebook = self.service.get(project, id)?;
        let source = self.service.image(project, &notebook.image_id);
        let swr_path = format!(
            "{}/{}/{}:{}",
            self.push_registry, new.namespace, new.name, new.tag
        );
        let now = self.service.now_ms();
        let image = Image {
            id: ImageId::new_random(),
            project_id: Some(project.to_string()),
            swr_path: swr_path.clone(),
            kind: ImageType::Dedicated,
            origin: "IMAGE_SAVE".to_owned(),
            arch: source
                .as_ref()
                .map_or_else(|| "x86_64".to_owned(), |s| s.arch.clone()),
            description: new.description,
            dev_services: source.as_ref().map_or_else(
                || vec!["NOTEBOOK".to_owned(), "SSH".to_owned()],
                |s| s.dev_services.clone(),
            ),
            resource_categories: source
                .as_ref()
                .map_or_else(|| vec!["CPU".to_owned()], |s| s.resource_categories.clone()),
            service_type: source
                .as_ref()
                .map_or_else(|| "DEV".to_owned(), |s| s.service_type.clone()),
            size_kb: 0,
            status: "INIT".to_owned(),
            status_message: String::new(),
            visibility: "PRIVATE".to_owned(),
            workspace_id: new.workspace_id,
            create_at: now,
            update_at: now,
            name: new.name,
            namespace: new.namespace,
            tag: new.tag,
        };
        // The same name and tag, saved or registered, in any status but a failed save.
        let conflicts = |other: &Image| {
            other.status != "CREATE_FAILED"
                && (other.swr_path == image.swr_path
                    || (other.namespace == image.namespace
                        && other.name == image.name
                        && other.tag == image.tag))
        };
        let (_, image) = self
            .orchestrator
            .request_image_save(id, image.clone(), conflicts)
            .await?;
        tracing::info!(notebook_id = %id, image_id = %image.id, %swr_path, "image save requested");
        Ok(image)
    }

    /// Re-arms the auto-stop timer of a running notebook.
    pub async fn renew_lease(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        run: LeaseRun,
    ) -> Result<Arc<Notebook>, ControlError> {
        self.service.get(project, id)?;
        let now = self.service.now_ms();
        let (notebook, ()) = self
            .service
            .mutate(id, |nb| {
                nb.status
                    .admit(Operation::RenewLease)
                    .map_err(|a| ControlError::not_admitted(a, nb.status, "lease"))?;
                nb.lease.arm(now, run);
                Ok(())
            })
            .await?;
        Ok(notebook)
    }

    /// Adds tags; an existing key takes the new value.
    pub async fn add_tags(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        tags: Vec<Tag>,
    ) -> Result<(), ControlError> {
        self.service.get(project, id)?;
        self.service
            .mutate(id, |nb| {
                not_deleting(nb.status)?;
                for tag in &tags {
                    match nb.tags.iter_mut().find(|t| t.key == tag.key) {
                        Some(existing) => existing.value = tag.value.clone(),
                        None => nb.tags.push(tag.clone()),
                    }
                }
                if nb.tags.len() > MAX_TAGS {
                    return Err(ControlError::TooManyTags { max: MAX_TAGS });
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Removes tags by key; absent ones are ignored.
    pub async fn remove_tags(
        &self,
        project: &ProjectId,
        id: &NotebookId,
        keys: Vec<String>,
    ) -> Result<(), ControlError> {
        self.service.get(project, id)?;
        self.service
            .mutate(id, |nb| {
                not_deleting(nb.status)?;
                nb.tags.retain(|t| !keys.contains(&t.key));
                Ok(())
            })
            .await?;
        Ok(())
    }
}

fn not_deleting(status: NotebookStatus) -> Result<(), ControlError> {
    if matches!(status, NotebookStatus::Deleting | NotebookStatus::Deleted) {
        return Err(ControlError::BeingDeleted(status));
    }
    Ok(())
}

/// Applies `update` to `nb`, each changed field admitted by the notebook's status.
fn apply_update(
    nb: &mut Notebook,
    update: &NotebookUpdate,
    service: &NotebookService,
) -> Result<(), ControlError> {
    let status = nb.status;
    let admit = |operation: Operation, field: &'static str| {
        status
            .admit(operation)
            .map_err(|a| ControlError::not_admitted(a, status, field))
    };
    if let Some(flavor_id) = &update.flavor
        && *flavor_id != nb.flavor
    {
        admit(Operation::UpdateSpec, "flavor")?;
        match service.flavor(flavor_id) {
            Some(f) if f.feature == nb.feature && !f.sold_out => nb.flavor = flavor_id.clone(),
            _ => {
                return Err(ControlError::FlavorNotSwitchable {
                    notebook: nb.id.to_string(),
                    flavor: flavor_id.clone(),
                });
            }
        }
    }
    if let Some(image_id) = update.image_id
        && image_id != nb.image_id
    {
        admit(Operation::UpdateSpec, "image_id")?;
        nb.image_id = image_id;
    }
    if let Some(hooks) = &update.hooks_json {
        admit(Operation::UpdateSpec, "hooks")?;
        nb.hooks_json = Some(hooks.clone());
    }
    if let Some(endpoints) = &update.endpoints {
        admit(Operation::UpdateEndpoints, "endpoints")?;
        nb.endpoints = endpoints.clone();
    }
    if let Some(size) = update.storage_new_size
        && size != nb.volume.capacity_gb
    {
        admit(Operation::UpdateStorage, "storage_new_size")?;
        if nb.volume.category != VolumeCategory::Evs || size < nb.volume.capacity_gb {
            return Err(ControlError::StorageShrink("storage_new_size"));
        }
        if size > Volume::EVS_MAX_GB {
            return Err(ControlError::EvsCapacity {
                min: Volume::EVS_MIN_GB,
                max: Volume::EVS_MAX_GB,
            });
        }
        nb.volume.capacity_gb = size;
    }
    if let Some(name) = &update.name
        && *name != nb.name
    {
        admit(Operation::UpdateNameOrDescription, "name")?;
        nb.name = name.clone();
    }
    if let Some(description) = &update.description
        && *description != nb.description
    {
        admit(Operation::UpdateNameOrDescription, "description")?;
        nb.description = description.clone();
    }
    Ok(())
}
