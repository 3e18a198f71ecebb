//! Root filesystems of notebooks that run a container image: the image's layers (unpacked
//! once in the image store, shared by every notebook) under an overlay with a writable upper
//! directory of the notebook's own.
//!
//! Owners: the layers keep the image's owners on disk (root, `ma-user` 1000:100). Each
//! notebook sees them through idmapped mounts made for it: the image's uid 1000 and gid 100
//! are the notebook's host uid (so `ma-user`'s files are its own), root is the host's
//! `nobody` (so nothing of root's is writable, and overlayfs can still copy a root-owned
//! directory up when the notebook writes below it), other ids stay unmapped and read as
//! `nobody`. The upper directory stores what the notebook writes as those host ids; saving
//! it as an image maps them back ([`LocalRuntime::owner_map`]).
//!
//! Layout, under `roots/{id}/` (0711): `merged/` (the overlay, bound as `/` in the sandbox),
//! and `fs/` (0700, root only: the overlay's `upper/` and `work/`, the layers' temporary
//! mount points `lower/`, and `base`, the manifest digest of the image the upper directory
//! was made on). The idmapped layer mounts are detached as soon as the overlay is mounted:
//! overlayfs holds private clones of them, so one mount per notebook is all the host shows.
use std::path::{Path, PathBuf};

use atelier_domain::NotebookId;
use atelier_oci::commit::OwnerMap;

use super::sys::{HostIds, id_mapping_userns, idmapped_bind};
use super::{LocalRuntime, is_mounted, run, set_mode, step_error};
use crate::RuntimeError;

/// The image's `ma-user`, by ModelArts' custom image conventions.
pub(super) const IMAGE_UID: u32 = 1000;
pub(super) const IMAGE_GID: u32 = 100;
/// Where the image's root is mapped on the host (`nobody`, `nogroup`).
const HOST_NOBODY: u32 = 65534;

/// What the sandbox of a notebook runs on.
#[derive(Debug, Clone)]
pub(super) enum Root {
    /// The host's `/usr` with a Python prefix holding JupyterLab (the built-in venv image, a
    /// `local:///prefix`).
    Prefix(PathBuf),
    /// A container image's root filesystem, mounted at `merged`.
    Image {
        merged: PathBuf,
        /// The image configuration's `Env` (`NAME=value`).
        env: Vec<String>,
    },
}

impl Root {
    /// The sandbox's gid: `ma-user`'s group (the venv image's `/etc/group` has its own).
    pub(super) fn gid(&self) -> u32 {
        match self {
            Root::Prefix(_) => 1000,
            Root::Image { .. } => IMAGE_GID,
        }
    }

    /// `PATH` in the sandbox.
    pub(super) fn path_env(&self) -> String {
        match self {
            Root::Prefix(prefix) => {
                format!("{}/bin:/usr/local/bin:/usr/bin:/bin", prefix.display())
            }
            Root::Image { env, .. } => env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .to_owned(),
        }
    }
}

/// The mount options of an overlay (its paths may not hold the option syntax's `,` `:` `\`).
fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> Result<String, RuntimeError> {
    let text = |path: &Path| -> Result<String, RuntimeError> {
        let text = path.to_string_lossy().into_owned();
        if text.contains([',', ':', '\\']) {
            return Err(step_error(
                "root filesystem",
                format!("the data dir's path may not hold ',', ':' or '\\': {text}"),
            ));
        }
        Ok(text)
    };
    // overlayfs lists the top layer first.
    let lowerdir = lower
        .iter()
        .rev()
        .map(|p| text(p))
        .collect::<Result<Vec<_>, _>>()?
        .join(":");
    Ok(format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        text(upper)?,
        text(work)?
    ))
}

/// Makes `dir` the layer laid over every image: the files and directories Atelier mounts
/// over (`/etc/hosts`, `/etc/resolv.conf`, `/home/ma-user/work`, `/run`, `/proc`, ...), so that they exist
/// in any image without the notebook's upper directory (and the images saved from it)
/// holding them. `/home/ma-user` is ma-user's, as ModelArts images have it.
pub(super) fn write_mount_points(dir: &Path, ca_bundle: bool) -> std::io::Result<()> {
    use std::os::unix::fs::lchown;
    for (path, mode, owner) in [
        ("", 0o755, 0),
        ("etc", 0o755, 0),
        ("home", 0o755, 0),
        ("home/ma-user", 0o755, IMAGE_UID),
        ("home/ma-user/work", 0o755, IMAGE_UID),
        ("run", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("proc", 0o555, 0),
        ("dev", 0o755, 0),
        ("data", 0o755, 0),
    ] {
        let path = dir.join(path);
        std::fs::create_dir_all(&path)?;
        set_mode(&path, mode)?;
        let group = if owner == 0 { 0 } else { IMAGE_GID };
        lchown(&path, Some(owner), Some(group))?;
    }
    let ssl = ["etc/ssl", "etc/ssl/certs"];
    for path in ssl {
        let path = dir.join(path);
        if ca_bundle {
            std::fs::create_dir_all(&path)?;
            set_mode(&path, 0o755)?;
            lchown(&path, Some(0), Some(0))?;
        }
    }
    let mut files = vec!["etc/hosts", "etc/resolv.conf", "etc/passwd", "etc/group"];
    if ca_bundle {
        files.push("etc/ssl/certs/ca-certificates.crt");
    } else if dir.join(ssl[0]).exists() {
        std::fs::remove_dir_all(dir.join(ssl[0]))?;
    }
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            std::fs::write(&path, "")?;
        }
        set_mode(&path, 0o644)?;
        lchown(&path, Some(0), Some(0))?;
    }
    Ok(())
}

/// Where an overlay root's pieces are: `fs/` (root only; with `root_quota_gb`, the
/// mounted ext4 image `fs.ext4` of that size, so that a notebook cannot fill the host's
/// disk through its root) with `upper/`, `work/` and the layers' temporary mount points
/// `lower/`; the mount point `merged/`; and beside them, written only by the server, `owner`
/// (the host uid the upper's files are stored as) and `empty` (present when the upper was
/// found empty as it was unmounted).
#[derive(Debug, Clone)]
pub(super) struct OverlayDirs {
    pub image: PathBuf,
    pub fs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub lower: PathBuf,
    pub merged: PathBuf,
    pub owner: PathBuf,
    pub empty: PathBuf,
}

impl OverlayDirs {
    pub(super) fn under(dir: &Path) -> OverlayDirs {
        let fs = dir.join("fs");
        OverlayDirs {
            image: dir.join("fs.ext4"),
            upper: fs.join("upper"),
            work: fs.join("work"),
            lower: fs.join("lower"),
            merged: dir.join("merged"),
            owner: dir.join("owner"),
            empty: dir.join("empty"),
            fs,
        }
    }

    fn upper_is_empty(&self) -> bool {
        std::fs::read_dir(&self.upper).map_or(true, |mut entries| entries.next().is_none())
    }
}

/// Unmounts an overlay root (lazily: a process still inside keeps its view), then the
/// filesystem of its upper directory, noting whether that was empty.
pub(super) async fn unmount_overlay(dirs: &OverlayDirs) {
    for _ in 0..3 {
        if !is_mounted(&dirs.merged) {
            break;
        }
        if let Err(error) = run("umount", &["-l", &dirs.merged.to_string_lossy()]).await {
            tracing::warn!(%error, "could not unmount a root filesystem");
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dirs.lower) {
        for entry in entries.flatten() {
            if is_mounted(&entry.path()) {
                let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    if is_mounted(&dirs.fs) {
        if dirs.upper_is_empty() {
            let _ = std::fs::write(&dirs.empty, "");
        } else {
            let _ = std::fs::remove_file(&dirs.empty);
        }
        if let Err(error) = run("umount", &["-l", &dirs.fs.to_string_lossy()]).await {
            tracing::warn!(%error, "could not unmount a root's upper filesystem");
        }
    }
}

/// Gives what `from` owns under `dir` to `to` (a warm sandbox's changes becoming those of the
/// notebook that claimed it). Symlinks are not followed.
pub(super) fn reown(dir: &Path, from: HostIds, to: HostIds) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let uid = (meta.uid() == from.uid).then_some(to.uid);
        let gid = (meta.gid() == from.gid).then_some(to.gid);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

impl LocalRuntime {
    fn mount_points_layer(&self) -> PathBuf {
        self.config.data_dir.join("sandbox/mountpoints")
    }

    pub(super) fn root_dir(&self, id: NotebookId) -> PathBuf {
        self.config.data_dir.join("roots").join(id.to_string())
    }

    fn upper_dir(&self, id: NotebookId) -> PathBuf {
        self.root_dir(id).join("fs/upper")
    }

    /// Mounts the filesystem of a root's upper directory: with `root_quota_gb`, its ext4
    /// image of that size (made at the first mount); else a directory of the data dir. Files
    /// stored as another host uid (a warm sandbox's, handed over) become `ids`'s first.
    pub(super) async fn mount_root_fs(
        &self,
        dirs: &OverlayDirs,
        ids: HostIds,
    ) -> Result<(), RuntimeError> {
        std::fs::create_dir_all(&dirs.fs)?;
        let gb = self.config.root_quota_gb;
        if gb > 0 && !is_mounted(&dirs.fs) {
            if !dirs.image.exists() {
                super::storage::make_ext4(&dirs.image, gb * 1024 * 1024 * 1024, 0, 0).await?;
            }
            super::storage::mount_image(&dirs.image, &dirs.fs).await?;
        }
        set_mode(&dirs.fs, 0o700)?;
        let _ = std::fs::remove_file(&dirs.empty);
        let owner = std::fs::read_to_string(&dirs.owner)
            .ok()
            .and_then(|o| o.trim().parse::<u32>().ok());
        if let Some(owner) = owner.filter(|o| *o != ids.uid)
            && dirs.upper.is_dir()
        {
            let from = HostIds {
                uid: owner,
                gid: owner,
            };
            reown(&dirs.upper, from, ids)?;
        }
        std::fs::write(&dirs.owner, format!("{}\n", ids.uid))?;
        Ok(())
    }

    /// The manifest digest the notebook's upper directory was made on, if it has one.
    pub(super) fn root_base(&self, id: NotebookId) -> Option<String> {
        let text = std::fs::read_to_string(self.root_dir(id).join("base")).ok()?;
        let digest = text.trim();
        (digest.starts_with("sha256:") && digest.len() == 71).then(|| digest.to_owned())
    }

    /// Owners as the notebook's upper directory stores them, back to the image's.
    pub(super) fn owner_map(ids: HostIds) -> OwnerMap {
        OwnerMap {
            uids: vec![(ids.uid, IMAGE_UID), (HOST_NOBODY, 0)],
            gids: vec![(ids.gid, IMAGE_GID), (HOST_NOBODY, 0)],
        }
    }

    /// Mounts the notebook's root: `layers` (bottom first) idmapped for `ids`, under its upper
    /// directory (made empty, or kept from earlier starts on the same base `digest`).
    pub(super) async fn mount_root(
        &self,
        id: NotebookId,
        layers: &[PathBuf],
        digest: &str,
        ids: HostIds,
    ) -> Result<PathBuf, RuntimeError> {
        self.unmount_root(id).await;
        if self.root_base(id).is_some_and(|base| base != digest) {
            // The image changed under the notebook (its tag was re-pushed and the old
            // manifest is gone): changes made on the old layers are not valid on new ones.
            tracing::warn!(notebook_id = %id, image = %digest,
                "the notebook's image changed; its changes outside the work dir start afresh");
            self.discard_root(id)?;
        }
        let dirs = OverlayDirs::under(&self.root_dir(id));
        self.record_base(id, digest)?;
        self.mount_root_fs(&dirs, ids).await?;
        self.mount_overlay(&dirs, layers, ids)?;
        Ok(dirs.merged)
    }

    /// Records the image the notebook's changes are made on.
    pub(super) fn record_base(&self, id: NotebookId, digest: &str) -> Result<(), RuntimeError> {
        let dir = self.root_dir(id);
        std::fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o711)?;
        std::fs::write(dir.join("base"), format!("{digest}\n"))?;
        Ok(())
    }

    /// Mounts an overlay of `layers` (bottom first), idmapped for `ids`, and the layer of
    /// mount points, under `dirs.upper` (its filesystem mounted already), at `dirs.merged`.
    pub(super) fn mount_overlay(
        &self,
        dirs: &OverlayDirs,
        layers: &[PathBuf],
        ids: HostIds,
    ) -> Result<(), RuntimeError> {
        for (path, mode) in [
            (&dirs.fs, 0o700),
            (&dirs.upper, 0o755),
            (&dirs.work, 0o700),
            (&dirs.lower, 0o700),
            (&dirs.merged, 0o755),
        ] {
            std::fs::create_dir_all(path)?;
            set_mode(path, mode)?;
        }
        let userns = id_mapping_userns(
            &[(0, HOST_NOBODY), (IMAGE_UID, ids.uid)],
            &[(0, HOST_NOBODY), (IMAGE_GID, ids.gid)],
        )
        .map_err(|e| step_error("root filesystem: id mapping", e))?;
        let mut points = Vec::with_capacity(layers.len() + 1);
        let top = self.mount_points_layer();
        let mounted: Result<(), RuntimeError> = (|| {
            for (index, layer) in layers.iter().chain([&top]).enumerate() {
                let point = dirs.lower.join(index.to_string());
                std::fs::create_dir_all(&point)?;
                idmapped_bind(layer, &point, &userns)
                    .map_err(|e| step_error("root filesystem: idmapped layer", e))?;
                points.push(point);
            }
            let options = overlay_options(&points, &dirs.upper, &dirs.work)?;
            nix::mount::mount(
                Some("overlay"),
                &dirs.merged,
                Some("overlay"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| step_error("root filesystem: overlay", e))
        })();
        // The overlay keeps clones of the layer mounts: ours go either way.
        for point in points.iter().rev() {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        mounted
    }

    /// Unmounts the notebook's root filesystem (a stop); the upper directory stays.
    pub(super) async fn unmount_root(&self, id: NotebookId) {
        unmount_overlay(&OverlayDirs::under(&self.root_dir(id))).await;
    }

    /// Throws the notebook's changes outside the work dir away (unmounted first).
    pub(super) fn discard_root(&self, id: NotebookId) -> Result<(), RuntimeError> {
        let dirs = OverlayDirs::under(&self.root_dir(id));
        if is_mounted(&dirs.fs) {
            return Err(step_error(
                "root filesystem",
                "still mounted; stop the notebook",
            ));
        }
        for path in [&dirs.upper, &dirs.work] {
            if path.is_dir() {
                std::fs::remove_dir_all(path)?;
            }
        }
        for path in [
            &dirs.image,
            &dirs.owner,
            &dirs.empty,
            &self.root_dir(id).join("base"),
        ] {
            if path.exists() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// Whether the notebook has (or may have) changes outside its work dir: its upper
    /// directory is not empty, or, unmounted in its image, was not found empty at the last
    /// unmount (a host that went down unmounts nothing: then it may have some).
    pub(super) fn root_changed(&self, id: NotebookId) -> bool {
        let dirs = OverlayDirs::under(&self.root_dir(id));
        if is_mounted(&dirs.fs) || !dirs.image.exists() {
            return !dirs.upper_is_empty();
        }
        !dirs.empty.exists()
    }

    /// The upper directory of the notebook's running sandbox and the host ids its files are
    /// stored as: a warm sandbox's own (in its slot, as the slot's uid) until the stop that
    /// hands it to the notebook, the notebook's otherwise.
    pub(super) fn live_upper(&self, id: NotebookId) -> Option<(PathBuf, HostIds)> {
        if let Ok(record) = std::fs::read_to_string(self.run_dir(id).join("slot")) {
            let mut lines = record.lines();
            if let (Some(slot), Some(uid)) = (
                lines.next().and_then(super::pool::valid_slot),
                lines.next().and_then(|u| u.trim().parse::<u32>().ok()),
            ) {
                let upper = OverlayDirs::under(&self.pool_dir(&slot)).upper;
                if upper.is_dir() {
                    return Some((upper, HostIds { uid, gid: uid }));
                }
            }
        }
        let ids = self.uids.of_notebook(id)?;
        Some((self.upper_dir(id), ids))
    }
}
