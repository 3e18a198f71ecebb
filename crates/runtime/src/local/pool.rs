//! The warm pool: sandboxes started ahead of need, JupyterLab imported and waiting on its
//! claim channel. A warm sandbox runs as a uid of its own (its slot's); the notebook that
//! claims it gets its volume mounted onto the slot's shared `work` mount point as an
//! idmapped mount (the notebook's uid on disk shows as the slot's uid, and what the slot's
//! uid writes is stored as the notebook's), which the sandbox sees through mount
//! propagation. A claimed sandbox is never returned to the pool.
//!
//! A warm sandbox of a container image runs on a root of its own (the image's layers
//! idmapped for the slot's uid, under the slot's upper directory), so it serves only a
//! notebook without changes outside its work dir (its first start, or every start when they
//! are discarded at stop); at the stop, the slot's upper directory becomes the notebook's,
//! its files given to the notebook's uid.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::image::Prepared;
use super::rootfs::{OverlayDirs, Root, unmount_overlay};
use super::sys::{HostIds, idmapped_bind, mapping_userns};
use super::{
    Ended, Layout, LocalRuntime, PidRecord, Sandbox, run, set_mode, signal_all, step_error,
    unique_name,
};
use crate::cgroup::{Cgroup, Limits};
use crate::{RuntimeError, SandboxSpec};
use atelier_domain::NotebookId;

/// What a warm sandbox must match to serve a start: the image and the flavor's limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    /// The Python prefix, or `oci:{digest}` of a container image.
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// An idle warm sandbox.
pub(super) struct Warm {
    key: PoolKey,
    slot: String,
    /// What it runs on.
    root: Root,
    sandbox: Sandbox,
    ids: HostIds,
    /// Our end of the claim channel.
    channel: std::os::unix::net::UnixStream,
}

impl Warm {
    /// What it runs on.
    pub(super) fn root(&self) -> &Root {
        &self.root
    }
}

/// `slot` if it is a name the pool makes (`pool-{pid}-{n}`): a path is only derived from
/// names that cannot leave the data dir.
pub(super) fn valid_slot(slot: &str) -> Option<String> {
    let rest = slot.strip_prefix("pool-")?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| slot.to_owned())
}

/// `mount --bind source target`, as a system call (a claim is on the start's critical path).
fn bind(source: &Path, target: &Path) -> Result<(), RuntimeError> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| step_error(&format!("bind {}", target.display()), e))
}

impl LocalRuntime {
    pub(super) fn pool_dir(&self, slot: &str) -> PathBuf {
        self.config.data_dir.join("pool").join(slot)
    }

    /// An idle warm sandbox for `key`, if one is alive.
    pub(super) fn take_warm(&self, key: &PoolKey) -> Option<Warm> {
        let mut pool = self.pool.lock().expect("poisoned");
        let index = pool
            .iter()
            .position(|w| w.key == *key && w.sandbox.exited.borrow().is_none())?;
        Some(pool.swap_remove(index))
    }

    /// Tops the pool for `key` up to its size, in the background, one sandbox at a time.
    pub(super) fn refill(&self, key: PoolKey, prepared: Prepared, limits: Limits) {
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
                match this.spawn_warm(&key, &prepared, limits).await {
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

    /// A sandbox started ahead of need. Its work dir and SSH dir are empty shared mount
    /// points; a claim mounts the notebook's volume and SSH files on them.
    async fn spawn_warm(
        &self,
        key: &PoolKey,
        prepared: &Prepared,
        limits: Limits,
    ) -> Result<Warm, RuntimeError> {
        // Remains of an earlier server are reaped at boot, before any refill: no clash.
        let slot = format!("pool-{}", unique_name());
        let ids = self
            .uids
            .for_slot(&slot)
            .map_err(|e| step_error("warm sandbox uid", e))?;
        let dir = self.pool_dir(&slot);
        let (work, ssh, data) = (dir.join("work"), dir.join("ssh"), dir.join("data"));
        std::fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o711)?;
        for point in [&work, &ssh, &data] {
            std::fs::create_dir_all(point)?;
            bind(point, point)?;
            nix::mount::mount(
                None::<&str>,
                point.as_path(),
                None::<&str>,
                nix::mount::MsFlags::MS_SHARED,
                None::<&str>,
            )
            .map_err(|e| step_error("warm sandbox mount point", e))?;
        }
        let layout = Layout {
            run_dir: self.config.data_dir.join("run").join(&slot),
            work,
            ssh,
            data,
            hostname: "notebook".to_owned(),
            defer_jupyter: false,
        };
        let root = match prepared {
            Prepared::Prefix(prefix) => Ok(Root::Prefix(prefix.clone())),
            Prepared::Image(image) => {
                let dirs = OverlayDirs::under(&dir);
                match self.mount_root_fs(&dirs, ids).await {
                    Ok(()) => self
                        .mount_overlay(&dirs, &image.layers, ids)
                        .map(|()| Root::Image {
                            merged: dirs.merged,
                            env: super::image::image_env(&image.resolved),
                        }),
                    Err(error) => Err(error),
                }
            }
        };
        let cgroup = self.hierarchy.map(|h| Cgroup::named(h, &slot));
        let launched = match root {
            Ok(root) => self
                .launch(&layout, &root, limits, cgroup, ids, true)
                .await
                .map(|launched| (root, launched)),
            Err(error) => Err(error),
        };
        let (root, (sandbox, channel)) = match launched {
            Ok(launched) => launched,
            Err(error) => {
                self.destroy_slot(
                    &slot,
                    None,
                    self.hierarchy.map(|h| Cgroup::named(h, &slot)).as_ref(),
                )
                .await;
                return Err(error);
            }
        };
        // Only a sandbox whose JupyterLab has finished importing counts as warm.
        let mut reader = channel.try_clone()?;
        let said = tokio::task::spawn_blocking(move || {
            let mut word = [0u8; 5];
            reader.read_exact(&mut word).map(|_| word == *b"warm\n")
        });
        let warm = matches!(
            tokio::time::timeout(self.config.ready_timeout, said).await,
            Ok(Ok(Ok(true)))
        );
        if !warm {
            sandbox
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.destroy_slot(&slot, Some(sandbox.pid), sandbox.cgroup.as_ref())
                .await;
            return Err(step_error("warm sandbox", "JupyterLab did not get ready"));
        }
        Ok(Warm {
            key: key.clone(),
            slot,
            root,
            sandbox,
            ids,
            channel,
        })
    }

    /// Makes a warm sandbox the notebook's: its volume (idmapped) and SSH files mounted in,
    /// its run dir and cgroup renamed after the notebook. Returns its claim channel, on
    /// which the caller tells JupyterLab its settings (`LocalRuntime::serve`).
    pub(super) async fn claim(
        &self,
        warm: Warm,
        spec: &SandboxSpec,
        notebook: HostIds,
    ) -> Result<(watch::Receiver<Ended>, std::os::unix::net::UnixStream), RuntimeError> {
        let id = spec.notebook_id;
        let dir = self.pool_dir(&warm.slot);
        let volume = self.volume_dir(id, spec.volume_category);
        let outcome: Result<(), RuntimeError> = async {
            // The SSH host key must be readable by the uid this sandbox runs as.
            self.prepare_ssh(id, &warm.root, warm.ids)?;
            // A container image's changes will be the notebook's (handed over at the stop).
            if let Some(digest) = warm.key.image.strip_prefix("oci:") {
                self.discard_root(id)?;
                self.record_base(id, digest)?;
            }
            let userns = mapping_userns(notebook.uid, warm.ids.uid)
                .map_err(|e| step_error("idmapped volume", e))?;
            idmapped_bind(&volume, &dir.join("work"), &userns)
                .map_err(|e| step_error("idmapped volume", e))?;
            bind(&self.ssh_dir(id), &dir.join("ssh"))?;
            // The notebook's /data tree; what is mounted in it later reaches the sandbox.
            let data = self.prepare_data_tree(id)?;
            nix::mount::mount(
                Some(&data),
                &dir.join("data"),
                None::<&str>,
                nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| step_error("bind /data", e))?;
            let run_dir = self.run_dir(id);
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)?;
            }
            std::fs::rename(self.config.data_dir.join("run").join(&warm.slot), &run_dir)?;
            // The slot and its uid, for the stop that gives them back.
            std::fs::write(
                run_dir.join("slot"),
                format!("{}\n{}\n", warm.slot, warm.ids.uid),
            )?;
            Ok(())
        }
        .await;
        let Warm {
            slot,
            sandbox,
            channel,
            ids,
            ..
        } = warm;
        let mut sandbox = sandbox;
        if let Err(error) = outcome {
            sandbox
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(cgroup) = &sandbox.cgroup {
                signal_all(cgroup, sandbox.pid, Signal::SIGKILL);
            }
            self.discard_slot(&slot, Some(ids.uid), sandbox.cgroup.as_ref(), None)
                .await;
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
        *sandbox.owner.lock().expect("poisoned") = Some(id);
        self.sandboxes.lock().expect("poisoned").insert(id, sandbox);
        Ok((exited, channel))
    }

    /// Unmounts and removes a warm sandbox's mount points and root (and its empty cgroup),
    /// and gives its uid back (`uid` when known; otherwise found in the registry). The
    /// changes a container image's sandbox made become those of `owner`, the notebook that
    /// claimed it (unless they are discarded at stop).
    pub(super) async fn discard_slot(
        &self,
        slot: &str,
        uid: Option<u32>,
        cgroup: Option<&Cgroup>,
        owner: Option<NotebookId>,
    ) {
        let dir = self.pool_dir(slot);
        let root = OverlayDirs::under(&dir);
        unmount_overlay(&root).await;
        if let (Some(id), Some(uid)) = (owner, uid)
            && (root.image.exists() || root.upper.is_dir())
            && !self.config.discard_root_at_stop
            && let Err(error) = self.hand_over_changes(id, &root, uid)
        {
            tracing::error!(notebook_id = %id, %error, "cannot keep the changes of a warm sandbox");
        }
        for point in [dir.join("work"), dir.join("ssh"), dir.join("data")] {
            // The self-bind, and a notebook's mount on top of it.
            for _ in 0..3 {
                if !super::is_mounted(&point) {
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
        match uid {
            Some(uid) => self.uids.release_held_by(uid, slot),
            None => self.uids.release_owner(slot),
        }
    }

    /// Kills every idle warm sandbox (shutdown).
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

    /// Warm sandboxes left by an earlier server (killed, unmounted, removed). Claimed ones
    /// are the notebooks' now (`run/{id}/slot`) and are left alone.
    pub(super) async fn reap_stale_pool(&self) {
        let claimed: Vec<String> = std::fs::read_dir(self.config.data_dir.join("run"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("slot")).ok())
                    .filter_map(|s| s.lines().next().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut slots: Vec<String> = Vec::new();
        for parent in ["run", "pool"] {
            if let Ok(entries) = std::fs::read_dir(self.config.data_dir.join(parent)) {
                for entry in entries.flatten() {
                    if let Some(slot) = entry.file_name().to_str().and_then(valid_slot)
                        && !slots.contains(&slot)
                        && !claimed.contains(&slot)
                    {
                        slots.push(slot);
                    }
                }
            }
        }
        for slot in slots {
            let cgroup = self.hierarchy.map(|h| Cgroup::named(h, &slot));
            let pid = PidRecord::read(&self.config.data_dir.join("run").join(&slot).join("pid"))
                .filter(PidRecord::is_current)
                .map(|r| r.pid);
            self.destroy_slot(&slot, pid, cgroup.as_ref()).await;
        }
        self.uids.release_slots_except(&claimed);
    }

    /// Kills an unclaimed warm sandbox (everything in its cgroup, and `pid`, a verified
    /// bubblewrap pid), then removes its mount points, cgroup and run dir.
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
                && super::tree_alive(None, pid)
            {
                alive = true;
                let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.discard_slot(slot, None, cgroup, None).await;
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("run").join(slot));
    }

    /// Moves a claimed warm sandbox's upper directory to the notebook's root dir, its files
    /// given from the slot's uid to the notebook's.
    /// The files keep the slot's uid until the notebook's next start gives them its own.
    fn hand_over_changes(
        &self,
        id: NotebookId,
        slot: &OverlayDirs,
        slot_uid: u32,
    ) -> Result<(), RuntimeError> {
        let target = OverlayDirs::under(&self.root_dir(id));
        let base = self.root_base(id);
        self.discard_root(id)?;
        if let Some(base) = base {
            self.record_base(id, &base)?;
        }
        std::fs::create_dir_all(&target.fs)?;
        set_mode(&target.fs, 0o700)?;
        if slot.image.exists() {
            std::fs::rename(&slot.image, &target.image)?;
        } else {
            std::fs::rename(&slot.upper, &target.upper)?;
        }
        if slot.empty.exists() {
            std::fs::write(&target.empty, "")?;
        }
        std::fs::write(&target.owner, format!("{slot_uid}\n"))?;
        Ok(())
    }

    /// The manifest digests warm sandboxes run.
    pub(super) fn warm_images(&self) -> Vec<String> {
        self.pool
            .lock()
            .expect("poisoned")
            .iter()
            .filter_map(|w| w.key.image.strip_prefix("oci:").map(str::to_owned))
            .collect()
    }

    /// How many warm sandboxes are idle.
    pub fn warm_count(&self) -> usize {
        self.pool.lock().expect("poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::valid_slot;

    #[test]
    fn only_pool_names_are_slots() {
        assert_eq!(valid_slot("pool-12-3").as_deref(), Some("pool-12-3"));
        for bad in [
            "pool-",
            "pool-1",
            "pool-1-",
            "pool-1-2/../../x",
            "/etc",
            "../volumes/abc",
            "pool-1-2 ",
            "pool-a-1",
        ] {
            assert_eq!(valid_slot(bad), None, "{bad:?}");
        }
    }
}
