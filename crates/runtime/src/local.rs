//! The local runtime: one bubblewrap sandbox per notebook, inside a cgroup with the flavor's
//! limits, running JupyterLab on a Unix socket that only the gateway reaches.
//!
//! Layout under the data dir: `volumes/{id}` (EFS: a directory; EVS: `{id}.ext4`, a sparse ext4
//! image loop-mounted at `mounts/{id}`), `run/{id}/` (the socket, the sandbox's pid, its
//! passwd/group and the Jupyter log), `ssh/{id}/` (the notebook's SSH host key, `sshd_config`
//! and `authorized_keys`, read-only at `/etc/atelier-ssh` in the sandbox). Sandboxes outlive a restart of the server and are adopted
//! again from `run/{id}/pid`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use atelier_domain::{NotebookId, VolumeCategory};

use crate::cgroup::{self, Cgroup, Hierarchy, Limits};
use crate::{Runtime, RuntimeError, SandboxSpec, Step};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    /// Where provisioned image environments live (shared by data dirs in tests).
    pub image_dir: PathBuf,
    /// The interpreter new image environments are made from.
    pub python: PathBuf,
    /// What `pip install` puts into the built-in JupyterLab image.
    pub jupyter_packages: Vec<String>,
    /// How long JupyterLab may take to answer `/api/status`.
    pub ready_timeout: Duration,
    /// Between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
    pub pids_max: u64,
    /// Warm sandboxes kept per image and flavor (0: none).
    pub warm_pool: usize,
}

/// Starts JupyterLab without the imports and checks a notebook does not need (~0.4 s
/// instead of ~1.8 s to answer).
const JUPYTER_LAUNCHER: &str = include_str!("jupyter_launch.py");

/// Page settings of the built-in image: no build checks, no news, no language servers.
const PAGE_CONFIG: &str = r#"{"buildAvailable": false, "buildCheck": false,
 "disabledExtensions": {"@jupyterlab/lsp-extension": true,
   "@jupyterlab/notebook-extension:language-server": true,
   "@jupyterlab/fileeditor-extension:language-server": true}}
"#;
const SETTINGS_OVERRIDES: &str = r#"{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
"#;
/// Kernel settings of the built-in image: no sleep before each execute reply, no waiting
/// flushes of empty output streams (~1.5 ms less per cell execution).
const KERNEL_CONFIG: &str = include_str!("ipython_kernel_config.py");

/// OpenSSH's server (Debian's `openssh-server`), started once per connection in the sandbox.
const SSHD: &str = "/usr/sbin/sshd";

/// Replaces `path` with `contents` in one step: a reader (a kernel starting, sshd reading
/// `authorized_keys`) sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}", unique_name()));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

/// Writes `contents` to `path` unless it holds them already (other servers may share the
/// image dir and start kernels from it).
fn write_if_changed(path: &Path, contents: &str) -> Result<(), RuntimeError> {
    if std::fs::read(path).is_ok_and(|current| current == contents.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomically(path, contents.as_bytes())?;
    Ok(())
}

/// A name no other file or warm sandbox of this process uses (`{pid}-{n}`).
fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What happened to a sandbox that ended without being asked to.
type ExitReason = Option<String>;

struct Sandbox {
    pid: i32,
    cgroup: Option<Cgroup>,
    /// The cgroup as the supervisor sees it (renamed when a warm sandbox is claimed).
    cell: Arc<Mutex<Option<Cgroup>>>,
    exited: watch::Receiver<ExitReason>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

pub struct LocalRuntime {
    config: LocalConfig,
    hierarchy: Option<Hierarchy>,
    sandboxes: Mutex<HashMap<NotebookId, Sandbox>>,
    /// Held while provisioning; `true` once this process has brought the built-in image's
    /// kernel settings up to date (checked at the first start, not at every one).
    provisioning: tokio::sync::Mutex<bool>,
    /// Itself, for background refills of the warm pool.
    me: std::sync::Weak<LocalRuntime>,
    /// Idle warm sandboxes.
    pool: Mutex<Vec<Warm>>,
    /// Pool keys being refilled now.
    refilling: Mutex<std::collections::HashSet<PoolKey>>,
    /// Set at shutdown: no more refills.
    closing: std::sync::atomic::AtomicBool,
}

/// Where a sandbox's pieces come from.
struct Layout {
    run_dir: PathBuf,
    /// Bound at /home/ma-user/work.
    work: PathBuf,
    /// Bound read-only at /etc/atelier-ssh.
    ssh: PathBuf,
    hostname: String,
    /// None for a warm sandbox: it waits for its claim.
    base_url: Option<String>,
}

/// What a warm sandbox must match to serve a start: the image and the flavor's limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    prefix: PathBuf,
    vcpus: u32,
    memory_mib: u64,
}

/// An idle warm sandbox.
struct Warm {
    key: PoolKey,
    slot: String,
    sandbox: Sandbox,
}

fn step_error(context: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::StepFailed(format!("{context}: {error}"))
}

async fn run(program: &str, args: &[&str]) -> Result<String, RuntimeError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| step_error(&format!("cannot run {program}"), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(step_error(
            &format!("{program} {}", args.join(" ")),
            stderr.trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn file_len(path: &Path) -> Result<u64, RuntimeError> {
    Ok(std::fs::metadata(path)?.len())
}

/// The size of the ext4 filesystem in an image (block count × block size).
async fn filesystem_len(image: &Path) -> Result<u64, RuntimeError> {
    let header = run("dumpe2fs", &["-h", &image.to_string_lossy()]).await?;
    let field = |name: &str| -> Option<u64> {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(count), Some(size)) => Ok(count * size),
        _ => Err(step_error("EVS volume", "cannot read the filesystem size")),
    }
}

fn is_mounted(mount_point: &Path) -> bool {
    let target = mount_point.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(target.as_ref()))
}

impl LocalRuntime {
    /// Checks what the runtime needs (bubblewrap, cgroups) and finds sandboxes left running.
    pub fn new(mut config: LocalConfig) -> Result<Arc<LocalRuntime>, RuntimeError> {
        for dir in ["volumes", "mounts", "run"] {
            std::fs::create_dir_all(config.data_dir.join(dir))?;
        }
        std::fs::create_dir_all(&config.image_dir)?;
        // Every path ends up on bwrap's command line and in venv scripts, which a relative
        // path (the default data dir is `./atelier-data`) would break inside the sandbox.
        config.data_dir = std::fs::canonicalize(&config.data_dir)?;
        config.image_dir = std::fs::canonicalize(&config.image_dir)?;
        let hierarchy = cgroup::detect();
        if hierarchy.is_none() {
            tracing::warn!(
                "no writable cgroup hierarchy: notebooks will run without resource limits"
            );
        }
        Ok(Arc::new_cyclic(|me| LocalRuntime {
            config,
            hierarchy,
            sandboxes: Mutex::new(HashMap::new()),
            provisioning: tokio::sync::Mutex::new(false),
            me: me.clone(),
            pool: Mutex::new(Vec::new()),
            refilling: Mutex::new(std::collections::HashSet::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn run_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("run").join(id.to_string())
    }

    /// Where the notebook's JupyterLab listens.
    pub fn socket_path(&self, id: NotebookId) -> PathBuf {
        self.run_dir(id).join("jupyter.sock")
    }

    fn ssh_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("ssh").join(id.to_string())
    }

    /// The notebook's SSH files: a host key made once (stable across stops and starts) and
    /// an `sshd_config` for `sshd -i` running as `ma-user` inside the sandbox.
    fn prepare_ssh(&self, id: NotebookId, prefix: &Path) -> Result<(), RuntimeError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = self.ssh_dir(id);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
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
        let authorized = dir.join("authorized_keys");
        if !authorized.exists() {
            std::fs::write(&authorized, "")?;
        }
        let prefix = prefix.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "# Written by Atelier for each start; sshd -i runs as ma-user in the sandbox.
HostKey /etc/atelier-ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/atelier-ssh/authorized_keys
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
SetEnv PATH={prefix}/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
"
            ),
        )?;
        Ok(())
    }

    /// The first process inside the sandbox's namespaces (bubblewrap's init), to enter them.
    fn sandbox_init_pid(&self, id: NotebookId) -> Option<i32> {
        let pid = self
            .sandboxes
            .lock()
            .expect("poisoned")
            .get(&id)
            .map(|s| s.pid)
            .or_else(|| {
                std::fs::read_to_string(self.run_dir(id).join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
            })?;
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn volume_dir(&self, id: NotebookId, category: VolumeCategory) -> PathBuf {
        match category {
            VolumeCategory::Evs => self.config.data_dir.join("mounts").join(id.to_string()),
            _ => self.config.data_dir.join("volumes").join(id.to_string()),
        }
    }

    fn evs_image(&self, id: NotebookId) -> PathBuf {
        self.config
            .data_dir
            .join("volumes")
            .join(format!("{id}.ext4"))
    }

    async fn prepare_storage(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let dir = self.volume_dir(spec.notebook_id, spec.volume_category);
        std::fs::create_dir_all(&dir)?;
        if spec.volume_category != VolumeCategory::Evs {
            return Ok(());
        }
        let image = self.evs_image(spec.notebook_id);
        let bytes = spec.volume_capacity_gb.max(1) as u64 * 1024 * 1024 * 1024;
        if !image.exists() {
            let file = std::fs::File::create(&image)?;
            file.set_len(bytes)?;
            run(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", &image.to_string_lossy()],
            )
            .await?;
        }
        if !is_mounted(&dir) {
            // Grow first, unmounted: the safe path, and the only one where online resizing
            // is not permitted.
            if file_len(&image)? < bytes {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&image)?
                    .set_len(bytes)?;
            }
            if filesystem_len(&image).await? < file_len(&image)? {
                run("e2fsck", &["-f", "-y", &image.to_string_lossy()]).await?;
                run("resize2fs", &[&image.to_string_lossy()]).await?;
            }
            run(
                "mount",
                &[
                    "-o",
                    "loop",
                    &image.to_string_lossy(),
                    &dir.to_string_lossy(),
                ],
            )
            .await?;
        } else if file_len(&image)? < bytes {
            self.grow_online(&image, &dir, bytes).await;
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(())
    }

    /// Grows a mounted EVS volume. Where the kernel refuses online resizing (some container
    /// hosts), the file is still extended and the filesystem follows at the next start.
    async fn grow_online(&self, image: &Path, mount_point: &Path, bytes: u64) {
        let outcome: Result<(), RuntimeError> = async {
            std::fs::OpenOptions::new()
                .write(true)
                .open(image)?
                .set_len(bytes)?;
            let source = run(
                "findmnt",
                &["-n", "-o", "SOURCE", &mount_point.to_string_lossy()],
            )
            .await?;
            let device = source.trim();
            run("losetup", &["-c", device]).await?;
            run("resize2fs", &[device]).await?;
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            tracing::warn!(image = %image.display(), %error, "online growth refused; the volume grows at the next start");
        }
    }

    /// The Python environment prefix of the notebook's image; provisions the built-in one.
    async fn image_prefix(&self, spec: &SandboxSpec) -> Result<PathBuf, RuntimeError> {
        if let Some(prefix) = spec.image_swr_path.strip_prefix("local://") {
            let prefix = PathBuf::from(prefix);
            if !prefix.join("bin/jupyter-lab").exists() || !prefix.join("bin/python").exists() {
                return Err(step_error(
                    "image",
                    format!("{} has no bin/jupyter-lab", prefix.display()),
                ));
            }
            return Ok(prefix);
        }
        if !spec.image_swr_path.starts_with("atelier.local/") {
            return Err(step_error(
                "image",
                format!(
                    "{} is not an image the local runtime can run (use local:///prefix)",
                    spec.image_swr_path
                ),
            ));
        }
        let prefix = self.config.image_dir.join("jupyterlab");
        self.ensure_provisioned(&prefix).await?;
        Ok(prefix)
    }

    /// Provisions the built-in JupyterLab image now (`atelier image pull`); returns its prefix.
    pub async fn pull_builtin(&self) -> Result<PathBuf, RuntimeError> {
        let prefix = self.config.image_dir.join("jupyterlab");
        self.ensure_provisioned(&prefix).await?;
        Ok(prefix)
    }

    /// Provisions `prefix` unless a complete copy exists. Servers and tests may share an image
    /// dir: an exclusive file lock makes one of them provision while the others wait.
    async fn ensure_provisioned(&self, prefix: &Path) -> Result<(), RuntimeError> {
        let mut settings_current = self.provisioning.lock().await;
        if prefix.join(".complete").exists() {
            // Images provisioned by an older Atelier get the current kernel settings. They
            // only make kernels faster: an image dir that refuses the write still runs.
            if !*settings_current {
                let settings = prefix.join("etc/ipython/ipython_kernel_config.py");
                if let Err(error) = write_if_changed(&settings, KERNEL_CONFIG) {
                    tracing::warn!(path = %settings.display(), %error,
                        "cannot update the image's kernel settings; its kernels keep ipykernel's defaults");
                }
                *settings_current = true;
            }
            return Ok(());
        }
        let lock_path = self.config.image_dir.join(".provision.lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| step_error("image provisioning", e))??;
        let outcome = if prefix.join(".complete").exists() {
            // Another server provisioned it; the next start checks its settings.
            Ok(())
        } else {
            let provisioned = self.provision(prefix).await;
            *settings_current = provisioned.is_ok();
            provisioned
        };
        drop(lock);
        outcome
    }

    /// Makes the built-in image: a virtual environment with JupyterLab from PyPI. A venv is
    /// tied to its path, so it is built in place; `.complete` marks it usable.
    async fn provision(&self, prefix: &Path) -> Result<(), RuntimeError> {
        tracing::info!(prefix = %prefix.display(), "provisioning the JupyterLab image from PyPI");
        if prefix.exists() {
            std::fs::remove_dir_all(prefix)?;
        }
        let python = self.config.python.to_string_lossy().into_owned();
        run(&python, &["-m", "venv", &prefix.to_string_lossy()])
            .await
            .map_err(|e| step_error("image provisioning failed (python3 -m venv)", e))?;
        let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
        args.extend(self.config.jupyter_packages.iter().map(String::as_str));
        run(&prefix.join("bin/pip").to_string_lossy(), &args)
            .await
            .map_err(|e| step_error("image provisioning failed (pip install)", e))?;
        let labconfig = prefix.join("etc/jupyter/labconfig");
        std::fs::create_dir_all(&labconfig)?;
        std::fs::write(labconfig.join("page_config.json"), PAGE_CONFIG)?;
        let settings = prefix.join("share/jupyter/lab/settings");
        std::fs::create_dir_all(&settings)?;
        std::fs::write(settings.join("overrides.json"), SETTINGS_OVERRIDES)?;
        write_if_changed(
            &prefix.join("etc/ipython/ipython_kernel_config.py"),
            KERNEL_CONFIG,
        )?;
        std::fs::write(prefix.join(".complete"), b"")?;
        Ok(())
    }

    fn write_identity_files(&self, run_dir: &Path) -> Result<(), RuntimeError> {
        std::fs::write(
            run_dir.join("passwd"),
            "root:x:0:0:root:/root:/usr/sbin/nologin\nma-user:x:1000:1000:ma-user:/home/ma-user/work:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )?;
        std::fs::write(
            run_dir.join("group"),
            "root:x:0:\nma-user:x:1000:\nnogroup:x:65534:\n",
        )?;
        Ok(())
    }

    fn bwrap_args(&self, layout: &Layout, prefix: &Path) -> Vec<String> {
        let prefix = prefix.to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "--unshare-all",
            "--share-net",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/home",
            "--dir",
            "/etc",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for shared in [
            "/etc/ssl",
            "/etc/ca-certificates",
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/localtime",
            "/etc/nsswitch.conf",
            "/etc/alternatives",
        ] {
            if Path::new(shared).exists() {
                args.extend(["--ro-bind".into(), shared.into(), shared.into()]);
            }
        }
        let run_dir = layout.run_dir.to_string_lossy().into_owned();
        args.extend([
            "--ro-bind".into(),
            layout.ssh.to_string_lossy().into_owned(),
            "/etc/atelier-ssh".into(),
            "--ro-bind".into(),
            format!("{run_dir}/passwd"),
            "/etc/passwd".into(),
            "--ro-bind".into(),
            format!("{run_dir}/group"),
            "/etc/group".into(),
            "--ro-bind".into(),
            prefix.clone(),
            prefix.clone(),
            "--bind".into(),
            layout.work.to_string_lossy().into_owned(),
            "/home/ma-user/work".into(),
            "--bind".into(),
            run_dir,
            "/run/atelier".into(),
            "--uid".into(),
            "1000".into(),
            "--gid".into(),
            "1000".into(),
            "--hostname".into(),
            layout.hostname.clone(),
            "--clearenv".into(),
            "--setenv".into(),
            "LANG".into(),
            "C.UTF-8".into(),
            "--setenv".into(),
            "TERM".into(),
            "xterm-256color".into(),
            "--setenv".into(),
            "HOME".into(),
            "/home/ma-user/work".into(),
            "--setenv".into(),
            "USER".into(),
            "ma-user".into(),
            "--setenv".into(),
            "SHELL".into(),
            "/bin/bash".into(),
            "--setenv".into(),
            "PATH".into(),
            format!("{prefix}/bin:/usr/local/bin:/usr/bin:/bin"),
            "--setenv".into(),
            "JUPYTER_RUNTIME_DIR".into(),
            "/tmp/jupyter-runtime".into(),
            "--setenv".into(),
            "ATELIER_CLAIM".into(),
            if layout.base_url.is_none() {
                "/run/atelier/claim".into()
            } else {
                String::new()
            },
            "--chdir".into(),
            "/home/ma-user/work".into(),
            "--".into(),
            format!("{prefix}/bin/python"),
            "/run/atelier/launch.py".into(),
            "--ServerApp.sock=/run/atelier/jupyter.sock".into(),
            "--ServerApp.root_dir=/home/ma-user/work".into(),
            // The gateway's token cookie is SameSite=Lax on its own origin: cross-site
            // requests never carry it, so Jupyter's own XSRF check adds nothing.
            "--ServerApp.disable_check_xsrf=True".into(),
        ]);
        // A warm sandbox learns its notebook (and so its base URL) when it is claimed.
        if let Some(base_url) = &layout.base_url {
            args.push(format!("--ServerApp.base_url={base_url}"));
        }
        args
    }

    async fn initialise(
        &self,
        spec: &SandboxSpec,
        prefix: &Path,
        limits: Limits,
    ) -> Result<(), RuntimeError> {
        let id = spec.notebook_id;
        // A sandbox already serving (adopted after a restart, or a retried step) is reused.
        if self.alive(id) && probe(&self.socket_path(id), id).await {
            return Ok(());
        }
        self.kill_sandbox(id, Duration::ZERO).await;
        self.prepare_ssh(id, prefix)?;
        let key = PoolKey {
            prefix: prefix.to_owned(),
            vcpus: limits.vcpus,
            memory_mib: limits.memory_mib,
        };
        if self.config.warm_pool > 0 {
            let warm = self.take_warm(&key);
            // Whatever happens next, the pool refills in the background.
            self.refill(key.clone(), limits);
            if let Some(warm) = warm {
                match self.claim(warm, spec).await {
                    Ok(exited) => return self.wait_ready(id, exited).await,
                    Err(error) => {
                        tracing::warn!(notebook_id = %id, %error, "warm sandbox unusable; starting cold");
                        self.kill_sandbox(id, Duration::ZERO).await;
                    }
                }
            }
        }
        let layout = Layout {
            run_dir: self.run_dir(id),
            work: self.volume_dir(id, spec.volume_category),
            ssh: self.ssh_dir(id),
            hostname: format!("notebook-{}", &id.to_string()[..8]),
            base_url: Some(format!("/{id}/")),
        };
        let cgroup = self.hierarchy.map(|h| Cgroup::for_notebook(h, id));
        let sandbox = self.launch(&layout, prefix, limits, cgroup).await?;
        let exited = sandbox.exited.clone();
        self.sandboxes.lock().expect("poisoned").insert(id, sandbox);
        self.wait_ready(id, exited).await
    }

    /// Starts bwrap with `layout` in its cgroup and supervises it (exit, OOM kills).
    async fn launch(
        &self,
        layout: &Layout,
        prefix: &Path,
        limits: Limits,
        cgroup: Option<Cgroup>,
    ) -> Result<Sandbox, RuntimeError> {
        let run_dir = &layout.run_dir;
        std::fs::create_dir_all(run_dir)?;
        std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let _ = std::fs::remove_file(run_dir.join("jupyter.sock"));
        self.write_identity_files(run_dir)?;
        std::fs::write(run_dir.join("launch.py"), JUPYTER_LAUNCHER)?;
        if let Some(cgroup) = &cgroup {
            cgroup.create(limits).map_err(|e| step_error("cgroup", e))?;
        }
        let log = std::fs::File::create(run_dir.join("jupyter.log"))?;
        // Join the cgroups first, then become bwrap: the whole sandbox is limited from its start.
        let mut script = String::new();
        for procs in cgroup.as_ref().map(Cgroup::procs_files).unwrap_or_default() {
            script.push_str(&format!("echo $$ > '{}' && ", procs.display()));
        }
        script.push_str("exec bwrap \"$@\"");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .arg("bwrap")
            .args(self.bwrap_args(layout, prefix))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| step_error("cannot start bwrap", e))?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| step_error("sandbox", "exited at once"))?;
        std::fs::write(run_dir.join("pid"), pid.to_string())?;
        let (sender, exited) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let memory_mib = limits.memory_mib;
        let cell = Arc::new(Mutex::new(cgroup.clone()));
        let watch_cell = cell.clone();
        let watch_stopping = stopping.clone();
        tokio::spawn(async move {
            // The cgroup is renamed when a warm sandbox is claimed: read it from the cell.
            let current = || watch_cell.lock().expect("poisoned").clone();
            let baseline = current().as_ref().map(Cgroup::oom_kills).unwrap_or(0);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let reason = loop {
                tokio::select! {
                    status = child.wait() => {
                        let oom = current().as_ref().map(Cgroup::oom_kills).unwrap_or(0) > baseline;
                        break if oom {
                            format!("out of memory: the kernel killed the notebook for exceeding its {memory_mib} MiB memory limit")
                        } else {
                            format!("JupyterLab exited unexpectedly ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))
                        };
                    }
                    _ = tick.tick() => {
                        let cgroup = current();
                        let oom = cgroup.as_ref().map(Cgroup::oom_kills).unwrap_or(0) > baseline;
                        if oom && !watch_stopping.load(std::sync::atomic::Ordering::SeqCst) {
                            // A process was OOM-killed: fail the notebook rather than let it
                            // limp on with a dead kernel.
                            if let Some(cgroup) = &cgroup {
                                signal_all(cgroup, pid, Signal::SIGKILL);
                            }
                            let _ = child.wait().await;
                            break format!("out of memory: the kernel killed a process that exceeded the notebook's {memory_mib} MiB memory limit");
                        }
                    }
                }
            };
            if !watch_stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sender.send(Some(reason));
            } else {
                let _ = sender.send(Some(String::new()));
            }
        });
        Ok(Sandbox {
            pid,
            cgroup,
            cell,
            exited,
            stopping,
        })
    }

    /// Waits until the notebook's JupyterLab answers on its socket.
    async fn wait_ready(
        &self,
        id: NotebookId,
        exited: watch::Receiver<ExitReason>,
    ) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let socket = self.socket_path(id);
        loop {
            if probe(&socket, id).await {
                return Ok(());
            }
            if exited.borrow().is_some() {
                let log = self.run_dir(id).join("jupyter.log");
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                return Err(step_error(
                    "JupyterLab exited during start",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill_sandbox(id, Duration::ZERO).await;
                return Err(step_error(
                    "JupyterLab did not become ready",
                    format!(
                        "no answer on /api/status within {:?}",
                        self.config.ready_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // --- the warm pool ----------------------------------------------------------------------

    fn pool_dir(&self, slot: &str) -> PathBuf {
        self.config.data_dir.join("pool").join(slot)
    }

    /// An idle warm sandbox for `key`, if one is alive.
    fn take_warm(&self, key: &PoolKey) -> Option<Warm> {
        let mut pool = self.pool.lock().expect("poisoned");
        let index = pool
            .iter()
            .position(|w| w.key == *key && w.sandbox.exited.borrow().is_none())?;
        Some(pool.swap_remove(index))
    }

    /// Tops the pool for `key` up to its size, in the background, one sandbox at a time.
    fn refill(&self, key: PoolKey, limits: Limits) {
        let Some(this) = self.me.upgrade() else {
            return;
        };
        if !self.refilling.lock().expect("poisoned").insert(key.clone()) {
            return;
        }
        tokio::spawn(async move {
            loop {
                let have = this
                    .pool
                    .lock()
                    .expect("poisoned")
                    .iter()
                    .filter(|w| w.key == key)
                    .count();
                if have >= this.config.warm_pool
                    || this.closing.load(std::sync::atomic::Ordering::SeqCst)
                {
                    break;
                }
                match this.spawn_warm(&key, limits).await {
                    Ok(warm) => this.pool.lock().expect("poisoned").push(warm),
                    Err(error) => {
                        tracing::warn!(%error, "cannot start a warm sandbox");
                        break;
                    }
                }
            }
            this.refilling.lock().expect("poisoned").remove(&key);
        });
    }

    /// A sandbox started ahead of need: JupyterLab imported, waiting on `/run/atelier/claim`
    /// for the notebook it will serve. Its work dir and SSH dir are empty shared mount
    /// points; a claim mounts the notebook's volume and SSH files on them, which the
    /// sandbox sees through mount propagation.
    async fn spawn_warm(&self, key: &PoolKey, limits: Limits) -> Result<Warm, RuntimeError> {
        // Remains of an earlier server are reaped at boot, before any refill: no clash.
        let slot = format!("pool-{}", unique_name());
        let dir = self.pool_dir(&slot);
        let (work, ssh) = (dir.join("work"), dir.join("ssh"));
        for point in [&work, &ssh] {
            std::fs::create_dir_all(point)?;
            let point = point.to_string_lossy();
            run("mount", &["--bind", &point, &point]).await?;
            run("mount", &["--make-shared", &point]).await?;
        }
        let run_dir = self.config.data_dir.join("run").join(&slot);
        std::fs::create_dir_all(&run_dir)?;
        nix::unistd::mkfifo(
            &run_dir.join("claim"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| step_error("claim fifo", e))?;
        let layout = Layout {
            run_dir,
            work,
            ssh,
            hostname: "notebook".to_owned(),
            base_url: None,
        };
        let cgroup = self.hierarchy.map(|h| Cgroup::named(h, &slot));
        let warm_marker = layout.run_dir.join("warm");
        let sandbox = match self.launch(&layout, &key.prefix, limits, cgroup).await {
            Ok(sandbox) => sandbox,
            Err(error) => {
                self.discard_slot(&slot, None).await;
                return Err(error);
            }
        };
        // Only a sandbox whose JupyterLab has finished importing counts as warm.
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        while !warm_marker.exists() {
            if sandbox.exited.borrow().is_some() || tokio::time::Instant::now() >= deadline {
                sandbox
                    .stopping
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.destroy_slot(&slot, Some(sandbox.pid), sandbox.cgroup.as_ref())
                    .await;
                return Err(step_error("warm sandbox", "JupyterLab did not get ready"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Warm {
            key: key.clone(),
            slot,
            sandbox,
        })
    }

    /// Makes a warm sandbox the notebook's: its volume and SSH files mounted in, its run dir
    /// and cgroup renamed after the notebook, then JupyterLab told its base URL.
    async fn claim(
        &self,
        warm: Warm,
        spec: &SandboxSpec,
    ) -> Result<watch::Receiver<ExitReason>, RuntimeError> {
        let id = spec.notebook_id;
        let dir = self.pool_dir(&warm.slot);
        let volume = self.volume_dir(id, spec.volume_category);
        let mount = |source: PathBuf, target: PathBuf| async move {
            run(
                "mount",
                &[
                    "--bind",
                    &source.to_string_lossy(),
                    &target.to_string_lossy(),
                ],
            )
            .await
        };
        let outcome: Result<(), RuntimeError> = async {
            mount(volume, dir.join("work")).await?;
            mount(self.ssh_dir(id), dir.join("ssh")).await?;
            let run_dir = self.run_dir(id);
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)?;
            }
            std::fs::rename(self.config.data_dir.join("run").join(&warm.slot), &run_dir)?;
            std::fs::write(run_dir.join("slot"), &warm.slot)?;
            Ok(())
        }
        .await;
        let Warm { slot, sandbox, .. } = warm;
        let mut sandbox = sandbox;
        if let Err(error) = outcome {
            sandbox
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(cgroup) = &sandbox.cgroup {
                signal_all(cgroup, sandbox.pid, Signal::SIGKILL);
            }
            self.discard_slot(&slot, sandbox.cgroup.as_ref()).await;
            return Err(error);
        }
        if let Some(cgroup) = &sandbox.cgroup {
            let renamed = cgroup
                .rename(&id.to_string())
                .map_err(|e| step_error("cgroup", e))?;
            *sandbox.cell.lock().expect("poisoned") = Some(renamed.clone());
            sandbox.cgroup = Some(renamed);
        }
        let exited = sandbox.exited.clone();
        self.sandboxes.lock().expect("poisoned").insert(id, sandbox);
        let claim = format!(r#"{{"args": ["--ServerApp.base_url=/{id}/"]}}"#);
        let fifo = self.run_dir(id).join("claim");
        // The warm JupyterLab may still be importing: until it opens the FIFO for reading, a
        // non-blocking open for writing fails with ENXIO; try again shortly.
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        loop {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&fifo);
            match opened {
                Ok(mut writer) => {
                    writer.write_all(claim.as_bytes())?;
                    return Ok(exited);
                }
                Err(error) if error.raw_os_error() == Some(nix::libc::ENXIO) => {}
                Err(error) => return Err(step_error("warm sandbox claim", error)),
            }
            if exited.borrow().is_some() || tokio::time::Instant::now() >= deadline {
                return Err(step_error("warm sandbox", "did not take its claim"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Unmounts and removes a warm sandbox's mount points (and its empty cgroup).
    async fn discard_slot(&self, slot: &str, cgroup: Option<&Cgroup>) {
        let dir = self.pool_dir(slot);
        for point in [dir.join("work"), dir.join("ssh")] {
            // The self-bind, and a notebook's mount on top of it.
            for _ in 0..3 {
                if !is_mounted(&point) {
                    break;
                }
                let _ = run("umount", &["-l", &point.to_string_lossy()]).await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(cgroup) = cgroup {
            for _ in 0..50 {
                if cgroup.remove().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Kills every idle warm sandbox (shutdown), and the remains of any from an earlier run.
    pub async fn drain_pool(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // A refill in progress finishes its sandbox first (it then sees `closing` and stops).
        for _ in 0..1000 {
            if self.refilling.lock().expect("poisoned").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let idle: Vec<Warm> = std::mem::take(&mut *self.pool.lock().expect("poisoned"));
        for warm in idle {
            warm.sandbox
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.destroy_slot(
                &warm.slot,
                Some(warm.sandbox.pid),
                warm.sandbox.cgroup.as_ref(),
            )
            .await;
        }
    }

    /// Warm sandboxes left by an earlier server (killed, unmounted, removed).
    async fn reap_stale_pool(&self) {
        let entries: Vec<String> = std::fs::read_dir(self.config.data_dir.join("run"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|name| name.starts_with("pool-"))
                    .collect()
            })
            .unwrap_or_default();
        let mut slots: Vec<String> = entries;
        if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("pool")) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str()
                    && !slots.iter().any(|s| s == name)
                {
                    slots.push(name.to_owned());
                }
            }
        }
        for slot in slots {
            let pid: Option<i32> =
                std::fs::read_to_string(self.config.data_dir.join("run").join(&slot).join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
            let cgroup = self.hierarchy.map(|h| Cgroup::named(h, &slot));
            self.destroy_slot(&slot, pid, cgroup.as_ref()).await;
        }
    }

    /// Kills an unclaimed warm sandbox (everything in its cgroup, and `pid` if it is still
    /// the slot's, which a sandbox killed before joining its cgroup may be), then removes its
    /// mount points, cgroup and run dir.
    async fn destroy_slot(&self, slot: &str, pid: Option<i32>, cgroup: Option<&Cgroup>) {
        for _ in 0..100 {
            let mut alive = false;
            if let Some(cgroup) = cgroup.filter(|c| c.exists()) {
                for member in cgroup.pids() {
                    alive = true;
                    let _ = kill(Pid::from_raw(member), Signal::SIGKILL);
                }
            }
            if let Some(pid) = pid
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains(slot))
            {
                alive = true;
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.discard_slot(slot, cgroup).await;
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("run").join(slot));
    }

    /// How many warm sandboxes are idle.
    pub fn warm_count(&self) -> usize {
        self.pool.lock().expect("poisoned").len()
    }

    fn alive(&self, id: NotebookId) -> bool {
        let sandboxes = self.sandboxes.lock().expect("poisoned");
        sandboxes
            .get(&id)
            .is_some_and(|s| s.exited.borrow().is_none())
    }

    /// SIGTERM to every process of the sandbox, SIGKILL after `grace`; then clean up.
    async fn kill_sandbox(&self, id: NotebookId, grace: Duration) {
        let sandbox = self.sandboxes.lock().expect("poisoned").remove(&id);
        let run_dir = self.run_dir(id);
        let (pid, cgroup, mut exited) = match sandbox {
            Some(sandbox) => {
                sandbox
                    .stopping
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                (Some(sandbox.pid), sandbox.cgroup, Some(sandbox.exited))
            }
            None => {
                // Not ours (yet): a sandbox from before a restart, found through its files.
                let pid = std::fs::read_to_string(run_dir.join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                (
                    pid,
                    self.hierarchy.map(|h| Cgroup::for_notebook(h, id)),
                    None,
                )
            }
        };
        if let Some(pid) = pid {
            let cgroup_ref = cgroup.as_ref().filter(|c| c.exists());
            signal_tree(cgroup_ref, pid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && tree_alive(cgroup_ref, pid) {
                if let Some(exited) = exited.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_millis(20), exited.changed()).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for _ in 0..100 {
                if !tree_alive(cgroup_ref, pid) {
                    break;
                }
                signal_tree(cgroup_ref, pid, Signal::SIGKILL);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(cgroup) = cgroup
            && let Err(error) = cgroup.remove()
        {
            tracing::warn!(notebook_id = %id, %error, "could not remove the cgroup");
        }
        let _ = std::fs::remove_file(run_dir.join("pid"));
        let _ = std::fs::remove_file(self.socket_path(id));
        // A sandbox that came from the warm pool leaves its mount points behind.
        if let Ok(slot) = std::fs::read_to_string(run_dir.join("slot")) {
            self.discard_slot(slot.trim(), None).await;
            let _ = std::fs::remove_file(run_dir.join("slot"));
        }
    }

    /// Notebook ids with sandbox files or cgroups on this host (to find orphans).
    fn leftover_ids(&self) -> Vec<NotebookId> {
        let mut ids: Vec<NotebookId> = std::fs::read_dir(self.config.data_dir.join("run"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("pid").exists())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(hierarchy) = self.hierarchy {
            for name in Cgroup::existing(hierarchy) {
                if let Ok(id) = name.parse()
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Kills a sandbox nobody owns any more.
    pub async fn reap(&self, id: NotebookId) {
        self.kill_sandbox(id, Duration::from_millis(200)).await;
    }

    async fn unmount_evs(&self, id: NotebookId) {
        let mount_point = self.volume_dir(id, VolumeCategory::Evs);
        if is_mounted(&mount_point)
            && let Err(error) = run("umount", &[&mount_point.to_string_lossy()]).await
        {
            tracing::warn!(notebook_id = %id, %error, "could not unmount the EVS volume");
        }
    }
}

fn signal_tree(cgroup: Option<&Cgroup>, pid: i32, signal: Signal) {
    match cgroup {
        Some(cgroup) => signal_all(cgroup, pid, signal),
        None => {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
        }
    }
}

fn signal_all(cgroup: &Cgroup, pid: i32, signal: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
    for member in cgroup.pids() {
        let _ = kill(Pid::from_raw(member), signal);
    }
}

fn tree_alive(cgroup: Option<&Cgroup>, pid: i32) -> bool {
    let leader = Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    leader || cgroup.is_some_and(|c| !c.pids().is_empty())
}

/// GET `/{id}/api/status` over the socket; true on a 200.
pub async fn probe(socket: &Path, id: NotebookId) -> bool {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("/{id}/api/status"))
        .header("host", "localhost")
        .body(Empty::new());
    let Ok(request) = request else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sender.send_request(request)).await,
        Ok(Ok(response)) if response.status() == 200
    )
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn run_step(&self, spec: &SandboxSpec, step: Step) -> Result<(), RuntimeError> {
        match step {
            Step::PrepareStorage => self.prepare_storage(spec).await,
            Step::PrepareCompute => {
                self.image_prefix(spec).await?;
                Ok(())
            }
            Step::ConfigureNetwork => {
                let run_dir = self.run_dir(spec.notebook_id);
                std::fs::create_dir_all(&run_dir)?;
                Ok(())
            }
            Step::Initialise => {
                let prefix = self.image_prefix(spec).await?;
                let limits = Limits {
                    vcpus: spec.vcpus,
                    memory_mib: spec.memory_mib,
                    pids_max: self.config.pids_max,
                };
                self.initialise(spec, &prefix, limits).await
            }
        }
    }

    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.kill_sandbox(notebook_id, self.config.stop_grace).await;
        self.unmount_evs(notebook_id).await;
        Ok(())
    }

    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.stop(notebook_id).await?;
        for path in [
            self.config
                .data_dir
                .join("volumes")
                .join(notebook_id.to_string()),
            self.config
                .data_dir
                .join("mounts")
                .join(notebook_id.to_string()),
            self.run_dir(notebook_id),
            self.ssh_dir(notebook_id),
        ] {
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        let image = self.evs_image(notebook_id);
        if image.exists() {
            std::fs::remove_file(image)?;
        }
        Ok(())
    }

    async fn is_running(&self, notebook_id: NotebookId) -> bool {
        if self.alive(notebook_id) {
            return true;
        }
        // After a restart: adopt a sandbox that is still serving.
        let pid: Option<i32> = std::fs::read_to_string(self.run_dir(notebook_id).join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let Some(pid) = pid else { return false };
        if !Path::new(&format!("/proc/{pid}")).exists()
            || !probe(&self.socket_path(notebook_id), notebook_id).await
        {
            return false;
        }
        let (sender, exited) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cgroup = self.hierarchy.map(|h| Cgroup::for_notebook(h, notebook_id));
        self.sandboxes.lock().expect("poisoned").insert(
            notebook_id,
            Sandbox {
                pid,
                cell: Arc::new(Mutex::new(cgroup.clone())),
                cgroup,
                exited,
                stopping: stopping.clone(),
            },
        );
        tokio::spawn(async move {
            while Path::new(&format!("/proc/{pid}")).exists() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let reason = if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                String::new()
            } else {
                "JupyterLab exited unexpectedly".to_owned()
            };
            let _ = sender.send(Some(reason));
        });
        true
    }

    async fn leftovers(&self) -> Vec<NotebookId> {
        self.reap_stale_pool().await;
        self.leftover_ids()
    }

    async fn shutdown(&self) {
        self.drain_pool().await;
    }

    fn warm_sandboxes(&self) -> usize {
        self.warm_count()
    }

    async fn resize_volume(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        if spec.volume_category != VolumeCategory::Evs {
            return Ok(());
        }
        let image = self.evs_image(spec.notebook_id);
        let mount_point = self.volume_dir(spec.notebook_id, VolumeCategory::Evs);
        let bytes = spec.volume_capacity_gb.max(1) as u64 * 1024 * 1024 * 1024;
        if !image.exists() || std::fs::metadata(&image)?.len() >= bytes {
            return Ok(());
        }
        if is_mounted(&mount_point) {
            self.grow_online(&image, &mount_point, bytes).await;
            Ok(())
        } else {
            // Not mounted: the next start grows it (prepare_storage).
            Ok(())
        }
    }

    fn socket(&self, notebook_id: NotebookId) -> Option<PathBuf> {
        Some(self.socket_path(notebook_id))
    }

    fn supports_ssh(&self) -> bool {
        Path::new(SSHD).exists()
    }

    async fn ssh_session(
        &self,
        notebook_id: NotebookId,
        authorized_keys: &str,
    ) -> Result<Command, RuntimeError> {
        let init = self
            .sandbox_init_pid(notebook_id)
            .ok_or_else(|| step_error("SSH", "the notebook's sandbox is not running"))?;
        let dir = self.ssh_dir(notebook_id);
        if !dir.join("sshd_config").exists() {
            return Err(step_error(
                "SSH",
                "the sandbox was started without SSH files; restart the notebook",
            ));
        }
        // Written for every connection, so key pairs and endpoint changes apply at once.
        write_atomically(&dir.join("authorized_keys"), authorized_keys.as_bytes())?;
        // Join the notebook's cgroups, then enter its namespaces as ma-user (uid 1000 inside
        // maps to no capability outside) and become `sshd -i` on the connection.
        let mut script = String::new();
        let cgroup = self.hierarchy.map(|h| Cgroup::for_notebook(h, notebook_id));
        for procs in cgroup.as_ref().map(Cgroup::procs_files).unwrap_or_default() {
            script.push_str(&format!("echo $$ > '{}' && ", procs.display()));
        }
        script.push_str("exec \"$@\"");
        let mut command = Command::new("/bin/sh");
        command
            .env_clear()
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(["/usr/bin/nsenter", "-t"])
            .arg(init.to_string())
            .args([
                "--user",
                "--mount",
                "--pid",
                "--ipc",
                "--uts",
                "--preserve-credentials",
                "--root",
                "--wd",
                "/usr/bin/setpriv",
                "--no-new-privs",
                SSHD,
                "-i",
                "-e",
                "-f",
                "/etc/atelier-ssh/sshd_config",
            ]);
        Ok(command)
    }

    async fn wait_exit(&self, notebook_id: NotebookId) -> Option<String> {
        let mut exited = {
            let sandboxes = self.sandboxes.lock().expect("poisoned");
            sandboxes.get(&notebook_id)?.exited.clone()
        };
        loop {
            if let Some(reason) = exited.borrow().clone() {
                return (!reason.is_empty()).then_some(reason);
            }
            if exited.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod kernel_settings_tests {
    use super::*;

    #[test]
    fn kernel_settings_are_written_once_and_rewritten_when_they_differ() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/ipython/ipython_kernel_config.py");
        write_if_changed(&path, KERNEL_CONFIG).expect("first write");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), KERNEL_CONFIG);
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_if_changed(&path, KERNEL_CONFIG).expect("unchanged");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), first);
        std::fs::write(&path, "c.IPythonKernel._execute_sleep = 0.5\n").unwrap();
        write_if_changed(&path, KERNEL_CONFIG).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), KERNEL_CONFIG);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
