//! What the control plane needs of the gateway, as a trait, so that it depends on no HTTP
//! crate: the server implements it over `atelier_gateway::Gateway`.
use std::future::Future;
use std::pin::Pin;

use atelier_domain::{NotebookId, Upstream};

pub trait NotebookGateway: Send + Sync + 'static {
    /// Routes the notebook's traffic to its JupyterLab at `upstream`, checked against `token`.
    fn set_route(&self, id: NotebookId, upstream: Upstream, token: String);
    /// Takes the notebook off the gateway (its open tunnels end).
    fn remove_route(&self, id: &NotebookId);
    /// The path JupyterLab serves under.
    fn base_path(&self, id: &NotebookId) -> String;
    /// The notebook's web origin (JupyterLab's `allow_origin`).
    fn origin(&self, id: &NotebookId) -> String;
    /// When the gateway last proxied traffic for the notebook, epoch ms.
    fn last_activity(&self, id: &NotebookId) -> Option<i64>;
    /// Whether a kernel is busy or a terminal open, as JupyterLab tells.
    fn jupyter_busy<'a>(
        &'a self,
        id: &'a NotebookId,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}
