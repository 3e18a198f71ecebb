//! Where notebooks run. The orchestrator asks a [`Runtime`] to [`ensure`](Runtime::ensure) a
//! notebook's sandbox (hearing of the four start steps through [`Progress`]), listens to its
//! [`SandboxEvent`]s, adopts what its [`inventory`](Runtime::inventory) lists at boot, and
//! hands it SSH connections; this crate is the only one that spawns processes (or would call
//! Kubernetes).
//!
//! Implementations: [`PlaceholderRuntime`] (starts nothing; tests) and [`LocalRuntime`]
//! (bubblewrap sandboxes). [`conformance`] holds the checks every implementation passes.
// `unsafe` lives in `local::sys` only (pre-exec setup, idmapped mounts); denied elsewhere.
#![deny(unsafe_code)]

mod cgroup;
pub mod conformance;
pub mod images;
pub mod local;

pub use images::{ImageRef, ImageStore, PullProgress, ResolvedImage, oci_architecture};
pub use local::{LocalConfig, LocalRuntime};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use atelier_domain::{ContainerHooks, HookMode, HookPoint, NotebookId, Upstream, VolumeCategory};

/// Everything a runtime needs to know to start one notebook.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub notebook_id: NotebookId,
    pub image: ImageRef,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub volume_category: VolumeCategory,
    pub volume_capacity_gb: i64,
    /// The Jupyter access token of this start.
    pub token: String,
    /// The path JupyterLab serves under (`/`, or `/{id}/` on a shared origin).
    pub base_path: String,
    /// The notebook's web origin (`http://{id}.localhost:8081`): the only one JupyterLab
    /// accepts requests from.
    pub origin: String,
    /// Scripts run in the sandbox as `ma-user` before JupyterLab starts and once it answers.
    pub hooks: ContainerHooks,
}

/// One dynamic mount under `/data/{dir}/` of a running notebook (spec §1.4.11). The control
/// plane resolves what the notebook asked for against the operator's grants; the runtime
/// only carries it out, outside the sandbox, and never shows the credentials inside.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageMount {
    /// One plain name (`[A-Za-z0-9_-]`, checked by the control plane and again here).
    pub dir: String,
    pub source: StorageSource,
    pub read_only: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StorageSource {
    /// A prefix of an S3-compatible bucket, through a FUSE client.
    ObjectStore(ObjectStoreMount),
    /// A directory of the host the operator exported (an NFS mount on the host, say).
    Directory(PathBuf),
}

#[derive(Clone, PartialEq, Eq)]
pub struct ObjectStoreMount {
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
    /// `dir/` or `dir/sub/`.
    pub prefix: String,
}

/// Never prints the secret key.
impl std::fmt::Debug for StorageMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            StorageSource::ObjectStore(store) => format!(
                "{}/{}/{} (key {})",
                store.endpoint, store.bucket, store.prefix, store.access_key_id
            ),
            StorageSource::Directory(path) => path.display().to_string(),
        };
        f.debug_struct("StorageMount")
            .field("dir", &self.dir)
            .field("source", &source)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// One of the four start steps of `action_progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    PrepareStorage = 1,
    PrepareCompute = 2,
    ConfigureNetwork = 3,
    Initialise = 4,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::PrepareStorage,
        Step::PrepareCompute,
        Step::ConfigureNetwork,
        Step::Initialise,
    ];

    pub fn number(self) -> u8 {
        self as u8
    }
}

/// What went wrong in a runtime, by what the caller can do about it. The control plane maps
/// each kind to a ModelArts code; the texts are human-readable (they become `fail_reason`).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No room for the sandbox (CPU, memory, uids, nodes): retry later or elsewhere.
    #[error("{0}")]
    Capacity(String),
    /// The image cannot be resolved, pulled or run.
    #[error("{0}")]
    Image(String),
    /// This runtime cannot do what was asked (an image kind, SSH, saving an image).
    #[error("{0}")]
    Unsupported(String),
    /// A passing fault: the same request may succeed later.
    #[error("{0}")]
    Transient(String),
    /// A fault that retrying will not cure.
    #[error("{0}")]
    Fatal(String),
    /// The caller gave up (its [`Progress`] refused to go on).
    #[error("aborted")]
    Aborted,
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// A start that failed, and at which of the four steps.
#[derive(Debug, thiserror::Error)]
#[error("step {} failed: {error}", step.number())]
pub struct EnsureError {
    pub step: Step,
    #[source]
    pub error: RuntimeError,
}

/// The caller refused to let a start go on (the notebook moved on, or a side effect of the
/// step failed); the runtime stops and reports [`RuntimeError::Aborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// Told of each start step as [`Runtime::ensure`] works through them, so that the control
/// plane records them durably (`action_progress`, events) as they happen.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn step_started(&self, step: Step) -> Result<(), Refused>;
    async fn step_done(&self, step: Step) -> Result<(), Refused>;
    /// What the step is doing now, for people watching (bytes of an image pulled so far).
    async fn step_detail(&self, _step: Step, _detail: &str) {}
    /// What a hook the start waits for did (started, output, how it ended), in order, for
    /// the notebook's events. Hooks that run in the background report through
    /// [`SandboxEvent::Hook`] instead.
    async fn hook(&self, _report: &HookReport) {}
    /// The notebook's sandbox runs, and neither its `pre_start` hook nor JupyterLab's
    /// readiness has been waited for: the moment to mount its dynamic storage, so that the
    /// hooks and the first kernel see `/data`. A runtime that never calls this leaves the
    /// mounting to after [`Runtime::ensure`].
    async fn sandbox_running(&self) {}
}

/// What a hook did, for the notebook's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    pub point: HookPoint,
    pub mode: HookMode,
    pub what: HookActivity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookActivity {
    /// It started; the text names its script.
    Started(String),
    /// Lines it wrote (stdout and stderr together), a bounded chunk at a time.
    Output(String),
    /// It exited 0.
    Succeeded { elapsed: Duration },
    /// It failed: a non-zero exit status, a signal, the time limit, or it could not start;
    /// the text says which, with the last lines of its output.
    Failed(String),
}

/// A [`Progress`] that records nothing.
pub struct NoProgress;

#[async_trait]
impl Progress for NoProgress {
    async fn step_started(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
    async fn step_done(&self, _step: Step) -> Result<(), Refused> {
        Ok(())
    }
}

/// Why a sandbox ended without being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The kernel's OOM killer killed a process of the sandbox (which then goes down whole).
    OutOfMemory { limit_mib: u64 },
    /// It ended by itself; the text says how.
    Exited(String),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::OutOfMemory { limit_mib } => write!(
                f,
                "out of memory: the kernel killed a process that exceeded the notebook's {limit_mib} MiB memory limit"
            ),
            ExitReason::Exited(how) => f.write_str(how),
        }
    }
}

/// What a runtime tells of its sandboxes as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    /// The notebook's JupyterLab answers (a start finished).
    Ready(NotebookId),
    /// The sandbox ended without being stopped (never sent for [`Runtime::stop`]/`delete`).
    Exited { id: NotebookId, reason: ExitReason },
    /// What a hook running in the background (`ASYNC` post-start) did.
    Hook { id: NotebookId, report: HookReport },
}

/// What a runtime has (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Idle warm sandboxes ready for a start.
    pub warm: usize,
    /// Sandboxes this runtime supervises.
    pub sandboxes: usize,
}

/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 256;

/// Where notebooks run. Designed for three implementations: the placeholder, the local
/// bubblewrap runtime and a Kubernetes runtime (ARCHITECTURE.md, "Kubernetes runtime").
/// No runtime knows the gateway's URL scheme: the spec carries the base path.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Brings the notebook's sandbox to running, through the four steps, telling `progress`
    /// of each. Declarative and idempotent: on a running sandbox it returns `Ok` at once,
    /// after a crash it picks up what exists.
    async fn ensure(&self, spec: &SandboxSpec, progress: &dyn Progress) -> Result<(), EnsureError>;
    /// Stops the notebook's sandbox; the work volume is kept. Idempotent.
    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError>;
    /// Stops the sandbox and removes the work volume. Idempotent.
    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError>;
    /// Where the gateway reaches the notebook's JupyterLab (a Unix socket on this host, or a
    /// TCP address), while the runtime has a sandbox for it.
    fn endpoint(&self, notebook_id: NotebookId) -> Option<Upstream>;
    /// Events of every sandbox from now on (each subscriber gets all of them).
    fn events(&self) -> tokio::sync::broadcast::Receiver<SandboxEvent>;
    /// Notebooks with sandboxes (or their remains) on this host, for the control plane to
    /// adopt or remove at boot.
    async fn inventory(&self) -> Vec<NotebookId>;
    /// Takes a sandbox found alive at boot under supervision, exactly like a launched one
    /// (its exits and OOM kills become events). `false` if there is no live sandbox.
    async fn adopt(&self, spec: &SandboxSpec) -> bool;
    /// Serves one SSH connection: an SSH server in the notebook's sandbox (its files,
    /// processes and limits) that logs in `ma-user` with one of `authorized_keys` (OpenSSH
    /// `authorized_keys` lines) and nothing else, bridged to `stream` by the runtime.
    /// Returns when the session ends (or the future is dropped, which ends it).
    async fn attach_shell(
        &self,
        _notebook_id: NotebookId,
        _authorized_keys: &str,
        _stream: tokio::net::TcpStream,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime has no SSH access",
            self.name()
        )))
    }
    /// Whether [`Runtime::attach_shell`] can serve SSH connections.
    fn supports_ssh(&self) -> bool {
        false
    }
    /// Grows the work volume of a running notebook to `spec.volume_capacity_gb` (EVS only;
    /// never shrinks). Idempotent.
    async fn resize_volume(&self, _spec: &SandboxSpec) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Bytes in use on the notebook's work volume, where the runtime can tell.
    fn volume_usage(&self, _notebook_id: NotebookId) -> Option<u64> {
        None
    }
    /// Mounts `mount` at `/data/{dir}/` of the notebook: into its running sandbox, or ready
    /// for the sandbox its next [`Runtime::ensure`] starts. It lasts until
    /// [`Runtime::unmount_storage`], `stop` or `delete` (the control plane mounts again at
    /// every start). Returns once the mount is usable, or with a reason a user can act on.
    /// Idempotent.
    async fn mount_storage(
        &self,
        _notebook_id: NotebookId,
        _mount: &StorageMount,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "the {} runtime cannot mount storage",
            self.name()
        )))
    }
    /// Unmounts `/data/{dir}/` of the notebook (nothing in the store is touched).
    /// Idempotent.
    async fn unmount_storage(
        &self,
        _notebook_id: NotebookId,
        _dir: &str,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn stats(&self) -> RuntimeStats {
        RuntimeStats::default()
    }
    /// The images this runtime runs.
    fn images(&self) -> &dyn ImageStore;
    /// Called once when the server stops (the local runtime drains its warm pool).
    async fn shutdown(&self) {}
}

/// The size of every image the placeholder saves (a little over 3 MiB).
pub const PLACEHOLDER_IMAGE_BYTES: u64 = 3_276_900;

/// Starts nothing: each step completes after `step_delay`. Tests can make a step fail, or
/// end a "sandbox" as if it had crashed ([`PlaceholderRuntime::crash`]).
///
/// With a state directory it records each "running sandbox" as a file there, so that its
/// sandboxes outlive a restart of the server the way detached processes would.
pub struct PlaceholderRuntime {
    step_delay: Duration,
    state_dir: Option<PathBuf>,
    /// Sandboxes "alive on this host".
    running: Mutex<HashSet<NotebookId>>,
    failures: Mutex<HashMap<NotebookId, (Step, String)>>,
    /// What step 2 of a notebook's starts reports, in turn (as if pulling an image).
    pull_details: Mutex<HashMap<NotebookId, Vec<String>>>,
    /// Sandboxes that end as soon as they are ready (once), with the reason.
    doomed: Mutex<HashMap<NotebookId, ExitReason>>,
    /// Notebooks whose image saves fail, with the reason.
    commit_failures: Mutex<HashMap<NotebookId, String>>,
    /// Storage "mounted" per notebook (dirs), and mounts that are to fail, with the reason.
    mounts: Mutex<HashMap<NotebookId, std::collections::BTreeSet<String>>>,
    mount_failures: Mutex<HashMap<NotebookId, String>>,
    /// What "hooks" report at the next starts of a notebook.
    hook_reports: Mutex<HashMap<NotebookId, Vec<HookReport>>>,
    /// How long an image save takes.
    commit_delay: Mutex<Duration>,
    /// What [`Runtime::endpoint`] names for running sandboxes (none by default: nothing
    /// listens, so the gateway gets no route).
    endpoint: Option<Upstream>,
    events: tokio::sync::broadcast::Sender<SandboxEvent>,
}

impl Default for PlaceholderRuntime {
    fn default() -> Self {
        PlaceholderRuntime {
            step_delay: Duration::ZERO,
            state_dir: None,
            running: Mutex::default(),
            failures: Mutex::default(),
            pull_details: Mutex::default(),
            doomed: Mutex::default(),
            commit_failures: Mutex::default(),
            mounts: Mutex::default(),
            mount_failures: Mutex::default(),
            hook_reports: Mutex::default(),
            commit_delay: Mutex::new(Duration::ZERO),
            endpoint: None,
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl PlaceholderRuntime {
    pub fn new(step_delay: Duration) -> PlaceholderRuntime {
        PlaceholderRuntime {
            step_delay,
            ..PlaceholderRuntime::default()
        }
    }

    /// Keeps the set of running sandboxes in `state_dir` (created if needed).
    pub fn with_state_dir(
        step_delay: Duration,
        state_dir: PathBuf,
    ) -> std::io::Result<PlaceholderRuntime> {
        std::fs::create_dir_all(&state_dir)?;
        let mut running = HashSet::new();
        for entry in std::fs::read_dir(&state_dir)? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".running"))
                && let Ok(id) = id.parse()
            {
                running.insert(id);
            }
        }
        Ok(PlaceholderRuntime {
            step_delay,
            state_dir: Some(state_dir),
            running: Mutex::new(running),
            ..PlaceholderRuntime::default()
        })
    }

    /// Names `upstream` as the endpoint of every running sandbox (the conformance suite).
    pub fn with_endpoint(mut self, upstream: Upstream) -> PlaceholderRuntime {
        self.endpoint = Some(upstream);
        self
    }

    fn marker(&self, notebook_id: NotebookId) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|dir| dir.join(format!("{notebook_id}.running")))
    }

    /// Makes the next storage mounts of `notebook_id` fail with `reason`.
    pub fn fail_mounts(&self, notebook_id: NotebookId, reason: &str) {
        self.mount_failures
            .lock()
            .expect("poisoned")
            .insert(notebook_id, reason.to_owned());
    }

    /// The `/data/` dirs "mounted" for the notebook.
    pub fn mounted(&self, notebook_id: NotebookId) -> Vec<String> {
        self.mounts
            .lock()
            .expect("poisoned")
            .get(&notebook_id)
            .map(|dirs| dirs.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes `step` fail with `reason` on the next starts of `notebook_id`.
    pub fn fail_step(&self, notebook_id: NotebookId, step: Step, reason: &str) {
        self.failures
            .lock()
            .expect("poisoned")
            .insert(notebook_id, (step, reason.to_owned()));
    }

    /// Makes step 2 of the next starts of `notebook_id` report each of `details` in turn
    /// through [`Progress::step_detail`], each for the step delay, before the step's own
    /// delay: what the local runtime does while it pulls an image.
    pub fn report_pull(&self, notebook_id: NotebookId, details: &[&str]) {
        self.pull_details.lock().expect("poisoned").insert(
            notebook_id,
            details.iter().map(|d| (*d).to_owned()).collect(),
        );
    }

    /// Makes the next starts of `notebook_id` report `reports` as its hooks would: those
    /// of an `ASYNC` post-start hook as [`SandboxEvent::Hook`] once it is ready, the others
    /// through [`Progress::hook`] during step 4.
    pub fn report_hooks(&self, notebook_id: NotebookId, reports: Vec<HookReport>) {
        self.hook_reports
            .lock()
            .expect("poisoned")
            .insert(notebook_id, reports);
    }

    fn hook_reports(&self, notebook_id: NotebookId, background: bool) -> Vec<HookReport> {
        let reports = self.hook_reports.lock().expect("poisoned");
        reports
            .get(&notebook_id)
            .into_iter()
            .flatten()
            .filter(|r| {
                (r.point == HookPoint::PostStart && r.mode == HookMode::Async) == background
            })
            .cloned()
            .collect()
    }

    /// Makes the next image saves of `notebook_id` fail with `reason` (a [`RuntimeError::Fatal`]).
    pub fn fail_commit(&self, notebook_id: NotebookId, reason: &str) {
        self.commit_failures
            .lock()
            .expect("poisoned")
            .insert(notebook_id, reason.to_owned());
    }

    /// How long each image save takes from now on (zero by default).
    pub fn set_commit_delay(&self, delay: Duration) {
        *self.commit_delay.lock().expect("poisoned") = delay;
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().expect("poisoned").len()
    }

    /// Makes the notebook's next sandbox crash with `reason` right after it is ready (before
    /// the caller has seen `ensure` return).
    pub fn crash_when_ready(&self, notebook_id: NotebookId, reason: ExitReason) {
        self.doomed
            .lock()
            .expect("poisoned")
            .insert(notebook_id, reason);
    }

    /// Ends the notebook's sandbox as if it had crashed: it is gone, and subscribers hear
    /// [`SandboxEvent::Exited`] with `reason`.
    pub fn crash(&self, notebook_id: NotebookId, reason: ExitReason) {
        if let Some(marker) = self.marker(notebook_id) {
            let _ = std::fs::remove_file(marker);
        }
        if self.running.lock().expect("poisoned").remove(&notebook_id) {
            let _ = self.events.send(SandboxEvent::Exited {
                id: notebook_id,
                reason,
            });
        }
    }

    async fn run_step(
        &self,
        spec: &SandboxSpec,
        step: Step,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        if step == Step::PrepareCompute {
            let details = self
                .pull_details
                .lock()
                .expect("poisoned")
                .get(&spec.notebook_id)
                .cloned()
                .unwrap_or_default();
            for detail in details {
                progress.step_detail(step, &detail).await;
                tokio::time::sleep(self.step_delay).await;
            }
        }
        if !self.step_delay.is_zero() {
            tokio::time::sleep(self.step_delay).await;
        }
        let failure = self
            .failures
            .lock()
            .expect("poisoned")
            .get(&spec.notebook_id)
            .cloned();
        if let Some((failing_step, reason)) = failure
            && failing_step == step
        {
            return Err(RuntimeError::Fatal(reason));
        }
        if step == Step::Initialise {
            for report in self.hook_reports(spec.notebook_id, false) {
                progress.hook(&report).await;
            }
            if let Some(marker) = self.marker(spec.notebook_id) {
                std::fs::write(marker, b"")?;
            }
            self.running
                .lock()
                .expect("poisoned")
                .insert(spec.notebook_id);
        }
        Ok(())
    }

    fn is_running(&self, notebook_id: NotebookId) -> bool {
        self.running
            .lock()
            .expect("poisoned")
            .contains(&notebook_id)
    }
}

/// Runs the four steps in order with `progress` told of each; `work` does a step.
pub(crate) async fn each_step<F, Fut>(
    progress: &dyn Progress,
    mut work: F,
) -> Result<(), EnsureError>
where
    F: FnMut(Step) -> Fut,
    Fut: std::future::Future<Output = Result<(), RuntimeError>>,
{
    for step in Step::ALL {
        let aborted = |_| EnsureError {
            step,
            error: RuntimeError::Aborted,
        };
        progress.step_started(step).await.map_err(aborted)?;
        work(step)
            .await
            .map_err(|error| EnsureError { step, error })?;
        progress.step_done(step).await.map_err(aborted)?;
    }
    Ok(())
}

#[async_trait]
impl Runtime for PlaceholderRuntime {
    fn name(&self) -> &'static str {
        "placeholder"
    }

    async fn mount_storage(
        &self,
        notebook_id: NotebookId,
        mount: &StorageMount,
    ) -> Result<(), RuntimeError> {
        tokio::time::sleep(self.step_delay).await;
        if let Some(reason) = self
            .mount_failures
            .lock()
            .expect("poisoned")
            .get(&notebook_id)
        {
            return Err(RuntimeError::Fatal(reason.clone()));
        }
        self.mounts
            .lock()
            .expect("poisoned")
            .entry(notebook_id)
            .or_default()
            .insert(mount.dir.clone());
        Ok(())
    }

    async fn unmount_storage(
        &self,
        notebook_id: NotebookId,
        dir: &str,
    ) -> Result<(), RuntimeError> {
        tokio::time::sleep(self.step_delay).await;
        if let Some(dirs) = self.mounts.lock().expect("poisoned").get_mut(&notebook_id) {
            dirs.remove(dir);
        }
        Ok(())
    }

    async fn ensure(&self, spec: &SandboxSpec, progress: &dyn Progress) -> Result<(), EnsureError> {
        let already = self.is_running(spec.notebook_id);
        each_step(progress, |step| async move {
            if already {
                Ok(())
            } else {
                self.run_step(spec, step, progress).await
            }
        })
        .await?;
        let _ = self.events.send(SandboxEvent::Ready(spec.notebook_id));
        if !already {
            for report in self.hook_reports(spec.notebook_id, true) {
                let _ = self.events.send(SandboxEvent::Hook {
                    id: spec.notebook_id,
                    report,
                });
            }
        }
        let doomed = self
            .doomed
            .lock()
            .expect("poisoned")
            .remove(&spec.notebook_id);
        if let Some(reason) = doomed {
            self.crash(spec.notebook_id, reason);
        }
        Ok(())
    }

    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        if let Some(marker) = self.marker(notebook_id) {
            match std::fs::remove_file(marker) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.running.lock().expect("poisoned").remove(&notebook_id);
        // A stopped sandbox has nothing mounted.
        self.mounts.lock().expect("poisoned").remove(&notebook_id);
        Ok(())
    }

    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.stop(notebook_id).await
    }

    fn endpoint(&self, notebook_id: NotebookId) -> Option<Upstream> {
        self.endpoint
            .clone()
            .filter(|_| self.is_running(notebook_id))
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<SandboxEvent> {
        self.events.subscribe()
    }

    async fn inventory(&self) -> Vec<NotebookId> {
        self.running
            .lock()
            .expect("poisoned")
            .iter()
            .copied()
            .collect()
    }

    async fn adopt(&self, spec: &SandboxSpec) -> bool {
        self.is_running(spec.notebook_id)
    }

    fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            warm: 0,
            sandboxes: self.running_count(),
        }
    }

    fn images(&self) -> &dyn ImageStore {
        self
    }
}

/// The placeholder runs no image: every reference resolves, nothing is fetched. A save of a
/// running notebook "commits" after the configured delay: the image is named by a digest of
/// its reference and has a fixed size; nothing is stored.
#[async_trait]
impl ImageStore for PlaceholderRuntime {
    async fn resolve(
        &self,
        image: &ImageRef,
        _architecture: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        Ok(ResolvedImage::without_manifest(image, None))
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _progress: PullProgress<'_>,
    ) -> Result<ResolvedImage, RuntimeError> {
        self.resolve(image, "").await
    }

    async fn remove(&self, _image: &ImageRef) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn commit(
        &self,
        notebook_id: NotebookId,
        target: &ImageRef,
    ) -> Result<ResolvedImage, RuntimeError> {
        let delay = *self.commit_delay.lock().expect("poisoned");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !self.is_running(notebook_id) {
            return Err(RuntimeError::Fatal(format!(
                "notebook {notebook_id} has no sandbox to save"
            )));
        }
        let failure = self
            .commit_failures
            .lock()
            .expect("poisoned")
            .get(&notebook_id)
            .cloned();
        if let Some(reason) = failure {
            return Err(RuntimeError::Fatal(reason));
        }
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(target.to_string().as_bytes()));
        Ok(ResolvedImage {
            reference: target.clone(),
            digest: Some(format!("sha256:{digest}")),
            location: None,
            size: Some(PLACEHOLDER_IMAGE_BYTES),
            architecture: Some("amd64".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(notebook_id: NotebookId) -> SandboxSpec {
        SandboxSpec {
            notebook_id,
            image: ImageRef::Builtin("jupyterlab".to_owned()),
            vcpus: 1,
            memory_mib: 1024,
            volume_category: VolumeCategory::Efs,
            volume_capacity_gb: 50,
            token: String::new(),
            base_path: "/".to_owned(),
            origin: "http://localhost".to_owned(),
            hooks: ContainerHooks::default(),
        }
    }

    #[tokio::test]
    async fn running_sandboxes_survive_a_new_runtime_on_the_same_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = NotebookId::new_random();
        let first = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        first.ensure(&spec(id), &NoProgress).await.unwrap();
        let second = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        assert_eq!(second.inventory().await, vec![id]);
        assert!(second.adopt(&spec(id)).await);
        second.stop(id).await.unwrap();
        let third = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        assert!(!third.adopt(&spec(id)).await);
    }

    #[tokio::test]
    async fn an_injected_failure_fails_its_step_only() {
        let runtime = PlaceholderRuntime::new(Duration::ZERO);
        let id = NotebookId::new_random();
        runtime.fail_step(id, Step::PrepareCompute, "no capacity");
        let error = runtime.ensure(&spec(id), &NoProgress).await.unwrap_err();
        assert_eq!(error.step, Step::PrepareCompute);
        assert_eq!(error.error.to_string(), "no capacity");
    }

    #[tokio::test]
    async fn reported_pull_details_come_during_step_two() {
        #[derive(Default)]
        struct Heard(Mutex<Vec<String>>);
        #[async_trait]
        impl Progress for Heard {
            async fn step_started(&self, step: Step) -> Result<(), Refused> {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("start {}", step.number()));
                Ok(())
            }
            async fn step_done(&self, step: Step) -> Result<(), Refused> {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("done {}", step.number()));
                Ok(())
            }
            async fn step_detail(&self, step: Step, detail: &str) {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {detail}", step.number()));
            }
        }
        let runtime = PlaceholderRuntime::new(Duration::ZERO);
        let id = NotebookId::new_random();
        runtime.report_pull(id, &["pulling", "unpacking"]);
        let heard = Heard::default();
        runtime.ensure(&spec(id), &heard).await.unwrap();
        let heard = heard.0.into_inner().unwrap();
        assert_eq!(
            heard[2..6],
            ["start 2", "2 pulling", "2 unpacking", "done 2"],
            "{heard:?}"
        );
    }

    #[tokio::test]
    async fn a_running_notebook_saves_and_an_injected_failure_fails_the_save() {
        let runtime = PlaceholderRuntime::new(Duration::ZERO);
        let id = NotebookId::new_random();
        let target = ImageRef::parse("atelier.local/team/saved:v1");
        let error = runtime.commit(id, &target).await.unwrap_err();
        assert!(matches!(error, RuntimeError::Fatal(_)), "{error:?}");
        runtime.ensure(&spec(id), &NoProgress).await.unwrap();
        let saved = runtime.commit(id, &target).await.unwrap();
        assert_eq!(saved.reference, target);
        let digest = saved.digest.unwrap();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        assert_eq!(saved.size, Some(PLACEHOLDER_IMAGE_BYTES));
        runtime.fail_commit(id, "disk full");
        let error = runtime.commit(id, &target).await.unwrap_err();
        assert_eq!(error.to_string(), "disk full");
    }

    fn subject(dir: &std::path::Path) -> conformance::Subject<'static, PlaceholderRuntime> {
        let open = {
            let dir = dir.to_owned();
            move || {
                std::sync::Arc::new(
                    PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.clone())
                        .unwrap()
                        .with_endpoint(Upstream::Tcp(([127, 0, 0, 1], 9).into())),
                )
            }
        };
        conformance::Subject {
            open: Box::new(open),
            spec: Box::new(spec),
            crash: Box::new(|runtime, id| {
                runtime.crash(id, ExitReason::Exited("crashed".to_owned()));
            }),
        }
    }

    #[tokio::test]
    async fn the_placeholder_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run_all(&subject(dir.path())).await;
    }
}
