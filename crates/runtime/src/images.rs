//! The image seam: what a notebook runs, named once by an [`ImageRef`] parsed from the
//! catalogue's `swr_path`, and an [`ImageStore`] per runtime that resolves, pulls and (for
//! runtimes that can) commits a notebook's changes as a new image.
use std::path::PathBuf;

use async_trait::async_trait;

use atelier_domain::NotebookId;

use crate::RuntimeError;

/// The prefix of the built-in images' `swr_path`s.
pub const BUILTIN_PREFIX: &str = "atelier.local/";
/// The prefix of a Python environment on the host (`local:///opt/env`).
pub const LOCAL_PREFIX: &str = "local://";

/// What a notebook runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// An image Atelier makes itself (`atelier.local/{name}`): the JupyterLab environment.
    Builtin(String),
    /// A Python environment already on the host (`local:///prefix`), run as it is.
    LocalPrefix(PathBuf),
    /// A container image, `registry/namespace/name:tag` (or `@sha256:…`).
    Container(String),
}

impl ImageRef {
    /// Reads an image's `swr_path`.
    pub fn parse(swr_path: &str) -> ImageRef {
        if let Some(prefix) = swr_path.strip_prefix(LOCAL_PREFIX) {
            ImageRef::LocalPrefix(PathBuf::from(prefix))
        } else if let Some(name) = swr_path.strip_prefix(BUILTIN_PREFIX) {
            ImageRef::Builtin(name.to_owned())
        } else {
            ImageRef::Container(swr_path.to_owned())
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Builtin(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
            ImageRef::LocalPrefix(path) => write!(f, "{LOCAL_PREFIX}{}", path.display()),
            ImageRef::Container(reference) => f.write_str(reference),
        }
    }
}

/// An image as a runtime found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub reference: ImageRef,
    /// The content digest (`sha256:…`) where the image has one (container images).
    pub digest: Option<String>,
    /// Where it lives on this host, for runtimes that run images from the host's disk.
    pub location: Option<PathBuf>,
    /// Bytes (compressed layers and configuration) where the image has a manifest.
    pub size: Option<u64>,
    /// The OCI architecture (`amd64`, `arm64`) the image was resolved for, where it has one.
    pub architecture: Option<String>,
}

impl ResolvedImage {
    /// An image without a manifest (built-in, `local://`, or a runtime that fetches nothing):
    /// only where it lives here, if anywhere.
    pub fn without_manifest(reference: &ImageRef, location: Option<PathBuf>) -> ResolvedImage {
        ResolvedImage {
            reference: reference.clone(),
            digest: None,
            location,
            size: None,
            architecture: None,
        }
    }
}

/// The OCI name of a ModelArts architecture (`X86_64`/`x86_64` → `amd64`,
/// `AARCH64`/`aarch64` → `arm64`); others are taken as OCI names already.
pub fn oci_architecture(modelarts: &str) -> String {
    match modelarts.to_ascii_lowercase().as_str() {
        "x86_64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        other => other.to_owned(),
    }
}

/// Told what a pull is doing, one human-readable line at a time.
pub type PullProgress<'a> = &'a (dyn Fn(&str) + Send + Sync);

#[async_trait]
pub trait ImageStore: Send + Sync {
    /// Finds what `image` names now for `architecture` (OCI names: `amd64`, `arm64`) — a
    /// digest and size, a location — without fetching it. An image that does not exist, is
    /// for another architecture or cannot be run is [`RuntimeError::Image`]; a registry that
    /// cannot be reached is [`RuntimeError::Transient`].
    async fn resolve(
        &self,
        image: &ImageRef,
        architecture: &str,
    ) -> Result<ResolvedImage, RuntimeError>;
    /// Makes `image` available to sandboxes here (fetching or building it).
    async fn pull(
        &self,
        image: &ImageRef,
        progress: PullProgress<'_>,
    ) -> Result<ResolvedImage, RuntimeError>;
    /// Deletes `image` from its registry (`DELETE /images/{id}?force=true`); gone already is
    /// fine. Images without a registry have nothing to delete.
    async fn remove(&self, image: &ImageRef) -> Result<(), RuntimeError>;
    /// Saves the notebook's changes (its sandbox's filesystem) as the new image `target`.
    async fn commit(
        &self,
        notebook_id: NotebookId,
        target: &ImageRef,
    ) -> Result<ResolvedImage, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swr_paths_parse_into_the_three_kinds_and_back() {
        for (text, parsed) in [
            (
                "atelier.local/atelier/jupyterlab-python3.11:4.4",
                ImageRef::Builtin("atelier/jupyterlab-python3.11:4.4".to_owned()),
            ),
            (
                "local:///opt/env",
                ImageRef::LocalPrefix(PathBuf::from("/opt/env")),
            ),
            (
                "swr.example.com/team/lab:1.0",
                ImageRef::Container("swr.example.com/team/lab:1.0".to_owned()),
            ),
        ] {
            assert_eq!(ImageRef::parse(text), parsed);
            assert_eq!(parsed.to_string(), text);
        }
    }
}
