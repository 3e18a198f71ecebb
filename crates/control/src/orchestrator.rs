//! Carries out notebook operations. A request handler commits the new status (STARTING,
//! STOPPING, DELETING, …) and returns; the orchestrator then drives the runtime, persisting
//! every step transition. A transitional status in the store *is* the pending operation, so a
//! restarted server resumes it by calling [`Orchestrator::kick`] for each such notebook —
//! except an image save (SNAPSHOTTING), which cannot be resumed: a restart ends it, the
//! notebook back to RUNNING and its image `CREATE_FAILED` ([`Orchestrator::reconcile`]).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use atelier_domain::{
    Event, Image, ImageId, LeaseRun, Notebook, NotebookId, NotebookStatus, Operation, StepStatus,
    StopReason, step_description,
};
use atelier_runtime::{
    EnsureError, HookReport, ImageRef, Progress, Refused, Runtime, RuntimeError, SandboxEvent,
    SandboxSpec, Step,
};

use crate::error::ControlError;
use crate::gateway::NotebookGateway;
use crate::metrics::ControlMetrics;
use crate::service::NotebookService;
use crate::ssh::SshService;
use crate::storage::StorageGrants;

#[derive(Default)]
struct Slot {
    /// Held by the task working on the notebook: operations on one notebook never overlap.
    running: Arc<tokio::sync::Mutex<()>>,
    current: CancellationToken,
}

pub struct Orchestrator {
    service: Arc<NotebookService>,
    runtime: Arc<dyn Runtime>,
    gateway: Arc<dyn NotebookGateway>,
    ssh: Arc<SshService>,
    metrics: ControlMetrics,
    slots: Mutex<HashMap<NotebookId, Slot>>,
    /// Sandboxes that ended while their notebook was still starting, with the reason.
    early_exits: Arc<Mutex<HashMap<NotebookId, String>>>,
    /// The image each requested save writes, until its task takes it.
    saves: Mutex<HashMap<NotebookId, ImageId>>,
    /// What dynamic storage each project may mount.
    storage: StorageGrants,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

fn transition(notebook: &mut Notebook, event: Event) -> Result<(), ControlError> {
    notebook.status = notebook.status.transition(event)?;
    Ok(())
}

fn admit(
    notebook: &Notebook,
    operation: Operation,
    field: &'static str,
) -> Result<(), ControlError> {
    notebook
        .status
        .admit(operation)
        .map_err(|a| ControlError::not_admitted(a, notebook.status, field))
}

/// The step's name in metrics.
fn step_name(step: Step) -> &'static str {
    match step {
        Step::PrepareStorage => "storage",
        Step::PrepareCompute => "compute",
        Step::ConfigureNetwork => "network",
        Step::Initialise => "init",
    }
}

impl Orchestrator {
    // The composition root builds it once, from these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service: Arc<NotebookService>,
        runtime: Arc<dyn Runtime>,
        gateway: Arc<dyn NotebookGateway>,
        ssh: Arc<SshService>,
        metrics: ControlMetrics,
        storage: StorageGrants,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Orchestrator> {
        let orchestrator = Arc::new(Orchestrator {
            service,
            runtime,
            gateway,
            ssh,
            metrics,
            slots: Mutex::new(HashMap::new()),
            early_exits: Arc::default(),
            saves: Mutex::default(),
            storage,
            tracker,
            shutdown,
        });
        orchestrator.watch_exits();
        orchestrator
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub(crate) fn service(&self) -> &Arc<NotebookService> {
        &self.service
    }

    pub(crate) fn storage_grants(&self) -> &StorageGrants {
        &self.storage
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The lock every task working on the notebook holds.
    pub(crate) fn exclusive(&self, id: NotebookId) -> Arc<tokio::sync::Mutex<()>> {
        self.slots
            .lock()
            .expect("poisoned")
            .entry(id)
            .or_default()
            .running
            .clone()
    }

    /// Starts (or restarts) the work the notebook's current status calls for. Any task still
    /// working on the notebook is cancelled first and finishes before the new one begins.
    pub fn kick(self: &Arc<Self>, id: NotebookId) {
        let (running, token) = {
            let mut slots = self.slots.lock().expect("poisoned");
            let slot = slots.entry(id).or_default();
            slot.current.cancel();
            slot.current = self.shutdown.child_token();
            (slot.running.clone(), slot.current.clone())
        };
        let this = self.clone();
        self.tracker.spawn(async move {
            let _exclusive = running.lock().await;
            if token.is_cancelled() {
                return;
            }
            match this.drive(id, &token).await {
                Ok(()) => {}
                // A stop or delete took over: its own task carries on.
                Err(ControlError::MovedOn(status)) => {
                    tracing::info!(notebook_id = %id, %status, "operation superseded");
                }
                Err(error) => tracing::error!(notebook_id = %id, %error, "operation failed"),
            }
        });
    }

    /// Boot-time reconciliation: resume interrupted operations, adopt running sandboxes (and
    /// route to them again), mark lost ones, and kill sandboxes no notebook owns.
    pub async fn reconcile(self: &Arc<Self>) {
        for found in self.runtime.inventory().await {
            let owned = self.service.get_any(&found).is_some_and(|nb| {
                matches!(
                    nb.status,
                    NotebookStatus::Running
                        | NotebookStatus::Snapshotting
                        | NotebookStatus::Init
                        | NotebookStatus::Creating
                        | NotebookStatus::Starting
                )
            });
            if !owned {
                tracing::info!(notebook_id = %found, "removing a sandbox no notebook owns");
                if let Err(error) = self.runtime.stop(found).await {
                    tracing::warn!(notebook_id = %found, %error, "could not remove orphan sandbox");
                }
            }
        }
        self.fail_interrupted_saves().await;
        for mut notebook in self.service.all() {
            if notebook.status == NotebookStatus::Snapshotting {
                // The save died with the server; the sandbox may not have.
                match self.end_save(notebook.id).await {
                    Ok(ended) => notebook = ended,
                    Err(error) => {
                        tracing::error!(notebook_id = %notebook.id, %error, "could not end an interrupted save");
                        continue;
                    }
                }
            }
            if notebook.status.is_transitional() {
                tracing::info!(notebook_id = %notebook.id, status = %notebook.status, "resuming interrupted operation");
                self.kick(notebook.id);
            } else if notebook.status == NotebookStatus::Running {
                // Adopted, the sandbox is supervised like a launched one: its end (an OOM
                // kill included) arrives as an event.
                if self.runtime.adopt(&self.sandbox_spec(&notebook)).await {
                    self.route(&notebook);
                    // Mounts outlive the server like the sandbox; those it was changing,
                    // or whose client died meanwhile, are brought back.
                    if !notebook.data_volumes.is_empty() {
                        self.spawn_storage(notebook.id, true);
                    }
                    if let Err(error) = self.ssh.open(&notebook).await {
                        tracing::warn!(notebook_id = %notebook.id, %error, "SSH endpoint not reopened");
                    }
                    continue;
                }
                let reason = "the notebook's sandbox was lost while the server was down";
                let outcome = self
                    .service
                    .mutate(&notebook.id, |nb| {
                        transition(nb, Event::Fault)?;
                        nb.fail_reason = Some(reason.to_owned());
                        nb.stop_reason = Some(StopReason::Fault);
                        Ok(())
                    })
                    .await;
                if let Err(error) = outcome {
                    tracing::error!(notebook_id = %notebook.id, %error, "could not mark lost sandbox");
                }
                let _ = self.runtime.stop(notebook.id).await;
            }
        }
    }

    /// Points the gateway at the notebook's JupyterLab with the token of this start.
    fn route(&self, notebook: &Notebook) {
        if let (Some(upstream), Some(token)) = (self.runtime.endpoint(notebook.id), &notebook.token)
        {
            self.gateway.set_route(notebook.id, upstream, token.clone());
        }
    }

    /// Takes the notebook off the gateway and closes its SSH port (and sessions).
    fn unroute(&self, id: &NotebookId) {
        self.gateway.remove_route(id);
        self.ssh.close(id);
    }

    /// Listens to the runtime's events for the server's life: a running notebook whose
    /// sandbox ends by itself (a crash, the OOM killer) becomes ERROR with the reason.
    fn watch_exits(&self) {
        let mut events = self.runtime.events();
        let (service, runtime, gateway, ssh) = (
            self.service.clone(),
            self.runtime.clone(),
            self.gateway.clone(),
            self.ssh.clone(),
        );
        let shutdown = self.shutdown.clone();
        let early_exits = self.early_exits.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                let (id, reason) = match event {
                    Ok(SandboxEvent::Exited { id, reason }) => (id, reason.to_string()),
                    Ok(SandboxEvent::Ready(_)) => continue,
                    Ok(SandboxEvent::Hook { id, report }) => {
                        // In order, before the next event of the runtime.
                        let recorded = service
                            .record_events(&id, vec![crate::hooks::event(&report)])
                            .await;
                        if let Err(error) = recorded {
                            tracing::debug!(notebook_id = %id, %error, "hook event not recorded");
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::error!(missed, "sandbox events were missed");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                // Only a running notebook's sandbox can end unexpectedly. A start sees its own
                // sandbox die and fails the step; one that dies between the start's end and
                // RUNNING is kept for the start to find (`run_start`).
                {
                    let mut early = early_exits.lock().expect("poisoned");
                    match service.get_any(&id).map(|nb| nb.status) {
                        Some(NotebookStatus::Running | NotebookStatus::Snapshotting) => {}
                        Some(
                            NotebookStatus::Init
                            | NotebookStatus::Creating
                            | NotebookStatus::Starting,
                        ) => {
                            early.insert(id, reason);
                            continue;
                        }
                        _ => continue,
                    }
                }
                let (service, runtime, gateway, ssh) = (
                    service.clone(),
                    runtime.clone(),
                    gateway.clone(),
                    ssh.clone(),
                );
                tokio::spawn(async move {
                    record_exit(&service, &*runtime, &*gateway, &ssh, id, reason).await;
                });
            }
        });
    }

    /// Saves that a restart cut short: no task carries them on, so their images fail.
    async fn fail_interrupted_saves(&self) {
        for image in self.service.all_images() {
            if image.origin != "IMAGE_SAVE" || !matches!(image.status.as_str(), "INIT" | "CREATING")
            {
                continue;
            }
            tracing::warn!(image_id = %image.id, swr_path = %image.swr_path, "image save interrupted by a restart");
            let outcome = self
                .service
                .change_image(&image.id, |image| {
                    let saving = matches!(image.status.as_str(), "INIT" | "CREATING");
                    if saving {
                        image.status = "CREATE_FAILED".to_owned();
                        image.status_message =
                            "the image save was interrupted by a restart of the server; save it again"
                                .to_owned();
                    }
                    saving
                })
                .await;
            if let Err(error) = outcome {
                tracing::error!(image_id = %image.id, %error, "could not fail an interrupted save");
            }
        }
    }

    /// SNAPSHOTTING → RUNNING, whatever the save's outcome (a notebook that moved on, e.g. to
    /// ERROR when its sandbox died meanwhile, stays where it is).
    async fn end_save(&self, id: NotebookId) -> Result<Arc<Notebook>, ControlError> {
        let (notebook, ()) = self
            .service
            .mutate(&id, |nb| {
                if nb.status == NotebookStatus::Snapshotting {
                    transition(nb, Event::SnapshotEnded)?;
                }
                Ok(())
            })
            .await?;
        Ok(notebook)
    }

    /// Saves a running notebook as `image` (status `INIT`): the notebook goes SNAPSHOTTING
    /// and the image is registered in one step, refused if the notebook is not RUNNING or
    /// another image of the project `conflicts` with it; a task then commits the sandbox.
    pub async fn request_image_save(
        self: &Arc<Self>,
        id: &NotebookId,
        image: Image,
        conflicts: impl Fn(&Image) -> bool,
    ) -> Result<(Arc<Notebook>, Arc<Image>), ControlError> {
        let (notebook, image) = self
            .service
            .begin_image_save(id, image, conflicts, |nb| {
                admit(nb, Operation::CreateImage, "status")?;
                transition(nb, Event::SnapshotRequested)?;
                Ok(())
            })
            .await?;
        self.saves.lock().expect("poisoned").insert(*id, image.id);
        self.kick(*id);
        Ok((notebook, image))
    }

    /// Grows a running notebook's EVS volume to `capacity_gb` before the record says so.
    pub async fn resize_volume(
        &self,
        notebook: &Notebook,
        capacity_gb: i64,
    ) -> Result<(), ControlError> {
        let mut spec = self.sandbox_spec(notebook);
        spec.volume_capacity_gb = capacity_gb;
        self.runtime.resize_volume(&spec).await.map_err(|error| {
            tracing::error!(notebook_id = %notebook.id, %error, "online volume growth failed");
            ControlError::Runtime(error)
        })
    }

    pub async fn request_start(
        self: &Arc<Self>,
        id: &NotebookId,
        run: Option<LeaseRun>,
    ) -> Result<Arc<Notebook>, ControlError> {
        let now = self.service.now_ms();
        let (notebook, ()) = self
            .service
            .mutate(id, |nb| {
                admit(nb, Operation::Start, "status")?;
                transition(nb, Event::StartRequested)?;
                nb.reset_progress();
                nb.fail_reason = None;
                nb.stop_reason = None;
                nb.token = Some(uuid::Uuid::new_v4().to_string());
                let run = run.unwrap_or(nb.lease.run);
                nb.lease.arm(now, run);
                Ok(())
            })
            .await?;
        self.kick(*id);
        Ok(notebook)
    }

    pub async fn request_stop(
        self: &Arc<Self>,
        id: &NotebookId,
        reason: StopReason,
    ) -> Result<Arc<Notebook>, ControlError> {
        let (notebook, ()) = self
            .service
            .mutate(id, |nb| {
                admit(nb, Operation::Stop, "status")?;
                transition(nb, Event::StopRequested)?;
                nb.stop_reason = Some(reason);
                for progress in &mut nb.action_progress {
                    if progress.status != StepStatus::Completed {
                        progress.status = StepStatus::Failed;
                    }
                }
                Ok(())
            })
            .await?;
        self.kick(*id);
        Ok(notebook)
    }

    pub async fn request_delete(
        self: &Arc<Self>,
        id: &NotebookId,
    ) -> Result<Arc<Notebook>, ControlError> {
        let (notebook, ()) = self
            .service
            .mutate(id, |nb| {
                admit(nb, Operation::Delete, "status")?;
                transition(nb, Event::DeleteRequested)?;
                Ok(())
            })
            .await?;
        self.kick(*id);
        Ok(notebook)
    }

    async fn drive(&self, id: NotebookId, token: &CancellationToken) -> Result<(), ControlError> {
        let Some(notebook) = self.service.get_any(&id) else {
            return Ok(());
        };
        match notebook.status {
            NotebookStatus::Init | NotebookStatus::Creating | NotebookStatus::Starting => {
                self.run_start(id, token).await
            }
            NotebookStatus::Stopping => self.run_stop(id).await,
            NotebookStatus::Deleting => self.run_delete(id).await,
            NotebookStatus::Snapshotting => self.run_image_save(id, token).await,
            _ => Ok(()),
        }
    }

    fn sandbox_spec(&self, notebook: &Notebook) -> SandboxSpec {
        let flavor = self.service.flavor(&notebook.flavor);
        let image = self.service.image(&notebook.project_id, &notebook.image_id);
        SandboxSpec {
            notebook_id: notebook.id,
            image: ImageRef::parse(image.as_ref().map_or("", |i| i.swr_path.as_str())),
            vcpus: flavor.map(|f| f.vcpus).unwrap_or(1),
            memory_mib: flavor.map(|f| f.memory_mib).unwrap_or(1024),
            volume_category: notebook.volume.category,
            volume_capacity_gb: notebook.volume.capacity_gb,
            token: notebook.token.clone().unwrap_or_default(),
            base_path: self.gateway.base_path(&notebook.id),
            origin: self.gateway.origin(&notebook.id),
            hooks: crate::hooks::decode_stored(notebook.hooks_json.as_deref()),
        }
    }

    /// Whether the notebook is still in the start (or create) this task is carrying out.
    fn still_starting(notebook: &Notebook) -> Result<(), ControlError> {
        match notebook.status {
            NotebookStatus::Init | NotebookStatus::Creating | NotebookStatus::Starting => Ok(()),
            other => Err(ControlError::MovedOn(other)),
        }
    }

    async fn run_start(
        &self,
        id: NotebookId,
        token: &CancellationToken,
    ) -> Result<(), ControlError> {
        let (notebook, ()) = self
            .service
            .mutate(&id, |nb| {
                Self::still_starting(nb)?;
                if matches!(nb.status, NotebookStatus::Init | NotebookStatus::Creating) {
                    transition(nb, Event::CreateBegun)?;
                }
                if nb.action_progress.len() != 4 {
                    nb.reset_progress();
                }
                Ok(())
            })
            .await?;
        let spec = self.sandbox_spec(&notebook);
        // An end reported before this start is not this start's sandbox's.
        self.early_exits.lock().expect("poisoned").remove(&id);
        let started = tokio::time::Instant::now();
        let progress = StartProgress {
            orchestrator: self,
            notebook: &notebook,
            step_started: Mutex::new(started),
            refusal: Mutex::new(None),
            routed: std::sync::atomic::AtomicBool::new(false),
            mounted: std::sync::atomic::AtomicBool::new(false),
        };
        let outcome = tokio::select! {
            () = token.cancelled() => return Ok(()),
            outcome = self.runtime.ensure(&spec, &progress) => outcome,
        };
        if let Err(EnsureError { step, error }) = outcome {
            let error = match (error, progress.refusal.lock().expect("poisoned").take()) {
                // The notebook moved on (or could not be written): not the step's fault.
                (RuntimeError::Aborted, Some(Refusal::Control(error))) => return Err(error),
                (RuntimeError::Aborted, Some(Refusal::StepFailed(error))) => error,
                (error, _) => ControlError::Runtime(error),
            };
            let step_started = *progress.step_started.lock().expect("poisoned");
            self.metrics.step(step_name(step), false, step_started);
            let number = step.number();
            let reason = format!(
                "step {number} ({}) failed: {error}",
                step_description(number)
                    .trim_end_matches('.')
                    .to_lowercase()
            );
            tracing::warn!(notebook_id = %id, %reason, "start failed");
            self.service
                .mutate(&id, |nb| {
                    Self::still_starting(nb)?;
                    nb.set_step(number, StepStatus::Failed);
                    let event = if nb.has_run {
                        Event::StartFailed
                    } else {
                        Event::CreateFailed
                    };
                    transition(nb, event)?;
                    nb.fail_reason = Some(reason.clone());
                    Ok(())
                })
                .await?;
            self.metrics.start(false, started);
            // Release whatever the start had taken.
            self.unroute(&id);
            if let Err(error) = self.runtime.stop(id).await {
                tracing::error!(notebook_id = %id, %error, "could not release a failed start");
            }
            return Ok(());
        }
        if !progress.routed.load(std::sync::atomic::Ordering::SeqCst) {
            self.route(&notebook);
        }
        // Dynamic storage is mounted again before the notebook counts as running (by the
        // runtime's call in the middle of the start, where it makes one); a mount that fails
        // says so in its record and does not fail the start.
        if !notebook.data_volumes.is_empty()
            && !progress.mounted.load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = self.converge_storage(id, true) => {}
            }
        }
        let now = self.service.now_ms();
        self.service
            .mutate(&id, |nb| {
                Self::still_starting(nb)?;
                if nb.status == NotebookStatus::Creating {
                    transition(nb, Event::ComputeReady)?;
                }
                transition(nb, Event::Ready)?;
                nb.has_run = true;
                nb.fail_reason = None;
                // Start-up time is not charged against the user's lease.
                nb.lease.rearm(now);
                Ok(())
            })
            .await?;
        self.metrics.start(true, started);
        // The sandbox may have ended between the runtime's "ready" and RUNNING.
        let early = self.early_exits.lock().expect("poisoned").remove(&id);
        if let Some(reason) = early {
            record_exit(
                &self.service,
                &*self.runtime,
                &*self.gateway,
                &self.ssh,
                id,
                reason,
            )
            .await;
        }
        Ok(())
    }

    /// Commits the notebook's sandbox as its save's image (`INIT → CREATING → ACTIVE` or
    /// `CREATE_FAILED` with the runtime's reason), then the notebook returns to RUNNING. A
    /// shutdown leaves both as they are, for the next boot to end ([`Self::reconcile`]).
    async fn run_image_save(
        &self,
        id: NotebookId,
        token: &CancellationToken,
    ) -> Result<(), ControlError> {
        let Some(image_id) = self.saves.lock().expect("poisoned").remove(&id) else {
            // No save of this process: nothing to commit.
            self.end_save(id).await?;
            return Ok(());
        };
        let image = self
            .service
            .change_image(&image_id, |image| {
                let waiting = image.status == "INIT";
                if waiting {
                    image.status = "CREATING".to_owned();
                }
                waiting
            })
            .await?;
        let Some(image) = image else {
            self.end_save(id).await?;
            return Ok(());
        };
        let target = ImageRef::parse(&image.swr_path);
        tracing::info!(notebook_id = %id, image_id = %image_id, target = %target, "saving the notebook as an image");
        let outcome = tokio::select! {
            () = token.cancelled() => return Ok(()),
            outcome = self.runtime.images().commit(id, &target) => outcome,
        };
        // The notebook is usable again before the image says the save is over: a client
        // that waits for ACTIVE may act on the notebook at once.
        self.end_save(id).await?;
        match &outcome {
            Ok(resolved) => tracing::info!(
                notebook_id = %id, image_id = %image_id, digest = resolved.digest.as_deref().unwrap_or("-"),
                size = resolved.size.unwrap_or(0), "image saved"
            ),
            Err(error) => {
                tracing::warn!(notebook_id = %id, image_id = %image_id, %error, "image save failed");
            }
        }
        self.service
            .change_image(&image_id, |image| {
                if image.status != "CREATING" {
                    return false;
                }
                match &outcome {
                    Ok(resolved) => {
                        image.status = "ACTIVE".to_owned();
                        image.size_kb = resolved.size.map_or(0, |bytes| {
                            i64::try_from(bytes.div_ceil(1024)).unwrap_or(i64::MAX)
                        });
                        image.status_message.clear();
                    }
                    Err(error) => {
                        image.status = "CREATE_FAILED".to_owned();
                        image.status_message = error.to_string();
                    }
                }
                true
            })
            .await?;
        Ok(())
    }

    async fn run_stop(&self, id: NotebookId) -> Result<(), ControlError> {
        self.unroute(&id);
        match self.runtime.stop(id).await {
            Ok(()) => {
                self.service
                    .mutate(&id, |nb| {
                        if nb.status == NotebookStatus::Stopping {
                            transition(nb, Event::Stopped)?;
                            nb.token = None;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Err(error) => {
                self.service
                    .mutate(&id, |nb| {
                        if nb.status == NotebookStatus::Stopping {
                            transition(nb, Event::Fault)?;
                            nb.fail_reason = Some(format!("stop failed: {error}"));
                        }
                        Ok(())
                    })
                    .await?;
            }
        }
        Ok(())
    }

    async fn run_delete(&self, id: NotebookId) -> Result<(), ControlError> {
        self.unroute(&id);
        let port = self
            .service
            .get_any(&id)
            .and_then(|nb| nb.ssh_endpoint().and_then(|e| e.port));
        match self.runtime.delete(id).await {
            Ok(()) => {
                self.service.remove(&id).await?;
                if let Some(port) = port {
                    self.ssh.release_port(port);
                }
                self.slots.lock().expect("poisoned").remove(&id);
                Ok(())
            }
            Err(error) => {
                self.service
                    .mutate(&id, |nb| {
                        if nb.status == NotebookStatus::Deleting {
                            transition(nb, Event::DeleteFailed)?;
                            nb.fail_reason = Some(format!("delete failed: {error}"));
                        }
                        Ok(())
                    })
                    .await?;
                Ok(())
            }
        }
    }
}

/// A running notebook's sandbox ended by itself: off the gateway and SSH, ERROR with the
/// reason, and whatever is left of the sandbox removed.
async fn record_exit(
    service: &NotebookService,
    runtime: &dyn Runtime,
    gateway: &dyn NotebookGateway,
    ssh: &SshService,
    id: NotebookId,
    reason: String,
) {
    tracing::warn!(notebook_id = %id, %reason, "sandbox ended");
    gateway.remove_route(&id);
    ssh.close(&id);
    let outcome = service
        .mutate(&id, |nb| {
            if matches!(
                nb.status,
                NotebookStatus::Running | NotebookStatus::Snapshotting
            ) {
                transition(nb, Event::Fault)?;
                nb.fail_reason = Some(reason.clone());
                nb.stop_reason = Some(StopReason::Fault);
            }
            Ok(())
        })
        .await;
    if let Err(error) = outcome {
        tracing::error!(notebook_id = %id, %error, "could not record the sandbox's end");
    }
    if let Err(error) = runtime.stop(id).await {
        tracing::warn!(notebook_id = %id, %error, "could not clean up after the sandbox");
    }
}

/// Why the orchestrator stopped a start from its [`Progress`].
enum Refusal {
    /// The notebook moved on, or the store refused: the task ends with this error.
    Control(ControlError),
    /// What the control plane does as part of the step failed (opening the SSH port).
    StepFailed(ControlError),
}

/// Records the start steps as the runtime works through them, exactly as `action_progress`
/// and the notebook's events have always shown them. Steps completed before a restart are
/// not recorded again.
struct StartProgress<'a> {
    orchestrator: &'a Orchestrator,
    /// The notebook as the start found it.
    notebook: &'a Notebook,
    step_started: Mutex<tokio::time::Instant>,
    refusal: Mutex<Option<Refusal>>,
    /// Whether the gateway got its route at step 3 (otherwise it gets it once ready).
    routed: std::sync::atomic::AtomicBool,
    /// Whether the notebook's dynamic storage was mounted during the start (otherwise it is
    /// once the runtime is done).
    mounted: std::sync::atomic::AtomicBool,
}

impl StartProgress<'_> {
    fn completed_before(&self, step: Step) -> bool {
        self.notebook
            .action_progress
            .iter()
            .any(|p| p.step == step.number() && p.status == StepStatus::Completed)
    }

    fn refuse(&self, refusal: Refusal) -> Refused {
        *self.refusal.lock().expect("poisoned") = Some(refusal);
        Refused
    }
}

#[async_trait::async_trait]
impl Progress for StartProgress<'_> {
    async fn step_started(&self, step: Step) -> Result<(), Refused> {
        if self.completed_before(step) {
            return Ok(());
        }
        self.orchestrator
            .service
            .mutate(&self.notebook.id, |nb| {
                Orchestrator::still_starting(nb)?;
                if step == Step::Initialise && nb.status == NotebookStatus::Creating {
                    transition(nb, Event::ComputeReady)?;
                }
                nb.set_step(step.number(), StepStatus::Processing);
                Ok(())
            })
            .await
            .map_err(|error| self.refuse(Refusal::Control(error)))?;
        *self.step_started.lock().expect("poisoned") = tokio::time::Instant::now();
        Ok(())
    }

    async fn step_done(&self, step: Step) -> Result<(), Refused> {
        if self.completed_before(step) {
            return Ok(());
        }
        if step == Step::ConfigureNetwork {
            self.orchestrator
                .ssh
                .open(self.notebook)
                .await
                .map_err(|error| self.refuse(Refusal::StepFailed(error)))?;
        }
        let step_started = *self.step_started.lock().expect("poisoned");
        self.orchestrator
            .metrics
            .step(step_name(step), true, step_started);
        self.orchestrator
            .service
            .mutate(&self.notebook.id, |nb| {
                Orchestrator::still_starting(nb)?;
                nb.set_step(step.number(), StepStatus::Completed);
                Ok(())
            })
            .await
            .map_err(|error| self.refuse(Refusal::Control(error)))?;
        // The gateway routes from step 3 on, where the runtime has an endpoint by then.
        if step == Step::ConfigureNetwork
            && self
                .orchestrator
                .runtime
                .endpoint(self.notebook.id)
                .is_some()
        {
            self.orchestrator.route(self.notebook);
            self.routed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
    /// Mounts the notebook's dynamic storage (again), before its hooks run and its
    /// JupyterLab answers.
    async fn sandbox_running(&self) {
        if self.notebook.data_volumes.is_empty() {
            return;
        }
        self.orchestrator
            .converge_storage(self.notebook.id, true)
            .await;
        self.mounted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Recorded as the notebook's events as they come (the runtime reports a hook's output
    /// in bounded chunks, at most one a second).
    async fn hook(&self, report: &HookReport) {
        let recorded = self
            .orchestrator
            .service
            .record_events(&self.notebook.id, vec![crate::hooks::event(report)])
            .await;
        if let Err(error) = recorded {
            tracing::debug!(notebook_id = %self.notebook.id, %error, "hook event not recorded");
        }
    }

    /// Shown after the step's description while it runs. A text the notebook already shows
    /// writes nothing; the runtime sends at most a few a second. A notebook that moved on
    /// keeps what it has: the step's end (or the start's) deals with that.
    async fn step_detail(&self, step: Step, detail: &str) {
        if self.completed_before(step) {
            return;
        }
        let outcome = self
            .orchestrator
            .service
            .mutate(&self.notebook.id, |nb| {
                Orchestrator::still_starting(nb)?;
                nb.set_step_detail(step.number(), detail);
                Ok(())
            })
            .await;
        if let Err(error) = outcome {
            tracing::debug!(notebook_id = %self.notebook.id, %error, "step detail not recorded");
        }
    }
}

/// What the control plane does with dynamic storage: it records each mount in the notebook,
/// then a task (exclusive with the notebook's other operations) has the runtime mount or
/// unmount it and records the outcome. Every start mounts them all again.
impl Orchestrator {
    /// Adds `volume` (`MOUNTING`) to a RUNNING notebook and mounts it in the background.
    pub async fn request_attach(
        self: &std::sync::Arc<Self>,
        id: &atelier_domain::NotebookId,
        volume: atelier_domain::DataVolume,
    ) -> Result<std::sync::Arc<atelier_domain::Notebook>, ControlError> {
        use atelier_domain::{MountStatus, Operation, storage::MAX_DATA_VOLUMES};
        // Refused before anything is written: a bucket or share the project was not given.
        let project = self
            .service()
            .get_any(id)
            .ok_or(ControlError::NotebookNotFound)?
            .project_id
            .clone();
        self.storage_grants().resolve(&project, &volume)?;
        let (notebook, ()) = self
            .service()
            .mutate(id, |nb| {
                nb.status
                    .admit(Operation::AttachStorage)
                    .map_err(|a| ControlError::not_admitted(a, nb.status, "status"))?;
                if nb
                    .data_volumes
                    .iter()
                    .any(|v| v.mount_path == volume.mount_path)
                {
                    return Err(ControlError::MountPathInUse(volume.mount_path.clone()));
                }
                if nb.data_volumes.len() >= MAX_DATA_VOLUMES {
                    return Err(ControlError::TooManyMounts {
                        max: MAX_DATA_VOLUMES,
                    });
                }
                let mut volume = volume.clone();
                volume.status = MountStatus::Mounting;
                nb.data_volumes.push(volume);
                Ok(())
            })
            .await?;
        self.spawn_storage(*id, false);
        Ok(notebook)
    }

    /// Marks a mount `UNMOUNTING` and unmounts it in the background (then it is gone).
    pub async fn request_detach(
        self: &std::sync::Arc<Self>,
        id: &atelier_domain::NotebookId,
        storage_id: &str,
    ) -> Result<atelier_domain::DataVolume, ControlError> {
        use atelier_domain::{MountStatus, Operation};
        let (_, volume) = self
            .service()
            .mutate(id, |nb| {
                let status = nb.status;
                let volume = nb
                    .data_volumes
                    .iter_mut()
                    .find(|v| v.id == storage_id)
                    .ok_or(ControlError::StorageNotFound)?;
                status
                    .admit(Operation::DetachStorage)
                    .map_err(|a| ControlError::not_admitted(a, status, "status"))?;
                volume.status = MountStatus::Unmounting;
                volume.failure_reason = None;
                Ok(volume.clone())
            })
            .await?;
        self.spawn_storage(*id, false);
        Ok(volume)
    }

    /// Brings the notebook's mounts to what their records ask (see
    /// [`Self::converge_storage`]), in a task that waits for the notebook's other operations.
    pub(crate) fn spawn_storage(
        self: &std::sync::Arc<Self>,
        id: atelier_domain::NotebookId,
        all: bool,
    ) {
        let this = self.clone();
        let exclusive = self.exclusive(id);
        let shutdown = self.shutdown.clone();
        self.tracker().spawn(async move {
            let _held = exclusive.lock().await;
            // A shutdown leaves the records as they are: the next boot carries them out.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = this.converge_storage(id, all) => {}
            }
        });
    }

    /// Mounts what is `MOUNTING` (every mount, with `all`: a start) and unmounts what is
    /// `UNMOUNTING` in a RUNNING (or starting) notebook, all at once (an endpoint that does
    /// not answer holds up a start by its own timeout, not by the sum of them), then records
    /// every outcome in one write. In a notebook that is not running, unmounting needs
    /// nothing: those records just go.
    pub(crate) async fn converge_storage(&self, id: atelier_domain::NotebookId, all: bool) {
        use atelier_domain::{MountStatus, NotebookStatus};
        let Some(notebook) = self.service().get_any(&id) else {
            return;
        };
        let live = matches!(
            notebook.status,
            NotebookStatus::Running | NotebookStatus::Starting | NotebookStatus::Creating
        );
        let project = &notebook.project_id;
        let work = notebook.data_volumes.iter().filter_map(|volume| {
            let unmounting = matches!(
                volume.status,
                MountStatus::Unmounting | MountStatus::UnmountFailed | MountStatus::Unmounted
            );
            let storage_id = volume.id.clone();
            if unmounting {
                if !live && volume.status != MountStatus::Unmounting {
                    return None;
                }
                return Some(futures_util::future::Either::Left(async move {
                    let result = if live {
                        self.runtime().unmount_storage(id, volume.dir()).await
                    } else {
                        Ok(())
                    };
                    let outcome = match result {
                        Ok(()) => None,
                        Err(error) => Some((MountStatus::UnmountFailed, Some(error.to_string()))),
                    };
                    (storage_id, outcome)
                }));
            }
            if !(live && (all || volume.status == MountStatus::Mounting)) {
                return None;
            }
            Some(futures_util::future::Either::Right(async move {
                let result = match self.storage_grants().resolve(project, volume) {
                    Ok(mount) => self
                        .runtime()
                        .mount_storage(id, &mount)
                        .await
                        .map_err(|e| e.to_string()),
                    // The operator took the grant back since.
                    Err(error) => Err(error.to_string()),
                };
                let outcome = match result {
                    Ok(()) => (MountStatus::Mounted, None),
                    Err(reason) => {
                        tracing::warn!(notebook_id = %id, mount_path = %volume.mount_path, %reason, "mount failed");
                        (MountStatus::MountFailed, Some(reason))
                    }
                };
                (storage_id, Some(outcome))
            }))
        });
        let outcomes = futures_util::future::join_all(work).await;
        if outcomes.is_empty() {
            return;
        }
        let written = self
            .service()
            .mutate(&id, |nb| {
                for (storage_id, outcome) in &outcomes {
                    match outcome {
                        None => nb.data_volumes.retain(|v| &v.id != storage_id),
                        Some((status, reason)) => {
                            if let Some(v) =
                                nb.data_volumes.iter_mut().find(|v| &v.id == storage_id)
                            {
                                v.status = *status;
                                v.failure_reason = reason.clone();
                            }
                        }
                    }
                }
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::error!(notebook_id = %id, %error, "could not record the mounts' outcomes");
        }
    }
}
