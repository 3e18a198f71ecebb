//! SSH endpoints (spec §2.1.2/§2.2.2): one TCP port per SSH-enabled notebook, held from
//! create to delete and listened on while the notebook runs. Each connection is checked
//! against the endpoint's `allowed_access_ips` before a single byte is exchanged, then handed
//! to the runtime's `attach_shell` (the local runtime: OpenSSH's `sshd -i` inside the
//! notebook's sandbox), which only accepts the public keys of the endpoint's key pairs. The accept loop reads the endpoint from the index for every
//! connection, so an Update applies to the next connection.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use atelier_domain::{Notebook, NotebookId, NotebookStatus};
use atelier_runtime::{Runtime, RuntimeError};

use crate::activity::Activity;
use crate::error::ControlError;
use crate::service::NotebookService;

/// Where the SSH endpoints listen and how users reach them.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub listen_address: IpAddr,
    /// The host in `ssh://ma-user@HOST:PORT`.
    pub public_host: String,
    pub first_port: u16,
    pub last_port: u16,
}

/// Whether `peer` may connect to an endpoint with this allow-list (empty: anyone).
pub fn allowed(allow_list: &[String], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    allow_list.is_empty()
        || allow_list.iter().any(|entry| {
            let entry = entry.trim();
            match entry.parse::<IpNet>() {
                Ok(net) => net.contains(&peer),
                Err(_) => entry
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical() == peer),
            }
        })
}

pub struct SshService {
    settings: SshSettings,
    service: Arc<NotebookService>,
    runtime: Arc<dyn Runtime>,
    activity: Arc<Activity>,
    /// Ports held by notebooks (from create to delete).
    reserved: Mutex<HashSet<u16>>,
    /// The running listeners; cancelling one also ends its sessions.
    listeners: Mutex<HashMap<NotebookId, CancellationToken>>,
    shutdown: CancellationToken,
}

impl SshService {
    pub fn new(
        settings: SshSettings,
        service: Arc<NotebookService>,
        runtime: Arc<dyn Runtime>,
        activity: Arc<Activity>,
        shutdown: CancellationToken,
    ) -> Arc<SshService> {
        let reserved = service
            .all()
            .iter()
            .filter_map(|nb| nb.ssh_endpoint().and_then(|e| e.port))
            .collect();
        Arc::new(SshService {
            settings,
            service,
            runtime,
            activity,
            reserved: Mutex::new(reserved),
            listeners: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Whether notebooks can have SSH endpoints here at all.
    pub fn available(&self) -> bool {
        self.runtime.supports_ssh()
    }

    /// Takes the lowest free port of the range for a new SSH endpoint.
    pub fn reserve_port(&self) -> Result<u16, ControlError> {
        let mut reserved = self.reserved.lock().expect("poisoned");
        let port = (self.settings.first_port..=self.settings.last_port)
            .find(|p| !reserved.contains(p))
            .ok_or(ControlError::SshPortsExhausted {
                first: self.settings.first_port,
                last: self.settings.last_port,
            })?;
        reserved.insert(port);
        Ok(port)
    }

    /// Gives a port back (the notebook is deleted, or its create or update failed).
    pub fn release_port(&self, port: u16) {
        self.reserved.lock().expect("poisoned").remove(&port);
    }

    /// `ssh://ma-user@HOST:PORT` while the notebook's endpoint is listening.
    pub fn uri(&self, notebook: &Notebook) -> Option<String> {
        let port = notebook.ssh_endpoint()?.port?;
        let listening = notebook.status == NotebookStatus::Running
            && self
                .listeners
                .lock()
                .expect("poisoned")
                .contains_key(&notebook.id);
        let host = &self.settings.public_host;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        listening.then(|| format!("ssh://ma-user@{host}:{port}"))
    }

    /// Opens the notebook's SSH port (if it has an SSH endpoint). Idempotent.
    pub async fn open(self: &Arc<Self>, notebook: &Notebook) -> Result<(), ControlError> {
        let Some(port) = notebook.ssh_endpoint().and_then(|e| e.port) else {
            return Ok(());
        };
        if !self.available() {
            return Err(ControlError::SshUnsupported);
        }
        if self
            .listeners
            .lock()
            .expect("poisoned")
            .contains_key(&notebook.id)
        {
            return Ok(());
        }
        let listener = TcpListener::bind((self.settings.listen_address, port))
            .await
            .map_err(|source| ControlError::SshListen {
                address: self.settings.listen_address,
                port,
                source,
            })?;
        let token = self.shutdown.child_token();
        self.listeners
            .lock()
            .expect("poisoned")
            .insert(notebook.id, token.clone());
        tracing::info!(notebook_id = %notebook.id, port, "SSH endpoint open");
        let this = self.clone();
        let id = notebook.id;
        tokio::spawn(async move { this.accept_loop(id, listener, token).await });
        Ok(())
    }

    /// Closes the notebook's SSH port and ends its open sessions.
    pub fn close(&self, id: &NotebookId) {
        if let Some(token) = self.listeners.lock().expect("poisoned").remove(id) {
            token.cancel();
            tracing::info!(notebook_id = %id, "SSH endpoint closed");
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        id: NotebookId,
        listener: TcpListener,
        token: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = token.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(notebook_id = %id, %error, "SSH accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(notebook) = self.service.get_any(&id) else {
                return;
            };
            let Some(endpoint) = notebook.ssh_endpoint() else {
                continue;
            };
            // Refused before any byte: the client sees the connection closed.
            if notebook.status != NotebookStatus::Running
                || !allowed(&endpoint.allowed_access_ips, peer.ip())
            {
                tracing::info!(notebook_id = %id, peer = %peer.ip(), "SSH connection refused by the allow-list");
                drop(stream);
                continue;
            }
            let this = self.clone();
            let session_token = token.clone();
            tokio::spawn(async move {
                if let Err(error) = this.session(&notebook, stream, session_token).await {
                    tracing::warn!(notebook_id = %id, %error, "SSH session failed");
                }
            });
        }
    }

    async fn session(
        &self,
        notebook: &Notebook,
        stream: TcpStream,
        token: CancellationToken,
    ) -> Result<(), ControlError> {
        let id = notebook.id;
        let mut keys = String::new();
        for name in notebook
            .ssh_endpoint()
            .map(|e| e.key_pair_names.as_slice())
            .unwrap_or_default()
        {
            match self
                .service
                .store()
                .find_keypair(&notebook.project_id, name)
                .await
            {
                Ok(Some(keypair)) => {
                    keys.push_str(&keypair.public_key);
                    keys.push('\n');
                }
                // A deleted key pair simply grants nothing any more.
                Ok(None) => {}
                Err(error) => return Err(ControlError::from(error)),
            }
        }
        // No session (and no activity) for a sandbox that is not serving.
        if self.runtime.endpoint(id).is_none() {
            return Err(ControlError::Runtime(RuntimeError::Transient(
                "SSH: the notebook's sandbox is not running".to_owned(),
            )));
        }
        // The runtime bridges the connection to an SSH server in the sandbox; the session
        // lasts as long as this future (cancelling it ends the session).
        self.activity.add_ssh_sessions(id, 1);
        self.activity.record(id, self.service.now_ms());
        let outcome = tokio::select! {
            outcome = self.runtime.attach_shell(id, &keys, stream) => outcome,
            () = token.cancelled() => Ok(()),
        };
        self.activity.add_ssh_sessions(id, -1);
        self.activity.record(id, self.service.now_ms());
        outcome.map_err(ControlError::Runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_allow_list_takes_addresses_and_cidrs() {
        let list = vec!["203.0.113.7".to_owned(), "10.1.0.0/16".to_owned()];
        assert!(allowed(&list, ip("203.0.113.7")));
        assert!(allowed(&list, ip("10.1.200.3")));
        assert!(!allowed(&list, ip("10.2.0.1")));
        assert!(!allowed(&list, ip("203.0.113.8")));
        // An IPv4 client seen through an IPv6 socket.
        assert!(allowed(&list, ip("::ffff:203.0.113.7")));
        assert!(allowed(&[], ip("192.0.2.1")));
        assert!(allowed(&["2001:db8::/32".to_owned()], ip("2001:db8::1")));
    }
}
