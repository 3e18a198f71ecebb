//! Images that exist only in this store: built on this host from directories, each of which
//! becomes one layer (the built-in JupyterLab image, whose layers Atelier makes itself from
//! Debian packages and PyPI). They are named under [`LOCAL_REGISTRY`], which is never
//! contacted over the network, and they are stored, unpacked, evicted and saved (as the base
//! of `commit`) exactly like pulled images: one code path for every image.
use std::path::PathBuf;

use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
    OciImageManifest,
};
use sha2::Digest as _;

use crate::{
    Compression, ImageStore, Layer, OciError, Resolved, checked_hex, commit, parse_reference,
    unique,
};

/// The registry name of images built on this host.
pub const LOCAL_REGISTRY: &str = "atelier.local";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl ImageStore {
    /// Builds the image `reference` (`atelier.local/namespace/name:tag`) in this store:
    /// `base`'s layers (already here) plus one layer per directory of `dirs`, bottom first,
    /// with `config` (the OCI `config` object: `User`, `Env`, `WorkingDir`, `Entrypoint`, ...)
    /// laid over the base's. The directories are read as overlay upper directories (see
    /// [`commit::layer_from_upper`]); they are left as they are. The same directories give
    /// the same layers, so rebuilding an unchanged image stores nothing new. An earlier image
    /// of the same reference stays in the store, by digest only, until the cache evicts it.
    pub async fn build_local(
        &self,
        reference: &str,
        base: Option<&Resolved>,
        dirs: &[PathBuf],
        architecture: &str,
        config: serde_json::Value,
        created_by: &str,
    ) -> Result<Resolved, OciError> {
        self.build_local_mapped(
            reference,
            base,
            dirs,
            architecture,
            config,
            created_by,
            &commit::OwnerMap::default(),
        )
        .await
    }

    /// [`ImageStore::build_local`], with the directories' owners mapped by `owners` (a
    /// notebook's upper directory saved as an image here).
    #[allow(clippy::too_many_arguments)]
    pub async fn build_local_mapped(
        &self,
        reference: &str,
        base: Option<&Resolved>,
        dirs: &[PathBuf],
        architecture: &str,
        config: serde_json::Value,
        created_by: &str,
        owners: &commit::OwnerMap,
    ) -> Result<Resolved, OciError> {
        let parsed = parse_reference(reference)?;
        let shown = parsed.whole();
        if parsed.resolve_registry() != LOCAL_REGISTRY || parsed.digest().is_some() {
            return Err(OciError::InvalidReference(
                reference.to_owned(),
                format!("an image built here is named {LOCAL_REGISTRY}/namespace/name:tag"),
            ));
        }
        let mut layers: Vec<Layer> = Vec::new();
        let mut image_config = serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        });
        if let Some(base) = base {
            for layer in &base.layers {
                if !self.layer_dir(&layer.digest).is_some_and(|d| d.is_dir()) {
                    return Err(OciError::NotFound(format!(
                        "{} (layer {} is not in this store: pull the base first)",
                        base.reference, layer.digest
                    )));
                }
            }
            layers.extend(base.layers.iter().cloned());
            image_config = base.config.clone();
            image_config["architecture"] = architecture.into();
        }
        if let (Some(ours), Some(overrides)) = (
            image_config["config"].as_object_mut(),
            config.as_object().cloned(),
        ) {
            ours.extend(overrides);
        } else if config.is_object() {
            image_config["config"] = config;
        }
        for dir in dirs {
            let source = dir.clone();
            let owners = owners.clone();
            let built = tokio::task::spawn_blocking(move || {
                commit::layer_from_upper_mapped(&source, &owners)
            })
            .await
            .map_err(std::io::Error::other)??;
            let hex = checked_hex(&built.digest)
                .expect("a digest this store computed")
                .to_owned();
            self.write_blob(&hex, &built.data)?;
            if !self
                .root
                .join("layers")
                .join(format!("sha256-{hex}"))
                .is_dir()
            {
                self.unpack_blob(&hex, Compression::Gzip)
                    .await
                    .map_err(|e| OciError::Corrupt(shown.clone(), e.to_string()))?;
            }
            if let Some(diff_ids) = image_config["rootfs"]["diff_ids"].as_array_mut() {
                diff_ids.push(built.diff_id.clone().into());
            }
            if let Some(history) = image_config["history"].as_array_mut() {
                history.push(serde_json::json!({"created_by": created_by}));
            }
            layers.push(Layer {
                digest: built.digest.clone(),
                media_type: IMAGE_LAYER_GZIP_MEDIA_TYPE.to_owned(),
                size: built.data.len() as u64,
            });
        }
        let config_bytes = serde_json::to_vec(&image_config).map_err(std::io::Error::other)?;
        let config_digest = sha256(&config_bytes);
        self.write_blob(
            checked_hex(&config_digest).expect("computed"),
            &config_bytes,
        )?;
        let descriptor = |media_type: &str, digest: &str, size: u64| OciDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: descriptor(
                IMAGE_CONFIG_MEDIA_TYPE,
                &config_digest,
                config_bytes.len() as u64,
            ),
            layers: layers
                .iter()
                .map(|l| descriptor(&l.media_type, &l.digest, l.size))
                .collect(),
            ..OciImageManifest::default()
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        let digest = sha256(&manifest_bytes);
        self.write_blob(checked_hex(&digest).expect("computed"), &manifest_bytes)?;
        let resolved = Resolved {
            reference: shown.clone(),
            digest: digest.clone(),
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            size: layers.iter().map(|l| l.size).sum::<u64>() + config_bytes.len() as u64,
            layers,
            config: image_config,
        };
        // Earlier builds of this reference keep their layers, named by digest only.
        for (mut earlier, _) in self.records()? {
            if earlier.reference == shown && earlier.digest != digest {
                earlier.reference = format!("{shown}@{}", earlier.digest);
                self.write_record(&earlier)?;
            }
        }
        self.write_record(&resolved)?;
        Ok(resolved)
    }

    /// The image built here as `reference`, if there is one.
    pub fn local_image(&self, reference: &str) -> Result<Option<Resolved>, OciError> {
        let shown = parse_reference(reference)?.whole();
        Ok(self
            .records()?
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r.reference == shown))
    }

    /// Writes a blob whose digest is known to be `hex` (through `tmp`; kept if present).
    fn write_blob(&self, hex: &str, data: &[u8]) -> std::io::Result<()> {
        let blob = self.root.join("blobs/sha256").join(hex);
        if blob.exists() {
            return Ok(());
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("blob-{hex}-{}", unique()));
        std::fs::write(&tmp, data)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &blob)
    }
}
