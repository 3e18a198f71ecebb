//! OCI images from a registry, pulled once into a content-addressed store on this host.
//!
//! `swr_path` (`registry/namespace/name:tag`) is resolved to a manifest digest with
//! [`oci_client`] (the ORAS project's distribution client: auth challenges, indexes,
//! digests); each layer blob is downloaded once, verified against its digest, and unpacked
//! once into a directory of its own that every notebook using the layer shares as an overlay
//! lower layer. Concurrent pulls of one layer wait for each other instead of downloading twice.
//!
//! Layout under the store's root (root-only, `0700`: layers keep the image's owners, setuid
//! bits included, so no host user may reach them):
//!
//! ```text
//! blobs/sha256/{hex}      layer blobs as the registry served them, verified
//! layers/sha256-{hex}/    each layer unpacked, overlayfs whiteouts (see `unpack`)
//! images/sha256-{hex}.json  a pulled image: its reference, layers (bottom first), config
//! tmp/                    downloads and unpacks in progress (renamed into place when whole)
//! ```
//!
//! Everything a registry sends is hostile until checked: digests must be `sha256:` and 64 hex
//! characters before they name a file, blobs must hash to their digest, and layers may not
//! write outside their directory.
#![forbid(unsafe_code)]

pub mod commit;
mod local;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unpack;

pub use local::LOCAL_REGISTRY;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;

pub use unpack::{Compression, UnpackError, UnpackStats};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`, as in `swr_path`) spoken to over plain HTTP. Loopback
    /// registries (`localhost`, `127.0.0.0/8`, `[::1]`) always are; every other one is HTTPS
    /// with the system's roots.
    pub insecure: Vec<String>,
    /// Credentials by registry (`host[:port]`); anonymous elsewhere.
    pub credentials: HashMap<String, Credentials>,
    /// The largest image (compressed layers plus config) a resolve accepts; 0: no limit.
    pub max_image_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("`{0}` is not an image reference: {1}")]
    InvalidReference(String, String),
    #[error("the image {0} does not exist in its registry")]
    NotFound(String),
    #[error("the registry of {0} cannot be reached: {1}")]
    Unreachable(String, String),
    #[error("the registry refused the credentials for {0}")]
    Unauthorized(String),
    #[error("the image {reference} is for {found}, not {wanted}")]
    WrongArchitecture {
        reference: String,
        wanted: String,
        found: String,
    },
    #[error("the image {reference} has {size} bytes, more than the {limit} allowed")]
    TooLarge {
        reference: String,
        size: u64,
        limit: u64,
    },
    #[error("the image {0} is not usable: {1}")]
    Unsupported(String, String),
    #[error("the image {0} is damaged: {1}")]
    Corrupt(String, String),
    #[error("the registry of {0} failed: {1}")]
    Registry(String, String),
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

impl OciError {
    /// Whether trying again later may succeed (the registry was down or failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, OciError::Unreachable(..) | OciError::Registry(..))
    }
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// `sha256:` and 64 lowercase hex characters (checked).
    pub digest: String,
    pub media_type: String,
    /// Compressed size, as the manifest states it.
    pub size: u64,
}

/// An image reference resolved to the manifest it names now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The reference as given, normalised (`registry/repository:tag`).
    pub reference: String,
    /// The manifest's digest (of the platform's manifest when the tag names an index).
    pub digest: String,
    pub architecture: String,
    pub os: String,
    /// Compressed layers plus config.
    pub size: u64,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// The image configuration (entrypoint, env, user, ...) as the registry served it.
    pub config: serde_json::Value,
}

/// An image whose layers are all unpacked on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    pub resolved: Resolved,
    /// The unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
}

/// Layers of one image pulled at the same time.
const PARALLEL_LAYERS: usize = 3;

/// The content-addressed image store of one host.
pub struct ImageStore {
    root: PathBuf,
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Client>>,
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
}

impl ImageStore {
    /// Opens (creating) the store at `root` and removes what interrupted pulls left in `tmp`.
    pub fn open(root: &Path, config: RegistryConfig) -> Result<ImageStore, OciError> {
        use std::os::unix::fs::PermissionsExt;
        for dir in ["blobs/sha256", "layers", "images", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let path = entry?.path();
            // Several processes may share a store: what a live one is writing stays.
            if writer_alive(&path) {
                continue;
            }
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        Ok(ImageStore {
            root: root.to_owned(),
            config,
            clients: Mutex::default(),
            pulls: Mutex::default(),
            downloads: AtomicU64::new(0),
        })
    }

    /// Layer blobs downloaded since the store was opened (each at most once).
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// Where the layer with `digest` is (or would be) unpacked.
    pub fn layer_dir(&self, digest: &str) -> Option<PathBuf> {
        checked_hex(digest).map(|hex| self.root.join("layers").join(format!("sha256-{hex}")))
    }

    fn client_for(&self, registry: &str) -> Client {
        let mut clients = self.clients.lock().expect("poisoned");
        clients
            .entry(registry.to_owned())
            .or_insert_with(|| {
                let plain =
                    is_loopback(registry) || self.config.insecure.iter().any(|r| r == registry);
                Client::new(ClientConfig {
                    protocol: if plain {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    // The platform is chosen by `resolve`, from the index, per call.
                    platform_resolver: None,
                    connect_timeout: Some(std::time::Duration::from_secs(10)),
                    read_timeout: Some(std::time::Duration::from_secs(60)),
                    ..ClientConfig::default()
                })
            })
            .clone()
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.config.credentials.get(registry) {
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Resolves `swr_path` to the manifest it names for `linux/{architecture}`, checking
    /// the architecture, the size limit and that every layer can be unpacked. Changes nothing
    /// on this host.
    pub async fn resolve(&self, swr_path: &str, architecture: &str) -> Result<Resolved, OciError> {
        let reference: Reference = swr_path.parse().map_err(|e: oci_client::ParseError| {
            OciError::InvalidReference(swr_path.to_owned(), e.to_string())
        })?;
        let shown = reference.whole();
        let registry = reference.resolve_registry().to_owned();
        if registry == LOCAL_REGISTRY {
            // Built on this host: the store is its only registry.
            let image = self
                .local_image(&shown)?
                .ok_or_else(|| OciError::NotFound(shown.clone()))?;
            if image.architecture != architecture {
                return Err(OciError::WrongArchitecture {
                    reference: shown,
                    wanted: format!("linux/{architecture}"),
                    found: format!("{}/{}", image.os, image.architecture),
                });
            }
            return Ok(image);
        }
        let client = self.client_for(&registry);
        let auth = self.auth_for(&registry);
        let manifest = match client
            .pull_manifest(&reference, &auth)
            .await
            .map_err(|e| classify(&shown, e))?
        {
            (oci_client::manifest::OciManifest::Image(image), digest) => (image, digest),
            (oci_client::manifest::OciManifest::ImageIndex(index), _) => {
                let entry = index
                    .manifests
                    .iter()
                    .find(|entry| {
                        entry.platform.as_ref().is_some_and(|p| {
                            p.os.to_string() == "linux"
                                && p.architecture.to_string() == architecture
                        })
                    })
                    .ok_or_else(|| OciError::WrongArchitecture {
                        reference: shown.clone(),
                        wanted: architecture.to_owned(),
                        found: index
                            .manifests
                            .iter()
                            .filter_map(|e| e.platform.as_ref())
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                checked_hex(&entry.digest).ok_or_else(|| {
                    OciError::Corrupt(shown.clone(), format!("bad digest {}", entry.digest))
                })?;
                let platform_reference = reference.clone_with_digest(entry.digest.clone());
                match client
                    .pull_manifest(&platform_reference, &auth)
                    .await
                    .map_err(|e| classify(&shown, e))?
                {
                    (oci_client::manifest::OciManifest::Image(image), digest) => (image, digest),
                    _ => {
                        return Err(OciError::Unsupported(
                            shown,
                            "an index inside an index".to_owned(),
                        ));
                    }
                }
            }
        };
        let (image, digest) = manifest;
        checked_hex(&digest)
            .ok_or_else(|| OciError::Corrupt(shown.clone(), format!("bad digest {digest}")))?;
        checked_hex(&image.config.digest).ok_or_else(|| {
            OciError::Corrupt(shown.clone(), format!("bad digest {}", image.config.digest))
        })?;
        let mut config_bytes = Vec::new();
        client
            .pull_blob(&reference, &image.config, &mut config_bytes)
            .await
            .map_err(|e| classify(&shown, e))?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| OciError::Corrupt(shown.clone(), format!("image configuration: {e}")))?;
        let found_arch = config["architecture"].as_str().unwrap_or("").to_owned();
        let os = config["os"].as_str().unwrap_or("").to_owned();
        if found_arch != architecture || os != "linux" {
            return Err(OciError::WrongArchitecture {
                reference: shown,
                wanted: format!("linux/{architecture}"),
                found: format!("{os}/{found_arch}"),
            });
        }
        let mut layers = Vec::with_capacity(image.layers.len());
        for layer in &image.layers {
            checked_hex(&layer.digest).ok_or_else(|| {
                OciError::Corrupt(shown.clone(), format!("bad layer digest {}", layer.digest))
            })?;
            if Compression::of_media_type(&layer.media_type).is_none() {
                return Err(OciError::Unsupported(
                    shown,
                    format!("layer media type {}", layer.media_type),
                ));
            }
            layers.push(Layer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: u64::try_from(layer.size).unwrap_or(0),
            });
        }
        let size = layers.iter().map(|l| l.size).sum::<u64>()
            + u64::try_from(image.config.size).unwrap_or(0);
        if self.config.max_image_bytes > 0 && size > self.config.max_image_bytes {
            return Err(OciError::TooLarge {
                reference: shown,
                size,
                limit: self.config.max_image_bytes,
            });
        }
        Ok(Resolved {
            reference: shown,
            digest,
            architecture: found_arch,
            os,
            size,
            layers,
            config,
        })
    }

    /// Makes every layer of `resolved` present on this host, downloading and unpacking only
    /// what is missing, and records the image. `progress(done, total)` sees the bytes as
    /// they arrive (layers already on this host count as done at once).
    pub async fn pull(
        &self,
        resolved: &Resolved,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<PulledImage, OciError> {
        let reference: Reference =
            resolved
                .reference
                .parse()
                .map_err(|e: oci_client::ParseError| {
                    OciError::InvalidReference(resolved.reference.clone(), e.to_string())
                })?;
        let total: u64 = resolved.layers.iter().map(|l| l.size).sum();
        let done = AtomicU64::new(0);
        let advance = |bytes: u64| {
            let now = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
            progress(now.min(total), total);
        };
        // A few layers at a time: one downloads while another unpacks, and unpacking (gzip
        // and file creation) uses more than one core. `buffered` keeps the bottom-first order.
        // Every layer runs to its end, also after one failed: a cancelled download or unpack
        // would leave its partial file behind.
        use futures_util::stream::StreamExt as _;
        // Boxed: a stream of closures over borrowed layers is not `Send` for every lifetime,
        // which callers in `Send` futures (a notebook's start) need.
        type LayerFuture<'a> =
            Pin<Box<dyn std::future::Future<Output = Result<PathBuf, OciError>> + Send + 'a>>;
        let pulls: Vec<LayerFuture<'_>> = resolved
            .layers
            .iter()
            .map(|layer| {
                Box::pin(self.ensure_layer(&reference, resolved, layer, &advance))
                    as LayerFuture<'_>
            })
            .collect();
        let dirs: Vec<Result<PathBuf, OciError>> = futures_util::stream::iter(pulls)
            .buffered(PARALLEL_LAYERS)
            .collect()
            .await;
        let dirs = dirs
            .into_iter()
            .collect::<Result<Vec<PathBuf>, OciError>>()?;
        progress(total, total);
        self.write_record(resolved)?;
        Ok(PulledImage {
            resolved: resolved.clone(),
            layers: dirs,
        })
    }

    /// Records `resolved` as an image on this host (`images/sha256-{hex}.json`).
    fn write_record(&self, resolved: &Resolved) -> Result<(), OciError> {
        let hex = checked_hex(&resolved.digest).ok_or_else(|| {
            OciError::Corrupt(resolved.reference.clone(), "bad digest".to_owned())
        })?;
        let record = self.root.join("images").join(format!("sha256-{hex}.json"));
        let tmp = self
            .root
            .join("tmp")
            .join(format!("image-{hex}-{}", unique()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(resolved).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &record)?;
        Ok(())
    }

    async fn ensure_layer(
        &self,
        reference: &Reference,
        resolved: &Resolved,
        layer: &Layer,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<PathBuf, OciError> {
        let corrupt = |why: String| OciError::Corrupt(resolved.reference.clone(), why);
        let hex = checked_hex(&layer.digest)
            .ok_or_else(|| corrupt(format!("bad layer digest {}", layer.digest)))?
            .to_owned();
        let dir = self.root.join("layers").join(format!("sha256-{hex}"));
        if dir.is_dir() {
            progress(layer.size);
            return Ok(dir);
        }
        let lock = self
            .pulls
            .lock()
            .expect("poisoned")
            .entry(hex.clone())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        if dir.is_dir() {
            // A concurrent pull of another image with this layer finished it.
            progress(layer.size);
            return Ok(dir);
        }
        let blob = self.root.join("blobs/sha256").join(&hex);
        if !blob.is_file() && reference.resolve_registry() == LOCAL_REGISTRY {
            // Built here and evicted since: no registry has it.
            return Err(OciError::NotFound(format!(
                "{} (layer {} was removed from this store: build the image again)",
                resolved.reference, layer.digest
            )));
        }
        if !blob.is_file() {
            let tmp = self
                .root
                .join("tmp")
                .join(format!("blob-{hex}-{}", unique()));
            let file = tokio::fs::File::create(&tmp).await?;
            let descriptor = OciDescriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                ..OciDescriptor::default()
            };
            let registry = reference.resolve_registry().to_owned();
            let pulled = self
                .client_for(&registry)
                .pull_blob(
                    reference,
                    &descriptor,
                    Counting {
                        inner: file,
                        progress,
                    },
                )
                .await;
            if let Err(error) = pulled {
                let _ = std::fs::remove_file(&tmp);
                return Err(classify(&resolved.reference, error));
            }
            self.downloads.fetch_add(1, Ordering::Relaxed);
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &blob)?;
        } else {
            progress(layer.size);
        }
        let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
            OciError::Unsupported(resolved.reference.clone(), layer.media_type.clone())
        })?;
        self.unpack_blob(&hex, compression)
            .await
            .map_err(|error| corrupt(format!("layer {}: {error}", layer.digest)))
    }

    /// Unpacks the verified blob `hex` into `layers/sha256-{hex}` (through `tmp`, so the
    /// directory exists only whole) and records its unpacked size.
    async fn unpack_blob(
        &self,
        hex: &str,
        compression: Compression,
    ) -> Result<PathBuf, UnpackError> {
        let dir = self.root.join("layers").join(format!("sha256-{hex}"));
        let blob = self.root.join("blobs/sha256").join(hex);
        let unpacking = self
            .root
            .join("tmp")
            .join(format!("layer-{hex}-{}", unique()));
        std::fs::create_dir(&unpacking)?;
        let target = unpacking.clone();
        let outcome =
            tokio::task::spawn_blocking(move || unpack::unpack_layer(&blob, compression, &target))
                .await
                .map_err(std::io::Error::other)?;
        let finished = outcome.and_then(|stats| {
            tracing::debug!(layer = hex, ?stats, "layer unpacked");
            std::fs::write(
                self.root.join("layers").join(format!("sha256-{hex}.size")),
                stats.bytes.to_string(),
            )?;
            std::fs::rename(&unpacking, &dir)?;
            Ok(dir)
        });
        if finished.is_err() {
            let _ = std::fs::remove_dir_all(&unpacking);
        }
        finished
    }
}

impl ImageStore {
    /// Whether `swr_path` names a manifest in its registry now (a tag already taken).
    pub async fn exists(&self, swr_path: &str) -> Result<bool, OciError> {
        let reference = parse_reference(swr_path)?;
        let registry = reference.resolve_registry().to_owned();
        match self
            .client_for(&registry)
            .fetch_manifest_digest(&reference, &self.auth_for(&registry))
            .await
            .map_err(|e| classify(&reference.whole(), e))
        {
            Ok(_) => Ok(true),
            Err(OciError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Deletes the manifest `swr_path` names from its registry (what `DELETE /images/{id}?force=true`
    /// asks for); the registry's own garbage collection frees the blobs. A manifest already gone
    /// is not an error.
    pub async fn delete(&self, swr_path: &str) -> Result<(), OciError> {
        let reference = parse_reference(swr_path)?;
        let shown = reference.whole();
        let registry = reference.resolve_registry().to_owned();
        if registry == LOCAL_REGISTRY {
            // Only this store has it: its record goes, its layers once the cache evicts them.
            for (image, _) in self.records()? {
                if image.reference == shown
                    && let Some(hex) = checked_hex(&image.digest)
                {
                    let record = self.root.join("images").join(format!("sha256-{hex}.json"));
                    match std::fs::remove_file(record) {
                        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                            return Err(error.into());
                        }
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        let client = self.client_for(&registry);
        let digest = match client
            .fetch_manifest_digest(&reference, &self.auth_for(&registry))
            .await
            .map_err(|e| classify(&shown, e))
        {
            Ok(digest) => digest,
            Err(OciError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        checked_hex(&digest)
            .ok_or_else(|| OciError::Corrupt(shown.clone(), format!("bad digest {digest}")))?;
        // oci-client has no delete: one plain request, with this registry's credentials.
        let plain = is_loopback(&registry) || self.config.insecure.iter().any(|r| r == &registry);
        let url = format!(
            "{}://{registry}/v2/{}/manifests/{digest}",
            if plain { "http" } else { "https" },
            reference.repository()
        );
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| OciError::Registry(shown.clone(), e.to_string()))?;
        let mut request = http.delete(&url);
        match self.config.credentials.get(&registry) {
            Some(Credentials::Basic { username, password }) => {
                request = request.basic_auth(username, Some(password));
            }
            Some(Credentials::Bearer(token)) => request = request.bearer_auth(token),
            None => {}
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                OciError::Unreachable(shown.clone(), e.to_string())
            } else {
                OciError::Registry(shown.clone(), e.to_string())
            }
        })?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            401 | 403 => Err(OciError::Unauthorized(shown)),
            405 => Err(OciError::Unsupported(
                shown,
                "the registry does not allow deletes (distribution: storage.delete.enabled)".into(),
            )),
            status => Err(OciError::Registry(
                shown,
                format!("DELETE answered {status}"),
            )),
        }
    }

    /// Saves `upper` (the overlay upper directory of a notebook running `base`) as a new image
    /// `target`: `base`'s layers plus one layer of the changes, with `base`'s configuration.
    /// Base layers the target repository lacks are mounted from the base's repository on the
    /// same registry, else uploaded from this store. The new layer's blob is kept here, so
    /// starting the saved image on this host downloads nothing.
    pub async fn commit(
        &self,
        base: &Resolved,
        upper: &Path,
        target: &str,
        owners: &commit::OwnerMap,
    ) -> Result<Resolved, OciError> {
        use oci_client::manifest::{
            IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
            OciImageManifest, OciManifest,
        };
        use sha2::Digest as _;
        let target_ref = parse_reference(target)?;
        let shown = target_ref.whole();
        let base_ref = parse_reference(&base.reference)?;
        let registry = target_ref.resolve_registry().to_owned();
        let client = self.client_for(&registry);
        client
            .store_auth_if_needed(&registry, &self.auth_for(&registry))
            .await;
        let to_error = |e| classify(&shown, e);

        let upper = upper.to_owned();
        let owners = owners.clone();
        let built =
            tokio::task::spawn_blocking(move || commit::layer_from_upper_mapped(&upper, &owners))
                .await
                .map_err(std::io::Error::other)??;

        for layer in &base.layers {
            if client
                .blob_exists(&target_ref, &layer.digest)
                .await
                .map_err(to_error)?
            {
                continue;
            }
            if base_ref.resolve_registry() == registry
                && client
                    .mount_blob(&target_ref, &base_ref, &layer.digest)
                    .await
                    .is_ok()
                && client
                    .blob_exists(&target_ref, &layer.digest)
                    .await
                    .map_err(to_error)?
            {
                continue;
            }
            let hex = checked_hex(&layer.digest)
                .ok_or_else(|| OciError::Corrupt(base.reference.clone(), "bad digest".into()))?;
            let data = tokio::fs::read(self.root.join("blobs/sha256").join(hex)).await?;
            client
                .push_blob(&target_ref, data, &layer.digest)
                .await
                .map_err(to_error)?;
        }
        client
            .push_blob(&target_ref, built.data.clone(), &built.digest)
            .await
            .map_err(to_error)?;

        let mut config = base.config.clone();
        if !config["rootfs"]["diff_ids"].is_array() {
            config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": []});
        }
        if let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array_mut() {
            diff_ids.push(built.diff_id.clone().into());
        }
        if !config["history"].is_array() {
            config["history"] = serde_json::json!([]);
        }
        if let Some(history) = config["history"].as_array_mut() {
            history.push(serde_json::json!({"created_by": "atelier: save notebook as image"}));
        }
        let config_bytes = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
        let config_digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&config_bytes))
        );
        let config_size = config_bytes.len();
        client
            .push_blob(&target_ref, config_bytes, &config_digest)
            .await
            .map_err(to_error)?;

        let descriptor = |media_type: &str, digest: &str, size: u64| OciDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut layers: Vec<OciDescriptor> = base
            .layers
            .iter()
            .map(|l| descriptor(&l.media_type, &l.digest, l.size))
            .collect();
        layers.push(descriptor(
            IMAGE_LAYER_GZIP_MEDIA_TYPE,
            &built.digest,
            built.data.len() as u64,
        ));
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: descriptor(IMAGE_CONFIG_MEDIA_TYPE, &config_digest, config_size as u64),
            layers,
            ..OciImageManifest::default()
        };
        client
            .push_manifest(&target_ref, &OciManifest::Image(manifest))
            .await
            .map_err(to_error)?;

        let hex = checked_hex(&built.digest).expect("a digest this store computed");
        let blob = self.root.join("blobs/sha256").join(hex);
        if !blob.exists() {
            let tmp = self
                .root
                .join("tmp")
                .join(format!("blob-{hex}-{}", unique()));
            std::fs::write(&tmp, &built.data)?;
            std::fs::rename(&tmp, &blob)?;
        }
        self.resolve(target, &base.architecture).await
    }
}

impl ImageStore {
    /// Pushes `image` (every layer of it in this store, a built-in image for instance) to a
    /// registry as `target`, with the same layers and configuration.
    pub async fn push(&self, image: &Resolved, target: &str) -> Result<Resolved, OciError> {
        use oci_client::manifest::{
            IMAGE_CONFIG_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageManifest, OciManifest,
        };
        use sha2::Digest as _;
        let target_ref = parse_reference(target)?;
        let shown = target_ref.whole();
        let registry = target_ref.resolve_registry().to_owned();
        let client = self.client_for(&registry);
        client
            .store_auth_if_needed(&registry, &self.auth_for(&registry))
            .await;
        let to_error = |e| classify(&shown, e);
        for layer in &image.layers {
            if client
                .blob_exists(&target_ref, &layer.digest)
                .await
                .map_err(to_error)?
            {
                continue;
            }
            let hex = checked_hex(&layer.digest)
                .ok_or_else(|| OciError::Corrupt(image.reference.clone(), "bad digest".into()))?;
            let data = tokio::fs::read(self.root.join("blobs/sha256").join(hex)).await?;
            client
                .push_blob(&target_ref, data, &layer.digest)
                .await
                .map_err(to_error)?;
        }
        let config_bytes = serde_json::to_vec(&image.config).map_err(std::io::Error::other)?;
        let config_digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&config_bytes))
        );
        let config_size = config_bytes.len() as u64;
        client
            .push_blob(&target_ref, config_bytes, &config_digest)
            .await
            .map_err(to_error)?;
        let descriptor = |media_type: &str, digest: &str, size: u64| OciDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: descriptor(IMAGE_CONFIG_MEDIA_TYPE, &config_digest, config_size),
            layers: image
                .layers
                .iter()
                .map(|l| descriptor(&l.media_type, &l.digest, l.size))
                .collect(),
            ..OciImageManifest::default()
        };
        client
            .push_manifest(&target_ref, &OciManifest::Image(manifest))
            .await
            .map_err(to_error)?;
        self.resolve(target, &image.architecture).await
    }
}

/// The image cache: what it holds, and eviction of what was used least recently.
impl ImageStore {
    fn records(&self) -> Result<Vec<(Resolved, std::time::SystemTime)>, OciError> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.root.join("images"))? {
            let path = entry?.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(resolved) = serde_json::from_slice::<Resolved>(&bytes) else {
                continue;
            };
            let used = std::fs::metadata(&path)?.modified()?;
            records.push((resolved, used));
        }
        Ok(records)
    }

    /// The images on this host, by manifest digest.
    pub fn images(&self) -> Result<Vec<Resolved>, OciError> {
        Ok(self.records()?.into_iter().map(|(r, _)| r).collect())
    }

    /// The image with manifest `digest`, if it is on this host.
    pub fn image(&self, digest: &str) -> Option<Resolved> {
        let hex = checked_hex(digest)?;
        let record = self.root.join("images").join(format!("sha256-{hex}.json"));
        let resolved: Resolved = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
        (resolved.digest == digest).then_some(resolved)
    }

    /// The unpacked layer directories of `resolved`, bottom first, if every one is here.
    pub fn unpacked_layers(&self, resolved: &Resolved) -> Option<Vec<PathBuf>> {
        resolved
            .layers
            .iter()
            .map(|l| self.layer_dir(&l.digest).filter(|d| d.is_dir()))
            .collect()
    }

    /// Marks the image with manifest `digest` used now (a notebook started from it).
    pub fn touch(&self, digest: &str) -> Result<(), OciError> {
        let Some(hex) = checked_hex(digest) else {
            return Ok(());
        };
        let record = self.root.join("images").join(format!("sha256-{hex}.json"));
        match std::fs::File::options().append(true).open(&record) {
            Ok(file) => Ok(file.set_modified(std::time::SystemTime::now())?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Bytes a layer takes here: its blob plus its unpacked files.
    fn layer_bytes(&self, hex: &str) -> u64 {
        let blob = std::fs::metadata(self.root.join("blobs/sha256").join(hex))
            .map(|m| m.len())
            .unwrap_or(0);
        let unpacked =
            std::fs::read_to_string(self.root.join("layers").join(format!("sha256-{hex}.size")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        blob + unpacked
    }

    /// Bytes the layers present here take.
    pub fn usage(&self) -> Result<u64, OciError> {
        let mut total = 0;
        for entry in std::fs::read_dir(self.root.join("blobs/sha256"))? {
            let name = entry?.file_name();
            total += self.layer_bytes(&name.to_string_lossy());
        }
        Ok(total)
    }

    /// Evicts the least recently used images not in `in_use` (manifest digests) until the
    /// layers left take at most `max_bytes`; a layer goes once no image left here uses it.
    /// Returns the evicted images' digests.
    pub fn evict(
        &self,
        max_bytes: u64,
        in_use: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, OciError> {
        let mut records = self.records()?;
        records.sort_by_key(|(_, used)| *used);
        let mut evicted = Vec::new();
        while self.usage()? > max_bytes {
            let Some(index) = records
                .iter()
                .position(|(r, _)| !in_use.contains(&r.digest))
            else {
                break;
            };
            let (image, _) = records.remove(index);
            let hex = checked_hex(&image.digest).unwrap_or_default().to_owned();
            let _ =
                std::fs::remove_file(self.root.join("images").join(format!("sha256-{hex}.json")));
            let kept: std::collections::HashSet<&str> = records
                .iter()
                .flat_map(|(r, _)| r.layers.iter().map(|l| l.digest.as_str()))
                .collect();
            for layer in &image.layers {
                let Some(layer_hex) = checked_hex(&layer.digest) else {
                    continue;
                };
                if kept.contains(layer.digest.as_str()) {
                    continue;
                }
                let dir = self.root.join("layers").join(format!("sha256-{layer_hex}"));
                // Out of the way first, so no start sees half a layer.
                let doomed = self
                    .root
                    .join("tmp")
                    .join(format!("evict-{layer_hex}-{}", unique()));
                if std::fs::rename(&dir, &doomed).is_ok() {
                    std::fs::remove_dir_all(&doomed)?;
                }
                let _ = std::fs::remove_file(
                    self.root
                        .join("layers")
                        .join(format!("sha256-{layer_hex}.size")),
                );
                let _ = std::fs::remove_file(self.root.join("blobs/sha256").join(layer_hex));
            }
            tracing::info!(image = %image.reference, digest = %image.digest, "image evicted from the cache");
            evicted.push(image.digest);
        }
        Ok(evicted)
    }
}

/// `swr_path` as the store records it (`registry/repository:tag`, defaults filled in).
pub fn normalize_reference(swr_path: &str) -> Result<String, OciError> {
    Ok(parse_reference(swr_path)?.whole())
}

fn parse_reference(swr_path: &str) -> Result<Reference, OciError> {
    swr_path.parse().map_err(|e: oci_client::ParseError| {
        OciError::InvalidReference(swr_path.to_owned(), e.to_string())
    })
}

/// The hex of a `sha256:` digest with exactly 64 lowercase hex characters.
fn checked_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the process that named a `tmp` entry (`...-{pid}-{n}`, see [`unique`]) lives.
fn writer_alive(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What went wrong talking to the registry, in terms a user can act on.
fn classify(reference: &str, error: OciDistributionError) -> OciError {
    let reference = reference.to_owned();
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => OciError::NotFound(reference),
        OciDistributionError::ServerError { code: 404, .. } => OciError::NotFound(reference),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            OciError::NotFound(reference)
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => OciError::Unauthorized(reference),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            OciError::Unreachable(reference, e.to_string())
        }
        OciDistributionError::DigestError(e) => OciError::Corrupt(reference, e.to_string()),
        other => OciError::Registry(reference, other.to_string()),
    }
}

/// Counts the bytes written through it.
struct Counting<'a, W> {
    inner: W,
    progress: &'a (dyn Fn(u64) + Send + Sync),
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &poll {
            (self.progress)(*written as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_of_64_hex_name_files() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert!(checked_hex(&good).is_some());
        for bad in [
            "sha256:../../etc/passwd".to_owned(),
            format!("sha256:{}", "A1".repeat(32)),
            format!("sha512:{}", "a1".repeat(64)),
            format!("sha256:{}/", "a1".repeat(32)),
            "sha256:".to_owned(),
        ] {
            assert!(checked_hex(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn loopback_registries_are_plain_http_and_others_are_not() {
        for plain in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.0.0.2",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(plain), "{plain}");
        }
        for tls in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.example.com:5000",
            "[fd00::1]:5000",
        ] {
            assert!(!is_loopback(tls), "{tls}");
        }
    }

    #[test]
    fn credentials_never_print() {
        let basic = Credentials::Basic {
            username: "team".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{basic:?}").contains("s3cret"));
        assert!(!format!("{:?}", Credentials::Bearer("t0ken".into())).contains("t0ken"));
    }
}
