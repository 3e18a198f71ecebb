//! SSH into a notebook: per-notebook files under `ssh/{id}/` (host key, `sshd_config`,
//! `authorized_keys`), read-only at `/run/atelier/ssh` in the sandbox, and, per connection,
//! OpenSSH's `sshd -i` inside the sandbox's namespaces and cgroup as `ma-user` (the
//! sandbox's uid 1000, so the notebook's host uid), under the sandbox's seccomp filter, talking
//! to the client on the connection's socket itself, as under inetd.
use std::os::fd::OwnedFd;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use atelier_domain::NotebookId;
use tokio::process::Command;

use super::sys::{ChildSetup, HostIds};
use super::{LocalRuntime, Root, SSHD, step_error, write_atomically};
use crate::RuntimeError;

impl LocalRuntime {
    /// The notebook's SSH files: a host key made once (stable across stops and starts), owned
    /// by the uid the sandbox runs as so that its sshd can read it, and an `sshd_config`.
    pub(super) fn prepare_ssh(
        &self,
        id: NotebookId,
        root: &Root,
        ids: HostIds,
    ) -> Result<(), RuntimeError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = self.ssh_dir(id);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let (private, _) = atelier_domain::keypair::generate(&format!("notebook-{id}"))
                .map_err(|e| step_error("SSH host key", e))?;
            let partial = dir.join("ssh_host_ed25519_key.partial");
            std::io::Write::write_all(
                &mut std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&partial)?,
                private.as_bytes(),
            )?;
            std::fs::rename(&partial, &host_key)?;
        }
        std::os::unix::fs::lchown(&host_key, Some(ids.uid), Some(ids.gid))?;
        std::fs::set_permissions(&host_key, std::fs::Permissions::from_mode(0o600))?;
        let authorized = dir.join("authorized_keys");
        if !authorized.exists() {
            std::fs::write(&authorized, "")?;
        }
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))?;
        let path = root.path_env();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "# Written by Atelier for each start; sshd -i runs as ma-user in the sandbox.
HostKey /run/atelier/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /run/atelier/ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
AllowUsers ma-user
PermitRootLogin no
StrictModes no
MaxAuthTries 6
LoginGraceTime 30
ClientAliveInterval 60
PermitTTY yes
AllowTcpForwarding local
AllowStreamLocalForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
GatewayPorts no
PermitUserEnvironment no
PidFile none
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
SetEnv PATH={path} LANG=C.UTF-8 JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
"
            ),
        )?;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// Serves one SSH connection with `sshd -i` in the sandbox; returns when sshd exits.
    /// Dropping the future kills sshd (and so ends the session).
    pub(super) async fn serve_ssh(
        &self,
        notebook_id: NotebookId,
        authorized_keys: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<(), RuntimeError> {
        let mut command = self.ssh_command(notebook_id, authorized_keys)?;
        let socket = stream.into_std()?;
        socket.set_nonblocking(false)?;
        let output = socket.try_clone()?;
        command
            .stdin(Stdio::from(OwnedFd::from(socket)))
            .stdout(Stdio::from(OwnedFd::from(output)))
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| step_error("SSH: cannot start sshd", e))?;
        // Our copies of the socket go now: the connection ends when sshd does.
        drop(command);
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(notebook_id = %notebook_id, "sshd: {line}");
                }
            });
        }
        child.wait().await?;
        Ok(())
    }

    /// `nsenter` into the sandbox as uid 1000, then `sshd -i` on the connection: the child
    /// joins the notebook's cgroups and loads the seccomp filter before it executes nsenter.
    fn ssh_command(
        &self,
        notebook_id: NotebookId,
        authorized_keys: &str,
    ) -> Result<Command, RuntimeError> {
        let init = self.sandbox_init_pid(notebook_id).ok_or_else(|| {
            RuntimeError::Transient("SSH: the notebook's sandbox is not running".to_owned())
        })?;
        let dir = self.ssh_dir(notebook_id);
        if !dir.join("sshd_config").exists() {
            return Err(step_error(
                "SSH",
                "the sandbox was started without SSH files; restart the notebook",
            ));
        }
        // Written for every connection, so key pairs and endpoint changes apply at once.
        write_atomically(&dir.join("authorized_keys"), authorized_keys.as_bytes())?;
        // `ma-user`'s group: 100 in a container image, 1000 on the host's /usr.
        let gid = std::fs::read_to_string(self.run_dir(notebook_id).join("gid"))
            .ok()
            .and_then(|g| g.trim().parse::<u32>().ok())
            .unwrap_or(1000)
            .to_string();
        let mut command = Command::new("/usr/bin/nsenter");
        command
            .env_clear()
            .current_dir("/")
            .arg("-t")
            .arg(init.to_string())
            .args([
                "--user",
                "--mount",
                "--pid",
                "--ipc",
                "--uts",
                "--net",
                "--setuid",
                "1000",
                "--setgid",
                &gid,
                "--root",
                "--wd",
                SSHD,
                "-i",
                "-e",
                "-f",
                "/run/atelier/ssh/sshd_config",
            ]);
        ChildSetup {
            cgroup_procs: self.open_procs(notebook_id)?,
            fds: Vec::new(),
            ids: None,
            seccomp: self.seccomp.clone(),
        }
        .apply(&mut command);
        Ok(command)
    }
}
