//! Where notebooks run. The orchestrator drives a [`Runtime`] through the four start steps;
//! this crate is the only one that will spawn processes or call Kubernetes.
//!
//! For now only [`PlaceholderRuntime`] exists: it starts nothing and completes each step after
//! a configurable delay. The local bubblewrap runtime replaces it as the default.
// `unsafe` lives in `local::sys` only (pre-exec setup, idmapped mounts); denied elsewhere.
#![deny(unsafe_code)]

mod cgroup;
pub mod local;

pub use local::{LocalConfig, LocalRuntime};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use atelier_domain::{NotebookId, Upstream, VolumeCategory};

/// Everything a runtime needs to know to start one notebook.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub notebook_id: NotebookId,
    pub image_swr_path: String,
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

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    StepFailed(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Runs one start step. Idempotent: running a step again after a crash is safe.
    async fn run_step(&self, spec: &SandboxSpec, step: Step) -> Result<(), RuntimeError>;
    /// Stops the notebook's sandbox; the work volume is kept. Idempotent.
    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError>;
    /// Stops the sandbox and removes the work volume. Idempotent.
    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError>;
    /// Whether a sandbox for the notebook is alive (used when reconciling after a restart;
    /// a runtime adopts a live sandbox here).
    async fn is_running(&self, notebook_id: NotebookId) -> bool;
    /// Where the gateway reaches the notebook's JupyterLab (a Unix socket on this host, or a
    /// TCP address), if the runtime has a sandbox for it.
    fn endpoint(&self, _notebook_id: NotebookId) -> Option<Upstream> {
        None
    }
    /// Resolves when the notebook's sandbox ends without being stopped, with the reason
    /// (e.g. killed for exceeding its memory); `None` if there is no such sandbox or it was
    /// stopped.
    async fn wait_exit(&self, _notebook_id: NotebookId) -> Option<String> {
        None
    }
    /// Grows the work volume of a running notebook to `spec.volume_capacity_gb` (EVS only;
    /// never shrinks). Idempotent.
    async fn resize_volume(&self, _spec: &SandboxSpec) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Bytes in use on the notebook's work volume, where the runtime can tell (a mounted,
    /// sized volume).
    fn volume_usage(&self, _notebook_id: NotebookId) -> Option<u64> {
        None
    }
    /// Notebooks that have sandbox remains on this host (processes, cgroups), so that the
    /// server can remove those no notebook owns after a crash.
    async fn leftovers(&self) -> Vec<NotebookId> {
        Vec::new()
    }
    /// Called once when the server stops (the local runtime drains its warm pool).
    async fn shutdown(&self) {}
    /// Idle warm sandboxes ready for a start (metrics).
    fn warm_sandboxes(&self) -> usize {
        0
    }
    /// Whether [`Runtime::ssh_session`] can serve SSH connections.
    fn supports_ssh(&self) -> bool {
        false
    }
    /// A command that serves one SSH connection on its stdin and stdout: an SSH server in the
    /// notebook's sandbox (its files, processes and limits) that logs in `ma-user` with one
    /// of `authorized_keys` (OpenSSH `authorized_keys` lines) and nothing else.
    async fn ssh_session(
        &self,
        _notebook_id: NotebookId,
        _authorized_keys: &str,
    ) -> Result<tokio::process::Command, RuntimeError> {
        Err(RuntimeError::StepFailed(format!(
            "the {} runtime has no SSH access",
            self.name()
        )))
    }
}

/// Starts nothing: each step completes after `step_delay`. Tests can make a step fail.
///
/// With a state directory it records each "running sandbox" as a file there, so that its
/// sandboxes outlive a restart of the server the way detached processes would.
#[derive(Default)]
pub struct PlaceholderRuntime {
    step_delay: Duration,
    state_dir: Option<PathBuf>,
    running: Mutex<HashSet<NotebookId>>,
    failures: Mutex<HashMap<NotebookId, (Step, String)>>,
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
            failures: Mutex::default(),
        })
    }

    fn marker(&self, notebook_id: NotebookId) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|dir| dir.join(format!("{notebook_id}.running")))
    }

    /// Makes `step` fail with `reason` on the next starts of `notebook_id`.
    pub fn fail_step(&self, notebook_id: NotebookId, step: Step, reason: &str) {
        self.failures
            .lock()
            .expect("poisoned")
            .insert(notebook_id, (step, reason.to_owned()));
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().expect("poisoned").len()
    }
}

#[async_trait]
impl Runtime for PlaceholderRuntime {
    fn name(&self) -> &'static str {
        "placeholder"
    }

    async fn run_step(&self, spec: &SandboxSpec, step: Step) -> Result<(), RuntimeError> {
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
            return Err(RuntimeError::StepFailed(reason));
        }
        if step == Step::Initialise {
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

    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        if let Some(marker) = self.marker(notebook_id) {
            match std::fs::remove_file(marker) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.running.lock().expect("poisoned").remove(&notebook_id);
        Ok(())
    }

    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.stop(notebook_id).await
    }

    async fn is_running(&self, notebook_id: NotebookId) -> bool {
        self.running
            .lock()
            .expect("poisoned")
            .contains(&notebook_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(notebook_id: NotebookId) -> SandboxSpec {
        SandboxSpec {
            notebook_id,
            image_swr_path: String::new(),
            vcpus: 1,
            memory_mib: 1024,
            volume_category: VolumeCategory::Efs,
            volume_capacity_gb: 50,
            token: String::new(),
            base_path: "/".to_owned(),
            origin: "http://localhost".to_owned(),
        }
    }

    #[tokio::test]
    async fn running_sandboxes_survive_a_new_runtime_on_the_same_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = NotebookId::new_random();
        let first = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        for step in Step::ALL {
            first.run_step(&spec(id), step).await.unwrap();
        }
        let second = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        assert!(second.is_running(id).await);
        second.stop(id).await.unwrap();
        let third = PlaceholderRuntime::with_state_dir(Duration::ZERO, dir.path().into()).unwrap();
        assert!(!third.is_running(id).await);
    }

    #[tokio::test]
    async fn an_injected_failure_fails_its_step_only() {
        let runtime = PlaceholderRuntime::new(Duration::ZERO);
        let id = NotebookId::new_random();
        runtime.fail_step(id, Step::PrepareCompute, "no capacity");
        assert!(
            runtime
                .run_step(&spec(id), Step::PrepareStorage)
                .await
                .is_ok()
        );
        let error = runtime
            .run_step(&spec(id), Step::PrepareCompute)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "no capacity");
    }
}
