//! Images here: container images (pulled from their registries, or built and saved in this
//! host's store as `atelier.local/...`), the built-in JupyterLab image among them (built once
//! per image dir from Debian packages and PyPI, see [`super::build`]), and `local:///prefix`
//! Python environments run on the host's `/usr`.
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use atelier_domain::NotebookId;

use super::build::{Recipe, build_builtin};
use super::{LocalRuntime, step_error};
use crate::{
    ImageRef, ImageStore, Progress, PullProgress, ResolvedImage, RuntimeError, SandboxSpec, Step,
};

/// Page settings of the built-in image: no build checks, no news, no language servers.
pub(super) const PAGE_CONFIG: &str = r#"{"buildAvailable": false, "buildCheck": false,
 "disabledExtensions": {"@jupyterlab/lsp-extension": true,
   "@jupyterlab/notebook-extension:language-server": true,
   "@jupyterlab/fileeditor-extension:language-server": true}}
"#;
pub(super) const SETTINGS_OVERRIDES: &str = r#"{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
"#;
/// Kernel settings of the built-in image: no sleep before each execute reply, no waiting
/// flushes of empty output streams (~1.5 ms less per cell execution).
pub(super) const KERNEL_CONFIG: &str = include_str!("../ipython_kernel_config.py");

fn image_error(context: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Image(format!("{context}: {error}"))
}

/// A notebook's image, ready to run here.
#[derive(Debug, Clone)]
pub(super) enum Prepared {
    /// A Python prefix with JupyterLab, run on the host's `/usr`.
    Prefix(PathBuf),
    /// A container image whose layers are all unpacked in the image store.
    Image(Arc<atelier_oci::PulledImage>),
}

/// The image configuration's `Env` (`NAME=value` entries).
pub(super) fn image_env(image: &atelier_oci::Resolved) -> Vec<String> {
    image.config["config"]["Env"]
        .as_array()
        .map(|env| {
            env.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How far a pull is: bytes done, bytes in all.
pub(super) type PullReport<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

impl LocalRuntime {
    /// The OCI reference `image` runs from: a registry's, one built or saved in this host's
    /// store (`atelier.local/...`), or for any other built-in name the built-in image of
    /// this runtime's recipe. `None` for a Python prefix.
    fn oci_reference(&self, image: &ImageRef) -> Option<String> {
        match image {
            ImageRef::Container(reference) => Some(reference.clone()),
            ImageRef::Builtin(name) => {
                let reference = format!("{}/{name}", atelier_oci::LOCAL_REGISTRY);
                if matches!(self.oci.local_image(&reference), Ok(Some(_))) {
                    Some(reference)
                } else {
                    Some(self.recipe().reference())
                }
            }
            ImageRef::LocalPrefix(_) => None,
        }
    }

    fn recipe(&self) -> Recipe {
        Recipe::new(self.config.jupyter_packages.clone())
    }

    /// Whether starting `image` needs the built-in image built first.
    fn builtin_missing(&self, image: &ImageRef) -> bool {
        let recipe = self.recipe().reference();
        self.oci_reference(image).as_deref() == Some(recipe.as_str())
            && !matches!(self.oci.local_image(&recipe), Ok(Some(_)))
    }

    /// Builds the built-in image unless the store has it. Servers and tests may share an
    /// image dir: an exclusive file lock makes one of them build while the others wait.
    async fn ensure_builtin(&self) -> Result<(), RuntimeError> {
        let recipe = self.recipe();
        if matches!(self.oci.local_image(&recipe.reference()), Ok(Some(_))) {
            return Ok(());
        }
        let _in_process = self.provisioning.lock().await;
        let lock_path = self.config.image_dir.join(".oci-build.lock");
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
        .map_err(|e| step_error("building the built-in image", e))??;
        let work = self.config.image_dir.join("oci-build");
        std::fs::create_dir_all(&work)?;
        let built = build_builtin(&self.oci, &recipe, &work).await;
        drop(lock);
        built
            .map(|_| ())
            .map_err(|e| image_error("building the built-in image", e))
    }

    /// Makes the notebook's image runnable here: pulls a container image (its bytes reported
    /// to `report`) or provisions the built-in environment.
    pub(super) async fn prepare_image(
        &self,
        spec: &SandboxSpec,
        report: PullReport<'_>,
    ) -> Result<Prepared, RuntimeError> {
        match self.oci_reference(&spec.image) {
            Some(reference) => {
                if reference == self.recipe().reference() {
                    self.ensure_builtin().await?;
                }
                let pulled = self
                    .pull_container(Some(spec.notebook_id), &reference, report)
                    .await?;
                Ok(Prepared::Image(Arc::new(pulled)))
            }
            None => Ok(Prepared::Prefix(self.local_prefix(&spec.image)?)),
        }
    }

    /// [`LocalRuntime::prepare_image`] at step 2 of a start, telling `progress` how many
    /// bytes of the image have been pulled (at most four times a second).
    pub(super) async fn prepare_with_progress(
        &self,
        spec: &SandboxSpec,
        progress: &dyn Progress,
    ) -> Result<Prepared, RuntimeError> {
        if self.builtin_missing(&spec.image) {
            progress
                .step_detail(
                    Step::PrepareCompute,
                    "Building the built-in image from Debian packages and PyPI (once per host).",
                )
                .await;
        }
        let (sender, receiver) = tokio::sync::watch::channel((0u64, 0u64));
        let report = move |done: u64, total: u64| {
            sender.send_replace((done, total));
        };
        let work = self.prepare_image(spec, &report);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut shown = (0, 0);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = tick.tick() => {
                    let now = *receiver.borrow();
                    if now != shown && now.1 > 0 {
                        shown = now;
                        let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
                        let detail = if now.0 < now.1 {
                            format!("Pulling the image: {:.1} of {:.1} MiB.", mib(now.0), mib(now.1))
                        } else {
                            format!("Unpacking the image ({:.1} MiB pulled).", mib(now.1))
                        };
                        progress
                            .step_detail(Step::PrepareCompute, &detail)
                            .await;
                    }
                }
            }
        }
    }

    /// Pulls the container image `reference` into the store. A notebook whose changes were
    /// made on an image keeps that image (by digest) while the store has it, also when the
    /// tag has moved on since.
    async fn pull_container(
        &self,
        notebook: Option<NotebookId>,
        reference: &str,
        report: PullReport<'_>,
    ) -> Result<atelier_oci::PulledImage, RuntimeError> {
        let normalized = atelier_oci::normalize_reference(reference).map_err(registry_error)?;
        let pinned = notebook
            .filter(|id| self.root_changed(*id))
            .and_then(|id| self.root_base(id))
            .and_then(|digest| self.oci.image(&digest))
            .filter(|image| image.reference == normalized);
        let resolved = match pinned {
            Some(image) => image,
            None => self
                .oci
                .resolve(reference, &crate::oci_architecture(std::env::consts::ARCH))
                .await
                .map_err(registry_error)?,
        };
        let pulled = self
            .oci
            .pull(&resolved, report)
            .await
            .map_err(registry_error)?;
        if let Err(error) = self.oci.touch(&pulled.resolved.digest) {
            tracing::warn!(%error, "cannot mark the image used");
        }
        self.evict_images(&pulled.resolved.digest);
        Ok(pulled)
    }

    /// Keeps the image store within its size: evicts the least recently used images that
    /// no notebook of this data dir is based on, no warm sandbox runs and that are neither
    /// `keep` nor the built-in image (which takes minutes to build again).
    fn evict_images(&self, keep: &str) {
        let max = self.config.image_cache_bytes;
        if max == 0 {
            return;
        }
        let mut in_use: std::collections::HashSet<String> =
            std::fs::read_dir(self.config.data_dir.join("roots"))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                        .filter_map(|id| self.root_base(id))
                        .collect()
                })
                .unwrap_or_default();
        in_use.insert(keep.to_owned());
        in_use.extend(self.warm_images());
        if let Ok(Some(builtin)) = self.oci.local_image(&self.recipe().reference()) {
            in_use.insert(builtin.digest);
        }
        match self.oci.evict(max, &in_use) {
            Ok(evicted) if !evicted.is_empty() => {
                tracing::info!(count = evicted.len(), "images evicted from the cache");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot evict images from the cache"),
        }
    }

    /// The prefix of a `local:///prefix` image, which must hold JupyterLab.
    fn local_prefix(&self, image: &ImageRef) -> Result<PathBuf, RuntimeError> {
        let ImageRef::LocalPrefix(prefix) = image else {
            return Err(RuntimeError::Fatal(format!(
                "image: {image} is a container image, not a Python prefix"
            )));
        };
        if !prefix.join("bin/jupyter-lab").exists() || !prefix.join("bin/python").exists() {
            return Err(image_error(
                "image",
                format!("{} has no bin/jupyter-lab", prefix.display()),
            ));
        }
        Ok(prefix.clone())
    }
}

/// Thaws a sandbox frozen for a save when dropped.
struct Thaw(Option<crate::cgroup::Cgroup>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(cgroup) = &self.0
            && let Err(error) = cgroup.freeze(false)
        {
            tracing::error!(%error, "cannot thaw a sandbox after saving it");
        }
    }
}

/// What a registry's answer means for a notebook: the image's own faults are
/// [`RuntimeError::Image`], a registry that cannot be reached or failed is transient.
fn registry_error(error: atelier_oci::OciError) -> RuntimeError {
    use atelier_oci::OciError as E;
    match error {
        E::Unreachable(..) | E::Registry(..) => RuntimeError::Transient(error.to_string()),
        E::Io(error) => RuntimeError::Io(error),
        other => RuntimeError::Image(other.to_string()),
    }
}

/// Built-in images, `local://` prefixes, and container images resolved in their registry
/// (running them is the next step of the container image work).
#[async_trait]
impl ImageStore for LocalRuntime {
    async fn resolve(
        &self,
        image: &ImageRef,
        architecture: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        if let Some(reference) = self.oci_reference(image) {
            let resolved = self
                .oci
                .resolve(&reference, architecture)
                .await
                .map_err(registry_error)?;
            return Ok(ResolvedImage {
                reference: image.clone(),
                digest: Some(resolved.digest),
                location: None,
                size: Some(resolved.size),
                architecture: Some(resolved.architecture),
            });
        }
        Ok(ResolvedImage::without_manifest(
            image,
            Some(self.local_prefix(image)?),
        ))
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: PullProgress<'_>,
    ) -> Result<ResolvedImage, RuntimeError> {
        if let Some(reference) = self.oci_reference(image) {
            if self.builtin_missing(image) {
                progress("building the built-in image from Debian packages and PyPI");
                self.ensure_builtin().await?;
            }
            let report = |done: u64, total: u64| {
                progress(&format!(
                    "pulling {reference}: {:.1} of {:.1} MiB",
                    done as f64 / 1048576.0,
                    total as f64 / 1048576.0
                ));
            };
            let pulled = self.pull_container(None, &reference, &report).await?;
            return Ok(ResolvedImage {
                reference: image.clone(),
                digest: Some(pulled.resolved.digest),
                location: None,
                size: Some(pulled.resolved.size),
                architecture: Some(pulled.resolved.architecture),
            });
        }
        let location = self.local_prefix(image)?;
        Ok(ResolvedImage::without_manifest(image, Some(location)))
    }

    async fn remove(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        // Container images in their registry, images saved here in this host's store; the
        // built-in environment and Python prefixes have nothing to delete.
        match self.oci_reference(image) {
            Some(reference) => self.oci.delete(&reference).await.map_err(registry_error),
            None => Ok(()),
        }
    }

    /// Saves the notebook's upper directory (its changes outside the work dir) as one layer
    /// on top of the image it runs, with that image's configuration: in this host's store
    /// for `atelier.local/...` targets, pushed to the target's registry otherwise. The
    /// sandbox is frozen meanwhile (cgroup v2), so the layer is one moment's state.
    async fn commit(
        &self,
        notebook_id: NotebookId,
        target: &ImageRef,
    ) -> Result<ResolvedImage, RuntimeError> {
        let Some(base) = self.root_base(notebook_id) else {
            return Err(RuntimeError::Unsupported(
                "only a notebook running a container image can be saved as an image".to_owned(),
            ));
        };
        let base = self.oci.image(&base).ok_or_else(|| {
            RuntimeError::Image(format!(
                "the notebook's image {base} is no longer in this host's image store"
            ))
        })?;
        let (upper, ids) = self.live_upper(notebook_id).ok_or_else(|| {
            RuntimeError::Fatal("the notebook has no uid on this host".to_owned())
        })?;
        let owners = Self::owner_map(ids);
        // A running sandbox is paused while its upper directory is read: the reader is root
        // on the host, and a notebook swapping a file for a symlink under it would have it
        // read a host file into the image.
        let cgroup = if self.alive(notebook_id) {
            let cgroup = self
                .hierarchy
                .map(|h| crate::cgroup::Cgroup::for_notebook(h, notebook_id))
                .filter(crate::cgroup::Cgroup::exists)
                .ok_or_else(|| {
                    RuntimeError::Fatal(
                        "a running notebook without a cgroup cannot be paused to be saved"
                            .to_owned(),
                    )
                })?;
            let paused = tokio::task::spawn_blocking({
                let cgroup = cgroup.clone();
                move || cgroup.freeze(true)
            })
            .await
            .map_err(|e| step_error("pausing the notebook", e))?;
            if let Err(error) = paused {
                let _ = cgroup.freeze(false);
                return Err(RuntimeError::Transient(format!(
                    "cannot pause the notebook to save it: {error}"
                )));
            }
            Some(cgroup)
        } else {
            None
        };
        // Thawed however the save ends, a dropped future (a shutdown) included.
        let thaw = Thaw(cgroup);
        let saved = match target {
            ImageRef::Builtin(name) => {
                self.oci
                    .build_local_mapped(
                        &format!("{}/{name}", atelier_oci::LOCAL_REGISTRY),
                        Some(&base),
                        &[upper],
                        &base.architecture,
                        serde_json::json!({}),
                        "atelier: save notebook as image",
                        &owners,
                    )
                    .await
            }
            ImageRef::Container(reference) => {
                self.oci.commit(&base, &upper, reference, &owners).await
            }
            ImageRef::LocalPrefix(_) => Err(atelier_oci::OciError::InvalidReference(
                target.to_string(),
                "a Python prefix cannot be the target of a save".to_owned(),
            )),
        };
        drop(thaw);
        let saved = saved.map_err(registry_error)?;
        Ok(ResolvedImage {
            reference: target.clone(),
            digest: Some(saved.digest),
            location: None,
            size: Some(saved.size),
            architecture: Some(saved.architecture),
        })
    }
}
