//! Where a notebook's JupyterLab is reached: the runtime says, the gateway dials. Shared here
//! so that neither depends on the other.
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A Unix socket on this host (the local runtime binds one per sandbox).
    Unix(PathBuf),
    /// A TCP address (a Kubernetes pod or Service).
    Tcp(SocketAddr),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}
