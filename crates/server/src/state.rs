//! `AppState`: what every handler and middleware is given. It sits above the pieces it
//! holds (identity, metrics, rendering) and below the handlers that read it; the composition
//! root (`app.rs`) builds it.
use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use atelier_control::lease_keeper::LeaseKeeper;
use atelier_control::operations::NotebookOperations;
use atelier_control::orchestrator::Orchestrator;
use atelier_control::service::NotebookService;
use atelier_control::ssh::SshService;
use atelier_domain::{Image, Notebook};
use atelier_gateway::Gateway;
use atelier_wire::NotebookResp;

use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::render;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The notebook operations (create, update, start, stop, delete, lease, tags).
    pub operations: Arc<NotebookOperations>,
    /// Reads: the notebook index, images, flavors, the store.
    pub service: Arc<NotebookService>,
    pub orchestrator: Arc<Orchestrator>,
    pub identity: Arc<Identity>,
    pub lease_keeper: Arc<LeaseKeeper>,
    pub gateway: Arc<Gateway>,
    pub domain: Arc<(String, String)>,
    /// The region this server stands for (`auth.region`): the Keystone name of the main
    /// project in project discovery (`/v3/projects?name={region}`).
    pub region: Arc<str>,
    pub ssh: Arc<SshService>,
    /// Cancelled when the server stops: long-lived responses (progress streams) end with it.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// The largest container image RegisterImage accepts (`registry.max_image_mb`); 0: any.
    pub max_image_bytes: u64,
}

impl AppState {
    pub fn render(&self, notebook: &Notebook) -> NotebookResp {
        let image: Option<Arc<Image>> =
            self.service.image(&notebook.project_id, &notebook.image_id);
        render::notebook(
            notebook,
            &render::NotebookContext {
                addressing: self.gateway.addressing(),
                image: image.as_deref(),
                domain_id: &self.domain.0,
                domain_name: &self.domain.1,
                ssh_uri: self.ssh.uri(notebook),
            },
        )
    }
}

/// `/metrics` reads only the registry.
impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
