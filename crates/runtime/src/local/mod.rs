//! The local runtime: one bubblewrap sandbox per notebook, inside a cgroup with the flavor's
//! limits, running JupyterLab on a Unix socket that only the gateway reaches.
//!
//! Every sandbox is contained in layers, each of which alone stops a class of escape (the
//! threat model is in README.md, "Security"):
//! - **identity** (`uids`): its processes run as an unprivileged host uid of its own, which
//!   the sandbox's uid 1000 maps to and nothing else; its volume belongs to that uid;
//! - **kernel surface** (`sandbox`, `seccomp`): no new privileges, a seccomp filter, no
//!   nested user namespaces, `/proc/sys` and friends read-only, kernel-info files masked;
//! - **network** (`network`): a namespace of its own with filtered NAT egress;
//! - **control files**: everything the server acts on (`run/{id}/`: the socket, the pid
//!   record, logs, the warm slot) lives where the sandbox cannot write; the socket is bound by
//!   the server and handed to JupyterLab as a descriptor; pids are checked against their start
//!   time before any signal.
//!
//! Layout under the data dir (0711: traversable, not listable): `volumes/{id}` (EFS: a
//! directory; EVS: `{id}.ext4`, a sparse ext4 image loop-mounted at `mounts/{id}`), `run/{id}/`
//! (root only), `ssh/{id}/` (read-only at `/run/atelier/ssh` in the sandbox), `sandbox/`
//! (passwd, group, resolv.conf and the launcher, the same for every sandbox), `uids/` (which
//! uid each notebook has), `pool/{slot}/` (warm sandboxes' mount points). Sandboxes outlive
//! a restart of the server and are adopted again from `run/{id}/pid`.
pub mod build;
mod hooks;
mod image;
mod mounts;
pub use mounts::root_owned_share;
pub mod network;
mod pool;
pub mod preflight;
mod rootfs;
mod seccomp;
mod ssh;
mod storage;
mod sys;
pub mod uids;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use atelier_domain::{NotebookId, Upstream, VolumeCategory};

use crate::cgroup::{self, Cgroup, Hierarchy, Limits};
use crate::{
    EnsureError, ExitReason, ImageStore, Progress, Runtime, RuntimeError, RuntimeStats,
    SandboxEvent, SandboxSpec, Step, StorageMount,
};
use image::Prepared;
use network::{Egress, EgressPolicy};
use rootfs::Root;
use sys::{ChildSetup, HostIds};
use uids::{UidRange, Uids};

#[cfg(test)]
use image::KERNEL_CONFIG as BUILTIN_KERNEL_CONFIG;

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    /// The image store (`oci/`) and the built-in image's build dir, which servers and tests
    /// on one host may share.
    pub image_dir: PathBuf,
    /// What `pip install` puts into the built-in JupyterLab image.
    pub jupyter_packages: Vec<String>,
    /// How long JupyterLab may take to answer `/api/status`.
    pub ready_timeout: Duration,
    /// Between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
    pub pids_max: u64,
    /// Warm sandboxes kept per image and flavor (0: none).
    pub warm_pool: usize,
    /// The size of an EFS volume's filesystem (0: a plain directory without a limit).
    pub efs_quota_gb: u64,
    /// The size of the scratch filesystem a notebook's object-store mounts buffer what is
    /// written in (until a close uploads it): no notebook can fill the host's disk through
    /// s3fs (0: the data dir's filesystem, down to its last 2 GiB).
    pub storage_scratch_gb: u64,
    /// The host uids notebooks run as.
    pub uids: UidRange,
    pub egress: Egress,
    pub egress_policy: EgressPolicy,
    /// How container registries are reached (plain HTTP ones, credentials, size limit).
    pub registry: atelier_oci::RegistryConfig,
    /// Whether a notebook running a container image loses its changes outside the work dir
    /// at each stop, as in ModelArts (by default they are kept until it is deleted).
    pub discard_root_at_stop: bool,
    /// Whether container images trust the host's certificate authorities (its
    /// `/etc/ssl/certs/ca-certificates.crt` replaces the image's): needed where the way out
    /// passes a TLS-inspecting proxy whose CA only the host knows.
    pub host_ca_certificates: bool,
    /// The most the image store may take on disk before the least recently used images
    /// that no notebook here needs are evicted (0: no limit).
    pub image_cache_bytes: u64,
    /// The most a notebook may write outside its work dir (its root's upper directory, an
    /// ext4 image of this size), in GiB; 0: no limit (a directory of the data dir).
    pub root_quota_gb: u64,
    /// How long a custom hook may run before it is killed (and, if the start waits for
    /// it, fails the start).
    pub hook_timeout: Duration,
}

/// Starts JupyterLab without the imports and checks a notebook does not need (~0.4 s
/// instead of ~1.8 s to answer).
const JUPYTER_LAUNCHER: &str = include_str!("../jupyter_launch.py");

/// Starts the launcher with the Python of the image's `jupyter-lab` (its first line); an
/// image without one ends the start with a reason that says so.
const IMAGE_LAUNCHER: &str = r#"jl=$(command -v jupyter-lab) || {
  echo "atelier: the image has no jupyter-lab on its PATH ($PATH): it cannot run as a notebook (install jupyterlab in it)" >&2
  exit 127
}
IFS= read -r first < "$jl" || true
case "$first" in
  '#!'*) exec ${first#??} "$@" ;;
  *) echo "atelier: $jl is not a Python script: the image's JupyterLab cannot be started" >&2; exit 127 ;;
esac
"#;

/// The host's certificate authorities (Debian's path), and where images get them.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// OpenSSH's server (Debian's `openssh-server`), started once per connection in the sandbox.
const SSHD: &str = "/usr/sbin/sshd";

/// Descriptor numbers in a sandbox's bubblewrap.
const FD_LISTEN: i32 = 3;
const FD_CLAIM: i32 = 4;
const FD_INFO: i32 = 5;
const FD_SYNC: i32 = 6;
const FD_HOSTS: i32 = 7;
const FD_SECCOMP: i32 = 8;

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

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// How a sandbox ended: `None` while it runs, `Some(None)` when it was stopped, `Some(reason)`
/// when it ended by itself.
type Ended = Option<Option<ExitReason>>;

struct Sandbox {
    /// bubblewrap's outer process (host pid namespace), the sandbox's process group.
    pid: i32,
    cgroup: Option<Cgroup>,
    /// The cgroup as the supervisor sees it (renamed when a warm sandbox is claimed).
    cell: Arc<Mutex<Option<Cgroup>>>,
    exited: watch::Receiver<Ended>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The notebook it serves (set when a warm sandbox is claimed), for its events.
    owner: Arc<Mutex<Option<NotebookId>>>,
}

/// What the server knows of a sandbox's processes, in `run/{id}/pid` (which only root can
/// write): bubblewrap's pid and start time (clock ticks since boot), and the sandbox's first
/// process inside its namespaces. A pid whose start time differs is someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PidRecord {
    pid: i32,
    start: u64,
    init: i32,
}

impl PidRecord {
    fn read(path: &Path) -> Option<PidRecord> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace().map(str::parse::<i64>);
        let (Some(Ok(pid)), Some(Ok(start)), Some(Ok(init))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        (pid > 1 && init > 1 && start >= 0).then_some(PidRecord {
            pid: i32::try_from(pid).ok()?,
            start: start as u64,
            init: i32::try_from(init).ok()?,
        })
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(
            path,
            format!("{} {} {}\n", self.pid, self.start, self.init).as_bytes(),
        )
    }

    /// Whether the recorded processes are still the ones that were started.
    fn is_current(&self) -> bool {
        start_time(self.pid) == Some(self.start)
            && std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
                .is_ok_and(|c| c.split_whitespace().any(|p| p == self.init.to_string()))
    }
}

/// A process's start time (field 22 of `/proc/{pid}/stat`), if it exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub struct LocalRuntime {
    config: LocalConfig,
    hierarchy: Option<Hierarchy>,
    uids: Uids,
    /// The compiled seccomp filters every sandbox process gets.
    seccomp: Vec<seccompiler::BpfProgram>,
    /// Whether idmapped mounts work on the data dir's filesystem (the warm pool needs them).
    idmap: bool,
    sandboxes: Mutex<HashMap<NotebookId, Sandbox>>,
    /// Held while the built-in image is built.
    provisioning: tokio::sync::Mutex<()>,
    /// Itself, for background refills of the warm pool.
    me: std::sync::Weak<LocalRuntime>,
    /// Idle warm sandboxes.
    pool: Mutex<Vec<pool::Warm>>,
    /// Pool keys being refilled now.
    refilling: Mutex<std::collections::HashSet<pool::PoolKey>>,
    /// Set at shutdown: no more refills.
    closing: std::sync::atomic::AtomicBool,
    events: tokio::sync::broadcast::Sender<SandboxEvent>,
    /// Notebooks whose start has configured the network (step 3): their socket is their
    /// endpoint from then on, before JupyterLab answers on it (until a stop).
    addressed: Mutex<std::collections::HashSet<NotebookId>>,
    /// Container images: resolved in their registries, pulled into `DATA/oci`.
    oci: atelier_oci::ImageStore,
    /// Images made ready by step 2 of a start, for its step 4.
    prepared: Mutex<HashMap<NotebookId, Prepared>>,
}

/// Where a sandbox's pieces come from.
struct Layout {
    run_dir: PathBuf,
    /// Bound at /home/ma-user/work.
    work: PathBuf,
    /// Bound read-only at /run/atelier/ssh.
    ssh: PathBuf,
    /// Bound at /data: the host side of dynamic storage (`mounts`).
    data: PathBuf,
    hostname: String,
    /// JupyterLab loads nothing before its claim line (a `pre_start` hook runs first).
    defer_jupyter: bool,
}

/// What JupyterLab learns of its notebook over the claim channel, as one JSON line: its base
/// path, the one origin it accepts, and the token. Never on a command line, where the host's
/// `ps` would show the token.
pub(super) fn claim_line(spec: &SandboxSpec) -> String {
    let args = [
        format!("--ServerApp.base_url={}", spec.base_path),
        format!("--ServerApp.allow_origin={}", spec.origin),
        format!("--IdentityProvider.token={}", spec.token),
    ];
    format!("{}\n", serde_json::json!({ "args": args }))
}

fn step_error(context: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Fatal(format!("{context}: {error}"))
}

/// A notebook uid could not be had: every uid of the range in use is a capacity fault.
fn uid_error(error: std::io::Error) -> RuntimeError {
    if error.kind() == std::io::ErrorKind::QuotaExceeded {
        RuntimeError::Capacity(format!("notebook uid: {error}"))
    } else {
        step_error("notebook uid", error)
    }
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
    mount_points().iter().any(|p| p == mount_point)
}

/// Every mount point of this mount namespace, as `/proc/self/mounts` lists them (with its
/// octal escapes, `\040` for a space, decoded).
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(unescape_mount_field)
        .collect()
}

/// A field of `/proc/self/mounts`: the kernel writes space, tab, newline and backslash as
/// `\ooo`.
fn unescape_mount_field(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            digits
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
                .then(|| digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0')))
        });
        match octal {
            Some(value) if bytes[i] == b'\\' && value <= 0xff => {
                out.push(value as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The identity files every sandbox sees (`/etc/passwd`, `/etc/group`).
const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nma-user:x:1000:1000:ma-user:/home/ma-user/work:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nma-user:x:1000:\nnogroup:x:65534:\n";
/// The same in container images, whose ma-user is 1000:100 (`users`): whatever the image's
/// own files say, the user is ma-user with the work dir as home (SSH sessions start there).
const IMAGE_PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nma-user:x:1000:100:ma-user:/home/ma-user/work:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const IMAGE_GROUP: &str = "root:x:0:\nusers:x:100:ma-user\nnogroup:x:65534:\n";

/// `/proc` entries a sandbox sees read-only and masked, as the OCI runtime spec's defaults
/// have them (those missing on this kernel are skipped).
const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];
const PROC_MASKED_FILES: [&str; 7] = [
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "kallsyms",
];
const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "asound", "scsi"];

impl LocalRuntime {
    /// Checks what the runtime needs (see [`preflight`]), prepares the data dir, and finds
    /// sandboxes left running.
    pub fn new(mut config: LocalConfig) -> Result<Arc<LocalRuntime>, RuntimeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        std::fs::create_dir_all(&config.image_dir)?;
        // Every path ends up on bwrap's command line and in venv scripts, which a relative
        // path (the default data dir is `./atelier-data`) would break inside the sandbox.
        config.data_dir = std::fs::canonicalize(&config.data_dir)?;
        config.image_dir = std::fs::canonicalize(&config.image_dir)?;
        preflight::check(&config).map_err(RuntimeError::Fatal)?;
        // Traversable by the notebooks' uids (bubblewrap binds their volumes as them), never
        // listable; what is private is 0700 below.
        set_mode(&config.data_dir, 0o711)?;
        for (dir, mode) in [
            ("volumes", 0o711),
            ("mounts", 0o711),
            ("pool", 0o711),
            ("ssh", 0o711),
            ("roots", 0o711),
            ("sandbox", 0o755),
            ("run", 0o700),
        ] {
            let path = config.data_dir.join(dir);
            std::fs::create_dir_all(&path)?;
            set_mode(&path, mode)?;
        }
        let shared = config.data_dir.join("sandbox");
        for (name, contents) in [
            ("passwd", PASSWD.to_owned()),
            ("group", GROUP.to_owned()),
            ("image-passwd", IMAGE_PASSWD.to_owned()),
            ("image-group", IMAGE_GROUP.to_owned()),
            ("launch.py", JUPYTER_LAUNCHER.to_owned()),
            ("resolv.conf", network::resolv_conf(&config.egress)),
        ] {
            write_if_changed(&shared.join(name), &contents)?;
            set_mode(&shared.join(name), 0o644)?;
        }
        rootfs::write_mount_points(
            &shared.join("mountpoints"),
            config.host_ca_certificates && Path::new(HOST_CA_BUNDLE).is_file(),
        )?;
        let hierarchy = cgroup::detect();
        if hierarchy.is_none() {
            tracing::warn!(
                "no writable cgroup hierarchy: notebooks will run without resource limits"
            );
        }
        let uids = Uids::open(config.uids.clone(), &config.data_dir)?;
        let seccomp = seccomp::filters().map_err(RuntimeError::Fatal)?;
        // In the image dir, which servers and tests on one host may share: every image is
        // pulled or built once per host.
        let oci =
            atelier_oci::ImageStore::open(&config.image_dir.join("oci"), config.registry.clone())
                .map_err(|e| RuntimeError::Fatal(e.to_string()))?;
        let idmap = preflight::idmapped_mounts_work(&config.data_dir);
        if !idmap && config.warm_pool > 0 {
            tracing::warn!(
                "idmapped mounts do not work on the data dir's filesystem: the warm pool is off"
            );
        }
        Ok(Arc::new_cyclic(|me| LocalRuntime {
            config,
            hierarchy,
            uids,
            seccomp,
            idmap,
            sandboxes: Mutex::new(HashMap::new()),
            provisioning: tokio::sync::Mutex::new(()),
            me: me.clone(),
            pool: Mutex::new(Vec::new()),
            refilling: Mutex::new(std::collections::HashSet::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            events: tokio::sync::broadcast::channel(crate::EVENT_BUFFER).0,
            addressed: Mutex::new(std::collections::HashSet::new()),
            oci,
            prepared: Mutex::new(HashMap::new()),
        }))
    }

    fn run_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("run").join(id.to_string())
    }

    /// Where the notebook's JupyterLab listens (bound by the runtime, outside the sandbox).
    pub fn socket_path(&self, id: NotebookId) -> PathBuf {
        self.run_dir(id).join("jupyter.sock")
    }

    fn ssh_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("ssh").join(id.to_string())
    }

    /// The notebook's uid (its volume's owner), if it has started once.
    pub fn notebook_uid(&self, id: NotebookId) -> Option<u32> {
        self.uids.of_notebook(id).map(|ids| ids.uid)
    }

    /// The sandbox's first process inside its namespaces, to enter them; only if the pid
    /// record is still true.
    fn sandbox_init_pid(&self, id: NotebookId) -> Option<i32> {
        let record = PidRecord::read(&self.run_dir(id).join("pid"))?;
        record.is_current().then_some(record.init)
    }

    /// The notebook's `cgroup.procs` files, open for writing (for a child to join).
    fn open_procs(&self, id: NotebookId) -> Result<Vec<File>, RuntimeError> {
        let Some(cgroup) = self.hierarchy.map(|h| Cgroup::for_notebook(h, id)) else {
            return Ok(Vec::new());
        };
        open_procs_of(&cgroup)
    }

    /// The environment of a notebook's processes (JupyterLab, its kernels, hooks): the
    /// image's, then what every notebook has.
    fn notebook_env(&self, root: &Root) -> Vec<(String, String)> {
        let host_ca = matches!(root, Root::Image { .. })
            && self.config.host_ca_certificates
            && Path::new(HOST_CA_BUNDLE).is_file();
        let mut env: Vec<(String, String)> = vec![("LANG".into(), "C.UTF-8".into())];
        // The image's environment, then what every notebook has (later settings win).
        if let Root::Image { env: image_env, .. } = root {
            env.extend(image_env.iter().filter_map(|entry| {
                let (name, value) = entry.split_once('=')?;
                let plain = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                plain.then(|| (name.to_owned(), value.to_owned()))
            }));
        }
        if host_ca {
            // OpenSSL, Python's ssl and requests (pip) read these wherever the image keeps
            // its own bundle.
            for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
                env.push((name.to_owned(), HOST_CA_BUNDLE.to_owned()));
            }
        }
        // The work dir, also in container images (ModelArts has /home/ma-user): dotfiles,
        // Jupyter's and IPython's state live on the volume, the image's root stays as the
        // image made it until the user changes the system, and warm sandboxes can serve.
        let home = "/home/ma-user/work";
        env.extend(
            [
                ("TERM", "xterm-256color".to_owned()),
                ("HOME", home.to_owned()),
                ("USER", "ma-user".to_owned()),
                ("SHELL", "/bin/bash".to_owned()),
                ("PATH", root.path_env()),
                ("JUPYTER_RUNTIME_DIR", "/tmp/jupyter-runtime".to_owned()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        env
    }

    fn bwrap_args(&self, layout: &Layout, root: &Root, warm: bool) -> Vec<String> {
        let shared = self.config.data_dir.join("sandbox");
        let shared = |name: &str| shared.join(name).to_string_lossy().into_owned();
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut args = strings(&["--unshare-all", "--unshare-user", "--disable-userns"]);
        match root {
            Root::Prefix(_) => args.extend(strings(&[
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
            ])),
            // The image's own root: its /usr, /etc, /home/ma-user, writable as the overlay.
            Root::Image { merged, .. } => {
                args.extend([
                    "--bind".into(),
                    merged.to_string_lossy().into_owned(),
                    "/".into(),
                ]);
            }
        }
        // `/run` is the sandbox's own: what Atelier gives it is mounted there (an image's
        // directories are root's, where nothing new can be made).
        args.extend(strings(&[
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
        ]));
        if let Root::Prefix(_) = root {
            args.extend(strings(&["--tmpfs", "/home", "--dir", "/etc"]));
        }
        for entry in PROC_READ_ONLY {
            let path = format!("/proc/{entry}");
            if Path::new(&path).exists() {
                args.extend(["--ro-bind".into(), path.clone(), path]);
            }
        }
        for entry in PROC_MASKED_FILES {
            let path = format!("/proc/{entry}");
            if Path::new(&path).exists() {
                args.extend(["--ro-bind".into(), "/dev/null".into(), path]);
            }
        }
        for entry in PROC_MASKED_DIRS {
            let path = format!("/proc/{entry}");
            if Path::new(&path).is_dir() {
                args.extend(["--tmpfs".into(), path.clone(), "--remount-ro".into(), path]);
            }
        }
        let mut shared_files = vec![
            ("resolv.conf", "/etc/resolv.conf"),
            ("launch.py", "/run/atelier/launch.py"),
        ];
        if let Root::Prefix(prefix) = root {
            for host_file in [
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/localtime",
                "/etc/nsswitch.conf",
                "/etc/alternatives",
            ] {
                if Path::new(host_file).exists() {
                    args.extend(["--ro-bind".into(), host_file.into(), host_file.into()]);
                }
            }
            shared_files.extend([("passwd", "/etc/passwd"), ("group", "/etc/group")]);
            let prefix = prefix.to_string_lossy().into_owned();
            args.extend(["--ro-bind".into(), prefix.clone(), prefix]);
        } else {
            shared_files.extend([
                ("image-passwd", "/etc/passwd"),
                ("image-group", "/etc/group"),
            ]);
        }
        for (name, target) in shared_files {
            args.extend(["--ro-bind".into(), shared(name), target.into()]);
        }
        let host_ca = matches!(root, Root::Image { .. })
            && self.config.host_ca_certificates
            && Path::new(HOST_CA_BUNDLE).is_file();
        if host_ca {
            args.extend([
                "--ro-bind".into(),
                HOST_CA_BUNDLE.into(),
                HOST_CA_BUNDLE.into(),
            ]);
        }
        args.extend([
            "--ro-bind".into(),
            layout.ssh.to_string_lossy().into_owned(),
            "/run/atelier/ssh".into(),
            "--bind".into(),
            layout.work.to_string_lossy().into_owned(),
            "/home/ma-user/work".into(),
            "--bind".into(),
            layout.data.to_string_lossy().into_owned(),
            "/data".into(),
            "--uid".into(),
            rootfs::IMAGE_UID.to_string(),
            "--gid".into(),
            root.gid().to_string(),
            "--hostname".into(),
            layout.hostname.clone(),
            // Its own names resolve without asking DNS (which, through slirp4netns, would be
            // a round trip to the host's resolver for every lookup of the hostname).
            "--ro-bind-data".into(),
            FD_HOSTS.to_string(),
            "/etc/hosts".into(),
            "--info-fd".into(),
            FD_INFO.to_string(),
            "--sync-fd".into(),
            FD_SYNC.to_string(),
        ]);
        for index in 0..self.seccomp.len() {
            args.extend([
                "--add-seccomp-fd".into(),
                (FD_SECCOMP + index as i32).to_string(),
            ]);
        }
        let mut env = self.notebook_env(root);
        env.extend(
            [
                ("ATELIER_LISTEN_FD", FD_LISTEN.to_string()),
                ("ATELIER_CLAIM_FD", FD_CLAIM.to_string()),
                ("ATELIER_WARM", if warm { "1" } else { "" }.to_owned()),
                (
                    "ATELIER_DEFER",
                    if layout.defer_jupyter { "1" } else { "" }.to_owned(),
                ),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        args.push("--clearenv".into());
        for (name, value) in env {
            args.extend(["--setenv".into(), name, value]);
        }
        args.extend(["--chdir".into(), "/home/ma-user/work".into(), "--".into()]);
        match root {
            Root::Prefix(prefix) => args.push(format!("{}/bin/python", prefix.display())),
            // The Python that runs the image's `jupyter-lab` runs the launcher.
            Root::Image { .. } => args.extend(strings(&[
                "/bin/sh",
                "-c",
                IMAGE_LAUNCHER,
                "atelier-launch",
            ])),
        }
        args.extend(strings(&[
            "/run/atelier/launch.py",
            // Only a name: the listening socket comes as a descriptor.
            "--ServerApp.sock=/run/atelier/jupyter.sock",
            "--ServerApp.root_dir=/home/ma-user/work",
            // The gateway forwards the browser's Host and sets X-Forwarded-Proto/-For.
            "--ServerApp.trust_xheaders=True",
        ]));
        args
    }

    async fn initialise(
        &self,
        spec: &SandboxSpec,
        prepared: Prepared,
        limits: Limits,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        let id = spec.notebook_id;
        // A sandbox already serving (adopted after a restart, or a retried step) is reused.
        if self.alive(id) && probe(&self.socket_path(id), spec).await {
            return Ok(());
        }
        self.kill_sandbox(id, Duration::ZERO).await;
        let ids = self.uids.for_notebook(id).map_err(uid_error)?;
        if self.config.warm_pool > 0 && self.idmap {
            let (image, claimable) = match &prepared {
                Prepared::Prefix(prefix) => (prefix.to_string_lossy().into_owned(), true),
                // A warm root has no changes: it serves a notebook that has none either.
                Prepared::Image(image) => (
                    format!("oci:{}", image.resolved.digest),
                    self.config.discard_root_at_stop || !self.root_changed(id),
                ),
            };
            let key = pool::PoolKey {
                image,
                vcpus: limits.vcpus,
                memory_mib: limits.memory_mib,
            };
            // A pre_start hook runs before JupyterLab loads anything: a cold start.
            let claimable = claimable && spec.hooks.pre_start.is_none();
            let warm = if claimable {
                self.take_warm(&key)
            } else {
                None
            };
            // Whatever happens next, the pool refills in the background.
            self.refill(key.clone(), prepared.clone(), limits);
            if let Some(warm) = warm {
                let env = self.notebook_env(warm.root());
                match self.claim(warm, spec, ids).await {
                    Ok((exited, channel)) => {
                        return self.serve(spec, env, exited, channel, progress).await;
                    }
                    Err(error) => {
                        tracing::warn!(notebook_id = %id, %error, "warm sandbox unusable; starting cold");
                        self.kill_sandbox(id, Duration::ZERO).await;
                    }
                }
            }
        }
        let root = match prepared {
            Prepared::Prefix(prefix) => Root::Prefix(prefix),
            Prepared::Image(image) => {
                let layers = &image.layers;
                let digest = &image.resolved.digest;
                let merged = self.mount_root(id, layers, digest, ids).await?;
                Root::Image {
                    merged,
                    env: image::image_env(&image.resolved),
                }
            }
        };
        self.prepare_ssh(id, &root, ids)?;
        let layout = Layout {
            run_dir: self.run_dir(id),
            work: self.volume_dir(id, spec.volume_category),
            ssh: self.ssh_dir(id),
            data: self.prepare_data_tree(id)?,
            hostname: format!("notebook-{}", &id.to_string()[..8]),
            defer_jupyter: spec.hooks.pre_start.is_some(),
        };
        let cgroup = self.hierarchy.map(|h| Cgroup::for_notebook(h, id));
        let (sandbox, channel) = self
            .launch(&layout, &root, limits, cgroup, ids, false)
            .await?;
        let exited = sandbox.exited.clone();
        *sandbox.owner.lock().expect("poisoned") = Some(id);
        self.sandboxes.lock().expect("poisoned").insert(id, sandbox);
        let env = self.notebook_env(&root);
        self.serve(spec, env, exited, channel, progress).await
    }

    /// Starts bwrap with `layout` in its cgroup as `ids`, connects its network and
    /// supervises it (exit, OOM kills). A warm sandbox also gets its claim channel.
    async fn launch(
        &self,
        layout: &Layout,
        root: &Root,
        limits: Limits,
        cgroup: Option<Cgroup>,
        ids: HostIds,
        warm: bool,
    ) -> Result<(Sandbox, std::os::unix::net::UnixStream), RuntimeError> {
        let run_dir = &layout.run_dir;
        std::fs::create_dir_all(run_dir)?;
        set_mode(run_dir, 0o700)?;
        let socket = run_dir.join("jupyter.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket)?;
        set_mode(&socket, 0o600)?;
        if let Some(cgroup) = &cgroup {
            cgroup.create(limits).map_err(|e| step_error("cgroup", e))?;
        }
        let log = File::create(run_dir.join("jupyter.log"))?;
        // ma-user's group in the sandbox, for SSH sessions that enter it.
        std::fs::write(run_dir.join("gid"), format!("{}\n", root.gid()))?;
        let procs = match &cgroup {
            Some(cgroup) => open_procs_of(cgroup)?,
            None => Vec::new(),
        };
        let (info_read, info_write) = std::io::pipe()?;
        let (sync_read, sync_write) = std::io::pipe()?;
        let mut fds: Vec<(OwnedFd, i32)> = vec![
            (listener.into(), FD_LISTEN),
            (info_write.into(), FD_INFO),
            (sync_write.into(), FD_SYNC),
        ];
        let (hosts, mut hosts_write) = std::io::pipe()?;
        std::io::Write::write_all(
            &mut hosts_write,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                layout.hostname
            )
            .as_bytes(),
        )?;
        drop(hosts_write);
        fds.push((hosts.into(), FD_HOSTS));
        for (index, filter) in self.seccomp.iter().enumerate() {
            let (read, mut write) = std::io::pipe()?;
            std::io::Write::write_all(&mut write, &seccomp::as_bytes(filter))?;
            drop(write);
            fds.push((read.into(), FD_SECCOMP + index as i32));
        }
        // Cold or warm, JupyterLab reads its notebook's settings from here.
        let (claim, theirs) = std::os::unix::net::UnixStream::pair()?;
        fds.push((theirs.into(), FD_CLAIM));
        let mut command = Command::new("bwrap");
        command
            .args(self.bwrap_args(layout, root, warm))
            .current_dir("/")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        ChildSetup {
            cgroup_procs: procs,
            fds,
            ids: Some(ids),
            seccomp: Vec::new(),
        }
        .apply(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| step_error("cannot start bwrap", e))?;
        // Our copies of the sandbox's descriptors close here.
        drop(command);
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| step_error("sandbox", "exited at once"))?;
        let start = start_time(pid).unwrap_or_default();
        let init = match read_info(info_read).await {
            Ok(init) => init,
            Err(error) => {
                let _ = child.kill().await;
                let tail = std::fs::read_to_string(run_dir.join("jupyter.log")).unwrap_or_default();
                return Err(step_error(
                    "the sandbox did not start",
                    format!("{error}; {}", tail.trim()),
                ));
            }
        };
        PidRecord { pid, start, init }.write(&run_dir.join("pid"))?;
        // bubblewrap reports its sandbox right after making the namespaces, while its first
        // process still sets up the id maps, the root and loopback. Nothing enters the
        // sandbox before that process has started the sandbox's command (setup over): a
        // hook's nsenter would find no gid map ("setgid failed") or the host's root, and the
        // network's netlink requests would race bubblewrap's ("Failed RTM_NEWADDR").
        let network = wait_for_command(init).await;
        let network = match (network, &self.config.egress) {
            (Err(error), _) => Err(error),
            (Ok(()), Egress::None) => Ok(()),
            (Ok(()), Egress::Slirp4netns) => {
                let procs = match &cgroup {
                    Some(cgroup) => open_procs_of(cgroup)?,
                    None => Vec::new(),
                };
                let rules =
                    network::ruleset(&self.config.egress_policy, &network::host_addresses());
                let log = File::create(run_dir.join("network.log"))?;
                network::attach(init, ids, procs, &rules, sync_read.into(), log).await
            }
        };
        let sandbox = self.supervise(Process::Child(child), pid, limits.memory_mib, cgroup, None);
        if let Err(error) = network {
            sandbox
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            signal_tree(sandbox.cgroup.as_ref(), pid, Signal::SIGKILL);
            let tail = log_tail(&run_dir.join("jupyter.log"));
            if tail.is_empty() {
                return Err(error);
            }
            return Err(step_error("the sandbox did not start", tail));
        }
        Ok((sandbox, claim))
    }

    /// Waits until the notebook's JupyterLab answers on its socket.
    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        exited: watch::Receiver<Ended>,
    ) -> Result<(), RuntimeError> {
        let id = spec.notebook_id;
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let socket = self.socket_path(id);
        loop {
            if probe(&socket, spec).await {
                return Ok(());
            }
            if exited.borrow().is_some() {
                let tail = log_tail(&self.run_dir(id).join("jupyter.log"));
                return Err(step_error("JupyterLab exited during start", tail));
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill_sandbox(id, Duration::ZERO).await;
                return Err(step_error(
                    "JupyterLab did not become ready",
                    format!(
                        "no answer on {}api/status within {:?}",
                        spec.base_path, self.config.ready_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
                // Not ours (yet): a sandbox from before a restart. Its pid counts only if
                // its start time says it is still the process that was recorded.
                let pid = PidRecord::read(&run_dir.join("pid"))
                    .filter(PidRecord::is_current)
                    .map(|record| record.pid);
                // A claim cut short by a crash renamed the run dir (with its `slot` file) but
                // not yet the cgroup: the sandbox's processes are still in the slot's.
                let cgroup = self.hierarchy.map(|h| {
                    let own = Cgroup::for_notebook(h, id);
                    if own.exists() {
                        return own;
                    }
                    std::fs::read_to_string(run_dir.join("slot"))
                        .ok()
                        .and_then(|s| s.lines().next().and_then(pool::valid_slot))
                        .map(|slot| Cgroup::named(h, &slot))
                        .filter(Cgroup::exists)
                        .unwrap_or(own)
                });
                (pid, cgroup, None)
            }
        };
        let cgroup_ref = cgroup.as_ref().filter(|c| c.exists());
        if pid.is_some() || cgroup_ref.is_some() {
            let pid = pid.unwrap_or(0);
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
        // Its processes are gone, so are their open files (s3fs uploaded them on close).
        self.unmount_all_dynamic(id).await;
        // A sandbox that came from the warm pool leaves its mount points and uid behind.
        if let Ok(record) = std::fs::read_to_string(run_dir.join("slot")) {
            let mut lines = record.lines();
            if let Some(slot) = lines.next().and_then(pool::valid_slot) {
                let uid = lines.next().and_then(|u| u.trim().parse().ok());
                self.discard_slot(&slot, uid, None, Some(id)).await;
            }
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
        // Cgroups are the host's, shared by every Atelier on it: only those of notebooks
        // with a run dir here are this data dir's.
        if let Some(hierarchy) = self.hierarchy {
            for name in Cgroup::existing(hierarchy) {
                if let Ok(id) = name.parse()
                    && !ids.contains(&id)
                    && self.run_dir(id).is_dir()
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

    /// Unmounts the notebook's volume (EVS, or EFS with its quota image).
    async fn unmount_volume(&self, id: NotebookId) {
        for category in [VolumeCategory::Evs, VolumeCategory::Efs] {
            let mount_point = self.volume_dir(id, category);
            if is_mounted(&mount_point)
                && let Err(error) = run("umount", &[&mount_point.to_string_lossy()]).await
            {
                tracing::warn!(notebook_id = %id, %error, "could not unmount the volume");
            }
        }
    }
}

/// The last lines a sandbox wrote to its log, joined with ` | `, with what they mean when
/// the image lacks what every notebook image needs.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut tail: Vec<&str> = text.lines().rev().take(3).collect();
    tail.reverse();
    let tail = tail.join(" | ");
    if tail.contains("execvp /bin/sh") {
        return format!(
            "the image has no /bin/sh: a notebook image needs a shell and jupyter-lab ({tail})"
        );
    }
    tail
}

fn open_procs_of(cgroup: &Cgroup) -> Result<Vec<File>, RuntimeError> {
    cgroup
        .procs_files()
        .iter()
        .map(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| step_error(&format!("cgroup {}", path.display()), e))
        })
        .collect()
}

/// Waits until the sandbox's first process (`init`) has a child: bubblewrap has finished
/// setting the sandbox up and started its command.
async fn wait_for_command(init: i32) -> Result<(), RuntimeError> {
    let children = format!("/proc/{init}/task/{init}/children");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(&children) {
            Ok(list) if !list.trim().is_empty() => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(step_error("sandbox", "bubblewrap exited during setup")),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(step_error("sandbox", "bubblewrap did not finish its setup"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// bubblewrap's `--info-fd` JSON: the pid of the sandbox's first process.
async fn read_info(mut pipe: std::io::PipeReader) -> Result<i32, String> {
    let reading = tokio::task::spawn_blocking(move || {
        let mut text = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = pipe.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("bubblewrap exited before reporting its sandbox".to_owned());
            }
            text.extend_from_slice(&chunk[..n]);
            if let Ok(info) = serde_json::from_slice::<serde_json::Value>(&text) {
                return info["child-pid"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .ok_or_else(|| "no child-pid in bubblewrap's info".to_owned());
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(30), reading).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("bubblewrap did not report its sandbox within 30 s".to_owned()),
    }
}

/// What a supervisor waits on: bubblewrap as our child (launched here), or, adopted after a
/// restart, through a pidfd (or, where the kernel has none, by polling its pid record).
enum Process {
    Child(tokio::process::Child),
    Pidfd(tokio::io::unix::AsyncFd<OwnedFd>),
    Polled(PidRecord),
}

impl Process {
    /// Waits until the process has ended; says how.
    async fn wait(&mut self) -> String {
        match self {
            Process::Child(child) => format!(
                "JupyterLab exited unexpectedly ({})",
                child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string())
            ),
            Process::Pidfd(pidfd) => {
                // A pidfd turns readable when its process exits (and stays so).
                if let Err(error) = pidfd.readable().await {
                    tracing::warn!(%error, "cannot poll a sandbox's pidfd");
                    std::future::pending::<()>().await;
                }
                "JupyterLab exited unexpectedly".to_owned()
            }
            Process::Polled(record) => {
                while record.is_current() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                "JupyterLab exited unexpectedly".to_owned()
            }
        }
    }
}

impl LocalRuntime {
    /// Watches a sandbox until it ends: its exit, or an OOM kill in its cgroup (which then
    /// takes the whole sandbox down rather than leave it limping with a dead kernel). An end
    /// nobody asked for becomes a [`SandboxEvent::Exited`] of its owner. Launched and
    /// adopted sandboxes are watched alike.
    fn supervise(
        &self,
        mut process: Process,
        pid: i32,
        memory_mib: u64,
        cgroup: Option<Cgroup>,
        owner: Option<NotebookId>,
    ) -> Sandbox {
        let (sender, exited) = watch::channel(None);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cell = Arc::new(Mutex::new(cgroup.clone()));
        let owner = Arc::new(Mutex::new(owner));
        let events = self.events.clone();
        let sandbox = Sandbox {
            pid,
            cgroup,
            cell: cell.clone(),
            exited,
            stopping: stopping.clone(),
            owner: owner.clone(),
        };
        tokio::spawn(async move {
            // The cgroup is renamed when a warm sandbox is claimed: read it from the cell.
            let current = || cell.lock().expect("poisoned").clone();
            let baseline = current().as_ref().map(Cgroup::oom_kills).unwrap_or(0);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let reason = loop {
                tokio::select! {
                    how = process.wait() => {
                        let oom = current().as_ref().map(Cgroup::oom_kills).unwrap_or(0) > baseline;
                        break if oom {
                            ExitReason::OutOfMemory { limit_mib: memory_mib }
                        } else {
                            ExitReason::Exited(how)
                        };
                    }
                    _ = tick.tick() => {
                        let cgroup = current();
                        let oom = cgroup.as_ref().map(Cgroup::oom_kills).unwrap_or(0) > baseline;
                        if oom && !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                            if let Some(cgroup) = &cgroup {
                                signal_all(cgroup, pid, Signal::SIGKILL);
                            }
                            let _ = process.wait().await;
                            break ExitReason::OutOfMemory { limit_mib: memory_mib };
                        }
                    }
                }
            };
            if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sender.send(Some(None));
            } else {
                let _ = sender.send(Some(Some(reason.clone())));
                if let Some(id) = *owner.lock().expect("poisoned") {
                    let _ = events.send(SandboxEvent::Exited { id, reason });
                }
            }
        });
        sandbox
    }
}

/// Signals the sandbox: every member of its cgroup, and its process group when `pid` (a
/// verified bubblewrap pid; 0 when there is none) is given.
fn signal_tree(cgroup: Option<&Cgroup>, pid: i32, signal: Signal) {
    match cgroup {
        Some(cgroup) => signal_all(cgroup, pid, signal),
        None if pid > 1 => {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
        }
        None => {}
    }
}

fn signal_all(cgroup: &Cgroup, pid: i32, signal: Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
    }
    for member in cgroup.pids() {
        let _ = kill(Pid::from_raw(member), signal);
    }
}

fn tree_alive(cgroup: Option<&Cgroup>, pid: i32) -> bool {
    let leader = pid > 1
        && Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    leader || cgroup.is_some_and(|c| !c.pids().is_empty())
}

/// GET `{base}api/status` over the socket with the notebook's token; true on a 200.
pub async fn probe(socket: &Path, spec: &SandboxSpec) -> bool {
    let path = format!("{}api/status", spec.base_path);
    matches!(
        get_status(socket, &path, Some(&spec.token)).await,
        Some(200)
    )
}

/// Whether an HTTP server answers on the socket at all (adopting a sandbox after a restart,
/// when its base path and token are not at hand).
async fn answers(socket: &Path) -> bool {
    get_status(socket, "/api", None).await.is_some()
}

/// The status of a GET over the socket, `None` when nothing answers within 2 s.
async fn get_status(socket: &Path, path: &str, token: Option<&str>) -> Option<u16> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("host", "localhost");
    if let Some(token) = token {
        request = request.header("authorization", format!("token {token}"));
    }
    let request = request.body(Empty::new()).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

impl LocalRuntime {
    async fn run_step(
        &self,
        spec: &SandboxSpec,
        step: Step,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        match step {
            Step::PrepareStorage => self.prepare_storage(spec).await,
            Step::PrepareCompute => {
                let prepared = self.prepare_with_progress(spec, progress).await?;
                self.prepared
                    .lock()
                    .expect("poisoned")
                    .insert(spec.notebook_id, prepared);
                Ok(())
            }
            Step::ConfigureNetwork => {
                let run_dir = self.run_dir(spec.notebook_id);
                std::fs::create_dir_all(&run_dir)?;
                set_mode(&run_dir, 0o700)?;
                self.addressed
                    .lock()
                    .expect("poisoned")
                    .insert(spec.notebook_id);
                Ok(())
            }
            Step::Initialise => {
                let prepared = self
                    .prepared
                    .lock()
                    .expect("poisoned")
                    .remove(&spec.notebook_id);
                let prepared = match prepared {
                    Some(prepared) => prepared,
                    // Step 2 ran before a restart of the server.
                    None => self.prepare_image(spec, &|_, _| {}).await?,
                };
                let limits = Limits {
                    vcpus: spec.vcpus,
                    memory_mib: spec.memory_mib,
                    pids_max: self.config.pids_max,
                };
                self.initialise(spec, prepared, limits, progress).await
            }
        }
    }

    /// Kills the notebook's sandbox as a crash would (the supervisor reports it as an
    /// unexpected exit); for tests.
    #[doc(hidden)]
    pub fn crash_for_tests(&self, id: NotebookId) {
        let sandboxes = self.sandboxes.lock().expect("poisoned");
        if let Some(sandbox) = sandboxes.get(&id) {
            signal_tree(sandbox.cgroup.as_ref(), sandbox.pid, Signal::SIGKILL);
        }
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn ensure(&self, spec: &SandboxSpec, progress: &dyn Progress) -> Result<(), EnsureError> {
        let id = spec.notebook_id;
        // A sandbox already serving (adopted, or a repeated ensure) is left as it is.
        let serving = self.alive(id) && probe(&self.socket_path(id), spec).await;
        crate::each_step(progress, |step| async move {
            if serving {
                Ok(())
            } else {
                self.run_step(spec, step, progress).await
            }
        })
        .await?;
        let _ = self.events.send(SandboxEvent::Ready(id));
        Ok(())
    }

    async fn stop(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.addressed
            .lock()
            .expect("poisoned")
            .remove(&notebook_id);
        self.kill_sandbox(notebook_id, self.config.stop_grace).await;
        self.prepared.lock().expect("poisoned").remove(&notebook_id);
        self.unmount_root(notebook_id).await;
        if self.config.discard_root_at_stop {
            self.discard_root(notebook_id)?;
        }
        self.unmount_volume(notebook_id).await;
        Ok(())
    }

    async fn delete(&self, notebook_id: NotebookId) -> Result<(), RuntimeError> {
        self.stop(notebook_id).await?;
        self.remove_data_tree(notebook_id).await;
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
            self.root_dir(notebook_id),
        ] {
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        for image in [self.evs_image(notebook_id), self.efs_image(notebook_id)] {
            if image.exists() {
                std::fs::remove_file(image)?;
            }
        }
        // Nothing of the notebook is left on disk: its uid may serve another.
        self.uids.release_notebook(notebook_id);
        Ok(())
    }

    /// The sandbox's socket: from step 3 of a start (the gateway may route before JupyterLab
    /// answers) while the sandbox lives, and none once it has ended or been stopped.
    fn endpoint(&self, notebook_id: NotebookId) -> Option<Upstream> {
        let serving = match self.sandboxes.lock().expect("poisoned").get(&notebook_id) {
            Some(sandbox) => sandbox.exited.borrow().is_none(),
            None => self
                .addressed
                .lock()
                .expect("poisoned")
                .contains(&notebook_id),
        };
        serving.then(|| Upstream::Unix(self.socket_path(notebook_id)))
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<SandboxEvent> {
        self.events.subscribe()
    }

    async fn inventory(&self) -> Vec<NotebookId> {
        self.reap_stale_pool().await;
        self.leftover_ids()
    }

    async fn adopt(&self, spec: &SandboxSpec) -> bool {
        let id = spec.notebook_id;
        if self.alive(id) {
            return true;
        }
        // After a restart: a sandbox that is still serving, if its pid record is true.
        let Some(record) = PidRecord::read(&self.run_dir(id).join("pid")) else {
            return false;
        };
        if !record.is_current() || !answers(&self.socket_path(id)).await {
            return false;
        }
        // bubblewrap is no child of ours any more: watch it through a pidfd, opened before
        // the record is checked again so that the pid cannot be someone else's.
        let process = match sys::pidfd(record.pid) {
            Ok(pidfd) if record.is_current() => Process::Pidfd(pidfd),
            Ok(_) => return false,
            Err(error) => {
                tracing::warn!(notebook_id = %id, %error, "no pidfd for an adopted sandbox; polling it");
                Process::Polled(record)
            }
        };
        let cgroup = self.hierarchy.map(|h| Cgroup::for_notebook(h, id));
        // A server that died while saving the notebook as an image may have left it frozen.
        if let Some(cgroup) = &cgroup
            && let Err(error) = cgroup.freeze(false)
        {
            tracing::warn!(notebook_id = %id, %error, "cannot thaw an adopted sandbox");
        }
        let sandbox = self.supervise(process, record.pid, spec.memory_mib, cgroup, Some(id));
        self.sandboxes.lock().expect("poisoned").insert(id, sandbox);
        true
    }

    async fn attach_shell(
        &self,
        notebook_id: NotebookId,
        authorized_keys: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<(), RuntimeError> {
        self.serve_ssh(notebook_id, authorized_keys, stream).await
    }

    /// `sshd` runs from the notebook's image (the built-in one has it).
    fn supports_ssh(&self) -> bool {
        true
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
        }
        // Not mounted: the next start grows it (prepare_storage).
        Ok(())
    }

    fn volume_usage(&self, notebook_id: NotebookId) -> Option<u64> {
        [VolumeCategory::Evs, VolumeCategory::Efs]
            .into_iter()
            .map(|category| self.volume_dir(notebook_id, category))
            .find(|dir| is_mounted(dir))
            .and_then(|dir| nix::sys::statvfs::statvfs(&dir).ok())
            .map(|fs| (fs.blocks() - fs.blocks_free()) * fs.fragment_size())
    }

    async fn mount_storage(
        &self,
        notebook_id: NotebookId,
        mount: &StorageMount,
    ) -> Result<(), RuntimeError> {
        self.mount_dynamic(notebook_id, mount).await
    }

    async fn unmount_storage(
        &self,
        notebook_id: NotebookId,
        dir: &str,
    ) -> Result<(), RuntimeError> {
        self.unmount_dynamic(notebook_id, dir).await
    }

    fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            warm: self.warm_count(),
            sandboxes: self.sandboxes.lock().expect("poisoned").len(),
        }
    }

    fn images(&self) -> &dyn ImageStore {
        self
    }

    async fn shutdown(&self) {
        self.drain_pool().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(
            unescape_mount_field(r"/srv/a\040b\011c\134d\012"),
            Path::new("/srv/a b\tc\\d\n")
        );
        assert_eq!(unescape_mount_field(r"/x\09"), Path::new(r"/x\09"));
        assert_eq!(unescape_mount_field(r"/end\"), Path::new(r"/end\"));
    }

    #[test]
    fn kernel_settings_are_written_once_and_rewritten_when_they_differ() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/ipython/ipython_kernel_config.py");
        let settings = BUILTIN_KERNEL_CONFIG;
        write_if_changed(&path, settings).expect("first write");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), settings);
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_if_changed(&path, settings).expect("unchanged");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), first);
        std::fs::write(&path, "c.IPythonKernel._execute_sleep = 0.5\n").unwrap();
        write_if_changed(&path, settings).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), settings);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_pid_record_counts_only_while_its_process_is_the_recorded_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pid");
        // Garbage, a negative pid, pid 1: never acted on.
        for text in ["x", "-5 1 2", "1 0 1", "", "12"] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(PidRecord::read(&path), None, "{text:?}");
        }
        // This test process with the wrong start time is not current; with its own start
        // time but no such child it is not current either.
        let me = std::process::id() as i32;
        let start = start_time(me).expect("own start time");
        for record in [
            PidRecord {
                pid: me,
                start: start + 1,
                init: 2,
            },
            PidRecord {
                pid: me,
                start,
                init: 2,
            },
        ] {
            record.write(&path).unwrap();
            assert_eq!(PidRecord::read(&path), Some(record));
            assert!(!record.is_current());
        }
        // A real pair: a shell (as bubblewrap) with a child of its own (as the sandbox's
        // first process). Current while both live; not once the parent is gone.
        let mut parent = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = parent.id() as i32;
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let init: i32 = loop {
            if let Some(first) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
            {
                break first;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shell started no child"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let record = PidRecord {
            pid,
            start: start_time(pid).expect("the shell's start time"),
            init,
        };
        assert!(record.is_current(), "{record:?}");
        assert!(
            !PidRecord {
                start: record.start + 1,
                ..record
            }
            .is_current(),
            "another start time is another process"
        );
        assert!(
            !PidRecord { init: 1, ..record }.is_current(),
            "not its child"
        );
        let _ = nix::sys::signal::kill(Pid::from_raw(init), Signal::SIGKILL);
        let _ = parent.kill();
        let _ = parent.wait();
        assert!(!record.is_current(), "gone");
    }
}
