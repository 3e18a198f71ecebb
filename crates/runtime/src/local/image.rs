//! The built-in image: a virtual environment with JupyterLab provisioned from PyPI (under a
//! file lock shared by every server using the image dir), or a `local:///prefix`. The image
//! dir must be readable by the notebooks' unprivileged uids.
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use atelier_domain::NotebookId;

use super::{LocalRuntime, run, step_error, write_if_changed};
use crate::{ImageRef, ImageStore, PullProgress, ResolvedImage, RuntimeError, SandboxSpec};

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

impl LocalRuntime {
    /// The Python environment prefix of the notebook's image; provisions the built-in one.
    pub(super) async fn image_prefix(&self, spec: &SandboxSpec) -> Result<PathBuf, RuntimeError> {
        self.pull_image(&spec.image).await
    }

    /// Where `image` lives here, without provisioning anything.
    fn image_location(&self, image: &ImageRef) -> Result<PathBuf, RuntimeError> {
        match image {
            ImageRef::LocalPrefix(prefix) => Ok(prefix.clone()),
            ImageRef::Builtin(_) => Ok(self.config.image_dir.join("jupyterlab")),
            ImageRef::Container(reference) => Err(RuntimeError::Unsupported(format!(
                "image: {reference} is a container image, which the local runtime cannot run \
                 yet (the built-in image or a local:///prefix can)"
            ))),
        }
    }

    /// Makes `image` runnable here (provisions the built-in one); returns its prefix.
    async fn pull_image(&self, image: &ImageRef) -> Result<PathBuf, RuntimeError> {
        let prefix = self.image_location(image)?;
        match image {
            ImageRef::LocalPrefix(_) => {
                if !prefix.join("bin/jupyter-lab").exists() || !prefix.join("bin/python").exists() {
                    return Err(image_error(
                        "image",
                        format!("{} has no bin/jupyter-lab", prefix.display()),
                    ));
                }
            }
            _ => self.ensure_provisioned(&prefix).await?,
        }
        Ok(prefix)
    }

    /// Provisions `prefix` unless a complete copy exists. Servers and tests may share an image
    /// dir: an exclusive file lock makes one of them provision while the others wait.
    pub(super) async fn ensure_provisioned(&self, prefix: &Path) -> Result<(), RuntimeError> {
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
            .map_err(|e| image_error("image provisioning failed (python3 -m venv)", e))?;
        let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
        args.extend(self.config.jupyter_packages.iter().map(String::as_str));
        run(&prefix.join("bin/pip").to_string_lossy(), &args)
            .await
            .map_err(|e| image_error("image provisioning failed (pip install)", e))?;
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
        if let ImageRef::Container(reference) = image {
            let resolved = self
                .oci
                .resolve(reference, architecture)
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
            Some(self.image_location(image)?),
        ))
    }

    async fn pull(
        &self,
        image: &ImageRef,
        progress: PullProgress<'_>,
    ) -> Result<ResolvedImage, RuntimeError> {
        progress(&format!("provisioning {image}"));
        let location = self.pull_image(image).await?;
        Ok(ResolvedImage::without_manifest(image, Some(location)))
    }

    async fn remove(&self, image: &ImageRef) -> Result<(), RuntimeError> {
        match image {
            ImageRef::Container(reference) => {
                self.oci.delete(reference).await.map_err(registry_error)
            }
            ImageRef::Builtin(_) | ImageRef::LocalPrefix(_) => Ok(()),
        }
    }

    async fn commit(
        &self,
        _notebook_id: NotebookId,
        _target: &ImageRef,
    ) -> Result<ResolvedImage, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "the local runtime cannot save a notebook as an image yet".to_owned(),
        ))
    }
}
