//! Work volumes. EFS: `volumes/{id}`, where a sparse ext4 image `volumes/{id}.efs.ext4` of
//! `efs_quota_gb` is loop-mounted while the notebook runs, so that a notebook cannot fill the
//! host's disk (an EFS directory from before quotas is moved into its image once); EVS: a
//! sparse ext4 image `volumes/{id}.ext4` of the volume's capacity loop-mounted at
//! `mounts/{id}`. Both are mounted `nosuid,nodev`. The volume's root belongs to the
//! notebook's uid and is 0700; the directories above it are traversable but not listable by
//! other uids, so bubblewrap, running as that uid, can bind it.
use std::path::{Path, PathBuf};

use atelier_domain::{NotebookId, VolumeCategory};

use super::sys::HostIds;
use super::{LocalRuntime, file_len, filesystem_len, is_mounted, run};
use crate::{RuntimeError, SandboxSpec};

/// Makes `image` a sparse ext4 filesystem of `bytes` whose root belongs to `uid:gid`
/// (through `{image}.partial`, so that a half-made image is never taken for one).
pub(super) async fn make_ext4(
    image: &Path,
    bytes: u64,
    uid: u32,
    gid: u32,
) -> Result<(), RuntimeError> {
    let partial = image.with_extension("partial");
    let file = std::fs::File::create(&partial)?;
    file.set_len(bytes)?;
    drop(file);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-m",
            "0",
            "-J",
            "size=16",
            "-E",
            &format!("root_owner={uid}:{gid},lazy_itable_init=1,lazy_journal_init=1"),
            &partial.to_string_lossy(),
        ],
    )
    .await?;
    std::fs::rename(&partial, image)?;
    Ok(())
}

/// Loop-mounts the ext4 image `image` on `dir`, `nosuid,nodev`.
pub(super) async fn mount_image(image: &Path, dir: &Path) -> Result<(), RuntimeError> {
    run(
        "mount",
        &[
            "-o",
            "loop,nosuid,nodev",
            &image.to_string_lossy(),
            &dir.to_string_lossy(),
        ],
    )
    .await
    .map(drop)
}

impl LocalRuntime {
    pub(super) fn volume_dir(&self, id: NotebookId, category: VolumeCategory) -> PathBuf {
        match category {
            VolumeCategory::Evs => self.config.data_dir.join("mounts").join(id.to_string()),
            _ => self.config.data_dir.join("volumes").join(id.to_string()),
        }
    }

    pub(super) fn evs_image(&self, id: NotebookId) -> PathBuf {
        self.config
            .data_dir
            .join("volumes")
            .join(format!("{id}.ext4"))
    }

    pub(super) fn efs_image(&self, id: NotebookId) -> PathBuf {
        self.config
            .data_dir
            .join("volumes")
            .join(format!("{id}.efs.ext4"))
    }

    /// An EFS volume: its quota image made (moving in what the directory held before
    /// quotas existed) and mounted on `volumes/{id}`.
    async fn prepare_efs(&self, spec: &SandboxSpec, ids: HostIds) -> Result<(), RuntimeError> {
        let dir = self.volume_dir(spec.notebook_id, spec.volume_category);
        std::fs::create_dir_all(&dir)?;
        if self.config.efs_quota_gb == 0 {
            return self.own_volume(&dir, ids).await;
        }
        let image = self.efs_image(spec.notebook_id);
        if !image.exists() {
            let partial = image.with_extension("partial");
            let file = std::fs::File::create(&partial)?;
            file.set_len(self.config.efs_quota_gb * 1024 * 1024 * 1024)?;
            drop(file);
            run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-J",
                    "size=16",
                    "-E",
                    &format!(
                        "root_owner={}:{},lazy_itable_init=1,lazy_journal_init=1",
                        ids.uid, ids.gid
                    ),
                    &partial.to_string_lossy(),
                ],
            )
            .await?;
            if !is_mounted(&dir) && std::fs::read_dir(&dir)?.next().is_some() {
                self.move_into_image(&dir, &partial).await?;
            }
            std::fs::rename(&partial, &image)?;
        }
        if !is_mounted(&dir) {
            mount_image(&image, &dir).await?;
        }
        self.own_volume(&dir, ids).await
    }

    /// Copies what an EFS directory held before quotas into its new image, then empties it
    /// (the data is in the image before the directory loses it).
    async fn move_into_image(&self, dir: &Path, image: &Path) -> Result<(), RuntimeError> {
        let staging = dir.with_extension("migrating");
        std::fs::create_dir_all(&staging)?;
        mount_image(image, &staging).await?;
        let copied = run(
            "cp",
            &[
                "-a",
                &format!("{}/.", dir.display()),
                &staging.to_string_lossy(),
            ],
        )
        .await;
        run("umount", &[&staging.to_string_lossy()]).await?;
        std::fs::remove_dir(&staging)?;
        copied?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        tracing::info!(volume = %dir.display(), "moved an EFS volume into its quota image");
        Ok(())
    }

    pub(super) async fn prepare_storage(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let ids = self
            .uids
            .for_notebook(spec.notebook_id)
            .map_err(super::uid_error)?;
        if spec.volume_category != VolumeCategory::Evs {
            return self.prepare_efs(spec, ids).await;
        }
        let dir = self.volume_dir(spec.notebook_id, spec.volume_category);
        std::fs::create_dir_all(&dir)?;
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
            mount_image(&image, &dir).await?;
        } else if file_len(&image)? < bytes {
            self.grow_online(&image, &dir, bytes).await;
        }
        self.own_volume(&dir, ids).await
    }

    /// Grows a mounted EVS volume. Where the kernel refuses online resizing (some container
    /// hosts), the file is still extended and the filesystem follows at the next start.
    pub(super) async fn grow_online(&self, image: &Path, mount_point: &Path, bytes: u64) {
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

    /// Makes the volume's root the notebook's (0700). Files from before notebooks had uids of
    /// their own (root's) are handed over once, without following symlinks.
    pub(super) async fn own_volume(&self, dir: &Path, ids: HostIds) -> Result<(), RuntimeError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let metadata = std::fs::symlink_metadata(dir)?;
        if metadata.uid() != ids.uid {
            if metadata.uid() == 0 {
                run(
                    "chown",
                    &[
                        "-R",
                        "-P",
                        &format!("{}:{}", ids.uid, ids.gid),
                        &dir.to_string_lossy(),
                    ],
                )
                .await?;
            } else {
                std::os::unix::fs::lchown(dir, Some(ids.uid), Some(ids.gid))?;
            }
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }
}
