//! Dynamic storage under `/data/` (spec §1.4.11).
//!
//! Each notebook has a tree `dynamic/{id}/data` (root's, 0755: nothing in a sandbox can make,
//! rename or replace an entry in it), bound onto itself as a shared mount point. Every
//! sandbox binds it at `/data` (a warm one binds its slot's `pool/{slot}/data`, onto which a
//! claim binds the tree), and bubblewrap makes the sandbox's mount namespace a slave of the
//! host's: what the runtime mounts on `dynamic/{id}/data/{dir}` on the host appears at
//! `/data/{dir}` inside, with no restart.
//!
//! An object-store prefix is mounted by `s3fs` (Debian's FUSE client), run here outside the
//! sandbox as root with the project's credentials in its environment (never on an argv the
//! host's `ps` shows, never inside the sandbox), in a session of its own so that it outlives
//! a restart of the server like the sandbox does. Its files belong to the uid the sandbox
//! runs as (umask 077: no other host user reads them), `allow_other` lets the sandbox's user
//! namespace in, and `nosuid,nodev` hold. s3fs uploads a file when it is closed: what a
//! process wrote is in the bucket once it closed it (or exited). A directory the operator
//! exported is bound in instead (idmapped to the sandbox's uid where the filesystem allows).
//!
//! `dynamic/{id}/state` (0700) keeps each daemon's pid record and log, and `state/scratch`,
//! the loop-mounted filesystem of `storage_scratch_gb` the daemons buffer writes in: what a
//! notebook writes to a bucket takes at most that much of the host's disk.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use atelier_domain::NotebookId;
use tokio::process::Command;

use super::sys::HostIds;
use super::{LocalRuntime, is_mounted, run, set_mode, start_time, step_error};
use crate::{ObjectStoreMount, RuntimeError, StorageMount, StorageSource};

/// How long a mount may take to come up (s3fs checks the bucket first).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// The FUSE client for object stores.
const S3FS: &str = "s3fs";

/// `dir` is one plain name: letters, digits, `_`, `-`.
fn plain_dir(dir: &str) -> bool {
    !dir.is_empty()
        && dir.len() <= 64
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A daemon's pid and start time, so that a reused pid is never signalled.
fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let start: u64 = fields.next()?.parse().ok()?;
    (pid > 1 && start_time(pid) == Some(start)).then_some(pid)
}

/// The last lines of a daemon's log, for a failure reason (never holds a secret: the keys
/// are only in the daemon's environment).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    tail.chars().take(600).collect()
}

impl LocalRuntime {
    fn dynamic_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("dynamic").join(id.to_string())
    }

    /// The host side of the notebook's `/data`.
    pub(super) fn data_tree(&self, id: NotebookId) -> PathBuf {
        self.dynamic_dir(id).join("data")
    }

    fn state_dir(&self, id: NotebookId) -> PathBuf {
        self.dynamic_dir(id).join("state")
    }

    /// Makes the notebook's `/data` tree (root's; a shared mount point), idempotently.
    pub(super) fn prepare_data_tree(&self, id: NotebookId) -> Result<PathBuf, RuntimeError> {
        // Mounts are made concurrently: the tree must be bound onto itself once, not twice.
        static PREPARING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = PREPARING.lock().unwrap_or_else(|e| e.into_inner());
        let top = self.config.data_dir.join("dynamic");
        std::fs::create_dir_all(&top)?;
        set_mode(&top, 0o711)?;
        let dir = self.dynamic_dir(id);
        let (tree, state) = (self.data_tree(id), self.state_dir(id));
        for (path, mode) in [(&dir, 0o711), (&tree, 0o755), (&state, 0o700)] {
            std::fs::create_dir_all(path)?;
            set_mode(path, mode)?;
        }
        if !is_mounted(&tree) {
            shared_bind(&tree)?;
        }
        Ok(tree)
    }

    /// The host ids the notebook's sandbox runs as now: a warm slot's own until its stop,
    /// the notebook's otherwise.
    fn sandbox_ids(&self, id: NotebookId) -> Result<HostIds, RuntimeError> {
        if let Ok(record) = std::fs::read_to_string(self.run_dir(id).join("slot"))
            && let Some(uid) = record.lines().nth(1).and_then(|u| u.trim().parse().ok())
        {
            return Ok(HostIds { uid, gid: uid });
        }
        self.uids
            .of_notebook(id)
            .ok_or_else(|| step_error("storage", "the notebook has no sandbox"))
    }

    pub(super) async fn mount_dynamic(
        &self,
        id: NotebookId,
        mount: &StorageMount,
    ) -> Result<(), RuntimeError> {
        if !plain_dir(&mount.dir) {
            return Err(RuntimeError::Fatal(format!(
                "/data/{}/ is not a plain directory name",
                mount.dir
            )));
        }
        if !self.alive(id) {
            return Err(RuntimeError::Fatal(
                "the notebook is not running".to_owned(),
            ));
        }
        let ids = self.sandbox_ids(id)?;
        let tree = self.prepare_data_tree(id)?;
        let point = tree.join(&mount.dir);
        let pid_file = self.state_dir(id).join(format!("{}.pid", mount.dir));
        if is_mounted(&point) {
            // Mounted and served: nothing to do. A mount whose daemon died goes first.
            if matches!(mount.source, StorageSource::Directory(_)) || read_pid(&pid_file).is_some()
            {
                return Ok(());
            }
            self.unmount_dynamic(id, &mount.dir).await?;
        }
        match std::fs::symlink_metadata(&point) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => std::fs::remove_file(&point)?,
            Err(_) => {}
        }
        std::fs::create_dir_all(&point)?;
        set_mode(&point, 0o755)?;
        let outcome = match &mount.source {
            StorageSource::ObjectStore(store) => {
                self.mount_object_store(id, store, &point, mount.read_only, ids)
                    .await
            }
            StorageSource::Directory(source) => {
                bind_directory(source, &point, mount.read_only, ids).await
            }
        };
        if outcome.is_err() {
            let _ = std::fs::remove_dir(&point);
            return outcome;
        }
        // The sandbox ended (or was stopped) while this mounted: the stop's own unmounting
        // (which follows the sandbox's removal) may have run before the mount was there, and
        // nothing else would end this s3fs, keys and all.
        if !self.alive(id) {
            self.unmount_dynamic(id, &mount.dir).await?;
            return Err(RuntimeError::Fatal(
                "the notebook stopped while this was being mounted".to_owned(),
            ));
        }
        Ok(())
    }

    async fn mount_object_store(
        &self,
        id: NotebookId,
        store: &ObjectStoreMount,
        point: &Path,
        read_only: bool,
        ids: HostIds,
    ) -> Result<(), RuntimeError> {
        let state = self.state_dir(id);
        let dir = point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = state.join(format!("{dir}.log"));
        let pid_file = state.join(format!("{dir}.pid"));
        let scratch = self.prepare_scratch(id).await?;
        let log_file = std::fs::File::create(&log)?;
        let region = if store.region.is_empty() {
            "us-east-1"
        } else {
            store.region.as_str()
        };
        let mut options = vec![
            format!("url={}", store.endpoint),
            format!("endpoint={region}"),
            "use_path_request_style".to_owned(),
            "sigv4".to_owned(),
            "allow_other".to_owned(),
            format!("uid={}", ids.uid),
            format!("gid={}", ids.gid),
            "umask=0077".to_owned(),
            "mp_umask=0077".to_owned(),
            "nosuid".to_owned(),
            "nodev".to_owned(),
            "retries=2".to_owned(),
            "connect_timeout=5".to_owned(),
            "readwrite_timeout=30".to_owned(),
            "dbglevel=warn".to_owned(),
            // Its scratch files (what is written before a close uploads it) on the notebook's
            // scratch filesystem, less a margin; or, without one, never in the host's last
            // 2 GiB. A tenant writing a file past that gets an I/O error.
            format!("tmpdir={}", scratch.display()),
            if self.config.storage_scratch_gb == 0 {
                "ensure_diskfree=2048".to_owned()
            } else {
                "ensure_diskfree=64".to_owned()
            },
        ];
        if read_only {
            options.push("ro".to_owned());
        }
        let source = format!("{}:/{}", store.bucket, store.prefix.trim_end_matches('/'));
        let mut command = Command::new(S3FS);
        command
            .arg(&source)
            .arg(point)
            .arg("-f")
            .arg("-o")
            .arg(options.join(","))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("AWS_ACCESS_KEY_ID", &store.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &store.secret_access_key)
            // The names older s3fs releases read.
            .env("AWSACCESSKEYID", &store.access_key_id)
            .env("AWSSECRETACCESSKEY", &store.secret_access_key)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // A session of its own: it outlives the server as the sandbox does.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| step_error(&format!("cannot run {S3FS}"), e))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| step_error(S3FS, "no pid"))?;
        let started = start_time(pid).unwrap_or_default();
        std::fs::write(&pid_file, format!("{pid} {started}\n"))?;
        let deadline = tokio::time::Instant::now() + MOUNT_TIMEOUT;
        let failure = loop {
            if is_mounted(point) {
                break None;
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Some(format!("{S3FS} ended ({status})"));
            }
            if tokio::time::Instant::now() >= deadline {
                break Some(format!("no mount after {} s", MOUNT_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The mount is up: listing it proves the bucket answers with these credentials.
        let failure = match failure {
            Some(failure) => Some(failure),
            None => {
                let probe = point.to_path_buf();
                let listed = tokio::time::timeout(
                    MOUNT_TIMEOUT,
                    tokio::task::spawn_blocking(move || {
                        std::fs::read_dir(&probe).map(|entries| entries.count())
                    }),
                )
                .await;
                match listed {
                    Ok(Ok(Ok(_))) => None,
                    Ok(Ok(Err(error))) => Some(format!("cannot list the mount: {error}")),
                    _ => Some("the object store did not answer".to_owned()),
                }
            }
        };
        let Some(failure) = failure else {
            // Reaped in the background whenever it ends (an unmount ends it).
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(());
        };
        if is_mounted(point) {
            let _ = run("umount", &["-l", &point.to_string_lossy()]).await;
        }
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let _ = std::fs::remove_file(&pid_file);
        let tail = log_tail(&log);
        Err(RuntimeError::Fatal(if tail.is_empty() {
            failure
        } else {
            format!("{failure}: {tail}")
        }))
    }

    /// Unmounts `/data/{dir}` and ends its daemon. Files still open there (a process's
    /// working directory) keep the mount alive, detached, until they are closed: nothing
    /// written is lost.
    pub(super) async fn unmount_dynamic(
        &self,
        id: NotebookId,
        dir: &str,
    ) -> Result<(), RuntimeError> {
        if !plain_dir(dir) {
            return Ok(());
        }
        let point = self.data_tree(id).join(dir);
        let pid_file = self.state_dir(id).join(format!("{dir}.pid"));
        if is_mounted(&point) {
            let target = point.to_string_lossy().into_owned();
            if run("umount", &[&target]).await.is_err() && is_mounted(&point) {
                run("umount", &["-l", &target]).await?;
            }
        }
        // s3fs ends once its mount is gone; one that hangs is ended.
        if let Some(pid) = read_pid(&pid_file) {
            let mut waited = Duration::ZERO;
            while start_time(pid).is_some() && waited < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                waited += Duration::from_millis(20);
            }
            if read_pid(&pid_file).is_some() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_dir(&point);
        Ok(())
    }

    /// Unmounts everything under the notebook's `/data` (its sandbox is gone), then its
    /// scratch filesystem.
    pub(super) async fn unmount_all_dynamic(&self, id: NotebookId) {
        let tree = self.data_tree(id);
        if let Ok(entries) = std::fs::read_dir(&tree) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Err(error) = self.unmount_dynamic(id, &name).await {
                    tracing::warn!(notebook_id = %id, %error, dir = %name, "could not unmount storage");
                }
            }
        }
        let scratch = self.state_dir(id).join("scratch");
        if is_mounted(&scratch) {
            let target = scratch.to_string_lossy().into_owned();
            // An s3fs kept alive by an open file still holds its scratch files: detached.
            if run("umount", &[&target]).await.is_err() && is_mounted(&scratch) {
                let _ = run("umount", &["-l", &target]).await;
            }
        }
        // Buffers only: made anew at the next mount.
        let _ = std::fs::remove_file(self.state_dir(id).join("scratch.ext4"));
    }

    /// Where the notebook's s3fs daemons keep what is written before a close uploads it: a
    /// loop-mounted sparse ext4 image of `storage_scratch_gb` (root's, 0700), made and
    /// mounted by the first object-store mount; without a size, the state dir.
    async fn prepare_scratch(&self, id: NotebookId) -> Result<PathBuf, RuntimeError> {
        static PREPARING: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
        let state = self.state_dir(id);
        let gb = self.config.storage_scratch_gb;
        if gb == 0 {
            return Ok(state);
        }
        let _one_at_a_time = PREPARING.get_or_init(Default::default).lock().await;
        let scratch = state.join("scratch");
        if is_mounted(&scratch) {
            return Ok(scratch);
        }
        std::fs::create_dir_all(&scratch)?;
        let image = state.join("scratch.ext4");
        let _ = std::fs::remove_file(&image);
        super::storage::make_ext4(&image, gb * 1024 * 1024 * 1024, 0, 0).await?;
        super::storage::mount_image(&image, &scratch).await?;
        set_mode(&scratch, 0o700)?;
        Ok(scratch)
    }

    /// Removes the notebook's `/data` tree (its notebook is deleted).
    pub(super) async fn remove_data_tree(&self, id: NotebookId) {
        self.unmount_all_dynamic(id).await;
        let tree = self.data_tree(id);
        for _ in 0..3 {
            if !is_mounted(&tree) {
                break;
            }
            let _ = run("umount", &["-l", &tree.to_string_lossy()]).await;
        }
        if let Err(left) = remove_unless_mounted(&self.dynamic_dir(id)) {
            tracing::error!(notebook_id = %id, mounts = ?left, "the notebook's /data tree is kept: something is still mounted in it");
        }
    }
}

/// Mount points at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    super::mount_points()
        .into_iter()
        .filter(|point| point.starts_with(dir))
        .map(|point| point.to_string_lossy().into_owned())
        .collect()
}

/// Removes `dir` and all in it, unless anything is still mounted there: a removal that walked
/// into an object store's mount would delete the bucket's objects, into a share the
/// operator's files. `Err` names what is mounted.
fn remove_unless_mounted(dir: &Path) -> Result<(), Vec<String>> {
    let left = mounts_below(dir);
    if !left.is_empty() {
        return Err(left);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Binds `path` onto itself and makes it shared: mounts below it reach every sandbox that
/// binds it.
pub(super) fn shared_bind(path: &Path) -> Result<(), RuntimeError> {
    nix::mount::mount(
        Some(path),
        path,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| step_error(&format!("bind {}", path.display()), e))?;
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| step_error(&format!("share {}", path.display()), e))
}

/// Why a writable share may not be bound: the notebook's uid and gid stand for the
/// directory's owner and group, so an owner or group root would make what a tenant writes
/// there (a setuid or setgid program included) root's on the host.
pub fn root_owned_share(meta: &std::fs::Metadata, read_only: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    (!read_only && (meta.uid() == 0 || meta.gid() == 0)).then(|| {
        format!(
            "owned by {}:{}, and what notebooks write there would be root's on the host; give it \
             an unprivileged owner and group of its own (chown), or grant it read_only",
            meta.uid(),
            meta.gid()
        )
    })
}

/// Binds an operator's directory at `point`, `nosuid,nodev` (read-only when granted so):
/// idmapped so that its files' owner (the directory's own) is the sandbox's uid where the
/// filesystem allows it (NFS does not: there the files keep their owners).
async fn bind_directory(
    source: &Path,
    point: &Path,
    read_only: bool,
    ids: HostIds,
) -> Result<(), RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(source)
        .map_err(|e| step_error(&format!("share {}", source.display()), e))?;
    if !meta.is_dir() {
        return Err(step_error(
            &format!("share {}", source.display()),
            "not a directory",
        ));
    }
    if let Some(refusal) = root_owned_share(&meta, read_only) {
        return Err(RuntimeError::Fatal(format!(
            "share {}: {refusal}",
            source.display()
        )));
    }
    let mapped = super::sys::id_mapping_userns(&[(meta.uid(), ids.uid)], &[(meta.gid(), ids.gid)])
        .and_then(|userns| {
            super::sys::bind_with_attributes(source, point, Some(&userns), read_only)
        });
    if mapped.is_err() {
        super::sys::bind_with_attributes(source, point, None, read_only)
            .map_err(|e| step_error(&format!("bind {}", source.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_mount_dirs() {
        assert!(plain_dir("in-1_b"));
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!plain_dir(bad), "{bad}");
        }
    }

    #[test]
    fn a_tree_with_a_mount_left_in_it_is_not_removed() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A space in the path: /proc/self/mounts writes it as \040.
        let (share, tree) = (dir.path().join("share"), dir.path().join("a tree"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join("keep.txt"), "the operator's").unwrap();
        std::fs::create_dir_all(tree.join("data/in")).unwrap();
        nix::mount::mount(
            Some(&share),
            &tree.join("data/in"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let left = remove_unless_mounted(&tree).unwrap_err();
        assert_eq!(left, [tree.join("data/in").to_string_lossy()]);
        assert!(
            share.join("keep.txt").exists(),
            "nothing removed through the mount"
        );
        nix::mount::umount(&tree.join("data/in")).unwrap();
        assert_eq!(remove_unless_mounted(&tree), Ok(()));
        assert!(!tree.exists());
        assert!(share.join("keep.txt").exists());
    }

    #[tokio::test]
    async fn a_writable_share_owned_by_root_is_refused() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (share, point) = (dir.path().join("share"), dir.path().join("point"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::create_dir_all(&point).unwrap();
        let ids = HostIds {
            uid: 2_000_999_000,
            gid: 2_000_999_000,
        };
        let error = bind_directory(&share, &point, false, ids)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("owned by 0:0"), "{error}");
        assert!(!is_mounted(&point));
        // Owned by root but with group root only: refused too (setgid programs).
        std::os::unix::fs::chown(&share, Some(4242), Some(0)).unwrap();
        assert!(bind_directory(&share, &point, false, ids).await.is_err());
        assert!(!is_mounted(&point));
        // Read-only, nothing can be written or chmod-ed there: bound.
        std::os::unix::fs::chown(&share, Some(0), Some(0)).unwrap();
        bind_directory(&share, &point, true, ids).await.unwrap();
        assert!(is_mounted(&point));
        nix::mount::umount(&point).unwrap();
    }

    #[test]
    fn a_reused_pid_is_not_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.pid");
        let me = std::process::id() as i32;
        std::fs::write(&file, format!("{me} {}\n", start_time(me).unwrap())).unwrap();
        assert_eq!(read_pid(&file), Some(me));
        std::fs::write(&file, format!("{me} {}\n", start_time(me).unwrap() + 1)).unwrap();
        assert_eq!(read_pid(&file), None);
    }
}
